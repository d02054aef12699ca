r"""Steps that end far from converged: an inner solve stopped by its iteration budget with a residual that jumped.

An inner solve that stops at ``max_iterations`` is ordinary; one that stops there with a tangential
residual :math:`\|P_T r_k\|_M` far above what the flow reached so far, or far above the budget's tolerance,
has not solved its step, and the error it adds to the tracking bound is the visible symptom. The driver
then warns (:class:`UnconvergedStepWarning`, and the logger ``mms_manifolds`` at WARNING) and notes the step
in ``metadata["unconverged_steps"]``. "Far" is a factor :data:`JUMP_FACTOR`:

- with a budget: :math:`\|P_T r_k\|_M > 10\,\mu\eta` (the step's tolerance);
- against the previous steps: :math:`\|P_T r_k\|_M > 10\,\operatorname{median}_{j<k}\|P_T r_j\|_M` over at least
  two earlier steps.

The reason ends with advice. Usually more iterations: the solve was cut short. Where the solve *crawled* (its cost
history :math:`f_0, \dots, f_n` fell over its last :math:`\lceil n/2\rceil` iterations by at most
:data:`CRAWL_SHARE` of its whole decrease :math:`f_0 - f_n`), the reason says so instead: in a flat valley of the
network's image more iterations barely move the state (measured in ``docs/results.md``, "The same fits at 60
Gauss–Newton iterations per solve": 200 iterations, or Newton with the exact Hessian, left such steps unconverged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CRAWL_SHARE", "JUMP_FACTOR", "UnconvergedStepWarning", "far_from_converged"]

JUMP_FACTOR = 10.0
"""How far above the tolerance, or above the median of the earlier steps' residuals, a step counts as unconverged."""

_EARLIER_STEPS = 2
"""Earlier steps needed before a jump against them is judged."""

CRAWL_SHARE = 1e-6
"""At most this share of a solve's cost decrease in the last half of its iterations makes it a crawl."""

_MORE_ITERATIONS = "raise the solver's max_iterations or shorten tau"


class UnconvergedStepWarning(RuntimeWarning):
    """An MMS step's inner solve stopped at its iteration budget far from converged (:mod:`mms_manifolds.convergence`)."""


def far_from_converged(
    stop_reason: str, residuals: list[float], tolerance: float, costs: Sequence[float] = ()
) -> str | None:
    r"""Why the last step ended far from converged, with advice, or ``None``.

    Args:
        stop_reason: the step's stop reason, lower-case (``"max_iterations"`` is the one judged).
        residuals: the tangential residuals of steps :math:`1, \dots, k` (the column ``residual_tangential``
            without step 0); the last is the step judged.
        tolerance: the budget's step tolerance :math:`\mu\eta`, ``nan`` without a budget.
        costs: the judged step's inner cost history :math:`f_0, \dots, f_n` (``InnerResult.cost_history``), which
            tells a crawl from a solve cut short; empty where unknown.
    """
    if stop_reason != "max_iterations" or not residuals:
        return None
    residual = residuals[-1]
    if not math.isfinite(residual):
        return None  # a non-finite residual withdraws certification; that is reported there
    far = None
    if math.isfinite(tolerance) and residual > JUMP_FACTOR * tolerance:
        far = f"{residual / tolerance:.3g} times the budget's step tolerance {tolerance:.3g}"
    else:
        earlier = [value for value in residuals[:-1] if math.isfinite(value) and value > 0]
        typical = float(np.median(earlier)) if len(earlier) >= _EARLIER_STEPS else math.inf
        if residual > JUMP_FACTOR * typical:
            far = f"{residual / typical:.3g} times the median {typical:.3g} of the earlier steps"
    if far is None:
        return None
    advice = _crawl_advice(costs) or _MORE_ITERATIONS
    return f"the inner solve stopped at its iteration budget with tangential residual {residual:.3g}, {far}; {advice}"


def _crawl_advice(costs: Sequence[float]) -> str | None:
    r"""What to say of a solve whose cost stopped falling before its budget ran out, or ``None``.

    With :math:`f_0, \dots, f_n` the cost history and :math:`h = \lceil n/2\rceil`, the solve crawled where
    :math:`f_{n-h} - f_n \le` :data:`CRAWL_SHARE` :math:`\cdot (f_0 - f_n)` and :math:`f_0 > f_n`: the last half of
    its iterations bought almost nothing of what the first half did. ``None`` with fewer than two iterations or a
    non-finite cost.
    """
    values = [float(value) for value in costs]
    iterations = len(values) - 1
    if iterations < 2 or not all(math.isfinite(value) for value in values):
        return None
    half = math.ceil(iterations / 2)
    decrease, last_half = values[0] - values[-1], values[-1 - half] - values[-1]
    if decrease <= 0 or last_half > CRAWL_SHARE * decrease:
        return None
    return (
        f"its cost fell by {last_half / decrease:.2g} of the solve's decrease over its last {half} of {iterations} "
        "iterations: it crawls, where more iterations barely move the state (a flat valley of the network's image)"
    )
