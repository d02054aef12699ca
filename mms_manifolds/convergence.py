r"""Steps that end far from converged: an inner solve stopped by its iteration budget with a residual that jumped.

An inner solve that stops at ``max_iterations`` is ordinary; one that stops there with a tangential
residual :math:`\|P_T r_k\|_M` far above what the flow reached so far, or far above the budget's tolerance,
has not solved its step, and the error it adds to the tracking bound is the visible symptom. The driver
then warns (:class:`UnconvergedStepWarning`, and the logger ``mms_manifolds`` at WARNING) and notes the step
in ``metadata["unconverged_steps"]``. "Far" is a factor :data:`JUMP_FACTOR`:

- with a budget: :math:`\|P_T r_k\|_M > 10\,\mu\eta` (the step's tolerance);
- against the previous steps: :math:`\|P_T r_k\|_M > 10\,\operatorname{median}_{j<k}\|P_T r_j\|_M` over at least
  two earlier steps.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["JUMP_FACTOR", "UnconvergedStepWarning", "far_from_converged"]

JUMP_FACTOR = 10.0
"""How far above the tolerance, or above the median of the earlier steps' residuals, a step counts as unconverged."""

_EARLIER_STEPS = 2
"""Earlier steps needed before a jump against them is judged."""


class UnconvergedStepWarning(RuntimeWarning):
    """An MMS step's inner solve stopped at its iteration budget far from converged (:mod:`mms_manifolds.convergence`)."""


def far_from_converged(stop_reason: str, residuals: list[float], tolerance: float) -> str | None:
    r"""Why the last step ended far from converged, or ``None``.

    Args:
        stop_reason: the step's stop reason, lower-case (``"max_iterations"`` is the one judged).
        residuals: the tangential residuals of steps :math:`1, \dots, k` (the column ``residual_tangential``
            without step 0); the last is the step judged.
        tolerance: the budget's step tolerance :math:`\mu\eta`, ``nan`` without a budget.
    """
    if stop_reason != "max_iterations" or not residuals:
        return None
    residual = residuals[-1]
    if not math.isfinite(residual):
        return None  # a non-finite residual withdraws certification; that is reported there
    if math.isfinite(tolerance) and residual > JUMP_FACTOR * tolerance:
        return (
            f"the inner solve stopped at its iteration budget with tangential residual {residual:.3g}, "
            f"{residual / tolerance:.3g} times the budget's step tolerance {tolerance:.3g}"
        )
    earlier = [value for value in residuals[:-1] if math.isfinite(value) and value > 0]
    if len(earlier) >= _EARLIER_STEPS:
        typical = float(np.median(earlier))
        if residual > JUMP_FACTOR * typical:
            return (
                f"the inner solve stopped at its iteration budget with tangential residual {residual:.3g}, "
                f"{residual / typical:.3g} times the median {typical:.3g} of the earlier steps"
            )
    return None
