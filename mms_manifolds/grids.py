r"""Uniform grids in 1-D and 2-D: nodes, quadrature weights and finite-difference stiffness matrices.

Every helper takes the grid the same way: 1-D helpers ``(count, start, stop, boundary)``, 2-D helpers
``(count_x, count_y, box, boundary)`` with ``box = (x0, x1, y0, y1)``, and ``dtype`` as a keyword.
``boundary`` says how the ``count`` nodes sit on :math:`[a, b]`:

- ``"dirichlet"``: ``count`` interior nodes, :math:`h = (b - a)/(\text{count} + 1)` (boundary values are 0);
- ``"periodic"``: ``count`` nodes from :math:`a` with :math:`h = (b - a)/\text{count}` (:math:`b \equiv a`);
- ``"neumann"``: ``count`` nodes including both ends, :math:`h = (b - a)/(\text{count} - 1)`.

The stiffness matrices are scaled so that, with lumped mass :math:`h` per node,
:math:`u \cdot K u \approx \int |\nabla u|^2\,dx` and the generalized eigenvalues of :math:`(K, hI)`
approximate those of :math:`-\Delta`.
"""

from __future__ import annotations

import math
import os

import torch

from ._checks import check_choice

__all__ = ["grid_2d", "grid_spacing", "stiffness_1d", "stiffness_2d", "trapezoid_weights", "uniform_nodes"]

_BOUNDARIES = ("dirichlet", "periodic", "neumann")
_OFFSETS = {"dirichlet": 1, "periodic": 0, "neumann": -1}  # h = (b - a) / (count + offset)
_SIGNATURE = "the 1-D grid helpers take (count, start, stop, boundary)"


