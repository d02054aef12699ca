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
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ._checks import as_tensor, check_finite, check_held_tensors, check_integer, check_positive_float, check_shape
from .budget import TrajectoryBudget
from .energies import Energy
from .fingerprint import trajectory_fingerprint
from .ledger import BoundParts, TrackingLedger
from .linalg import UnconvergedSolveCount
from .manifold import IncrementManifold
from .metrics.base import Metric
from .parametrizations.base import Parametrization
from .progress import progress_to_stderr
from .results import MMSResult, StepRecord
from .run_settings import RunSettings
from .solvers.base import InnerResult, InnerSolver, StopReason
from .step_constants import StepConstants
from .storage import WriterLock, resolve_path
from .subproblem import MMSSubproblem, Residual

__all__ = ["MMSDivergenceError", "MinimizingMovement", "exact_trajectory"]


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
    ):
        _check_flow_arguments(parametrization, energy, metric)
        self.parametrization = parametrization
        self.energy = energy
        self.metric = metric
        self.constants = StepConstants.of(tau, energy.convexity(metric), f"{type(energy).__name__}.convexity")
        r""":math:`\tau`, the energy's convexity :math:`\lambda` in :math:`M`, :math:`L` and :math:`\mu`: computed once per flow."""
        self.manifold = IncrementManifold(parametrization, metric, damping=damping, solve_mode=solve_mode)

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
        certify: bool = True,
    ) -> RunSettings:
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
            solve_mode_reason=self.manifold.solve_mode_choice()[1],
            budget=None if budget is None else budget.tolerance,
            notes=tuple(self._notes(resampled) + ([] if certify else [CERTIFY_OFF_NOTE])),
            fingerprint=trajectory_fingerprint(
                self.parametrization,
                self.energy,
                self.metric,
                self.tau,
                self.manifold.damping,
                self.manifold.selected_solve_mode(),
                solver,
                theta0,
            ),
        )

    def _check_reference(self, reference: object, steps: int) -> torch.Tensor | None:
        if reference is None:
            return None
        options = {"dtype": self.parametrization.dtype, "device": self.parametrization.device}
        reference = as_tensor("reference", reference, **options)
        check_shape("reference", reference, (steps + 1, *self.parametrization.output_shape))
        return check_finite("reference", reference)

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

        Returns:
            MMSResult. Certification is withdrawn during the run (``certified`` becomes ``False``, every
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
        """
        steps = check_integer("steps", steps, minimum=1)
        max_retries = check_integer("max_retries", max_retries, minimum=0)
        if on_failure not in ("retry", "raise"):
            raise ValueError(f"on_failure must be 'retry' or 'raise', got {on_failure!r}")
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
        path = None if checkpoint is None else resolve_path(checkpoint, "checkpoint")
        theta0 = self.manifold.check_point(theta0, "theta0")
        if not math.isfinite(float(self.energy.value(self.parametrization.value(theta0)))):
            raise ValueError("theta0 gives a non-finite energy: the flow cannot start there")
        reference = self._check_reference(reference, steps)
        settings = self._settings(steps, solver, budget, resample is not None, theta0, certify)
        with contextlib.ExitStack() as stack:
            stack.enter_context(progress_to_stderr(progress))
            lock = None if path is None else stack.enter_context(WriterLock(path))
            result = self._resume_or_start(theta0, reference, settings, path, lock)
            step_tolerance = (
                None
                if budget is None
                else budget.step_tolerance(self.constants.lipschitz, self.constants.strong_convexity, steps)
            )
            exact = reference is None and resample is None and self.energy.has_prox
            ledger = (
                TrackingLedger(self.constants, self.metric, self.parametrization.dtype, self._state_size)
                if settings.certified
                else None
            )
            for step in range(result.steps_done + 1, steps + 1):
                start = time.perf_counter()
                subproblem = self._step_subproblem(resample, step, result.thetas[-1])
                energy, manifold, anchor = subproblem.energy, subproblem.manifold, subproblem.anchor
                inner, retries = _solve_with_retries(
                    solver, subproblem, result, step, step_tolerance, on_failure, max_retries
                )
                with UnconvergedSolveCount(f"MMS step {step} residual") as unconverged:
                    residual = subproblem.residual(inner.point) if certify else Residual(math.nan, math.nan, math.nan)
                u = subproblem.node_values(inner.point)
                exact_state = reference[step] if reference is not None else None
                if exact:
                    exact_state = self._exact_step(result.reference_states[-1], step)
                bound = self._book_bound(ledger, result, step, residual, u, anchor, energy)
                rank, sigma_min = (
                    self._jacobian_report(manifold, inner.point, result) if diagnostics else (math.nan, math.nan)
                )
                record = StepRecord(
                    energy=float(energy.value(u)),
                    inner_iterations=inner.iterations,
                    retries=retries,
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
                    step_tolerance=math.nan if step_tolerance is None else step_tolerance,
                    jacobian_rank=rank,
                    jacobian_sigma_min=sigma_min,
                    unconverged_solves=inner.unconverged_solves + unconverged.count,
                )
                result.append(inner.point, inner.stop_reason.name.lower(), exact_state, record)
                result.metadata["solver_state"] = inner.state  # the warm start of the next step, saved with it
                if path is not None:
                    result.save(path, lock=lock)
                if progress:
                    print(
                        f"step {step}/{steps}: E = {result.columns['energy'][-1]:.6e}, inner = {inner.iterations}, "
                        f"rho = {residual.total:.3e}, B = {bound.tracking_bound:.3e}, "
                        f"e = {result.columns['trajectory_error'][-1]:.3e} ({inner.stop_reason.name.lower()})",
                        file=sys.stderr,
                    )
            if budget is not None:
                result.metadata["predicted_inner_iterations"] = _predicted_iterations(result, step_tolerance)
        return result

    @property
    def _state_size(self) -> int:
        """:math:`Nm`, the number of entries of a state."""
        return int(math.prod(self.parametrization.output_shape))

    def _exact_step(self, previous: torch.Tensor, step: int) -> torch.Tensor:
        r""":math:`v_k = \operatorname{prox}_{\tau E}(v_{k-1})`; a non-finite prox is an error, not a silent ``nan``."""
        state = self.energy.prox(previous, self.tau, self.metric)
        if not bool(torch.isfinite(state).all()):
            raise ValueError(
                f"{type(self.energy).__name__}.prox returned non-finite values at MMS step {step}: the exact "
                "reference (and the trajectory error against it) cannot be computed"
            )
        return state

    def _book_bound(
        self,
        ledger: TrackingLedger | None,
        result: MMSResult,
        step: int,
        residual: Residual,
        u: torch.Tensor,
        anchor: torch.Tensor,
        energy: Energy,
    ) -> BoundParts:
        """The bound of step ``step`` from the ledger, or ``nan`` parts; withdraws certification on a failed check."""
        if ledger is None or not result.certified:
            return BoundParts.undefined()
        previous = BoundParts(
            *(
                result.columns[name][-1]
                for name in ("tracking_bound", "bound_inexactness", "bound_approximation", "bound_rounding")
            )
        )
        bound = ledger.step(previous, residual, u, anchor)
        problem = None
        if not all(math.isfinite(value) for value in (residual.total, residual.tangential, residual.normal)):
            problem = f"the residual is not finite ({residual.total}, {residual.tangential}, {residual.normal})"
        elif not bool(torch.isfinite(u).all()):
            problem = "the state u_k is not finite"
        else:
            problem = ledger.curvature_violation(energy, u, anchor)
        if problem is None:
            return bound
        _withdraw_certification(result, step, problem)
        return BoundParts.undefined()

    def _step_subproblem(
        self,
        resample: Callable[[int], tuple[Parametrization, Energy, Metric]] | None,
        step: int,
        theta: torch.Tensor,
    ) -> MMSSubproblem:
        """Step ``step`` from ``theta``: :meth:`subproblem`, or on step ``step``'s resampled nodes."""
        if resample is None:
            return self.subproblem(theta)
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
        return MMSSubproblem(manifold, energy, self.tau, parametrization.value(theta))

    def _resume_or_start(
        self,
        theta0: torch.Tensor,
        reference: torch.Tensor | None,
        settings: RunSettings,
        path: Path | None,
        lock: WriterLock | None,
    ) -> MMSResult:
        """The checkpoint's record if it is one of this run (validated), else a new record at step 0."""
        if path is not None and path.exists():
            return self._resume(path, settings)
        u0 = self.parametrization.value(theta0)
        v0 = reference[0] if reference is not None else (u0 if self.energy.has_prox else None)
        error0 = math.nan if v0 is None else float(self.metric.norm(u0 - v0))
        bound = BoundParts.start(error0) if settings.certified else BoundParts.undefined()
        result = MMSResult(metadata=settings.as_metadata())
        initial = StepRecord.at_start(
            float(self.energy.value(u0)),
            error0,
            (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding),
        )
        result.append(theta0, "", v0, initial)
        if path is not None:
            result.save(path, lock=lock)
        return result

    def _resume(self, path: Path, settings: RunSettings) -> MMSResult:
        """Load ``path`` and check that it records this run; the file is data, this run's settings are the settings.

        Only the record (steps, parameters, columns) and what the run itself found (the solver's warm-start
        state, rank-deficient steps, a withdrawn certification) are taken from the file; every setting,
        ``certified`` included, is this run's.
        """
        result = MMSResult.load(path, dtype=self.parametrization.dtype, device=self.parametrization.device)
        conflict = settings.resume_conflict(result.metadata, result.steps_done)
        if conflict is not None:
            raise ValueError(f"checkpoint {path} cannot be resumed: {conflict}; use another path or the same settings")
        found = {key: result.metadata[key] for key in _FOUND_BY_THE_RUN if key in result.metadata}
        withdrawn = "certification_withdrawn" in found
        result.metadata = {**settings.as_metadata(), **found, "certified": settings.certified and not withdrawn}
        for note in found.get("notes_found", []):
            result.metadata["notes"].append(note)
        return result

    def _jacobian_report(
        self, manifold: IncrementManifold, theta: torch.Tensor, result: MMSResult
    ) -> tuple[float, float]:
        """Rank and smallest singular value of :math:`M^{1/2}J(\theta)`; notes rank deficiency in the metadata."""
        report = manifold.diagnostics(theta)
        if not report.full_column_rank:
            steps = result.metadata.setdefault("rank_deficient_steps", [])
            steps.append(result.steps_done + 1)
            _add_note(
                result,
                "Jacobian rank deficient at some steps (rank_deficient_steps): the non-degeneracy the paper's "
                "inner-solver convergence assumes fails there; the a-posteriori tracking bound does not use it",
            )
        return float(report.numerical_rank), report.sigma_min


CERTIFY_OFF_NOTE = "certify=False: the step residuals and tracking bounds are not computed (nan)"
"""The note of a run that asked for no bound (``MinimizingMovement.run(certify=False)``)."""

_FOUND_BY_THE_RUN = ("solver_state", "rank_deficient_steps", "certification_withdrawn", "notes_found")
"""Metadata a resumed run takes from its checkpoint: what the steps so far found, never a setting."""


def _solve_with_retries(
    solver: InnerSolver,
    subproblem: MMSSubproblem,
    result: MMSResult,
    step: int,
    tolerance: float | None,
    on_failure: str,
    max_retries: int,
) -> tuple[InnerResult, int]:
    """Solve step ``step`` from the last parameters; on failure retry with ``solver.fallback()`` or raise."""
    theta, state = result.thetas[-1], result.metadata.get("solver_state")
    inner, retries, attempt = solver.solve(subproblem, theta, tolerance, state), 0, solver
    while inner.stop_reason.failed and on_failure == "retry" and retries < max_retries:
        attempt = attempt.fallback()
        if attempt is None:
            break
        inner, retries = attempt.solve(subproblem, theta, tolerance, state), retries + 1
    if inner.stop_reason.failed:
        raise MMSDivergenceError(step, inner.failed_iteration, inner.stop_reason, retries, result)
    return inner, retries


def _withdraw_certification(result: MMSResult, step: int, reason: str) -> None:
    """Mark the record uncertified from now on: every bound ``nan``, the step and the reason in the metadata."""
    note = f"certification withdrawn at MMS step {step}: {reason}; every tracking bound is nan"
    result.metadata.update(certified=False, certification_withdrawn={"step": step, "reason": reason})
    _add_note(result, note)
    for name in ("tracking_bound", "bound_inexactness", "bound_approximation", "bound_rounding"):
        result.columns[name] = [math.nan] * len(result.columns[name])
    warnings.warn(note, RuntimeWarning, stacklevel=3)


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
