r"""The minimizing movement scheme driver and its inexactness ledger.

Each step solves :math:`u_{k+1} \approx \arg\min_u E(u) + \|u - u_k\|_M^2/(2\tau)` over the network's
increment manifold with an inner solver, then books the a-posteriori residual
:math:`\rho_k = \|M^{-1}\nabla F_k(u_{k+1})\|_M` into the tracking bound (:mod:`mms_manifolds.ledger`, docs/driver.md)

.. math:: B_{k+1} = L B_k + \rho_k/\mu + \delta_k,\qquad L = \frac{1}{1 + \tau\lambda},\quad \mu = \frac1\tau + \lambda,

(:math:`\delta_k` a floating-point allowance) which bounds the distance :math:`\|u_k - v_k\|_M` to the exact
MMS iterates :math:`v_k` started from :math:`v_0`. It is certified only when the energy states its
convexity modulus :math:`\lambda`, and withdrawn when a step contradicts it. Checkpoints are locked,
fingerprinted and validated (:mod:`mms_manifolds.storage`, :mod:`mms_manifolds.fingerprint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import resume_proof
from ._checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_flag,
    check_held_tensors,
    check_instance,
    check_integer,
    check_positive_float,
    check_shape,
)
from .budget import TrajectoryBudget
from .convergence import UnconvergedStepWarning, far_from_converged
from .energies import Energy, L2Regression
from .fingerprint import _digest, trajectory_fingerprint
from .interrupts import announce_resume, report_interruption
from .ledger import BoundParts
from .linalg import UnconvergedSolveCount
from .manifold import IncrementManifold
from .metrics.base import Metric
from .parametrizations.base import Parametrization
from .progress import progress_to_stderr
from .results import MMSResult, StepRecord
from .run_settings import RunSettings
from .schemes import ImplicitEuler, TimeScheme
from .solvers.base import InnerResult, InnerSolver, StopReason
from .solvers.state import SolverState
from .step_constants import StepConstants
from .storage import WriterLock, resolve_path
from .subproblem import RESIDUAL_PARTS, MMSSubproblem, Residual
from .time_stepping import SchemeRecord, SchemeStepper, StartParts

__all__ = ["MMSDivergenceError", "MinimizingMovement", "exact_trajectory"]

logger = logging.getLogger("mms_manifolds")


class MMSDivergenceError(RuntimeError):
    """An inner solve failed (non-finite values, no progress, or a cost increase) and retries did not help.

    The run stopped with its last good state kept.

    Attributes:
        step: the MMS step (1-based) whose inner solve failed.
        iteration: the inner iteration at which the failure appeared.
        reason: the inner solver's :class:`~mms_manifolds.solvers.StopReason`.
        retries: how many fallback solvers were tried.
        result: the run's record up to the last good step (also in the checkpoint, if any).
    """

    def __init__(self, step: int, iteration: int | None, reason: StopReason, retries: int, result: MMSResult):
        super().__init__(
            f"MMS step {step}: the inner solver failed at iteration {iteration} ({reason.value}) "
            f"after {retries} retries; the last good state (step {step - 1}) is kept in the result"
        )
        self.step, self.iteration, self.reason, self.retries, self.result = step, iteration, reason, retries, result


def exact_trajectory(energy: Energy, metric: Metric, u0: torch.Tensor, tau: float, steps: int) -> torch.Tensor:
    r"""The exact MMS iterates :math:`v_{k+1} = \operatorname{prox}_{\tau E}(v_k)` on :math:`H_N`, shape ``(steps + 1, N, m)``.

    Raises:
        ValueError: the energy has no exact proximal map, ``tau <= 0`` or ``steps < 0``.
    """
    tau = check_positive_float("tau", tau)
    check_instance("energy", energy, Energy)
    check_instance("metric", metric, Metric)
    check_instance("u0", u0, torch.Tensor)
    if not energy.has_prox:
        raise ValueError(f"{type(energy).__name__} has no exact proximal map: pass a reference trajectory instead")
    steps = check_integer("steps", steps, minimum=0)
    states = [u0]
    for _ in range(steps):
        states.append(energy.prox(states[-1], tau, metric))
    return torch.stack(states)


def _check_flow_arguments(parametrization: object, energy: object, metric: object) -> None:
    """Types first, then every tensor the energy holds against the model, then one evaluation of the energy.

    The metric's fit to the node count is checked by :class:`IncrementManifold`.
    """
    if not isinstance(parametrization, Parametrization):
        raise TypeError(f"parametrization must be a Parametrization, got {type(parametrization).__name__}")
    if not isinstance(energy, Energy):
        hint = ": wrap a function u -> E(u) in CallableEnergy(function)" if callable(energy) else ""
        raise TypeError(f"energy must be an Energy, got {type(energy).__name__}{hint}")
    if not isinstance(metric, Metric):
        raise TypeError(
            f"metric must be a Metric (the flow's metric, e.g. L2Metric(weights)), got {type(metric).__name__}"
        )
    options = {"dtype": parametrization.dtype, "device": parametrization.device}
    check_held_tensors("metric", metric, **options, into=(Metric,))
    check_held_tensors("energy", energy, **options, into=(Energy, Metric))
    energy.check_evaluates(parametrization.value(parametrization.initial_point()))


class MinimizingMovement:
    r"""Run the neural MMS :math:`\theta_{k+1} = \text{solver}(F_k, \theta_k)` and keep its error ledger.

    Args:
        parametrization: the network :math:`\phi`.
        energy: :math:`E`.
        metric: :math:`M`, the metric of the flow (and of the increment manifold).
        tau: time step :math:`\tau > 0`; :math:`\tau < 1/|\lambda|` for semi-convex energies.
        damping: the increment manifold's damping (``"auto"`` or a number; see :class:`IncrementManifold`).
        solve_mode: the manifold's solve mode.
        scheme: the time scheme (:mod:`mms_manifolds.schemes`): :class:`~mms_manifolds.schemes.ImplicitEuler`
            (default, the minimizing movement) or :class:`~mms_manifolds.schemes.BDF2` (second order).

    Raises:
        TypeError: an argument of the wrong type (a plain function as ``energy``, ``metric=None``), or a tensor
            the energy or metric holds (target, weights, stiffness) in another dtype than the model.
        ValueError: ``tau`` not positive and finite or too large for the energy's convexity; the energy
            cannot be evaluated on the network's values (a target with the wrong number of rows), returns
            a non-scalar, or the metric has another node count.

    Examples:
        >>> import torch
        >>> from mms_manifolds import GaussNewton, L2Metric, L2Regression, MinimizingMovement, TorchParametrization
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> x = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(-1)
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        >>> metric = L2Metric(torch.full((32,), 2 / 32, dtype=torch.float64))
        >>> flow = MinimizingMovement(TorchParametrization(net, x), L2Regression(x.abs(), metric), metric, tau=0.2)
        >>> result = flow.run(flow.parametrization.initial_point(), steps=3, solver=GaussNewton(max_iterations=3))
        >>> bool((result.trajectory_error <= result.tracking_bound + 1e-12).all())
        True
    """

    def __init__(
        self,
        parametrization: Parametrization,
        energy: Energy,
        metric: Metric,
        tau: float,
        damping: float | str = "auto",
        solve_mode: object = "auto",
        scheme: TimeScheme | None = None,
    ):
        _check_flow_arguments(parametrization, energy, metric)
        scheme = ImplicitEuler() if scheme is None else scheme
        if not isinstance(scheme, TimeScheme):
            raise TypeError(f"scheme must be a TimeScheme (ImplicitEuler() or BDF2()), got {type(scheme).__name__}")
        self.scheme = scheme
        self.parametrization = parametrization
        self.energy = energy
        self.metric = metric
        self.manifold = IncrementManifold(parametrization, metric, damping=damping, solve_mode=solve_mode)
        # after the manifold, which refuses a numerically singular metric before its convexity is asked
        self.constants = StepConstants.of(tau, energy.convexity(metric), f"{type(energy).__name__}.convexity")
        r""":math:`\tau`, the energy's convexity :math:`\lambda` in :math:`M`, :math:`L` and :math:`\mu`: computed once per flow."""

    @property
    def tau(self) -> float:
        """:math:`\tau`."""
        return self.constants.tau

    @property
    def convexity(self) -> float | None:
        r""":math:`\lambda`, the energy's convexity modulus in :math:`M` (``None`` if unknown)."""
        return self.constants.convexity

    def step_problem(self, anchor: torch.Tensor, tau: float | None = None) -> MMSSubproblem:
        r"""The step :math:`\min_\theta E(\phi(\theta)) + \|\phi(\theta) - a\|_M^2/(2\tau)` from any anchor :math:`a`.

        With the flow's manifold, energy and convexity modulus (not asked of the energy again). A multistep
        scheme calls it with its own anchor and step size, e.g. BDF2: :math:`a = (4u_k - u_{k-1})/3`,
        :math:`2\tau/3`.

        Args:
            anchor: :math:`a`, node values of shape ``(N, m)``.
            tau: the step size; ``None`` for the flow's :math:`\tau`.
        """
        constants = self.constants if tau is None else StepConstants.of(tau, self.convexity)
        return MMSSubproblem(self.manifold, self.energy, constants.tau, anchor, constants.convexity)

    def subproblem(self, theta: torch.Tensor) -> MMSSubproblem:
        r"""The flow's MMS step from :math:`\theta_k`: :meth:`step_problem` anchored at :math:`u_k = \phi(\theta_k)`."""
        return self.step_problem(self.parametrization.value(self.manifold.check_point(theta)))

    @property
    def certified(self) -> bool:
        """Whether the tracking bound is certified: the energy's convexity modulus is known and :math:`M` is positive definite."""
        return self.convexity is not None and self.metric.positive_definite

    def _notes(self, resampled: bool) -> list[str]:
        notes = []
        if self.convexity is None:
            notes.append("convexity unknown: tracking bounds are not computed (nan)")
        if not self.metric.positive_definite:
            notes.append(
                "the metric is only semi-definite on the jet space: M^{-1} grad F_k does not exist, so only the "
                "tangential residual is computed; residual_total, residual_normal and the bounds are nan"
            )
        if resampled:
            notes.append(
                "nodes resampled every step: each step is a different discrete problem and its residual a "
                "quadrature estimate on that step's nodes, so no tracking bound against a fixed discrete flow "
                "is certified (bounds nan); the energy column is each step's energy on its own nodes"
            )
        return notes

    def _settings(
        self,
        steps: int,
        solver: InnerSolver,
        budget: TrajectoryBudget | None,
        resampled: bool,
        theta0: torch.Tensor,
        time_tolerance: float | None = None,
        certify: bool = True,
        final_time: float | None = None,
        residual: str = "split",
    ) -> RunSettings:
        fingerprint = trajectory_fingerprint(
            self.parametrization,
            self.energy,
            self.metric,
            self.tau,
            self.manifold.damping,
            self.manifold.selected_solve_mode(),
            solver,
            theta0,
        )
        if not isinstance(self.scheme, ImplicitEuler) or time_tolerance is not None:
            until = "" if final_time is None else f", final_time={final_time!r}"  # runs without one keep their print
            fingerprint["scheme"] = _digest(f"{self.scheme!r}, time_tolerance={time_tolerance!r}{until}")
        return RunSettings(
            tau=self.tau,
            convexity=self.convexity,
            lipschitz=self.constants.lipschitz,
            strong_convexity=self.constants.strong_convexity,
            certified=self.certified and not resampled and certify,
            resampled=resampled,
            solver=repr(solver),
            steps=int(steps),
            num_parameters=self.parametrization.num_parameters,
            damping=self.manifold.damping,
            solve_mode=self.manifold.solve_mode_name(),
            solve_mode_reason=self.manifold.solve_choice.reason,
            budget=None if budget is None else budget.tolerance,
            residual=residual,
            notes=tuple(
                self._notes(resampled)
                + ([] if certify else [CERTIFY_OFF_NOTE])
                + ([TOTAL_RESIDUAL_NOTE] if residual == "total" else [])
            ),
            fingerprint=fingerprint,
        )

    def _check_reference(self, reference: object, steps: int) -> torch.Tensor | None:
        if reference is None:
            return None
        options = {"dtype": self.parametrization.dtype, "device": self.parametrization.device}
        reference = as_tensor("reference", reference, **options)
        check_shape("reference", reference, (steps + 1, *self.parametrization.output_shape))
        return check_finite("reference", reference)

    @report_interruption
    def run(
        self,
        theta0: torch.Tensor,
        steps: int,
        solver: InnerSolver,
        *,
        budget: TrajectoryBudget | None = None,
        reference: torch.Tensor | None = None,
        checkpoint: str | Path | None = None,
        progress: bool = False,
        certify: bool = True,
        on_failure: str = "retry",
        max_retries: int = 3,
        diagnostics: bool = False,
        resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None = None,
        time_tolerance: float | None = None,
        final_time: float | None = None,
        residual: str = "split",
    ) -> MMSResult:
        r"""Take ``steps`` MMS steps from ``theta0`` with ``solver``; return the per-step record.

        Args:
            theta0: initial parameters, shape ``(p,)``.
            steps: number of MMS steps :math:`K \ge 1`.
            solver: an :class:`~mms_manifolds.solvers.InnerSolver`.
            budget: a :class:`TrajectoryBudget`; each step's tolerance becomes :math:`\mu\eta` (needs
                a known convexity modulus).
            reference: exact iterates :math:`v_k`, shape ``(steps + 1, N, m)``. Without it, an energy
                with an exact prox gives :math:`v_k` from :math:`v_0 = u_0` on the fly.
            checkpoint: a file path; the record is written there atomically after every step, and a
                run started with an existing checkpoint resumes from its last step and ends with the same
                numbers as an uninterrupted run. The run holds the path's writer lock throughout: a second
                run on the same path is refused (:class:`~mms_manifolds.storage.CheckpointInUseError`).
                A checkpoint written for another problem (any part of the run's fingerprint: network,
                nodes, energy and its data, metric, tau, damping, solve mode, solver settings, dtype,
                theta0) is refused with the parts that differ named. ``steps`` may grow between runs
                (without a budget); a checkpoint with more steps than ``steps`` is refused.
            progress: print one line per step to standard error, and inside each step one line per inner
                iteration (cost, residual where measured, CG iterations, seconds; :mod:`mms_manifolds.progress`).
            certify: ``False``: do not compute the step residuals nor the tracking bound (every residual and
                bound column ``nan``, ``certified`` false, a note in ``metadata["notes"]``); the solvers still
                measure what their own stopping tests need. A run that wants speed over the bound says so.
            residual: what each step books of its residual :math:`\rho_k = \|M^{-1}\nabla F_k(u_{k+1})\|_M`
                (:data:`~mms_manifolds.subproblem.RESIDUAL_PARTS`). ``"split"`` (default): :math:`\rho_k` and its
                tangential (inner-solver) and normal (approximation) parts, which apportion the bound into
                ``bound_inexactness`` and ``bound_approximation``; a linearisation at :math:`u_{k+1}` (the Jacobian
                or the layer factors and a factorisation in the direct modes, a CG solve with :math:`G` in the
                matrix-free mode) unless the solver measured it there itself (a stopping test, Gauss–Newton's
                ``final_residual``). ``"total"``: :math:`\rho_k`
                alone, one solve with :math:`M`: the same certified ``tracking_bound`` (its recursion and checks
                need no split; ``docs/theory.md``, section 5), while ``residual_tangential``, ``residual_normal``,
                ``bound_inexactness`` and ``bound_approximation`` are ``nan`` (not computed), the unconverged-step
                test (which reads the tangential residual) does not run, and a note says so. Never chosen by
                solver: ``"split"`` stays the default for every solver (why: ``docs/performance.md``). It needs
                ``certify=True``, no ``budget`` (the budget's tolerances are tangential residuals) and a positive
                definite metric (else :math:`\rho_k` does not exist); a checkpoint is resumed only with the same
                choice.
            on_failure: what a failed inner solve (stop reason ``NON_FINITE``, ``NO_PROGRESS`` or
                ``COST_INCREASE``; the solver has kept its last good iterate) leads to: ``"retry"``
                solves the step again from :math:`\theta_k` with ``solver.fallback()`` (more damping,
                a smaller rate), up to ``max_retries`` times, then raises; ``"raise"`` raises at once.
            max_retries: fallback attempts per step with ``on_failure="retry"``.
            diagnostics: record the rank and smallest singular value of :math:`M^{1/2}J(\theta_k)` per
                step (one SVD each). Steps where :math:`J` is rank deficient are listed in
                ``metadata["rank_deficient_steps"]`` with a note: the paper's convergence guarantees for the
                inner solve assume a locally non-degenerate Jacobian; the tracking bound does not (it is
                a-posteriori) and still holds.
            resample: fresh nodes every step, as mesh-free codes do: ``resample(k)`` returns the
                ``(parametrization, energy, metric)`` of step :math:`k` (1-based) on new nodes, for the same
                network and parameters. Step :math:`k` is then anchored at :math:`u_{k-1}` evaluated on step
                :math:`k`'s nodes. It must be a deterministic function of :math:`k` (seed its sampler with
                :math:`k`) so that a resumed run repeats an uninterrupted one. The tangential residual is
                still exact for each step's discrete problem, but the steps are different problems, so the
                tracking bound is not certified (``nan``, stated in ``metadata["notes"]``) and no
                ``reference`` may be given.
            time_tolerance: adaptive steps: after each step the scheme's local time-error estimate (Milne's
                device, an estimate) chooses the next step so that it stays below this tolerance (in the
                metric's norm); a step above it is solved again with a smaller step. The first step is the smaller
                of ``tau`` and the scheme's step from the tolerance
                (:meth:`~mms_manifolds.schemes.TimeScheme.initial_step`; ``tau`` itself where the metric is only
                semi-definite, which has no :math:`M^{-1}`).
                ``None`` (default): fixed steps. Both bounds stay certified: implicit Euler's (each step with its
                own :math:`L`, :math:`\mu`) and variable-step BDF2's (a G-matrix per step,
                :class:`~mms_manifolds.variable_bdf2.VariableBDF2Ledger`, for step ratios below :math:`1 + \sqrt2`).
            final_time: with ``time_tolerance``: the run ends at this time, its last step shortened to land on it,
                and ``steps`` is the most steps it may take (short of it, a ``RuntimeWarning`` says where it
                stopped; a resume with more ``steps`` continues). ``None``: ``steps`` steps.

        Returns:
            MMSResult. A step whose inner solve stopped at its iteration budget far from converged (its
            tangential residual 10 times the budget's tolerance, or 10 times the median of the earlier
            steps') gives an :class:`~mms_manifolds.convergence.UnconvergedStepWarning` (and a log record) and is
            listed in ``metadata["unconverged_steps"]``. Certification is withdrawn during the run (``certified`` becomes ``False``, every
            bound ``nan``, ``metadata["certification_withdrawn"]`` says where and why) when a step shows
            less curvature than the declared convexity modulus, or a quantity the bound uses is not finite.

        Raises:
            TypeError: ``checkpoint`` is not a path, or ``solver`` not an inner solver.
            ValueError: ``steps < 1``, bad ``theta0``/``reference``, a budget without convexity, a
                checkpoint written for another problem, or an energy whose exact prox is not finite.
            ResultFileError: the checkpoint file is malformed, edited or truncated.
            CheckpointInUseError: another run is writing the checkpoint.
            MMSDivergenceError: an inner solve failed and retries (if any) did not help; it names the
                step and the iteration, and carries the record up to the last good step.
            KeyboardInterrupt: Ctrl-C during the run, raised again once the checkpoint is released: its message
                is one line with the steps the checkpoint holds, its path and the call that resumes, and its
                attributes ``checkpoint``, ``steps_saved``, ``steps`` say the same (:mod:`mms_manifolds.interrupts`).
                A resumed run says on standard error that it resumed from step :math:`k`.
        """
        steps = check_integer("steps", steps, minimum=1)
        max_retries = check_integer("max_retries", max_retries, minimum=0)
        progress, diagnostics, time_tolerance = self._check_run_options(
            solver, budget, certify, on_failure, progress, diagnostics, resample, reference, time_tolerance
        )
        self._check_residual_parts(residual, certify, budget)
        final_time = _check_final_time(final_time, time_tolerance)
        path = None if checkpoint is None else resolve_path(checkpoint, "checkpoint")
        theta0 = self.manifold.check_point(theta0, "theta0")
        if not math.isfinite(float(self.energy.value(self.parametrization.value(theta0)))):
            raise ValueError("theta0 gives a non-finite energy: the flow cannot start there")
        reference = self._check_reference(reference, steps)
        settings = self._settings(
            steps, solver, budget, resample is not None, theta0, time_tolerance, certify, final_time, residual
        )
        source = resume_proof.reference_source(reference, resample, self.energy.has_prox)
        constants = self.constants
        step_tolerance = (
            None if budget is None else budget.step_tolerance(constants.lipschitz, constants.strong_convexity, steps)
        )
        with contextlib.ExitStack() as stack:
            stack.enter_context(progress_to_stderr(progress))
            lock = None if path is None else stack.enter_context(WriterLock(path))
            result, state, stepper = self._resume_or_start(
                theta0, reference, settings, path, lock, resample, source, time_tolerance, solver, final_time
            )
            exact = reference is None and resample is None and self.energy.has_prox  # v_k from the prox
            loop = _Loop(
                solver, result, step_tolerance, on_failure, max_retries, resample, reference, exact, certify,
                diagnostics, stepper, residual,
            )
            while state.steps_done < steps and not stepper.finished(state.scheme_record):
                state, outcome = self._advance(state, loop)  # the step: solve, book the bound, the next state
                _write_step(result, outcome, state.scheme_record, source)  # the record is written, never read here
                if path is not None:
                    result.save(path, lock=lock)
                if progress:
                    _print_progress(outcome, steps)
            if final_time is not None and not stepper.finished(state.scheme_record):
                _warn_short_of(final_time, state.scheme_record, steps)
            if budget is not None:
                result.metadata["predicted_inner_iterations"] = _predicted_iterations(result, step_tolerance)
                _check_budget_met(result, budget)
                if path is not None:
                    result.save(path, lock=lock)
        return result

    def _check_run_options(
        self,
        solver: object,
        budget: object,
        certify: object,
        on_failure: object,
        progress: object,
        diagnostics: object,
        resample: object,
        reference: object,
        time_tolerance: object,
    ) -> tuple[bool, bool, float | None]:
        """Refuse options of the wrong kind or that do not combine; return ``progress, diagnostics, time_tolerance``."""
        check_choice("on_failure", on_failure, ("retry", "raise"))
        progress, diagnostics = check_flag("progress", progress), check_flag("diagnostics", diagnostics)
        if budget is not None:
            check_instance("budget", budget, TrajectoryBudget, ": build one with TrajectoryBudget(tolerance)")
        if not isinstance(solver, InnerSolver):
            raise TypeError(f"solver must be an InnerSolver, got {type(solver).__name__}")
        if budget is not None and not self.certified:
            raise ValueError("a TrajectoryBudget needs the energy's convexity modulus and a positive definite metric")
        if not isinstance(certify, bool):
            raise TypeError(f"certify must be True or False, got {certify!r}")
        if budget is not None and not certify:
            raise ValueError("a TrajectoryBudget needs the step residuals: it cannot be combined with certify=False")
        if resample is not None and not callable(resample):
            raise TypeError(f"resample must be a callable step -> (parametrization, energy, metric), got {resample!r}")
        if resample is not None and (reference is not None or budget is not None):
            raise ValueError(
                "resample cannot be combined with a reference or a budget: resampled steps have no fixed flow"
            )
        if time_tolerance is not None:
            time_tolerance = check_positive_float("time_tolerance", time_tolerance)
        if (time_tolerance is not None or not isinstance(self.scheme, ImplicitEuler)) and (
            resample is not None or budget is not None or reference is not None
        ):
            raise ValueError(
                "a BDF2 scheme or adaptive steps (time_tolerance) cannot be combined with resample, a budget or a "
                "reference: the budget is derived for fixed-step implicit Euler, and the reference iterates are "
                "computed with the run's own steps (from the energy's prox)"
            )
        return progress, diagnostics, time_tolerance

    def _check_residual_parts(self, residual: object, certify: bool, budget: TrajectoryBudget | None) -> None:
        """Refuse a ``residual`` that is not one of :data:`~mms_manifolds.subproblem.RESIDUAL_PARTS`, or ``"total"`` where
        nothing is booked (``certify=False``), a budget needs the tangential residuals, or no total exists (a
        semi-definite metric)."""
        check_choice("residual", residual, RESIDUAL_PARTS)
        if residual == "total" and not self.metric.positive_definite:
            raise ValueError(
                "residual='total' books rho_k = |M^{-1} grad F_k|_M, which does not exist for a metric that is only "
                "semi-definite (its runs book the tangential residual alone): use residual='split'"
            )
        if residual == "total" and not certify:
            raise ValueError(
                "residual='total' chooses what a certified run books; certify=False books no residual: drop one"
            )
        if residual == "total" and budget is not None:
            raise ValueError(
                "a TrajectoryBudget needs the tangential residuals (its step tolerances and the check that it was "
                "met read them): it cannot be combined with residual='total'"
            )

    def _advance(self, state: FlowState, loop: _Loop) -> tuple[FlowState, _StepOutcome]:
        r"""Step :math:`k+1` from ``state``: solved by the scheme, its bound booked; the next state and what to record.

        Reads nothing from the record: :math:`\theta_k`, the solver's warm start, :math:`B_k`, :math:`B_{k-1}`,
        the exact states and the scheme's record (step sizes, G-norm) come from ``state``; ``loop.stepper`` holds
        the scheme's settings only.
        """
        step, stepper, start = state.steps_done + 1, loop.stepper, time.perf_counter()
        base = self._step_subproblem(loop.resample, step, state.theta)  # implicit Euler's step from u_k
        energy, manifold, previous = base.energy, base.manifold, base.anchor
        solve = _Solve(
            loop.solver, loop.result, step, loop.step_tolerance, loop.on_failure, loop.max_retries, base,
            state.theta, state.solver_state, loop.residual,
        )
        if stepper.richardson_start(state.steps_done):
            tau = stepper.next_step(state.scheme_record)
            solved = self._richardson_start(solve, stepper, previous, tau, state.bound, loop.certify)
        else:
            history = state.thetas[-self.scheme.noise_history : -1]
            states = [*(manifold.parametrization.value(theta) for theta in history), previous]
            solved = self._scheme_step(solve, stepper, state.scheme_record, states, loop.certify)
        inner, residual, u, tau = solved.inner, solved.residual, solved.u, solved.tau
        exact_state = loop.reference[step] if loop.reference is not None else None
        if loop.exact:
            exact_state = self._exact_step(state, step, tau)
        bound, withdrawal, scheme_record = BoundParts.undefined(), None, state.scheme_record
        if state.certified:
            bound, withdrawal, scheme_record = self._book_bound(stepper, state, solved, previous, energy, exact_state)
        flow_bound, problem = stepper.flow_step(state.scheme_record, energy, previous, u, tau, residual.total)
        if problem is not None and state.certified and withdrawal is None:
            withdrawal = problem
        report = manifold.diagnostics(inner.point) if loop.diagnostics else None
        record = StepRecord(
            energy=float(energy.value(u)),
            inner_iterations=inner.iterations,
            retries=solved.retries,
            wall_time=time.perf_counter() - start,
            initial_residual=_initial_residual(inner),
            residual_total=residual.total,
            residual_tangential=residual.tangential,
            residual_normal=residual.normal,
            tracking_bound=bound.tracking_bound,
            bound_inexactness=bound.inexactness,
            bound_approximation=bound.approximation,
            bound_rounding=bound.rounding,
            trajectory_error=math.nan if exact_state is None else float(self.metric.norm(u - exact_state)),
            step_tolerance=math.nan if loop.step_tolerance is None else loop.step_tolerance,
            jacobian_rank=math.nan if report is None else float(report.numerical_rank),
            jacobian_sigma_min=math.nan if report is None else report.sigma_min,
            unconverged_solves=inner.unconverged_solves + solved.unconverged_solves,
        )
        certified = state.certified and withdrawal is None
        scheme_record = stepper.after_step(
            scheme_record, tau, solved.estimate, flow_bound if certified else math.nan, solved.proposed, solved.rejected
        )
        following = state.after(
            inner.point, inner.state, bound, exact_state, float(record.residual_tangential), certified, self.scheme,
            scheme_record,
        )
        stop_reason = inner.stop_reason.name.lower()
        outcome = _StepOutcome(
            step, record, inner.point, stop_reason, inner.state, exact_state, u, withdrawal,
            report is not None and not report.full_column_rank,
            far_from_converged(
                stop_reason, list(following.tangential_residuals), float(record.step_tolerance), inner.cost_history
            ),
            tuple(inner.extra.get("uncertified_iterations", ())),
        )
        return following, outcome

    def _scheme_record(self, result: MMSResult, time_tolerance: float | None) -> SchemeRecord:
        """The scheme's record so far: the checkpoint's, one written before schemes existed, or a fresh one.

        Raises:
            ValueError: a resumed BDF2 or adaptive run whose checkpoint lacks the scheme's history for its steps
                (step sizes and G-norm: without them the next step is not the one an uninterrupted run takes).
        """
        record = SchemeRecord.from_metadata(result.metadata.get("scheme_record"))
        if len(record.time_steps) == result.steps_done:
            return record
        if isinstance(self.scheme, ImplicitEuler) and time_tolerance is None:  # fixed steps need no history
            return record.filled_to(result.steps_done, self.tau)
        raise ValueError(
            f"the checkpoint holds {result.steps_done} steps but the time scheme's history of "
            f"{len(record.time_steps)} (step sizes, G-norm): {self.scheme!r} cannot continue it as an uninterrupted "
            "run would"
        )

    def _scheme_step(
        self,
        solve: _Solve,
        stepper: SchemeStepper,
        record: SchemeRecord,
        states: list[torch.Tensor],
        certify: bool,
    ) -> _Solved:
        """One step of the scheme from the last states (oldest first): solved, estimated, retried smaller if rejected;
        then its residual as the run books it (``solve.parts``; ``nan`` with ``certify=False``)."""
        tau, rejected = stepper.next_step(record), 0
        while True:
            plan = stepper.plan(record, states[-self.scheme.history :], tau)
            subproblem = solve.problem(plan.anchor, plan.tau)
            inner, retries = solve(subproblem)
            candidate = [*states, subproblem.node_values(inner.point)]
            estimate = stepper.estimate(record, candidate, tau)
            accepted, proposed = stepper.accept(tau, estimate, stepper.noise(record, candidate, tau))
            if accepted:
                break
            tau, rejected = proposed, rejected + 1
        with UnconvergedSolveCount(f"MMS step {solve.step} residual") as unconverged:
            residual = subproblem.residual(inner.point, solve.parts) if certify else Residual.not_computed()
        u = subproblem.node_values(inner.point)
        return _Solved(inner, retries, residual, u, tau, estimate, proposed, rejected, unconverged.count)

    def _richardson_start(
        self, solve: _Solve, stepper: SchemeStepper, u0: torch.Tensor, tau: float, previous: BoundParts,
        certify: bool = True,
    ) -> _Solved:
        r"""BDF2's first step :math:`u_1 = \Pi(2w - z)`: :math:`w` two implicit Euler steps of :math:`\tau/2`, :math:`z` one of :math:`\tau`.

        :math:`\Pi` is the network's fit to the combination (the step problem of the regression energy
        :math:`\tfrac12\|u - (2w - z)\|_M^2` anchored there), warm-started at :math:`w`'s parameters. The bound
        pieces are booked with implicit Euler's ledger; the projection's distance is measured. The solved
        step holds the fit's inner result (its iterations the sum of the four solves) and residual, and the
        pieces; ``previous`` is :math:`B_0`. With ``certify=False`` no residual is computed (all ``nan``) and there
        are no pieces: the same four solves, no bound.

        The solver state handed to step 2 (its warm start) is the fit's, unless the fit reproduced the
        combination to rounding (:func:`_fitted_to_rounding`): then its last iterations judged steps by a cost at
        its rounding floor, Levenberg–Marquardt's damping grew on that noise, and step 2 started with it crawled
        (linear model on the heat 2-D grid, Gauss–Newton at 4 or 8 iterations: step 2's error 1.1e-3 and 3.8e-2
        relative), so it gets the state of :math:`w`'s second half step, a flow step (1e-16 there;
        ``tests/test_time_order.py``). Elsewhere the fit's state is kept, so the quick flows' runs are unchanged.
        At 5 Gauss–Newton iterations per solve the standard heat 2-D network's BDF2 run depends on this warm
        start through single unconverged steps (tracking error at 40 steps 1.0e-5 with the full step's state,
        5.8e-4 with the fit's or the half step's); at 10 iterations one step of its ten order runs stopped at
        its budget, at 10 times the median residual, and BDF2's slopes are 1.86–2.02 (``benchmarks/time_order.py``).
        """
        half_ledger, full_ledger = stepper.euler_ledger(tau / 2), stepper.euler_ledger(tau)
        iterations, retries_total, problems = 0, 0, []
        with UnconvergedSolveCount(f"MMS step {solve.step} residual") as unconverged:

            def euler(anchor, step_tau, theta, state):
                nonlocal iterations, retries_total
                subproblem = solve.problem(anchor, step_tau)
                inner, retries = solve(subproblem, theta, state)
                residual = subproblem.residual(inner.point, solve.parts) if certify else Residual.not_computed()
                if certify and not all(math.isfinite(value) for value in residual.booked()):
                    problems.append(f"a residual of BDF2's Richardson start is not finite ({residual.total})")
                iterations, retries_total = iterations + inner.iterations, retries_total + retries
                return inner, residual, subproblem.node_values(inner.point)

            first, first_residual, u_first = euler(u0, tau / 2, solve.theta, solve.state)
            half, half_residual, u_half = euler(u_first, tau / 2, first.point, first.state)
            full, full_residual, u_full = euler(u0, tau, solve.theta, half.state)
            combination = 2 * u_half - u_full
            fit = MMSSubproblem(solve.manifold, L2Regression(combination, solve.manifold.metric), tau, combination, 1.0)
            inner, retries = solve(fit, half.point, full.state)
            residual = fit.residual(inner.point, solve.parts) if certify else Residual.not_computed()
        iterations, retries_total = iterations + inner.iterations, retries_total + retries
        u1 = fit.node_values(inner.point)
        handed_on = half.state if _fitted_to_rounding(u1, combination, self.metric) else inner.state  # (docstring)
        inner = dataclasses.replace(inner, iterations=iterations, state=handed_on)
        if not certify:
            return _Solved(inner, retries_total, residual, u1, tau, math.nan, tau, 0, unconverged.count)
        halves = half_ledger.step(half_ledger.step(previous, first_residual, u_first, u0), half_residual, u_half, u_first)
        pieces = StartParts(
            halves,
            full_ledger.step(previous, full_residual, u_full, u0),
            float(self.metric.norm(u1 - combination)),
            problems[0] if problems else None,
        )
        return _Solved(inner, retries_total, residual, u1, tau, math.nan, tau, 0, unconverged.count, pieces)

    @property
    def _state_size(self) -> int:
        """:math:`Nm`, the number of entries of a state."""
        return int(math.prod(self.parametrization.output_shape))

    def _exact_step(self, state: FlowState, step: int, tau: float) -> torch.Tensor:
        r"""The scheme's exact step from the exact iterates so far (implicit Euler: :math:`\operatorname{prox}_{\tau E}(v_{k-1})`).

        A non-finite prox is an error, not a silent ``nan``.
        """
        history = list(state.references[-self.scheme.history :])
        exact = self.scheme.exact_step(self.energy, self.metric, history, state.scheme_record.time_steps, tau)
        if not bool(torch.isfinite(exact).all()):
            raise ValueError(
                f"{type(self.energy).__name__}.prox returned non-finite values at MMS step {step}: the exact "
                "reference (and the trajectory error against it) cannot be computed"
            )
        return exact

    def _book_bound(
        self,
        stepper: SchemeStepper,
        state: FlowState,
        solved: _Solved,
        anchor: torch.Tensor,
        energy: Energy,
        exact_state: torch.Tensor | None = None,
    ) -> tuple[BoundParts, str | None, SchemeRecord]:
        r"""The bound :math:`B_{k+1}` of the ``solved`` step after ``state`` from the scheme's ledger, and ``None``; or
        ``nan`` parts and why not; and the scheme's record with the G-norm parts the ledger computed.

        :math:`B_{k+1}` is booked from ``state.bound`` (:math:`B_k`) and ``state.older_bound`` (:math:`B_{k-1}`,
        BDF2's cap); a reason returned withdraws the certification (the caller writes it to the record).
        ``anchor`` is the previous state :math:`u_k` (the curvature check runs along :math:`u_{k+1} - u_k`);
        ``solved.start`` the pieces of BDF2's Richardson start. Where the exact state :math:`v_k` is known,
        :math:`e_k \le B_k` is one of the checks: a record never states a certified bound its own error exceeds
        (a ``reference=`` that is not this energy's exact flow, or rounding the allowance did not cover).
        """
        previous, record, u, tau = state.bound, state.scheme_record, solved.u, solved.tau
        if solved.start is not None:
            bound, problem = solved.start.bound(), solved.start.problem
            if problem is None:
                problem, record = stepper.start_g_norm(record, bound, previous, tau)
        else:
            bound, problem, record = stepper.bound(record, previous, solved.residual, u, anchor, tau, state.older_bound)
        if problem is None:
            problem = self._bound_check(stepper, solved.residual, u, anchor, energy, tau, solved.start is not None)
        if problem is None and exact_state is not None:
            error = float(self.metric.norm(u - exact_state))
            if not error <= bound.tracking_bound:
                problem = (
                    f"the trajectory error e_k = {error!r} exceeds the bound B_k = {bound.tracking_bound!r}: the "
                    "reference is not this energy's exact MMS, or rounding beyond the allowance"
                )
        if problem is None:
            return bound, None, record
        return BoundParts.undefined(), problem, record

    @staticmethod
    def _bound_check(
        stepper: SchemeStepper,
        residual: Residual,
        u: torch.Tensor,
        anchor: torch.Tensor,
        energy: Energy,
        tau: float,
        richardson_start: bool,
    ) -> str | None:
        """Why the step's bound cannot be certified (a non-finite residual or state, too little curvature), or ``None``.

        BDF2's Richardson start has checked its own residuals; every other step's residual is checked here: the
        parts it booked (:meth:`~mms_manifolds.subproblem.Residual.booked`: all three, or the total alone).
        """
        if not richardson_start and not all(math.isfinite(value) for value in residual.booked()):
            return f"the residual is not finite ({residual.total}, {residual.tangential}, {residual.normal})"
        if not bool(torch.isfinite(u).all()):
            return "the state u_k is not finite"
        return stepper.euler_ledger(tau).curvature_violation(energy, u, anchor)
    def _step_problem(
        self, resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None, step: int
    ) -> tuple[Parametrization, Energy, IncrementManifold]:
        """The parametrisation, energy and manifold of one step: the run's own, or step ``step``'s resampled ones."""
        if resample is None:
            return self.parametrization, self.energy, self.manifold
        problem = resample(step)
        if not (isinstance(problem, tuple) and len(problem) == 3):
            raise TypeError(
                f"resample({step}) must return (parametrization, energy, metric), got {type(problem).__name__}"
            )
        parametrization, energy, metric = problem
        if parametrization.num_parameters != self.parametrization.num_parameters:
            raise ValueError(
                f"resample({step}) has {parametrization.num_parameters} parameters, the flow "
                f"{self.parametrization.num_parameters}: it must evaluate the same network"
            )
        manifold = IncrementManifold(
            parametrization, metric, damping=self.manifold.damping, solve_mode=self.manifold.solve_mode
        )
        return parametrization, energy, manifold

    def _step_subproblem(
        self,
        resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None,
        step: int,
        theta: torch.Tensor,
    ) -> MMSSubproblem:
        """Step ``step`` from ``theta``: :meth:`subproblem`, or on step ``step``'s resampled nodes (:meth:`_step_problem`)."""
        if resample is None:
            return self.subproblem(theta)
        parametrization, energy, manifold = self._step_problem(resample, step)
        return MMSSubproblem(manifold, energy, self.tau, parametrization.value(theta))

    def _resume_or_start(
        self,
        theta0: torch.Tensor,
        reference: torch.Tensor | None,
        settings: RunSettings,
        path: Path | None,
        lock: WriterLock | None,
        resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None,
        source: str | None,
        time_tolerance: float | None,
        solver: InnerSolver,
        final_time: float | None = None,
    ) -> tuple[MMSResult, FlowState, SchemeStepper]:
        """The record, the loop's state and the scheme's stepper: from the checkpoint if it is one of this run
        (validated, its last step proven), else from a new record of step 0.

        The one place the loop's state is read out of a record (:meth:`FlowState.of_record`, the solver's state
        through ``solver.state_from_metadata``): a fresh start and a resume take the same path.

        Raises:
            ValueError: the checkpoint's solver state is not one of ``solver``'s (a file resealed by hand).
        """
        if path is not None and path.exists():
            result = self._resume(path, settings, reference, resample, source)
        else:
            result = self._start(theta0, reference, settings, path, lock, source)
        first = self.tau
        if time_tolerance is not None and self.metric.positive_definite:  # adaptive: the first step within the tolerance
            u0 = self.parametrization.value(result.thetas[0])
            first = min(first, self.scheme.initial_step(self.energy, self.metric, u0, time_tolerance))
        stepper = SchemeStepper(
            self.scheme,
            first,
            self.convexity,
            self.metric,
            self.parametrization.dtype,
            self._state_size,
            settings.certified,
            time_tolerance,
            final_time,
        )
        scheme_record = self._scheme_record(result, time_tolerance)
        try:
            state = FlowState.of_record(result, self.scheme, solver, scheme_record)
        except ValueError as error:
            raise ValueError(f"checkpoint {path} cannot be resumed: its solver_state: {error}") from error
        return result, state, stepper

    def _start(
        self,
        theta0: torch.Tensor,
        reference: torch.Tensor | None,
        settings: RunSettings,
        path: Path | None,
        lock: WriterLock | None,
        source: str | None,
    ) -> MMSResult:
        r"""A new record of step 0 (:math:`\theta_0`, :math:`E(u_0)`, :math:`B_0 = \|u_0 - v_0\|_M`), saved."""
        u0 = self.parametrization.value(theta0)
        v0 = reference[0] if reference is not None else (u0 if source == "exact prox" else None)
        error0 = math.nan if v0 is None else float(self.metric.norm(u0 - v0))
        bound = BoundParts.start(error0) if settings.certified else BoundParts.undefined()
        result = MMSResult(metadata=settings.as_metadata())
        initial = StepRecord.at_start(
            float(self.energy.value(u0)),
            error0,
            (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding),
        )
        result.append(theta0, "", v0, initial)
        result.metadata["resume_proof"] = resume_proof.record(0, u0, source)
        if path is not None:
            result.save(path, lock=lock)
        return result

    def _resume(
        self,
        path: Path,
        settings: RunSettings,
        reference: torch.Tensor | None,
        resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None,
        source: str | None,
    ) -> MMSResult:
        """Load ``path`` and check that it records this run; the file is data, this run's settings are the settings.

        Only the record (steps, parameters, columns) and what the run itself found (the solver's warm-start
        state, rank-deficient steps, a withdrawn certification) are taken from the file; every setting,
        ``certified`` included, is this run's. Beyond the fingerprint, the last step is recomputed
        (:mod:`mms_manifolds.resume_proof`: one evaluation of the network and the energy).
        """
        result = MMSResult.load(path, dtype=self.parametrization.dtype, device=self.parametrization.device)
        conflict = settings.resume_conflict(result.metadata, result.steps_done)
        if conflict is None and CERTIFY_OFF_NOTE in result.metadata.get("notes", ()) and settings.certified:
            conflict = "it was written with certify=False (its residuals and bounds so far are nan), this run certifies"
        if conflict is not None:
            raise ValueError(f"checkpoint {path} cannot be resumed: {conflict}; use another path or the same settings")
        last = result.steps_done
        parametrization, energy, manifold = self._step_problem(resample if last else None, last)
        conflict = resume_proof.refusal(
            result.metadata.get("resume_proof"),
            last,
            (parametrization, energy, manifold.metric),
            result.thetas[-1],
            result.columns["energy"][-1],
            result.reference_states,
            reference,
            source,
        )
        if conflict is not None:
            raise ValueError(f"checkpoint {path} cannot be resumed: {conflict}")
        found = {key: result.metadata[key] for key in _FOUND_BY_THE_RUN if key in result.metadata}
        withdrawn = "certification_withdrawn" in found
        result.metadata = {**settings.as_metadata(), **found, "certified": settings.certified and not withdrawn}
        for note in found.get("notes_found", []):
            result.metadata["notes"].append(note)
        announce_resume(path, result.steps_done, settings.steps)
        return result