def _check_count(name: str, count: object, minimum: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {count!r}")
    return count


def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(what: str, numbers: int, dtype: torch.dtype) -> None:
    """Refuse, naming the size, an array of ``numbers`` entries of ``dtype`` larger than the machine's memory.

    Without it a huge grid fails inside torch's allocator (or swaps the machine to a halt) far from the call.
    """
    needed, available = numbers * torch.empty((), dtype=dtype).element_size(), _memory_bytes()
    if available is not None and needed > available:
        raise ValueError(
            f"{what} would need {needed / 2**30:.1f} GiB ({numbers} numbers of {dtype}), more than this machine's "
            f"{available / 2**30:.1f} GiB of memory"
        )


def _check_interval(start: object, stop: object) -> tuple[float, float]:
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a real number, got {value!r} ({_SIGNATURE})")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if not stop > start:
        raise ValueError(f"the interval needs start < stop, got [{start}, {stop}]")
    return float(start), float(stop)


def _check_boundary(boundary: object) -> str:
    return check_choice("boundary", boundary, _BOUNDARIES)


def _check_box(box: object) -> tuple[float, float, float, float]:
    if not (isinstance(box, (tuple, list)) and len(box) == 4):
        raise TypeError(
            f"box must be (x0, x1, y0, y1), got {box!r} (the 2-D helpers take (count_x, count_y, box, boundary))"
        )
    return (*_check_interval(box[0], box[1]), *_check_interval(box[2], box[3]))


def grid_spacing(count: int, start: float, stop: float, boundary: str) -> float:
    """The spacing :math:`h` of :func:`uniform_nodes` with the same arguments."""
    count = _check_count("count", count, 2)
    start, stop = _check_interval(start, stop)
    return (stop - start) / (count + _OFFSETS[_check_boundary(boundary)])


def uniform_nodes(count: int, start: float, stop: float, boundary: str, *, dtype=torch.float64) -> torch.Tensor:
    r"""Grid nodes on :math:`[a, b]`, shape ``(count,)``, laid out for ``boundary`` (module docstring).

    For a network's input of dimension 1 use ``uniform_nodes(...).unsqueeze(-1)``, shape ``(count, 1)``.
    """
    count = _check_count("count", count, 2)
    start, stop = _check_interval(start, stop)
    boundary = _check_boundary(boundary)
    _check_memory(f"count = {count}", count + 2, dtype)
    if boundary == "dirichlet":
        return torch.linspace(start, stop, count + 2, dtype=dtype)[1:-1]
    if boundary == "periodic":
        return torch.linspace(start, stop, count + 1, dtype=dtype)[:-1]
    return torch.linspace(start, stop, count, dtype=dtype)


def trapezoid_weights(count: int, start: float, stop: float, *, dtype=torch.float64) -> torch.Tensor:
    r"""Composite trapezoid weights on the ``"neumann"`` nodes of :func:`uniform_nodes` (both ends), shape ``(count,)``; they sum to :math:`b - a`."""
    spacing = grid_spacing(count, start, stop, "neumann")
    _check_memory(f"count = {count}", count, dtype)
    weights = torch.full((count,), spacing, dtype=dtype)
    weights[0] = weights[-1] = spacing / 2
    return weights


def stiffness_1d(count: int, start: float, stop: float, boundary: str, *, dtype=torch.float64) -> torch.Tensor:
    r"""1-D stiffness :math:`K = \frac1h \operatorname{tridiag}(-1, 2, -1)` on :func:`uniform_nodes`, shape ``(count, count)``.

    - ``"dirichlet"``: interior nodes, zero boundary values; SPD, :math:`\lambda_{\min}(K, hI) = \frac{4}{h^2}\sin^2\frac{\pi h}{2L}`.
    - ``"periodic"``: wrap-around corners; PSD with the constants as kernel.
    - ``"neumann"``: nodes include both ends, first and last diagonal entries :math:`1/h` (P1 finite
      elements); PSD with the constants as kernel.

    Raises:
        ValueError: ``count < 2``, ``start >= stop`` or an unknown ``boundary``.
        TypeError: ``start`` or ``stop`` is not a number (the signature is that of :func:`uniform_nodes`).
    """
    spacing = grid_spacing(count, start, stop, boundary)
    _check_memory(f"count = {count} (a dense count x count matrix, three copies)", 3 * count * count, dtype)
    matrix = 2 * torch.eye(count, dtype=dtype) - torch.diag(torch.ones(count - 1, dtype=dtype), 1)
    matrix = matrix - torch.diag(torch.ones(count - 1, dtype=dtype), -1)
    if boundary == "periodic":
        matrix[0, -1] -= 1
        matrix[-1, 0] -= 1
    elif boundary == "neumann":
        matrix[0, 0] = matrix[-1, -1] = 1
    return matrix / spacing


def grid_2d(
    count_x: int, count_y: int, box: tuple[float, float, float, float], boundary: str, *, dtype=torch.float64
) -> torch.Tensor:
    r"""Nodes of a tensor grid on the rectangle ``box``, shape ``(count_x * count_y, 2)``, x-major (x index varies slowest)."""
    box = _check_box(box)
    x = uniform_nodes(count_x, box[0], box[1], boundary, dtype=dtype)
    y = uniform_nodes(count_y, box[2], box[3], boundary, dtype=dtype)
    _check_memory(f"count_x * count_y = {count_x} * {count_y} (two coordinates, two copies)", 4 * count_x * count_y, dtype)
    grid_x, grid_y = torch.meshgrid(x, y, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def stiffness_2d(
    count_x: int, count_y: int, box: tuple[float, float, float, float], boundary: str, *, dtype=torch.float64
) -> torch.Tensor:
    r"""2-D stiffness :math:`K = K_x \otimes h_y I + h_x I \otimes K_y` on the x-major grid of :func:`grid_2d`.

    With lumped mass :math:`h_x h_y` per node, :math:`u \cdot Ku \approx \int |\nabla u|^2`.
    Shape ``(count_x * count_y,) * 2``; dense.
    """
    box = _check_box(box)
    spacing_x = grid_spacing(count_x, box[0], box[1], boundary)
    spacing_y = grid_spacing(count_y, box[2], box[3], boundary)
    nodes = count_x * count_y
    _check_memory(f"count_x * count_y = {count_x} * {count_y} (a dense matrix of side {nodes})", 3 * nodes * nodes, dtype)
    stiffness_x = stiffness_1d(count_x, box[0], box[1], boundary, dtype=dtype)
    stiffness_y = stiffness_1d(count_y, box[2], box[3], boundary, dtype=dtype)
    eye_x, eye_y = torch.eye(count_x, dtype=dtype), torch.eye(count_y, dtype=dtype)
    return torch.kron(stiffness_x, spacing_y * eye_y) + torch.kron(spacing_x * eye_x, stiffness_y)
