r"""Reusable numerical checks: Taylor slopes, adjoint identities and perturbed exact BDF2 runs, for tests of user extensions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .energies import Energy
from .metrics.base import Metric

__all__ = ["adjoint_mismatch", "perturbed_bdf2_run", "taylor_slope"]


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


def perturbed_bdf2_run(
    energy: Energy,
    metric: Metric,
    u0: torch.Tensor,
    steps: Sequence[float],
    size: float,
    seed: int,
    mode: torch.Tensor,
) -> tuple[list[float], list[float], str | None]:
    r"""Exact BDF2 steps (implicit Euler start) perturbed by ``size`` :math:`\cdot N(0, 1)` times ``mode``, booked as the driver books them.

    Each step is :math:`u_{k+1} = \operatorname{prox}_{\tau'E}(\tilde u_k) + s_k\,\text{mode}`, :math:`s_k` drawn from a
    generator seeded with ``seed``; its residual :math:`\rho_k` (all of it counted as inexactness) goes to the
    driver's :class:`~mms_manifolds.time_stepping.SchemeStepper`, constant and variable steps alike, and the error is
    measured against the exact BDF2 iterates with the same ``steps``. The energy needs an exact ``prox``.

    Returns:
        ``(bounds, errors, problem)``: :math:`B_k` and :math:`\|u_k - v_k\|_M` for :math:`k = 1, 2, \dots`, and the reason
        certification was withdrawn (the lists then stop before that step), or ``None``.
    """
    from .ledger import BoundParts  # the driver's modules import this one's users
    from .schemes import BDF2
    from .subproblem import Residual
    from .time_stepping import SchemeRecord, SchemeStepper

    generator = torch.Generator().manual_seed(seed)
    scheme = BDF2(start="euler", max_ratio=2.4)
    stepper = SchemeStepper(scheme, steps[0], energy.convexity(metric), metric, u0.dtype, u0.numel(), True, None)
    exact = scheme.exact_trajectory(energy, metric, u0, steps)
    record, states, bound, older = SchemeRecord(), [u0], BoundParts.start(0.0), 0.0
    bounds, errors = [], []
    for k, tau in enumerate(steps):
        plan = scheme.plan(states, list(record.time_steps), tau)
        shift = size * float(torch.randn((), generator=generator, dtype=u0.dtype))
        new = energy.prox(plan.anchor, plan.tau, metric) + shift * mode
        rho = float(metric.norm(metric.solve(energy.gradient(new)) + (new - plan.anchor) / plan.tau))
        booked, problem, record = stepper.bound(record, bound, Residual(rho, rho, 0.0), new, states[-1], tau, older)
        if problem is not None:
            return bounds, errors, problem
        older, bound = bound.tracking_bound, booked
        record = stepper.after_step(record, tau, math.nan, math.nan, tau, 0)
        states.append(new)
        bounds.append(bound.tracking_bound)
        errors.append(float(metric.norm(new - exact[k + 1])))
    return bounds, errors, None