CERTIFY_OFF_NOTE = "certify=False: the step residuals and tracking bounds are not computed (nan)"
"""The note of a run that asked for no bound (``MinimizingMovement.run(certify=False)``)."""

TOTAL_RESIDUAL_NOTE = (
    "residual='total': each step books the total residual rho_k alone (one solve with M); residual_tangential, "
    "residual_normal, bound_inexactness and bound_approximation are not computed (nan), and the unconverged-step "
    "test, which reads the tangential residual, does not run; tracking_bound and bound_rounding are certified as "
    "with the split"
)
"""The note of a run that books the total residual alone (``MinimizingMovement.run(residual="total")``)."""

_FOUND_BY_THE_RUN = (
    "solver_state",
    "rank_deficient_steps",
    "certification_withdrawn",
    "unconverged_steps",
    "uncertified_decrease_steps",
    "notes_found",
    "scheme_record",
    "resume_proof",
)
"""Metadata a resumed run takes from its checkpoint: what the steps so far found, never a setting."""


_BOUND_COLUMNS = ("tracking_bound", "bound_inexactness", "bound_approximation", "bound_rounding")
"""The record's columns of the bound parts, in :class:`~mms_manifolds.ledger.BoundParts` order."""


@dataclasses.dataclass(frozen=True)
class FlowState:
    r"""What the MMS loop carries from step :math:`k` to step :math:`k+1`; the record is never read back for it.

    Built once per run from the record of step 0 or a checkpoint's (:meth:`of_record`, the resume path),
    then advanced by :meth:`after`, one step at a time.

    Attributes:
        steps_done: :math:`k`.
        thetas: the last parameters, :math:`\theta_k` last (as many as the scheme's noise estimate looks back).
        solver_state: the inner solver's warm-start state after step :math:`k`, a frozen
            :class:`~mms_manifolds.solvers.SolverState` (``None`` before step 1: each solver's own cold start,
            a fallback's included).
        bound: :math:`B_k` and its parts, as the record holds them (``nan`` where not certified).
        older_bound: :math:`B_{k-1}` (BDF2 caps its G-norm bound with it); ``0.0`` at :math:`k = 0`.
        references: the last exact states :math:`v_k` where known, :math:`v_k` last (as many as the scheme's
            exact step reads).
        certified: whether the bound is still certified (``False`` once withdrawn).
        tangential_residuals: the tangential residuals of steps :math:`1, \dots, k` (the unconverged-step test
            compares the last with the median of the earlier ones).
        scheme_record: what the time scheme found so far, a frozen
            :class:`~mms_manifolds.time_stepping.SchemeRecord` (step sizes, estimates, flow bounds, BDF2's G-norm
            parts, the controller's next step).
    """

    steps_done: int
    thetas: tuple[torch.Tensor, ...]
    solver_state: SolverState | None
    bound: BoundParts
    older_bound: float
    references: tuple[torch.Tensor, ...]
    certified: bool
    tangential_residuals: tuple[float, ...]
    scheme_record: SchemeRecord

    @property
    def theta(self) -> torch.Tensor:
        r""":math:`\theta_k`."""
        return self.thetas[-1]

    @classmethod
    def of_record(
        cls, result: MMSResult, scheme: TimeScheme, solver: InnerSolver, scheme_record: SchemeRecord
    ) -> FlowState:
        """The state after the record's last step (its step 0 for a fresh run), with the scheme's record so far
        (read from the same record, :meth:`MinimizingMovement._scheme_record`).

        Raises:
            ValueError: the record's ``solver_state`` is not the checkpoint form of ``solver``'s state.
        """
        bounds = result.columns["tracking_bound"]
        return cls(
            steps_done=result.steps_done,
            thetas=tuple(result.thetas[-max(1, scheme.noise_history) :]),
            solver_state=solver.state_from_metadata(result.metadata.get("solver_state")),
            bound=BoundParts(*(result.columns[name][-1] for name in _BOUND_COLUMNS)),
            older_bound=bounds[-2] if len(bounds) > 1 else 0.0,
            references=tuple(result.reference_states[-scheme.history :]),
            certified=result.certified,
            tangential_residuals=tuple(result.columns["residual_tangential"][1:]),
            scheme_record=scheme_record,
        )

    def after(
        self,
        theta: torch.Tensor,
        solver_state: SolverState,
        bound: BoundParts,
        exact_state: torch.Tensor | None,
        tangential_residual: float,
        certified: bool,
        scheme: TimeScheme,
        scheme_record: SchemeRecord,
    ) -> FlowState:
        r"""The state after one more step: :math:`\theta_{k+1}`, its warm start, :math:`B_{k+1}`, :math:`v_{k+1}`,
        the scheme's record with the step.

        A step that withdraws the certification makes every earlier bound ``nan`` (as the record does):
        :math:`B_k` becomes ``nan`` as ``older_bound``.
        """
        references = self.references if exact_state is None else (*self.references, exact_state.detach().clone())
        withdrawn = self.certified and not certified
        return FlowState(
            steps_done=self.steps_done + 1,
            thetas=(*self.thetas, theta.detach().clone())[-max(1, scheme.noise_history) :],
            solver_state=solver_state,
            bound=BoundParts(*(float(getattr(bound, field.name)) for field in dataclasses.fields(BoundParts))),
            older_bound=math.nan if withdrawn else self.bound.tracking_bound,
            references=references[-scheme.history :],
            certified=certified,
            tangential_residuals=(*self.tangential_residuals, tangential_residual),
            scheme_record=scheme_record,
        )


