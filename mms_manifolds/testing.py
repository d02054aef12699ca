r"""Reusable numerical checks: Taylor slopes and adjoint identities, for tests of user extensions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["adjoint_mismatch", "taylor_slope"]


def taylor_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    r"""Least-squares slope of :math:`\log(\text{error})` against :math:`\log(\text{step})`.

    An approximation with remainder :math:`O(t^k)` gives slope :math:`k` (pymanopt's
    ``check_retraction`` and ``check_gradient`` read the same slope off a plot).

    Raises:
        ValueError: fewer than two points, or a non-positive step or error.
    """
    steps_array, errors_array = np.asarray(steps, dtype=float), np.asarray(errors, dtype=float)
    if steps_array.size < 2 or steps_array.shape != errors_array.shape:
        raise ValueError("taylor_slope needs at least two (step, error) pairs of equal length")
    if (steps_array <= 0).any() or (errors_array <= 0).any():
        raise ValueError("taylor_slope needs positive steps and errors")
    return float(np.polyfit(np.log(steps_array), np.log(errors_array), 1)[0])


def adjoint_mismatch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    vector: torch.Tensor,
    covector: torch.Tensor,
) -> float:
    r"""Relative mismatch :math:`|\langle A x, y\rangle - \langle x, A^\top y\rangle| / (\|Ax\|\|y\| + \|x\|\|A^\top y\|)`.

    Zero up to rounding when ``adjoint`` is the adjoint of ``forward`` (for example a JVP and a VJP).
    """
    image, back = forward(vector), adjoint(covector)
    lhs, rhs = float((image * covector).sum()), float((vector * back).sum())
    scale = float(image.norm() * covector.norm() + vector.norm() * back.norm())
    return abs(lhs - rhs) / scale if scale > 0 else 0.0
