r"""The time scheme inside an MMS run: step sizes, the scheme's ledger, its estimates, and what a resume needs.

:class:`~mms_manifolds.MinimizingMovement` asks a :class:`SchemeStepper` (the run's scheme settings, never
changed) for each step's anchor and effective step (:meth:`SchemeStepper.plan`) and books the step's residual
with it (:meth:`SchemeStepper.bound`). What the scheme found so far (step sizes, G-norm, estimates) is a
frozen :class:`SchemeRecord` that the driver carries in its state from step to step and writes into the
record's metadata after every step, so that a resumed run continues with the same step sizes, G-norm (and,
after a variable BDF2 step, its G-matrix and resolvent ball) and estimates. The states a scheme needs
(:math:`u_{k-1}`, :math:`u_{k-2}`) are the network at the saved parameters, so the checkpoint's
``thetas`` are the history.

Per step it records (``docs/driver.md``): the time step, the local time-error *estimate* of the scheme
(Milne's device, :meth:`~mms_manifolds.schemes.TimeScheme.local_error_estimate`) and, for implicit
Euler with a convex energy, the certified bound against the continuous flow
(:class:`~mms_manifolds.flow_bound.EulerFlowBound`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .energies import Energy
from .flow_bound import EulerFlowBound
from .ledger import BDF2Ledger, BoundParts, TrackingLedger
from .metrics.base import Metric
from .schemes import BDF2, ImplicitEuler, StepController, StepPlan, TimeScheme
from .step_constants import StepConstants
from .subproblem import Residual
from .variable_bdf2 import DAHLQUIST_FORM, ResolventBall, VariableBDF2Ledger, constant_step_ball

__all__ = ["SchemeRecord", "SchemeStepper", "StartParts"]


@dataclass(frozen=True)
class SchemeRecord:
    """What the scheme found so far, one entry per step (index 0 is step 1); carried in the driver's ``FlowState``.

    Frozen: a step makes a new record (:meth:`SchemeStepper.bound`, :meth:`SchemeStepper.after_step`), and the
    driver writes :meth:`as_metadata` (JSON-ready, the checkpoint form) into the record after every step; a
    resume reads it back once with :meth:`from_metadata`.

    Attributes:
        time_steps: :math:`\\tau_k`.
        local_error_estimate: the scheme's local time-error estimate of step :math:`k`, an estimate, not a bound; the
            first ``estimate_history`` steps' are written after the next step, from its estimate
            (:meth:`~mms_manifolds.schemes.TimeScheme.start_estimates`; ``None`` until then).
        flow_bound: implicit Euler's certified bound on :math:`\\|u_k - u(t_k)\\|_M` against the continuous
            flow from :math:`u_0` (``None`` where not certified).
        g_norm: BDF2's G-norm parts :math:`g_k` after the last step (``None`` before the start).
        next_step: the step the controller chose for the next step (``None`` without adaptivity).
        rejected_steps: steps the controller rejected and retried smaller.
        anchor_bound: BDF2's bound :math:`W_k` on :math:`\\|4e_k - e_{k-1}\\|_M` after the last step (``None`` before
            the start; a checkpoint without it resumes with :math:`4B_k + B_{k-1}`).
        g_form: BDF2's step-dependent G-matrix :math:`(g_{11}, g_{12}, g_{22})` after the last step; ``None`` while every
            step has been constant (Dahlquist's, :data:`~mms_manifolds.variable_bdf2.DAHLQUIST_FORM`).
        ball: the last BDF2 step's :class:`~mms_manifolds.variable_bdf2.ResolventBall` as seven numbers (``None`` after
            the start, or in a checkpoint written before it was kept: a variable step then bounds its anchor by
            :math:`B_k` and :math:`W_k` alone).
    """

    time_steps: tuple[float, ...] = ()
    local_error_estimate: tuple[float | None, ...] = ()
    flow_bound: tuple[float | None, ...] = ()
    g_norm: tuple[float, float, float, float] | None = None
    next_step: float | None = None
    rejected_steps: int = 0
    anchor_bound: float | None = None
    g_form: tuple[float, float, float] | None = None
    ball: tuple[float, ...] | None = None

    @classmethod
    def from_metadata(cls, stored: dict | None) -> SchemeRecord:
        """The record kept in a checkpoint's metadata (:meth:`as_metadata`; a fresh one for ``None``, defaults for
        missing keys). Its form is checked by the result file's rules (:mod:`mms_manifolds.results`)."""
        if stored is None:
            return cls()
        g_norm, g_form, ball = stored.get("g_norm"), stored.get("g_form"), stored.get("ball")
        return cls(
            time_steps=tuple(stored.get("time_steps", ())),
            local_error_estimate=tuple(stored.get("local_error_estimate", ())),
            flow_bound=tuple(stored.get("flow_bound", ())),
            g_norm=None if g_norm is None else tuple(g_norm),
            next_step=stored.get("next_step"),
            rejected_steps=stored.get("rejected_steps", 0),
            anchor_bound=stored.get("anchor_bound"),
            g_form=None if g_form is None else tuple(g_form),
            ball=None if ball is None else tuple(ball),
        )

    def as_metadata(self) -> dict:
        """The checkpoint form: every field, tuples as JSON lists."""
        return {
            "time_steps": list(self.time_steps),
            "local_error_estimate": list(self.local_error_estimate),
            "flow_bound": list(self.flow_bound),
            "g_norm": None if self.g_norm is None else list(self.g_norm),
            "next_step": self.next_step,
            "rejected_steps": self.rejected_steps,
            "anchor_bound": self.anchor_bound,
            "g_form": None if self.g_form is None else list(self.g_form),
            "ball": None if self.ball is None else list(self.ball),
        }

    def filled_to(self, steps: int, tau: float) -> SchemeRecord:
        """This record extended to ``steps`` steps of ``tau``, estimates and flow bounds unknown (a checkpoint of a
        fixed-step implicit Euler run written before schemes existed)."""
        missing = steps - len(self.time_steps)
        return replace(
            self,
            time_steps=(*self.time_steps, *[tau] * missing),
            local_error_estimate=(*self.local_error_estimate, *[None] * missing),
            flow_bound=(*self.flow_bound, *[None] * missing),
        )


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

    It holds the run's settings only and never changes: what the scheme found so far is the frozen
    :class:`SchemeRecord` the driver carries in its state and passes in; a method that adds to it returns the
    new record.

    Args:
        scheme: :class:`~mms_manifolds.schemes.ImplicitEuler` or :class:`~mms_manifolds.schemes.BDF2`.
        tau: the (initial) time step.
        convexity: :math:`\lambda` (``None`` if unknown).
        metric: :math:`M`, for the ledgers and estimates.
        dtype: the states' dtype.
        size: :math:`Nm`, the number of entries of a state.
        certified: whether the run certifies bounds at all.
        time_tolerance: ``None`` for fixed steps, else the local error estimate's tolerance.
        final_time: with ``time_tolerance``, the time the run ends at (``None``: no end time).
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
        final_time: float | None = None,
    ):
        self.scheme, self.tau, self.convexity, self.metric = scheme, tau, convexity, metric
        self.final_time = final_time
        self.dtype, self.size, self.certified = dtype, size, certified
        self.controller = None if time_tolerance is None else StepController(time_tolerance, scheme.order)
        self.flow = None
        if isinstance(scheme, ImplicitEuler) and certified and convexity is not None and convexity >= 0:
            self.flow = EulerFlowBound(convexity)

    @property
    def is_bdf2(self) -> bool:
        return isinstance(self.scheme, BDF2)

    def richardson_start(self, steps_done: int) -> bool:
        """Whether the next step is BDF2's Richardson start (three implicit Euler solves and a projection)."""
        return self.is_bdf2 and self.scheme.start == "richardson" and steps_done == 0

    def next_step(self, record: SchemeRecord) -> float:
        """The time step of the next step: ``tau``, or the controller's choice (capped by BDF2's ratio, and shortened
        to land on ``final_time``: where the remaining time is between one and two such steps, half of it, so that
        the last step is not a sliver far shorter than the one before, which Milne's estimate reads badly)."""
        tau = self.tau if record.next_step is None else record.next_step
        if self.is_bdf2 and record.time_steps:
            tau = min(tau, self.scheme.max_ratio * record.time_steps[-1])
        if self.final_time is not None:
            remaining = self.final_time - math.fsum(record.time_steps)
            if tau >= remaining:
                tau = remaining
            elif tau > remaining / 2:
                tau = remaining / 2
        return tau

    def finished(self, record: SchemeRecord) -> bool:
        """Whether the steps so far reach ``final_time`` (up to :math:`10^{-12}` of it; never without one)."""
        return self.final_time is not None and math.fsum(record.time_steps) >= self.final_time * (1 - 1e-12)

    def plan(self, record: SchemeRecord, states: list[torch.Tensor], tau: float) -> StepPlan:
        """The scheme's step problem from the last states (oldest first) with step ``tau``."""
        return self.scheme.plan(states, record.time_steps, tau)

    def estimate(self, record: SchemeRecord, states: list[torch.Tensor], tau: float) -> float:
        """The local error estimate of a candidate step: ``states`` ends with the new state."""
        return self.scheme.local_error_estimate(states, [*record.time_steps, tau], self.metric)

    def noise(self, record: SchemeRecord, states: list[torch.Tensor], tau: float) -> float:
        """The noise estimate of a candidate step (:meth:`~mms_manifolds.schemes.TimeScheme.noise_estimate`): the share of
        its estimate that the states' roughness makes; ``states`` ends with the new state."""
        return self.scheme.noise_estimate(states, [*record.time_steps, tau], self.metric)

    def accept(self, tau: float, estimate: float, noise: float | None = None) -> tuple[bool, float]:
        r"""``(accepted, proposed)``: the verdict on a step of ``tau`` and the step to take next (or to retry with).

        Always accepted, and ``tau`` kept, at fixed steps; else the controller's verdict and choice, on the time
        part :math:`\max(\eta - \nu, 0)` of the estimate where a noise estimate ``noise`` is given
        (:class:`~mms_manifolds.schemes.StepController`).
        """
        if self.controller is None:
            return True, tau
        return self.controller.accept(estimate, noise), self.controller.next_step(tau, estimate, noise)

    def variable(self, record: SchemeRecord, tau: float) -> bool:
        """Whether ``tau`` differs from the previous step (a variable step)."""
        return bool(record.time_steps) and tau != record.time_steps[-1]

    def euler_ledger(self, tau: float) -> TrackingLedger:
        return TrackingLedger(StepConstants.of(tau, self.convexity), self.metric, self.dtype, self.size)

    def bdf2_ledger(self, tau: float) -> BDF2Ledger:
        return BDF2Ledger(self.convexity, tau, self.metric, self.dtype, self.size)

    def bound(
        self,
        record: SchemeRecord,
        previous: BoundParts,
        residual: Residual,
        u_new: torch.Tensor,
        u_old: torch.Tensor,
        tau: float,
        older_bound: float = math.nan,
    ) -> tuple[BoundParts, str | None, SchemeRecord]:
        """The bound parts after a step of length ``tau`` (not the start), or ``nan`` parts and why not certified;
        and the record with BDF2's G-norm parts after the step (``record`` itself where none were computed).

        ``older_bound`` is :math:`B_{k-1}` (BDF2 caps its G-norm bound by the step's own contraction). BDF2 books
        constant steps with :class:`~mms_manifolds.ledger.BDF2Ledger` while every step has been constant, and every
        later step with :class:`~mms_manifolds.variable_bdf2.VariableBDF2Ledger` (:meth:`variable_bound`).
        """
        if not self.is_bdf2:
            return self.euler_ledger(tau).step(previous, residual, u_new, u_old), None, record
        if not record.time_steps:  # BDF2's implicit Euler start: its bound, then g_1 from it and B_0
            first = self.euler_ledger(tau).step(previous, residual, u_new, u_old)
            problem, record = self.start_g_norm(record, first, previous, tau)
            return first, problem, record
        anchor = record.anchor_bound
        if anchor is None:  # a checkpoint written before W_k was carried
            anchor = 4 * previous.tracking_bound + older_bound
        bounds = (previous.tracking_bound, older_bound, anchor)
        if record.g_form is not None or self.variable(record, tau):
            return self.variable_bound(record, residual, u_new, u_old, tau, bounds)
        try:
            ledger = self.bdf2_ledger(tau)
        except ValueError as error:
            return BoundParts.undefined(), str(error), record
        g_norm, bound, anchor = ledger.step(BoundParts(*record.g_norm), residual, u_new, u_old, bounds)
        ball = constant_step_ball(ledger, residual, u_new, u_old, bounds)
        return bound, None, replace(
            record, g_norm=_parts(g_norm), anchor_bound=_json_number(anchor), ball=tuple(ball.as_list())
        )

    def variable_bound(
        self,
        record: SchemeRecord,
        residual: Residual,
        u_new: torch.Tensor,
        u_old: torch.Tensor,
        tau: float,
        bounds: tuple[float, float, float],
    ) -> tuple[BoundParts, str | None, SchemeRecord]:
        """A BDF2 step after a variable one, or itself variable: the step-dependent G-norm bound
        (:class:`~mms_manifolds.variable_bdf2.VariableBDF2Ledger`), or ``nan`` parts and why not (a step ratio not below
        1 + sqrt(2), a step too long for a negative modulus); and the record with its G-matrix, G-norm and ball."""
        ratio = tau / record.time_steps[-1]
        form = DAHLQUIST_FORM if record.g_form is None else record.g_form
        ball = None if record.ball is None else ResolventBall(*record.ball)
        try:
            ledger = VariableBDF2Ledger(self.convexity, self.metric, self.dtype, self.size)
            booked = ledger.step(tau, ratio, form, BoundParts(*record.g_norm), residual, u_new, u_old, bounds, ball)
        except ValueError as error:
            return BoundParts.undefined(), str(error), record
        return booked.bound, None, replace(
            record,
            g_norm=_parts(booked.g_norm),
            anchor_bound=_json_number(booked.anchor_bound),
            g_form=tuple(float(entry) for entry in booked.form),
            ball=tuple(booked.ball.as_list()),
        )

    def start_g_norm(
        self, record: SchemeRecord, first: BoundParts, initial: BoundParts, tau: float
    ) -> tuple[str | None, SchemeRecord]:
        """The record with :math:`g_1` from the bounds of the first two states; or the reason no G-norm bound exists
        at ``tau``, and ``record`` itself."""
        try:
            ledger = self.bdf2_ledger(tau)
        except ValueError as error:
            return str(error), record
        anchor = 4 * first.tracking_bound + initial.tracking_bound
        return None, replace(record, g_norm=_parts(ledger.start(first, initial)), anchor_bound=_json_number(anchor))

    def flow_step(
        self,
        record: SchemeRecord,
        energy: Energy,
        u_old: torch.Tensor,
        u_new: torch.Tensor,
        tau: float,
        residual: float,
    ) -> tuple[float, str | None]:
        """Implicit Euler's bound against the continuous flow after this step (``nan`` where not certified)."""
        if self.flow is None:
            return math.nan, None
        previous = record.flow_bound[-1] if record.flow_bound else 0.0
        if previous is None:
            return math.nan, None
        return self.flow.step(previous, energy, u_old, u_new, tau, residual)

    def after_step(
        self, record: SchemeRecord, tau: float, estimate: float, flow_bound: float, proposed: float, rejected: int
    ) -> SchemeRecord:
        """The record after an accepted step of ``tau``: its estimate and flow bound, the ``rejected`` retries before
        it, and with adaptivity the step the controller ``proposed`` after it.

        After step :math:`m + 1` (:math:`m` the scheme's ``estimate_history``) the first :math:`m` estimates, whose windows
        hold :math:`u_0` or do not exist, are replaced by :meth:`~mms_manifolds.schemes.TimeScheme.start_estimates` from
        step :math:`m + 1`'s, the first estimate of computed states only (an estimate, never judged by the controller)."""
        time_steps = (*record.time_steps, float(tau))
        estimates = (*record.local_error_estimate, _json_number(estimate))
        if len(time_steps) == self.scheme.estimate_history + 1 and math.isfinite(estimate):
            started = self.scheme.start_estimates(time_steps, estimate)
            estimates = (*(_json_number(value) for value in started), estimates[-1])
        return replace(
            record,
            time_steps=time_steps,
            local_error_estimate=estimates,
            flow_bound=(*record.flow_bound, _json_number(flow_bound)),
            next_step=record.next_step if self.controller is None else float(proposed),
            rejected_steps=record.rejected_steps + rejected,
        )


def _json_number(value: float) -> float | None:
    """``value``, or ``None`` for ``nan`` (metadata is JSON and compared with ``==``, where ``nan != nan``)."""
    return None if math.isnan(value) else float(value)


def _parts(bound: BoundParts) -> tuple[float, float, float, float]:
    """The four parts, plain floats in :class:`BoundParts` order (the record's JSON form)."""
    return (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding)