@dataclasses.dataclass(frozen=True)
class _Loop:
    """What every step of one run shares: the solver and its retry policy, the run's options, the scheme's stepper.

    ``result`` is there only for :class:`MMSDivergenceError` to carry the record up to the last good step.
    """

    solver: InnerSolver
    result: MMSResult
    step_tolerance: float | None
    on_failure: str
    max_retries: int
    resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None
    reference: torch.Tensor | None
    exact: bool
    certify: bool
    diagnostics: bool
    stepper: SchemeStepper
    residual: str = "split"


@dataclasses.dataclass(frozen=True)
class _StepOutcome:
    """What one step adds to the record (:func:`_write_step`): its row, parameters, and what it found."""

    step: int
    record: StepRecord
    theta: torch.Tensor
    stop_reason: str
    solver_state: SolverState
    exact_state: torch.Tensor | None
    u: torch.Tensor
    withdrawal: str | None
    rank_deficient: bool
    unconverged: str | None
    uncertified_decrease: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Solved:
    """One step solved by the scheme (:meth:`MinimizingMovement._scheme_step` or its Richardson start).

    Attributes:
        inner: the inner result of the solve that gave :math:`u_{k+1}` (the Richardson fit's, its iterations the
            sum of the start's four solves; its solver state the second half step's where the fit reproduced its
            target to rounding).
        retries: the fallback retries of the step.
        residual: :math:`\rho_k` and its split at :math:`u_{k+1}` (``nan`` with ``certify=False``).
        u: :math:`u_{k+1}`.
        tau: the step's :math:`\tau_k`.
        estimate: the scheme's local error estimate (``nan`` where none exists yet).
        proposed: the step the controller chose after this one (``tau`` where it was not asked).
        rejected: the controller's rejections before the step was accepted.
        unconverged_solves: capped CG solves while the residual was computed.
        start: the pieces of BDF2's Richardson start, or ``None``.
    """

    inner: InnerResult
    retries: int
    residual: Residual
    u: torch.Tensor
    tau: float
    estimate: float
    proposed: float
    rejected: int
    unconverged_solves: int
    start: StartParts | None = None


