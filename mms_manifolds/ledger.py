r"""The tracking bound of the neural MMS and the checks that keep it honest.

With :math:`\lambda` the energy's convexity modulus in the metric :math:`M`, :math:`\mu = 1/\tau + \lambda` the
strong convexity of each step and :math:`L = 1/(1 + \tau\lambda)` the Lipschitz constant of the exact
step, the distance of the computed iterates :math:`u_k` to the exact MMS iterates :math:`v_k` obeys

.. math:: \|u_{k+1} - v_{k+1}\|_M \le B_{k+1} = L B_k + \rho_k/\mu + \delta_k,\qquad B_0 = \|u_0 - v_0\|_M,

where :math:`\rho_k = \|M^{-1}\nabla F_k(u_{k+1})\|_M` is the a-posteriori residual of the step
(``docs/driver.md``). :math:`\rho_k` splits orthogonally into the tangential (inner-solver) and normal
(approximation) parts, and :math:`B_k` into their propagated sums. :math:`\delta_k` is the floating-point
allowance

.. math:: \delta_k = c\,\varepsilon\,(\|u_{k+1}\|_M + \|u_k\|_M),\qquad c = 16 + \sqrt{Nm},

with :math:`\varepsilon` the dtype's machine epsilon: the rounding of :math:`u_{k+1} - u_k` (divided by
:math:`\tau` inside :math:`\rho_k`, multiplied by :math:`1/\mu \le \tau` again), of the exact reference, and of
the norms, each a few :math:`\varepsilon` times the states' size, summed over :math:`Nm` entries. It makes the
bound hold as computed where :math:`\tau` is so small that :math:`\rho_k/\mu` sinks below rounding (float64 at
:math:`\tau = 10^{-12}`, float32 at :math:`10^{-4}`; ``docs/reliability.md``).

Two checks run every step. The declared modulus is tested against the curvature the step shows,
:math:`\langle\nabla E(u_{k+1}) - \nabla E(u_k), u_{k+1} - u_k\rangle \ge \lambda\|u_{k+1} - u_k\|_M^2`, which every
:math:`\lambda`-convex energy satisfies (up to rounding): a modulus declared larger than the truth fails it
sooner or later. A non-finite residual or state is caught. Either withdraws certification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .energies import Energy
from .metrics.base import Metric
from .step_constants import StepConstants
from .subproblem import Residual

__all__ = ["BoundParts", "TrackingLedger"]

_CURVATURE_ROUNDING = 64
"""Rounding slack of the curvature check, in units of epsilon times the sum of absolute products."""


@dataclass(frozen=True)
class BoundParts:
    r""":math:`B_k` and its parts: propagated tangential residuals, normal residuals, and rounding allowances."""

    tracking_bound: float
    inexactness: float
    approximation: float
    rounding: float

    @classmethod
    def undefined(cls) -> BoundParts:
        """Every part ``nan``: no certified bound."""
        return cls(math.nan, math.nan, math.nan, math.nan)

    @classmethod
    def start(cls, initial_error: float) -> BoundParts:
        r""":math:`B_0 = \|u_0 - v_0\|_M` (0 when no :math:`v_0` is known: the flow starts at :math:`u_0`), no parts yet."""
        return cls(0.0 if math.isnan(initial_error) else initial_error, 0.0, 0.0, 0.0)


class TrackingLedger:
    r"""The recursion :math:`B_{k+1} = L B_k + \rho_k/\mu + \delta_k` and its two checks (module docstring).

    Args:
        constants: the step's :math:`\tau`, :math:`\lambda`, :math:`L`, :math:`\mu`; :math:`\lambda` known.
        metric: :math:`M`, for the norms of the allowance and the curvature check.
        dtype: the states' dtype, for :math:`\varepsilon`.
        size: :math:`Nm`, the number of entries of a state.
    """

    def __init__(self, constants: StepConstants, metric: Metric, dtype: torch.dtype, size: int):
        if not constants.known:
            raise ValueError("the tracking bound needs the energy's convexity modulus; it is unknown (None)")
        self.constants, self.metric = constants, metric
        self.convexity = constants.convexity
        self.epsilon = torch.finfo(dtype).eps
        self.rounding_constant = 16 + math.sqrt(size)

    def rounding_allowance(self, u_new: torch.Tensor, u_old: torch.Tensor) -> float:
        r""":math:`\delta_k = c\,\varepsilon\,(\|u_{k+1}\|_M + \|u_k\|_M)`."""
        size = float(self.metric.norm(u_new)) + float(self.metric.norm(u_old))
        return self.rounding_constant * self.epsilon * size

    def step(self, previous: BoundParts, residual: Residual, u_new: torch.Tensor, u_old: torch.Tensor) -> BoundParts:
        r"""The parts of :math:`B_{k+1}` from those of :math:`B_k` and the step's residual."""
        lipschitz, mu = self.constants.lipschitz, self.constants.strong_convexity
        allowance = self.rounding_allowance(u_new, u_old)
        return BoundParts(
            tracking_bound=lipschitz * previous.tracking_bound + residual.total / mu + allowance,
            inexactness=lipschitz * previous.inexactness + residual.tangential / mu,
            approximation=lipschitz * previous.approximation + residual.normal / mu,
            rounding=lipschitz * previous.rounding + allowance,
        )

    def curvature_violation(self, energy: Energy, u_new: torch.Tensor, u_old: torch.Tensor) -> str | None:
        r"""``None`` if :math:`\langle\nabla E(u_{k+1}) - \nabla E(u_k), \Delta u\rangle \ge \lambda\|\Delta u\|_M^2` up to rounding, else why not.

        The slack is ``64`` :math:`\varepsilon` times the sums of absolute products the two sides are made of,
        so a step too short to resolve the curvature never fails the check.
        """
        step = u_new - u_old
        gradient_new, gradient_old = energy.gradient(u_new), energy.gradient(u_old)
        seen = float(((gradient_new - gradient_old) * step).sum())
        weighted = self.metric.apply(step)
        length_squared = float((weighted * step).sum())
        declared = self.convexity * length_squared
        magnitude = float(((gradient_new.abs() + gradient_old.abs()) * step.abs()).sum())
        magnitude += abs(self.convexity) * float((weighted * step).abs().sum())
        if not math.isfinite(seen):
            return f"the energy's gradient is not finite along the step ({seen})"
        if seen >= declared - _CURVATURE_ROUNDING * self.epsilon * magnitude:
            return None
        return (
            f"the declared convexity modulus {self.convexity:.6g} exceeds the curvature seen along the step, "
            f"{seen / length_squared:.6g} (<grad E(u_k+1) - grad E(u_k), u_k+1 - u_k> < lambda ||u_k+1 - u_k||_M^2)"
        )
