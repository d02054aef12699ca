r"""Adaptive Dormand–Prince 5(4) integration of :math:`y' = f(y)`, with the error estimate reported.

The exponential map integrates the geodesic equation with it; the result records the accepted and
rejected steps and the accumulated local error estimate, so that an ``exp`` is never silently
inaccurate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["IntegrationResult", "integrate_dormand_prince"]

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = _A[6] + (0.0,)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@dataclass(frozen=True)
class IntegrationResult:
    """Outcome of :func:`integrate_dormand_prince`.

    Attributes:
        state: :math:`y(t_1)`, same shape as the initial state.
        error_estimate: sum of the accepted steps' local error estimates (max-norm of the
            difference between the 5th- and 4th-order solutions): an estimate of the global error.
        accepted_steps: number of accepted steps.
        rejected_steps: number of rejected steps.
        evaluations: number of evaluations of :math:`f`.
    """

    state: torch.Tensor
    error_estimate: float
    accepted_steps: int
    rejected_steps: int
    evaluations: int


def integrate_dormand_prince(
    rhs: Callable[[torch.Tensor], torch.Tensor],
    initial_state: torch.Tensor,
    final_time: float,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 10_000,
) -> IntegrationResult:
    r"""Integrate the autonomous ODE :math:`y' = f(y)`, :math:`y(0) = y_0`, to :math:`t_1`.

    Embedded Dormand–Prince 5(4) pair with local extrapolation (the 5th-order solution is kept) and
    step control on :math:`\max_i |e_i| / (\text{atol} + \text{rtol}\max(|y_i|, |\hat y_i|)) \le 1`.

    Args:
        rhs: :math:`f`, maps a state to its derivative (same shape).
        initial_state: :math:`y_0`.
        final_time: :math:`t_1 \ge 0`.
        rtol: relative tolerance per step. Default ``1e-10``.
        atol: absolute tolerance per step. Default ``1e-12``.
        max_steps: cap on accepted plus rejected steps.

    Returns:
        IntegrationResult.

    Raises:
        RuntimeError: the step count exceeds ``max_steps`` or the derivative becomes non-finite.

    References:
        J. R. Dormand, P. J. Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl.
        Math. 6 (1980).
    """
    state = initial_state
    if final_time == 0.0:
        return IntegrationResult(state, 0.0, 0, 0, 0)
    time, step = 0.0, final_time / 4
    derivative = rhs(state)
    evaluations, accepted, rejected, error_total = 1, 0, 0, 0.0
    while time < final_time:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"ODE integration did not reach t = {final_time} within {max_steps} steps")
        step = min(step, final_time - time)
        stages = [derivative]
        for row in _A[1:]:
            increment = sum(coefficient * stage for coefficient, stage in zip(row, stages) if coefficient != 0.0)
            stages.append(rhs(state + step * increment))
        evaluations += 6
        if not all(bool(torch.isfinite(stage).all()) for stage in stages):
            raise RuntimeError("ODE integration produced a non-finite derivative")
        high = state + step * sum(b * stage for b, stage in zip(_B5, stages) if b != 0.0)
        error = step * sum((b5 - b4) * stage for b5, b4, stage in zip(_B5, _B4, stages))
        scale = atol + rtol * torch.maximum(state.abs(), high.abs())
        ratio = float((error.abs() / scale).max())
        if ratio <= 1.0:
            time += step
            state, derivative = high, stages[-1]
            error_total += float(error.abs().max())
            accepted += 1
        else:
            rejected += 1
        factor = 5.0 if ratio == 0.0 else min(5.0, max(0.2, 0.9 * ratio ** (-0.2)))
        step *= factor
    return IntegrationResult(state, error_total, accepted, rejected, evaluations)