_WARM_START = object()
"""Start a solve from the step's :math:`\\theta_k` and the solver's warm-start state."""


@dataclasses.dataclass
class _Solve:
    """One MMS step's solve settings: solve any step problem of this step with retries (:func:`_solve_with_retries`)."""

    solver: InnerSolver
    result: MMSResult
    step: int
    tolerance: float | None
    on_failure: str
    max_retries: int
    base: MMSSubproblem
    theta: torch.Tensor
    state: SolverState | None
    parts: str = "split"
    """What the step books of its residual: ``"split"`` or ``"total"`` (``run(residual=...)``)."""

    @property
    def manifold(self) -> IncrementManifold:
        return self.base.manifold

    def problem(self, anchor: torch.Tensor, tau: float) -> MMSSubproblem:
        r"""The step problem :math:`\min E(u) + \|u - a\|_M^2/(2\tau)` anchored at ``anchor`` (the base step itself when it is that).

        The base step is implicit Euler's from :math:`u_k` at the flow's :math:`\tau`: a fixed-step implicit
        Euler run solves exactly the problems it solved before schemes existed.
        """
        if anchor is self.base.anchor and tau == self.base.tau:
            return self.base
        return MMSSubproblem(self.base.manifold, self.base.energy, tau, anchor, self.base.convexity)

    def __call__(
        self, subproblem: MMSSubproblem, theta: object = _WARM_START, state: object = _WARM_START
    ) -> tuple[InnerResult, int]:
        subproblem.booked_parts = self.parts
        return _solve_with_retries(
            self.solver, subproblem, self.result, self.step, self.tolerance, self.on_failure, self.max_retries,
            self.theta if theta is _WARM_START else theta, self.state if state is _WARM_START else state,
        )


