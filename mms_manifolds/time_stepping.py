r"""The time scheme inside an MMS run: step sizes, the scheme's ledger, its estimates, and what a resume needs.

:class:`~mms_manifolds.MinimizingMovement` asks a :class:`SchemeStepper` for each step's anchor and
effective step (:meth:`SchemeStepper.plan`), books the step's residual with it
(:meth:`SchemeStepper.bound`), and keeps its :class:`SchemeRecord` in the record's metadata, so that a
resumed run continues with the same step sizes, G-norm and estimates. The states a scheme needs
(:math:`u_{k-1}`, :math:`u_{k-2}`) are the network at the saved parameters, so the checkpoint's
``thetas`` are the history.

Per step it records (``docs/driver.md``): the time step, the local time-error *estimate* of the scheme
(Milne's device, :meth:`~mms_manifolds.schemes.TimeScheme.local_error_estimate`) and, for implicit
Euler with a convex energy, the certified bound against the continuous flow
(:class:`~mms_manifolds.flow_bound.EulerFlowBound`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .energies import Energy
from .flow_bound import EulerFlowBound
from .ledger import BDF2Ledger, BoundParts, TrackingLedger
from .metrics.base import Metric
from .schemes import BDF2, ImplicitEuler, StepController, StepPlan, TimeScheme
from .step_constants import StepConstants
from .subproblem import Residual

__all__ = ["SchemeRecord", "SchemeStepper", "StartParts"]


@dataclass
class SchemeRecord:
    """What the scheme found so far, one entry per step (index 0 is step 1), JSON-ready for the checkpoint.

    Attributes:
        time_steps: :math:`\\tau_k`.
        local_error_estimate: the scheme's local time-error estimate of step :math:`k` (``nan`` until enough
            states exist), an estimate, not a bound.
        flow_bound: implicit Euler's certified bound on :math:`\\|u_k - u(t_k)\\|_M` against the continuous
            flow from :math:`u_0` (``nan`` where not certified).
        g_norm: BDF2's G-norm parts :math:`g_k` after the last step (``None`` before the start).
        anchor_bound: BDF2's bound :math:`W_k` on :math:`\\|4e_k - e_{k-1}\\|_M` after the last step (``None`` before
            the start; a checkpoint without it resumes with :math:`4B_k + B_{k-1}`).
        next_step: the step the controller chose for the next step (``None`` without adaptivity).
        rejected_steps: steps the controller rejected and retried smaller.
    """

    time_steps: list[float] = field(default_factory=list)
    local_error_estimate: list[float | None] = field(default_factory=list)
    flow_bound: list[float | None] = field(default_factory=list)
    g_norm: list[float] | None = None
    anchor_bound: float | None = None
    next_step: float | None = None
    rejected_steps: int = 0

    @classmethod
    def from_metadata(cls, stored: dict | None) -> SchemeRecord:
        """The record kept in a checkpoint's metadata (a fresh one for ``None``)."""
        return cls() if stored is None else cls(**stored)

    def as_metadata(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StartParts:
    r"""BDF2's Richardson start :math:`u_1 = \Pi(2w - z)`: the bounds of its pieces and the projection's distance.

    Attributes:
        half: the bound parts of :math:`w`, two implicit Euler steps of :math:`\tau/2`.
        full: the bound parts of :math:`z`, one implicit Euler step of :math:`\tau`.
        projection: :math:`\|u_1 - (2w - z)\|_M`, measured.
        problem: why the start cannot be certified (a non-finite residual), or ``None``.
    """

    half: BoundParts
    full: BoundParts
    projection: float
    problem: str | None = None

    def bound(self) -> BoundParts:
        r""":math:`\|e_1\| \le 2B_w + B_z + \|u_1 - (2w - z)\|` per part (the projection counts as approximation)."""
        return BoundParts(
            2 * self.half.tracking_bound + self.full.tracking_bound + self.projection,
            2 * self.half.inexactness + self.full.inexactness,
            2 * self.half.approximation + self.full.approximation + self.projection,
            2 * self.half.rounding + self.full.rounding,
        )


class SchemeStepper:
    r"""One run's time scheme: step sizes (fixed or adaptive), plans, the scheme's ledger and estimates.

    Args:
        scheme: :class:`~mms_manifolds.schemes.ImplicitEuler` or :class:`~mms_manifolds.schemes.BDF2`.
        tau: the (initial) time step.
        convexity: :math:`\lambda` (``None`` if unknown).
        metric: :math:`M`, for the ledgers and estimates.
        dtype: the states' dtype.
        size: :math:`Nm`, the number of entries of a state.
        certified: whether the run certifies bounds at all.
        time_tolerance: ``None`` for fixed steps, else the local error estimate's tolerance.
        record: the :class:`SchemeRecord` so far (a resumed run's).
    """

    def __init__(
        self,
        scheme: TimeScheme,
        tau: float,
        convexity: float | None,
        metric: Metric,
        dtype: torch.dtype,
        size: int,
        certified: bool,
        time_tolerance: float | None,
        record: SchemeRecord,
    ):
        self.scheme, self.tau, self.convexity, self.metric = scheme, tau, convexity, metric
        self.dtype, self.size, self.certified, self.record = dtype, size, certified, record
        self.controller = None if time_tolerance is None else StepController(time_tolerance, scheme.order)
        self._proposed = tau
        self.flow = None
        if isinstance(scheme, ImplicitEuler) and certified and convexity is not None and convexity >= 0:
            self.flow = EulerFlowBound(convexity)

    @property
    def is_bdf2(self) -> bool:
        return isinstance(self.scheme, BDF2)

    def richardson_start(self, steps_done: int) -> bool:
        """Whether the next step is BDF2's Richardson start (three implicit Euler solves and a projection)."""
        return self.is_bdf2 and self.scheme.start == "richardson" and steps_done == 0

    def next_step(self) -> float:
        """The time step of the next step: ``tau``, or the controller's choice (capped by BDF2's ratio)."""
        tau = self.tau if self.record.next_step is None else self.record.next_step
        if self.is_bdf2 and self.record.time_steps:
            tau = min(tau, self.scheme.max_ratio * self.record.time_steps[-1])
        return tau

    def plan(self, states: list[torch.Tensor], tau: float) -> StepPlan:
        """The scheme's step problem from the last states (oldest first) with step ``tau``."""
        return self.scheme.plan(states, self.record.time_steps, tau)

    def estimate(self, states: list[torch.Tensor], tau: float) -> float:
        """The local error estimate of a candidate step: ``states`` ends with the new state."""
        return self.scheme.local_error_estimate(states, [*self.record.time_steps, tau], self.metric)

    def accept(self, tau: float, estimate: float) -> tuple[bool, float]:
        """``(accepted, next step)``: always accepted at fixed steps; else the controller's verdict."""
        if self.controller is None:
            return True, tau
        accepted = self.controller.accept(estimate)
        if not accepted:
            self.record.rejected_steps += 1
        self._proposed = self.controller.next_step(tau, estimate)
        return accepted, self._proposed

    def variable(self, tau: float) -> bool:
        """Whether ``tau`` differs from the previous step (a variable step)."""
        return bool(self.record.time_steps) and tau != self.record.time_steps[-1]

    def euler_ledger(self, tau: float) -> TrackingLedger:
        return TrackingLedger(StepConstants.of(tau, self.convexity), self.metric, self.dtype, self.size)

    def bdf2_ledger(self, tau: float) -> BDF2Ledger:
        return BDF2Ledger(self.convexity, tau, self.metric, self.dtype, self.size)

    def bound(
        self,
        previous: BoundParts,
        residual: Residual,
        u_new: torch.Tensor,
        u_old: torch.Tensor,
        tau: float,
        older_bound: float = math.nan,
    ) -> tuple[BoundParts, str | None]:
        """The bound parts after a step of length ``tau`` (not the start), or ``nan`` parts and why not certified.

        ``older_bound`` is :math:`B_{k-1}` (BDF2 caps its G-norm bound by the step's own contraction).
        """
        if not self.is_bdf2:
            return self.euler_ledger(tau).step(previous, residual, u_new, u_old), None
        if not self.record.time_steps:  # BDF2's implicit Euler start: its bound, then g_1 from it and B_0
            first = self.euler_ledger(tau).step(previous, residual, u_new, u_old)
            return first, self.start_g_norm(first, previous, tau)
        if self.variable(tau):
            ratio = tau / self.record.time_steps[-1]
            return BoundParts.undefined(), (
                f"variable-step BDF2 (step ratio {ratio:.6g}): the G-norm bound is derived for constant steps "
                "only (docs/theory.md, section 7)"
            )
        try:
            ledger = self.bdf2_ledger(tau)
        except ValueError as error:
            return BoundParts.undefined(), str(error)
        anchor = self.record.anchor_bound
        if anchor is None:
            anchor = 4 * previous.tracking_bound + older_bound
        bounds = (previous.tracking_bound, older_bound, anchor)
        g_norm, bound, self.record.anchor_bound = ledger.step(BoundParts(*self.record.g_norm), residual, u_new, u_old, bounds)
        self.record.g_norm = list(_parts(g_norm))
        return bound, None

    def start_g_norm(self, first: BoundParts, initial: BoundParts, tau: float) -> str | None:
        """Set :math:`g_1` from the bounds of the first two states; the reason if no G-norm bound exists at ``tau``."""
        try:
            ledger = self.bdf2_ledger(tau)
        except ValueError as error:
            return str(error)
        self.record.g_norm = list(_parts(ledger.start(first, initial)))
        self.record.anchor_bound = 4 * first.tracking_bound + initial.tracking_bound
        return None

    def flow_step(
        self, energy: Energy, u_old: torch.Tensor, u_new: torch.Tensor, tau: float, residual: float
    ) -> tuple[float, str | None]:
        """Implicit Euler's bound against the continuous flow after this step (``nan`` where not certified)."""
        if self.flow is None:
            return math.nan, None
        previous = self.record.flow_bound[-1] if self.record.flow_bound else 0.0
        if previous is None:
            return math.nan, None
        return self.flow.step(previous, energy, u_old, u_new, tau, residual)

    def append(self, tau: float, estimate: float, flow_bound: float) -> None:
        """Record an accepted step (and, with adaptivity, the step the controller chose after it)."""
        self.record.time_steps.append(float(tau))
        self.record.local_error_estimate.append(_json_number(estimate))
        self.record.flow_bound.append(_json_number(flow_bound))
        if self.controller is not None:
            self.record.next_step = float(self._proposed)


def _json_number(value: float) -> float | None:
    """``value``, or ``None`` for ``nan`` (metadata is JSON and compared with ``==``, where ``nan != nan``)."""
    return None if math.isnan(value) else float(value)


def _parts(bound: BoundParts) -> tuple[float, float, float, float]:
    return (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding)

