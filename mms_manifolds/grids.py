r"""Uniform grids in 1-D and 2-D: nodes, quadrature weights and finite-difference stiffness matrices.

The stiffness matrices are scaled so that, with lumped mass :math:`h` per node,
:math:`u \cdot K u \approx \int |\nabla u|^2\,dx` and the generalized eigenvalues of :math:`(K, hI)`
approximate those of :math:`-\Delta`.
"""

from __future__ import annotations

import torch

__all__ = ["grid_2d", "grid_spacing", "stiffness_1d", "stiffness_2d", "trapezoid_weights", "uniform_nodes"]

_BOUNDARIES = ("dirichlet", "periodic", "neumann")


def _check_count(name: str, count: int, minimum: int) -> int:
    if int(count) != count or count < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {count}")
    return int(count)


def uniform_nodes(
    count: int, start: float, stop: float, boundary: str = "neumann", dtype=torch.float64
) -> torch.Tensor:
    r"""Grid nodes on :math:`[a, b]`, shape ``(count,)``, laid out for ``boundary``.

    - ``"dirichlet"``: ``count`` interior nodes, :math:`h = (b - a)/(\text{count} + 1)` (boundary values are 0);
    - ``"periodic"``: ``count`` nodes from :math:`a` with :math:`h = (b - a)/\text{count}` (:math:`b \equiv a`);
    - ``"neumann"``: ``count`` nodes including both ends, :math:`h = (b - a)/(\text{count} - 1)`.
    """
    count = _check_count("count", count, 2)
    if boundary == "dirichlet":
        return torch.linspace(start, stop, count + 2, dtype=dtype)[1:-1]
    if boundary == "periodic":
        return torch.linspace(start, stop, count + 1, dtype=dtype)[:-1]
    if boundary == "neumann":
        return torch.linspace(start, stop, count, dtype=dtype)
    raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")


def grid_spacing(count: int, start: float, stop: float, boundary: str) -> float:
    """The spacing :math:`h` of :func:`uniform_nodes` with the same arguments."""
    offsets = {"dirichlet": 1, "periodic": 0, "neumann": -1}
    if boundary not in offsets:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    return (stop - start) / (count + offsets[boundary])


def trapezoid_weights(count: int, start: float, stop: float, dtype=torch.float64) -> torch.Tensor:
    r"""Composite trapezoid weights on ``count`` equispaced nodes including both ends, shape ``(count,)``; they sum to :math:`b - a`."""
    count = _check_count("count", count, 2)
    spacing = (stop - start) / (count - 1)
    weights = torch.full((count,), spacing, dtype=dtype)
    weights[0] = weights[-1] = spacing / 2
    return weights


def stiffness_1d(count: int, spacing: float, boundary: str = "dirichlet", dtype=torch.float64) -> torch.Tensor:
    r"""1-D stiffness :math:`K = \frac1h \operatorname{tridiag}(-1, 2, -1)`, shape ``(count, count)``.

    - ``"dirichlet"``: interior nodes, zero boundary values; SPD, :math:`\lambda_{\min}(K, hI) = \frac{4}{h^2}\sin^2\frac{\pi h}{2L}`.
    - ``"periodic"``: wrap-around corners; PSD with the constants as kernel.
    - ``"neumann"``: nodes include both ends, first and last diagonal entries :math:`1/h` (P1 finite
      elements); PSD with the constants as kernel.

    Raises:
        ValueError: ``count < 2``, ``spacing <= 0`` or an unknown ``boundary``.
    """
    count = _check_count("count", count, 2)
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    matrix = 2 * torch.eye(count, dtype=dtype) - torch.diag(torch.ones(count - 1, dtype=dtype), 1)
    matrix = matrix - torch.diag(torch.ones(count - 1, dtype=dtype), -1)
    if boundary == "periodic":
        matrix[0, -1] -= 1
        matrix[-1, 0] -= 1
    elif boundary == "neumann":
        matrix[0, 0] = matrix[-1, -1] = 1
    elif boundary != "dirichlet":
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    return matrix / spacing


def grid_2d(count_x: int, count_y: int, boundary: str = "dirichlet", box=(0.0, 1.0, 0.0, 1.0), dtype=torch.float64):
    r"""Nodes of a tensor grid on a rectangle, shape ``(count_x * count_y, 2)``, x-major (x index varies slowest)."""
    x = uniform_nodes(count_x, box[0], box[1], boundary, dtype)
    y = uniform_nodes(count_y, box[2], box[3], boundary, dtype)
    grid_x, grid_y = torch.meshgrid(x, y, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def stiffness_2d(
    count_x: int, count_y: int, spacing_x: float, spacing_y: float, boundary: str = "dirichlet", dtype=torch.float64
) -> torch.Tensor:
    r"""2-D stiffness :math:`K = K_x \otimes h_y I + h_x I \otimes K_y` on the x-major grid of :func:`grid_2d`.

    With lumped mass :math:`h_x h_y` per node, :math:`u \cdot Ku \approx \int |\nabla u|^2`.
    Shape ``(count_x * count_y,) * 2``; dense.
    """
    stiffness_x = stiffness_1d(count_x, spacing_x, boundary, dtype)
    stiffness_y = stiffness_1d(count_y, spacing_y, boundary, dtype)
    eye_x, eye_y = torch.eye(count_x, dtype=dtype), torch.eye(count_y, dtype=dtype)
    return torch.kron(stiffness_x, spacing_y * eye_y) + torch.kron(spacing_x * eye_x, stiffness_y)