def _solve_with_retries(
    solver: InnerSolver,
    subproblem: MMSSubproblem,
    result: MMSResult,
    step: int,
    tolerance: float | None,
    on_failure: str,
    max_retries: int,
    theta: torch.Tensor,
    state: SolverState | None,
) -> tuple[InnerResult, int]:
    """Solve step ``step`` from ``theta``, warm start ``state``; failing, retry with ``solver.fallback()`` or raise."""
    inner, retries, attempt = solver.solve(subproblem, theta, tolerance, state), 0, solver
    while inner.stop_reason.failed and on_failure == "retry" and retries < max_retries:
        attempt = attempt.fallback()
        if attempt is None:
            break
        inner, retries = attempt.solve(subproblem, theta, tolerance, state), retries + 1
    if inner.stop_reason.failed:
        raise MMSDivergenceError(step, inner.failed_iteration, inner.stop_reason, retries, result)
    return inner, retries


def _write_step(result: MMSResult, outcome: _StepOutcome, scheme_record: SchemeRecord, source: str | None) -> None:
    """Append one step to the record with what it found: a withdrawal, rank deficiency, the warm start, the scheme's
    record, an unconverged step, the proof a resume checks (:mod:`mms_manifolds.resume_proof`)."""
    if outcome.withdrawal is not None:
        _withdraw_certification(result, outcome.step, outcome.withdrawal)
    if outcome.rank_deficient:
        result.metadata.setdefault("rank_deficient_steps", []).append(outcome.step)
        _add_note(
            result,
            "Jacobian rank deficient at some steps (rank_deficient_steps): the non-degeneracy the paper's "
            "inner-solver convergence assumes fails there; the a-posteriori tracking bound does not use it",
        )
    result.append(outcome.theta, outcome.stop_reason, outcome.exact_state, outcome.record)
    result.metadata["solver_state"] = outcome.solver_state.as_metadata()  # the next step's warm start, saved with it
    result.metadata["scheme_record"] = scheme_record.as_metadata()  # step sizes, G-norm, estimates
    if outcome.unconverged is not None:
        _note_unconverged_step(result, outcome.step, outcome.unconverged)
    if outcome.uncertified_decrease:
        entry = {"step": outcome.step, "iterations": list(outcome.uncertified_decrease)}
        result.metadata.setdefault("uncertified_decrease_steps", []).append(entry)
        _add_note(
            result,
            "some Gauss–Newton steps were not certified to reach the forcing rule's share of the exact step's "
            "model decrease (uncertified_decrease_steps: a CG solve reached its cap first)",
        )
    result.metadata["resume_proof"] = resume_proof.record(outcome.step, outcome.u, source)


