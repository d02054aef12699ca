"""Input validation shared by every public entry point.

Each check raises :class:`ValueError` (or :class:`TypeError` for a wrong type) with a message that
names the argument and the problem, so that bad input never surfaces as a traceback from deep
inside torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "check_choice",
    "check_finite",
    "check_flag",
    "check_geometry_dtype",
    "check_held_tensors",
    "check_instance",
    "check_integer",
    "check_positive_float",
    "check_real_tensor",
    "check_shape",
    "check_vector",
    "unchecked_values",
    "values_are_checked",
]

_INSIDE_A_SOLVER = contextvars.ContextVar("mms_manifolds_inside_a_solver", default=False)


@contextlib.contextmanager
def unchecked_values() -> Iterator[None]:
    """Inside it, points, tangent vectors and geometric results are not checked for finite values.

    The library's inner solvers run inside it (:meth:`~mms_manifolds.solvers.InnerSolver.solve`): their
    starting point is checked at the door, every iterate is made by the solver itself, and each solver
    watches its own costs for non-finite values. A finiteness check reads a value back to the host
    (a synchronisation on a GPU); shapes, dtypes and devices are still checked (no synchronisation).
    """
    token = _INSIDE_A_SOLVER.set(True)
    try:
        yield
    finally:
        _INSIDE_A_SOLVER.reset(token)


def values_are_checked() -> bool:
    """Whether finiteness checks of points, vectors and results run here (everywhere but inside a solver)."""
    return not _INSIDE_A_SOLVER.get()


def as_tensor(name: str, value: object, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Return ``value`` if it is a tensor of ``dtype`` on ``device``; refuse everything else by name.

    One rule for every point, vector and data tensor of the torch API: a ``torch.Tensor`` in the model's
    dtype and on its device. Nothing is converted or cast silently (a float64 numpy vector for a float32
    model would lose precision unseen); numpy arrays are the pymanopt adapter's business.

    Raises:
        TypeError: ``value`` is not a tensor (a numpy array, a list), or has another dtype.
        ValueError: ``value`` lives on another device.
    """
    if not isinstance(value, torch.Tensor):
        hint = ""
        if isinstance(value, (np.ndarray, list, tuple, np.generic)):
            hint = f": convert it with torch.as_tensor({name}, dtype={dtype}, device='{device}')"
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}{hint}")
    if value.dtype != dtype:
        raise TypeError(f"{name} has dtype {value.dtype}, expected {dtype} (the model's dtype); cast it explicitly")
    if value.device != device:
        raise ValueError(f"{name} is on device {value.device}, expected {device} (the model's device)")
    return value


def check_geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """Refuse dtypes the geometry cannot use: its factorizations need float32 or float64."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"the geometry needs float32 or float64, the model is {dtype}: cast the model "
            "(module.double() or module.float()) and its nodes"
        )
    return dtype


def check_held_tensors(
    name: str, holder: object, *, dtype: torch.dtype, device: torch.device, into: tuple[type, ...] = ()
) -> None:
    """Every floating tensor ``holder`` keeps as a public attribute is in ``dtype`` on ``device``.

    Attributes that are instances of ``into`` (the metrics and energies an energy holds) are checked
    the same way, under their own names (``energy.metric.weights``). Integer tensors (indices) are skipped.

    Raises:
        TypeError: a tensor in another floating dtype, named ``name.attribute``.
        ValueError: a tensor on another device.
    """
    for attribute, value in vars(holder).items():
        if attribute.startswith("_"):
            continue
        label = f"{name}.{attribute}"
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if value.dtype != dtype:
                raise TypeError(
                    f"{label} has dtype {value.dtype}, the model {dtype}: build it in {dtype} "
                    f"(e.g. trapezoid_weights(..., dtype={dtype}), tensor.to({dtype}))"
                )
            if value.device != device:
                raise ValueError(f"{label} is on device {value.device}, the model on {device}")
        elif into and isinstance(value, into) and value is not holder:
            check_held_tensors(label, value, dtype=dtype, device=device, into=into)


def check_shape(name: str, value: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Raise ``ValueError`` unless ``value.shape == shape``."""
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or infinite entries (or lives on the data-less meta device)."""
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values")
    if not bool(torch.isfinite(value).all()):
        count = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {count} non-finite value(s) (NaN or inf)")
    return value


def check_vector(name: str, value: object, *, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Validate a flat vector: tensor of ``dtype`` on ``device``, shape ``(length,)``, finite (outside solvers)."""
    tensor = as_tensor(name, value, dtype=dtype, device=device)
    check_shape(name, tensor, (length,))
    return check_finite(name, tensor) if values_are_checked() else tensor


def real_number(name: str, value: object) -> float:
    """``value`` as a float if it is a real number (a Python or numpy scalar, or a 0-d tensor or array).

    Strings (``"1e-3"``), booleans, arrays with entries and complex numbers are refused: none is a number
    by accident.

    Raises:
        TypeError: anything else, named.
    """
    if isinstance(value, (bool, np.bool_, str, bytes)) or isinstance(value, (complex, np.complexfloating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if isinstance(value, (np.ndarray, torch.Tensor)) and (value.ndim != 0 or value.dtype in (torch.bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got an array of shape {tuple(value.shape)}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from error


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (numpy booleans too); else ``TypeError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of the strings ``choices``; ``TypeError`` for a non-string, else ``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {tuple(choices)}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_instance(name: str, value: object, kind: type | tuple[type, ...], hint: str = "") -> object:
    """Return ``value`` if it is an instance of ``kind``; else ``TypeError`` naming ``name`` (and the ``hint``)."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be a {names}, got {type(value).__name__}{hint}")
    return value


def check_positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is finite and positive (``TypeError`` if no number)."""
    number = real_number(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {number}")
    return number


def check_integer(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int, raising ``TypeError`` unless it is an integer and ``ValueError`` below ``minimum``.

    Floats are refused even when whole (``1e308`` would be a silent endless loop, not a count).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real_tensor(name: str, value: object, *, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Validate a data tensor: a ``torch.Tensor`` of real floating dtype, ``ndim`` dimensions, non-empty, finite.

    Raises:
        TypeError: not a tensor, or an integer, boolean or complex dtype.
        ValueError: wrong number of dimensions, no entries, meta device, or non-finite values.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a real floating dtype, got {value.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and value.ndim not in allowed:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, allowed))} dimension(s), got shape {tuple(value.shape)}"
        )
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
    return check_finite(name, value)