def _print_progress(outcome: _StepOutcome, steps: int) -> None:
    """One line per MMS step on standard error."""
    record = outcome.record
    print(
        f"step {outcome.step}/{steps}: E = {record.energy:.6e}, inner = {record.inner_iterations}, "
        f"rho = {record.residual_total:.3e}, B = {record.tracking_bound:.3e}, "
        f"e = {record.trajectory_error:.3e} ({outcome.stop_reason})",
        file=sys.stderr,
    )


def _withdraw_certification(result: MMSResult, step: int, reason: str) -> None:
    """Mark the record uncertified from now on: every bound ``nan``, the step and the reason in the metadata."""
    note = f"certification withdrawn at MMS step {step}: {reason}; every tracking bound is nan"
    result.metadata.update(certified=False, certification_withdrawn={"step": step, "reason": reason})
    _add_note(result, note)
    for name in _BOUND_COLUMNS:
        result.columns[name] = [math.nan] * len(result.columns[name])
    warnings.warn(note, RuntimeWarning, stacklevel=5)  # the caller of run: _write_step, run, its interrupt wrapper


def _note_unconverged_step(result: MMSResult, step: int, reason: str) -> None:
    """Warn and note that step ``step`` ended at its iteration budget far from converged (``reason``, found by
    :func:`~mms_manifolds.convergence.far_from_converged`)."""
    result.metadata.setdefault("unconverged_steps", []).append({"step": step, "reason": reason})
    _add_note(result, "some steps ended far from converged at their iteration budget (unconverged_steps)")
    message = f"MMS step {step}: {reason}"
    logger.warning(message)
    warnings.warn(message, UnconvergedStepWarning, stacklevel=5)


def _check_budget_met(result: MMSResult, budget: TrajectoryBudget) -> None:
    """Say so (a note and a ``RuntimeWarning``) when the propagated inexactness ends above the budget's tolerance.

    The per-step tolerances keep it below the budget only when every inner solve reaches its tolerance; a
    solver stopped by its iteration cap, or stalled, leaves it above.
    """
    reached = result.columns["bound_inexactness"][-1]
    if not result.certified or reached <= budget.tolerance:
        return
    note = (
        f"the trajectory budget was not met: the propagated inexactness is {reached:.3g}, the budget "
        f"{budget.tolerance:.3g}; some inner solves stopped above their step tolerance (iteration cap or stall: "
        "allow more inner iterations)"
    )
    _add_note(result, note)
    warnings.warn(note, RuntimeWarning, stacklevel=4)  # the caller of run (through its interrupt wrapper)


#: A fit within this many machine epsilons (relative) of its target has reproduced it to rounding.
FIT_AT_ROUNDING = 1e4


def _fitted_to_rounding(fitted: torch.Tensor, target: torch.Tensor, metric: Metric) -> bool:
    r"""Whether :math:`\|\text{fitted} - \text{target}\|_M \le 10^4\varepsilon\|\text{target}\|_M` (:data:`FIT_AT_ROUNDING`).

    The regression cost :math:`\propto\|u - \text{target}\|_M^2` is then within a few hundred :math:`\varepsilon^2` of its
    terms' scale, below what its computed value resolves: the solver's last accept/reject decisions were noise.
    """
    epsilon = torch.finfo(fitted.dtype).eps
    return float(metric.norm(fitted - target)) <= FIT_AT_ROUNDING * epsilon * float(metric.norm(target))


def _check_final_time(final_time: object, time_tolerance: float | None) -> float | None:
    """``final_time`` as a positive float (or ``None``); it needs adaptive steps.

    Raises:
        ValueError: ``final_time`` is not positive, or is given without ``time_tolerance``.
    """
    if final_time is None:
        return None
    final_time = check_positive_float("final_time", final_time)
    if time_tolerance is None:
        raise ValueError(
            f"final_time = {final_time} needs adaptive steps (time_tolerance): a fixed-step run ends after steps * tau"
        )
    return final_time


def _warn_short_of(final_time: float, record: SchemeRecord, steps: int) -> None:
    """Say (a ``RuntimeWarning``) that an adaptive run used its ``steps`` before reaching ``final_time``."""
    reached = math.fsum(record.time_steps)
    warnings.warn(
        f"the run took its {steps} steps and reached t = {reached:.6g}, short of final_time = {final_time:.6g}: "
        "run again with more steps (and the checkpoint) to continue",
        RuntimeWarning,
        stacklevel=4,  # the caller of run (through its interrupt wrapper)
    )


def _add_note(result: MMSResult, note: str) -> None:
    """Add a note found by the run (kept as ``notes_found`` too, so that a resumed run carries it)."""
    for key in ("notes", "notes_found"):
        notes = result.metadata.setdefault(key, [])
        if note not in notes:
            notes.append(note)


def _initial_residual(inner: InnerResult) -> float:
    """The tangential residual at the start of an inner solve, where the solver measured it (``nan`` otherwise)."""
    if inner.residual_iterations and inner.residual_iterations[0] == 0:
        return inner.residual_history[0]
    return math.nan


def _predicted_iterations(result: MMSResult, step_tolerance: float) -> int | None:
    r"""Inner iterations the budget predicts: :math:`\sum_k \lceil\log(\mu\eta/\rho_{0,k})/\log q\rceil`.

    :math:`\rho_{0,k}` is each step's initial tangential residual and :math:`q` the geometric mean
    of the observed per-iteration contraction :math:`(\rho_{T,k}/\rho_{0,k})^{1/n_k}` (an a-posteriori
    estimate, docs/driver.md). ``None`` when no step contracted.
    """
    initial, final, counts = result.initial_residual[1:], result.residual_tangential[1:], result.inner_iterations[1:]
    rates = [
        np.log(after / before) / count
        for before, after, count in zip(initial, final, counts)
        if count > 0 and 0 < after < before and np.isfinite(after)
    ]
    if not rates:
        return None
    contraction = float(np.exp(np.mean(rates)))
    return int(
        sum(
            TrajectoryBudget.predicted_inner_iterations(start, step_tolerance, contraction)
            for start in initial
            if np.isfinite(start) and start > 0
        )
    )
