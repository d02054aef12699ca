r"""Generalized Gauss–Newton for the MMS step: a pseudo-inverse step with a line search, or Levenberg–Marquardt."""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch

from .._checks import check_choice, check_flag, check_integer, check_positive_float
from ..linalg import EisenstatWalker, ForcingSequence, LinearSolution, make_solve_mode, pseudo_inverse_rtol
from ..progress import InnerProgress, report_inner_iteration
from ..subproblem import GaussNewtonModel, MMSSubproblem
from .base import InnerResult, InnerSolver, StopReason
from .line_search import ENGD_LARGEST_LENGTH, grid_minimiser, logarithmic_grid
from .momentum import momentum_direction, momentum_predicted_decrease
from .row_sampling import RowSampledFactorization, RowSampling, row_sampled_model, sampled_rows
from .state import GaussNewtonState, MomentumGaussNewtonState

__all__ = [
    "ACCELERATION_RATIO",
    "DEFAULT_STEP_CUTOFF",
    "FRESH_STEP_LENGTH",
    "GLOBALIZATIONS",
    "LINE_SEARCHES",
    "SEARCH_STARTS",
    "STEP_FILTERS",
    "GaussNewton",
]

#: How :class:`GaussNewton` makes a Gauss–Newton step safe far from the solution.
GLOBALIZATIONS = ("auto", "line-search", "levenberg-marquardt")
#: How the ``"line-search"`` globalization picks the step length.
LINE_SEARCHES = ("armijo", "grid", "logarithmic-grid")
#: Where the line search's first length lies (``GaussNewton(search_start=...)``): twice the last accepted one, or
#: the longest, ``max_step_length``.
SEARCH_STARTS = ("doubled", "full")
#: How the line search's step treats the small eigenvalues of :math:`A` (``GaussNewton(step_filter=...)``).
STEP_FILTERS = ("truncate", "tikhonov")
#: Relative eigenvalue cutoff of the line search's pseudo-inverse step (``GaussNewton(step_cutoff=...)``).
DEFAULT_STEP_CUTOFF = 1e-12
#: The line search's ``step_length`` at a cold start and after a fallback, as a share of ``max_step_length``:
#: counted as a shortened step (:attr:`GaussNewton.fresh_step_length`).
FRESH_STEP_LENGTH = 0.5
#: Largest :math:`2|a|/|\delta|` for which a Levenberg–Marquardt step takes its geodesic acceleration (Transtrum's 0.75).
ACCELERATION_RATIO = 0.75
#: The smallest relative damping Levenberg–Marquardt keeps: :math:`\mu` shrinks by at least 3 at every accepted
#: step and is carried from MMS step to MMS step, so a long run of easy steps drove it below the smallest float
#: (a linear model on the heat 2-D grid, adaptive implicit Euler: 0.0 from :math:`10^{-3}` after about 670 accepted
#: iterations, which the warm start's check refuses). :math:`10^{-30}\operatorname{tr}(A)/p` is below the rounding
#: of every diagonal entry above :math:`10^{-14}\operatorname{tr}(A)/p`: the floor keeps the state valid (a run whose damping went below it
#: grows it back from the floor after a rejection, so its later steps differ from before the floor existed).
MIN_RELATIVE_DAMPING = 1e-30


class GaussNewton(InnerSolver):
    r"""Generalized Gauss–Newton for the MMS step, globalised by a line search or by Levenberg–Marquardt.

    Each iteration linearises :math:`\phi` once (:meth:`MMSSubproblem.gauss_newton_model`) and works with
    the model :math:`m(\delta) = f + g\cdot\delta + \tfrac12\delta\cdot A\delta`,
    :math:`A = J^\top(\nabla^2E(u) + M/\tau)J`, :math:`g = \nabla_\theta f`; one factorisation of :math:`A`
    serves every trial of the iteration.

    - ``"line-search"``: :math:`\delta = -A^+g` (eigenvalues at or below ``step_cutoff`` :math:`\cdot\lambda_{\max}`
      dropped after a shortened step and at a cold start, :meth:`step_cutoff_after`), searched along
      :math:`\eta \mapsto \theta + \eta\delta + \tfrac{\eta^2}2a` (:math:`a` the geodesic acceleration, or 0) for
      :math:`\eta \in \{\eta_0, \eta_0/2, \dots\}`, :math:`\eta_0 = \min(\eta_{\max}, 2\eta_{\text{prev}})` (``max_step_length`` :math:`\eta_{\max}`, default 1;
      ``search_start="full"``: :math:`\eta_{\max}`), by Armijo's rule
      (``line_search="armijo"``) or the best cost on the grid (``"grid"``); or, with ``"logarithmic-grid"``, the
      best cost on the fixed grid :math:`\eta \in \{2, 1, \dots, 2^{-29}\}` at every iteration, no memory of the
      last length (the published ENGD code's search, :mod:`~mms_manifolds.solvers.line_search`; ENGD itself with
      ``step_cutoff=1e-30, geodesic_acceleration=False``); Levenberg–Marquardt retries where
      no length lowers the cost. With ``step_damping``, :math:`\delta = -(A + \mu I)^{-1}g` instead (one Cholesky
      factorisation, no eigendecomposition).
    - ``"levenberg-marquardt"``: :math:`\delta = -(A + \mu I)^{-1}g` (plus half its geodesic acceleration where
      :math:`2|a| \le 0.75|\delta|`), accepted when :math:`\rho = (f(\theta) - f(\theta + \delta))/(m(0) - m(\delta)) > 0`;
      Nielsen's update of :math:`\mu` (relative to :math:`\operatorname{tr}(A)/p`).
    - ``"auto"`` (default): Levenberg–Marquardt where the model's ``proximal_share``
      :math:`\operatorname{tr}(J^\top MJ)/(\tau\operatorname{tr}(A)) \ge 1/2` (a short time step), else the line search.

    Each iteration is reported to :mod:`mms_manifolds.progress` (cost, residual where measured, the CG
    iterations of its model solves, seconds); the tangential residual is measured at the end of the solve
    (the ledger reads the same cached split) and at every iteration only where ``tolerance > 0`` asks for a
    stopping test. Every accepted step lowers the cost; below the cost's rounding level a step is accepted if it lowers the
    tangential residual, else the solve ends ``STALLED``. ``NON_FINITE`` and ``NO_PROGRESS`` keep the last
    good iterate. :meth:`solve` returns the step length and damping it ended with in ``InnerResult.state``,
    a :class:`~mms_manifolds.solvers.state.GaussNewtonState` (the warm start of the next MMS step, checkpointed). The rules, how they were chosen and what they
    measure against the published ENGD code and Riemannian gradient descent: ``docs/gauss_newton.md``.

    Args:
        max_iterations: Gauss–Newton iterations (Jacobian evaluations). Default ``5``.
        tolerance: stop when the tangential residual :math:`\|P_T r\|_M` is at or below it. Default ``0``.
        globalization: ``"auto"``, ``"line-search"`` or ``"levenberg-marquardt"``.
        line_search: ``"armijo"``, ``"grid"`` or ``"logarithmic-grid"`` (ENGD's 31 lengths :math:`2^{1-k}`).
        armijo: sufficient-decrease constant :math:`c \in (0, 1/2)`. Default ``1e-4``.
        max_halvings: :math:`h`, the halvings of :math:`\eta` tried (not by ``"logarithmic-grid"``, whose 31 lengths
            are fixed). Default ``30``.
        initial_damping: :math:`\mu_0` relative to :math:`\operatorname{tr}(A)/p`, for Levenberg–Marquardt and
            the line search's fallback; also the damping of the pseudo-inverse step in the matrix-free
            mode, where no pseudo-inverse exists. Default ``1e-3``.
        max_retries: Levenberg–Marquardt retries per iteration before ``NO_PROGRESS``. Default ``30``.
        solve_mode: ``"auto"``, ``"dense"`` or ``"cg"`` for the model solve (the regression fast path always
            reuses the manifold's factorisation).
        geodesic_acceleration: bend each step by its second-order correction :math:`a`
            (:meth:`MMSSubproblem.geodesic_acceleration`). Default ``True``.
        step_cutoff: relative eigenvalue cutoff of the line search's pseudo-inverse step after a shortened
            step, in :math:`(0, 1)`. Default ``1e-12``; below the factorisation's own cutoff (``1e-30``) every step
            is the full pseudo-inverse (deeper on the ENGD benchmarks, worse initial fits; ``docs/gauss_newton.md``).
        step_filter: ``"truncate"`` (default): the line search's step drops the eigenvalues at or below the cutoff
            (one eigendecomposition of :math:`A`, or of the kernel, per iteration); ``"tikhonov"``: it is
            :math:`-(A + \mu I)^{-1}g` with :math:`\mu` the cutoff times :math:`\operatorname{tr}A` (the
            factorisation's own cutoff where the full pseudo-inverse would be taken), one Cholesky
            factorisation instead (the eigendecomposition where it fails), the filter of Woodbury-ENGD. The iterations
            whose damping had to be raised for a Cholesky factor (:meth:`~mms_manifolds.linalg.GramFactorization.resolved_damping`)
            are listed in ``InnerResult.extra["raised_damping"]``.
        forcing: an :class:`~mms_manifolds.linalg.EisenstatWalker` rule for the damped model solves of a
            matrix-free (CG) mode: iteration :math:`k`'s step solve stops at the forcing term :math:`\eta_k` once
            the rule's ``fraction`` of the exact damped model decrease is certified, instead of at the solve
            mode's own tolerance (``docs/performance.md``, "Forcing terms for the CG model solves"). Each
            iteration's term, CG iterations and certified share go to ``InnerResult.extra["forcing"]``; iterations
            whose step is not certified to reach the share (a solve capped first) to
            ``extra["uncertified_iterations"]``, which the MMS driver lists in ``metadata["uncertified_decrease_steps"]``.
            Direct modes solve exactly and only record. Default ``None``: the solve mode's tolerance.
        step_damping: with ``step_filter="tikhonov"`` only: ``None`` (default) ties :math:`\mu` to the cutoff as
            above; a number :math:`\mu_r > 0` fixes it, :math:`\mu = \mu_r\operatorname{tr}(A)/p`, at every iteration
            (Woodbury-ENGD's constant damping; ``step_cutoff`` unused), from one Cholesky factorisation of the shifted model,
            or of the shifted kernel :math:`K + \mu I` on the kernel side, :math:`n^3/3` flops against ``eigh``'s
            :math:`\approx 9n^3`: at :math:`n = 3500` 0.6 against 13.9 CPU seconds (``docs/performance.md``).
        absolute_damping: with ``step_damping`` only: ``True`` takes :math:`\mu = \mu_r` itself, in the units of
            :math:`A`, at every iteration, instead of :math:`\mu_r\operatorname{tr}(A)/p`: Woodbury-ENGD's and SPRING's
            constant damping, whose share of :math:`\operatorname{tr}(A)/p` falls as the trace grows (3e4-fold over a
            5-D Poisson run, ``docs/performance.md``). Default ``False``.
        final_residual: measure the tangential residual at the end of the solve (default ``True``), where the
            driver's ledger reads it from the subproblem's cache. ``False`` skips it unless ``tolerance > 0``
            asks for it (``InnerResult.residual_history`` is then empty): for ``MinimizingMovement.run(certify=False)``,
            where nothing reads it and it costs one Jacobian and one factorisation of the metric per solve. A run
            that books the total residual alone (``run(residual="total")``, ``MMSSubproblem.booked_parts``) skips it too.
        search_start: the line search's first length: ``"doubled"`` (default) :math:`\min(\eta_{\max}, 2\eta_{\text{prev}})`;
            ``"full"``: :math:`\eta_{\max}` at every iteration, as Woodbury-ENGD's grid, so that a long plateau of
            short steps does not cap the next search at twice the last length (one trial cost per halving, about 2%
            of an iteration at :math:`p = 9873`; on KFAC's 2-D Poisson 1e-5 in 15-22 iterations against 21-23,
            ``docs/performance.md``). The cutoff rule (:meth:`step_cutoff_after`) still reads the last accepted length.
        max_step_length: :math:`\eta_{\max} \in (0, 1]`, the line search's longest length (default ``1``): a step
            of :math:`\eta_{\max}` counts as a full one for ``step_cutoff``. Below 1 for steps on resampled nodes,
            where the full step refits its own batch and carries that batch's error into the next (the 5-D Poisson,
            ``docs/performance.md``). The ``"logarithmic-grid"`` search keeps its own lengths; the cutoff rule reads it.
        grid_largest: the largest length :math:`\eta_g` of the ``"logarithmic-grid"`` search, whose lengths are
            :math:`\eta_g2^{-k}`, :math:`k = 0, \dots, 30`. Default ``2``, ENGD's grid (length 1 of its natural gradient,
            whose loss is twice the cost); ``1`` is Woodbury-ENGD's and SPRING's (:math:`2^0 \dots 2^{-30}` of the
            Gauss–Newton step of the loss :math:`\tfrac12\,\mathrm{mean}\,r^2`).
        row_sampling: a :class:`~mms_manifolds.solvers.row_sampling.RowSampling` rule (line search only): the first
            iterations' models from random subsets of the residual rows, :math:`\delta_S = -B_S^\top(K_S + \tfrac{n_S}{n}\mu I)^{-1}s_S`
            (:math:`K_S` the ``(n_S, n_S)`` principal submatrix of the kernel, :math:`(n_S/n)^2` of its cost; module
            :mod:`~mms_manifolds.solvers.row_sampling`), judged by the line search on the full cost, then the full model
            once a step of ``until_length`` is accepted or a sampled step is rejected (that iteration redone with the full
            model). With ``kernel_dtype=torch.float32`` (every row, or a sample) :math:`K_S` is formed in float32 and the
            step damped by at least :math:`\varepsilon_{32}\operatorname{tr}A_S`. Where the kernel side does not apply, the
            full model throughout. ``InnerResult.extra["row_sampling"]`` counts the sampled iterations and their rows.
            Default ``None``: every model full. Refused with ``momentum``, with ``globalization="levenberg-marquardt"`` and
            by :class:`~mms_manifolds.solvers.SubspaceGaussNewton`. Measured on KFAC's 2-D Poisson, neither pays on every seed
            (``docs/performance.md``, "Row-sampled Gauss–Newton models on the plateau").
        momentum: SPRING's :math:`\beta \in [0, 1)` (default ``0``, the plain step): the line search's direction is
            :math:`\phi_k = (A + \lambda I)^{-1}(-g + \beta\lambda\phi_{k-1})`, the Tikhonov step pulled towards
            :math:`\beta` times the last direction :math:`\phi_{k-1}` (:mod:`~mms_manifolds.solvers.momentum`,
            where it is derived from SPRING's kernel-side update), with :math:`\lambda` the step's damping; needs
            ``step_filter="tikhonov"`` and a line search (not for :class:`~mms_manifolds.solvers.SubspaceGaussNewton`). :math:`\phi_k` is
            carried from iteration to iteration and, in the state
            (:class:`~mms_manifolds.solvers.state.MomentumGaussNewtonState`, checkpointed), from MMS step to MMS
            step; a direction that is not one of descent on the step's cost is replaced by the plain step, and an
            iteration of Levenberg–Marquardt (the fallback) restarts it from 0 (``docs/gauss_newton.md``). Meant for
            MMS steps on resampled nodes, where one Gauss–Newton step refits its own batch; on the 5-D Poisson it
            did not lower the plateau with full lengths, and with half lengths went below it slowly
            (``docs/performance.md``).

    References:
        J. Müller, M. Zeinhofer, "Achieving high accuracy with PINNs via energy natural gradient descent",
        ICML 2023. H. B. Nielsen, "Damping parameter in Marquardt's method", IMM-REP-1999-05, DTU, 1999.
        J. Nocedal, S. J. Wright, "Numerical Optimization", 2nd ed., §3.1 and §10.3, Springer 2006.
        M. K. Transtrum, J. P. Sethna, "Improvements to the Levenberg–Marquardt algorithm for nonlinear
        least-squares minimization", arXiv:1201.5885, 2012.
        G. Goldshlager, N. Abrahamsen, L. Lin, "A Kaczmarz-inspired approach to accelerate the optimization of
        neural network wavefunctions", J. Comput. Phys. 2024 (SPRING).
    """

    name = "gauss-newton"
    state_type = GaussNewtonState

    def __init__(
        self,
        max_iterations: int = 5,
        tolerance: float = 0.0,
        globalization: str = "auto",
        line_search: str = "armijo",
        armijo: float = 1e-4,
        max_halvings: int = 30,
        initial_damping: float = 1e-3,
        max_retries: int = 30,
        solve_mode: object = "auto",
        geodesic_acceleration: bool = True,
        step_cutoff: float = DEFAULT_STEP_CUTOFF,
        step_filter: str = "truncate",
        forcing: EisenstatWalker | None = None,
        step_damping: float | None = None,
        final_residual: bool = True,
        search_start: str = "doubled",
        max_step_length: float = 1.0,
        row_sampling: RowSampling | None = None,
        momentum: float = 0.0,
        absolute_damping: bool = False,
        grid_largest: float = ENGD_LARGEST_LENGTH,
    ):
        super().__init__(max_iterations, tolerance)
        self.globalization = check_choice("globalization", globalization, GLOBALIZATIONS)
        self.line_search = check_choice("line_search", line_search, LINE_SEARCHES)
        self.armijo = check_positive_float("armijo", armijo)
        if not self.armijo < 0.5:
            raise ValueError(f"armijo must be in (0, 1/2), got {armijo}")
        self.max_halvings = check_integer("max_halvings", max_halvings, minimum=0)
        self.initial_damping = check_positive_float("initial_damping", initial_damping)
        self.max_retries = check_integer("max_retries", max_retries, minimum=1)
        self.solve_mode = make_solve_mode(solve_mode)
        if not isinstance(geodesic_acceleration, bool):
            raise TypeError(f"geodesic_acceleration must be True or False, got {geodesic_acceleration!r}")
        self.geodesic_acceleration = check_flag("geodesic_acceleration", geodesic_acceleration)
        self.step_filter = check_choice("step_filter", step_filter, STEP_FILTERS)
        self.step_cutoff = check_positive_float("step_cutoff", step_cutoff)
        if not self.step_cutoff < 1:
            raise ValueError(f"step_cutoff must be in (0, 1), got {step_cutoff}")
        if forcing is not None and not isinstance(forcing, EisenstatWalker):
            raise TypeError(f"forcing must be an EisenstatWalker rule or None, got {type(forcing).__name__}")
        self.forcing = forcing
        self.step_damping = None if step_damping is None else check_positive_float("step_damping", step_damping)
        self.final_residual = check_flag("final_residual", final_residual)
        self.search_start = check_choice("search_start", search_start, SEARCH_STARTS)
        if self.step_damping is not None and self.step_filter != "tikhonov":
            raise ValueError(f"step_damping={step_damping} needs step_filter='tikhonov', got {step_filter!r}")
        self.absolute_damping = check_flag("absolute_damping", absolute_damping)
        if self.absolute_damping and self.step_damping is None:
            raise ValueError("absolute_damping=True needs a step_damping")
        self.grid_largest = check_positive_float("grid_largest", grid_largest)
        if self.grid_largest != ENGD_LARGEST_LENGTH and self.line_search != "logarithmic-grid":
            raise ValueError(f"grid_largest={grid_largest} needs line_search='logarithmic-grid', got {line_search!r}")
        self.max_step_length = check_positive_float("max_step_length", max_step_length)
        if not self.max_step_length <= 1:
            raise ValueError(f"max_step_length must be in (0, 1], got {max_step_length}")
        if row_sampling is not None and not isinstance(row_sampling, RowSampling):
            raise TypeError(f"row_sampling must be a RowSampling rule or None, got {type(row_sampling).__name__}")
        if row_sampling is not None and row_sampling.kernel_dtype is not None and self.step_filter != "tikhonov":
            raise ValueError(f"row_sampling with a kernel_dtype needs step_filter='tikhonov', got {step_filter!r}")
        if row_sampling is not None and self.globalization == "levenberg-marquardt":
            raise ValueError("row_sampling needs a line search, got globalization='levenberg-marquardt'")
        if row_sampling is not None and type(self).state_type is not GaussNewtonState:
            raise ValueError(f"{type(self).__name__} does not take row_sampling (GaussNewton does)")
        self.row_sampling = row_sampling
        self.momentum = check_positive_float("momentum", momentum, allow_zero=True)
        if not self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if self.momentum > 0 and (self.globalization == "levenberg-marquardt" or self.step_filter != "tikhonov"):
            raise ValueError(
                f"momentum={momentum} needs a damped line-search step: step_filter='tikhonov' and a globalization "
                f"other than 'levenberg-marquardt', got {step_filter!r} and {globalization!r}"
            )
        if self.momentum > 0 and row_sampling is not None:
            raise ValueError("momentum and row_sampling do not combine: SPRING's direction needs every row's model")
        if self.momentum > 0:
            if type(self).state_type is not GaussNewtonState:
                raise ValueError(f"{type(self).__name__} does not take momentum (GaussNewton does)")
            self.state_type = MomentumGaussNewtonState

    def fallback(self) -> GaussNewton | None:
        """Levenberg–Marquardt with 100 times the initial damping (none beyond ``1e3``)."""
        if self.initial_damping * 100 > 1e3:
            return None
        cautious = copy.copy(self)
        cautious.globalization = "levenberg-marquardt"
        cautious.row_sampling = None  # a line-search option
        cautious.initial_damping = self.initial_damping * 100
        return cautious

    @property
    def fresh_step_length(self) -> float:
        r"""``FRESH_STEP_LENGTH`` :math:`\cdot\,\eta_{\max}`: the ``step_length`` of a cold start and after a fallback, a shortened step."""
        return FRESH_STEP_LENGTH * self.max_step_length

    def initial_state(self) -> GaussNewtonState:
        r"""``step_length`` :math:`\eta_{\max}/2` and ``relative_damping`` ``initial_damping``: the state of a cold start.

        A cold start counts as following a shortened step: its first search starts at length
        :math:`\min(\eta_{\max}, 2 \cdot \eta_{\max}/2) = \eta_{\max}` with the truncated step (:meth:`step_cutoff_after`).
        """
        return self.state_type(step_length=self.fresh_step_length, relative_damping=self.initial_damping)

    def selected_globalization(self, model: GaussNewtonModel) -> str:
        """The globalization for a solve whose first model is ``model``: the one given, or the automatic choice."""
        if self.globalization != "auto":
            return self.globalization
        return "levenberg-marquardt" if model.proximal_share >= 0.5 else "line-search"

    def step_cutoff_after(self, previous_length: float) -> float | None:
        """The line search's eigenvalue cutoff after a step of length ``previous_length``.

        ``None`` (the full pseudo-inverse, rounding cutoff only) after a full-length step (:math:`\\eta` = ``max_step_length``, default 1),
        where the model held at the scale of its whole step; ``step_cutoff`` after a shortened one, where it
        did not, and at a cold start (:meth:`initial_state`), where nothing is known yet.
        """
        return None if previous_length >= self.max_step_length else self.step_cutoff

    def _model(self, subproblem: MMSSubproblem, theta: torch.Tensor) -> GaussNewtonModel:
        return subproblem.gauss_newton_model(theta, self.solve_mode)

    def _sampled_model(self, subproblem: MMSSubproblem, theta: torch.Tensor, iteration: int) -> GaussNewtonModel | None:
        """Iteration ``iteration``'s row-sampled model (:func:`~mms_manifolds.solvers.row_sampling.row_sampled_model`), or ``None`` where it would be the full one or does not apply."""
        total, sampling = subproblem.manifold.parametrization.ambient_dimension, self.row_sampling
        if (sampling.rows is None or sampling.rows >= total) and sampling.kernel_dtype is None:
            return None  # every row in the model's dtype: the full model
        rows = sampled_rows(sampling, total, iteration, subproblem.manifold.parametrization.device)
        return row_sampled_model(subproblem, theta, rows, sampling.kernel_dtype)

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: GaussNewtonState
    ) -> InnerResult:
        theta = theta0
        cost = subproblem.cost(theta)
        costs, residuals, residual_iterations = [cost], [], []
        if tolerance > 0:
            residuals, residual_iterations = [subproblem.tangential_residual(theta)], [0]
        stop, failed_at, iterations = StopReason.MAX_ITERATIONS, None, 0
        step_length, relative_damping, nu = state.step_length, state.relative_damping, 2.0
        use_line_search = None
        direction = self._previous_direction(state, theta)
        forcing = _ForcingRecord(self.forcing)
        damping_record = _DampingRecord()
        sampling = self.row_sampling is not None  # row-sampled models until the rule's switch
        sampled_iterations, sampled_rows_used = 0, 0
        started = time.perf_counter()
        for iteration in range(self.max_iterations):
            if tolerance > 0:
                if not math.isfinite(residuals[-1]):
                    stop, failed_at = StopReason.NON_FINITE, iteration
                    break
                if residuals[-1] <= tolerance:
                    stop = StopReason.CONVERGED
                    break
            model = None  # release the last point's Jacobian and factorisation before the next are formed
            if sampling and sampled_iterations == self.row_sampling.max_sampled:
                sampling = False
            if sampling and use_line_search is not False:
                model = self._sampled_model(subproblem, theta, iteration)
                sampling = model is not None  # where the sampled model does not apply, the full one from here on
            sampled = model is not None
            if model is None:
                model = self._model(subproblem, theta)
            solved_before = model.factorization.linear_iterations
            iterations += 1
            if not bool(torch.isfinite(model.gradient).all()):
                stop, failed_at = StopReason.NON_FINITE, iteration
                break
            model = forcing.start(iterations, model)
            damping_record.start(iterations)
            if use_line_search is None:
                use_line_search = self.selected_globalization(model) == "line-search"
            candidate = None
            if sampled and use_line_search:
                candidate, length, sampled_direction = self._line_search(
                    subproblem, model, theta, step_length, forcing, direction, damping_record=damping_record
                )
                sampling = isinstance(candidate, tuple) and length < self.row_sampling.until_length
                if isinstance(candidate, tuple):
                    sampled_iterations += 1
                    sampled_rows_used += len(model.range_gradient)
                    step_length, direction = length, sampled_direction
                else:  # the sampled step was rejected: this iteration's full model, with the same forcing term
                    model = None
                    model = forcing.restart(self._model(subproblem, theta))
            elif sampled:  # Levenberg–Marquardt chosen by "auto": no sampled models
                sampling, model = False, None
                model = forcing.restart(self._model(subproblem, theta))
            if use_line_search and not isinstance(candidate, tuple):
                candidate, length, direction = self._line_search(
                    subproblem, model, theta, step_length, forcing, direction, damping_record=damping_record
                )
                # after a fallback to Levenberg–Marquardt the next search starts afresh, as at a cold start
                step_length = length if candidate is not None else self.fresh_step_length
            if isinstance(candidate, tuple):  # the line search's step is taken, with the damping it was solved with
                damping_record.accept()
            if candidate is None:  # Levenberg–Marquardt, or the line search's fallback
                direction = None  # SPRING's direction restarts from 0
                candidate, relative_damping, nu = self._levenberg_marquardt(
                    subproblem, model, theta, relative_damping, nu, forcing
                )
            if candidate is StopReason.STALLED:
                costs.append(cost)
                stop = StopReason.STALLED
                break
            if candidate is None:
                costs.append(cost)
                stop, failed_at = StopReason.NO_PROGRESS, iteration
                break
            theta, cost = candidate
            costs.append(cost)
            forcing.accept()
            if tolerance > 0:  # the stopping test of the next iteration, measured here to be reported with this one
                residuals.append(subproblem.tangential_residual(theta))
                residual_iterations.append(iterations)
            report_inner_iteration(
                InnerProgress(
                    self.name,
                    iterations,
                    cost,
                    residuals[-1] if tolerance > 0 else math.nan,
                    model.factorization.linear_iterations - solved_before,
                    time.perf_counter() - started,
                    theta,
                )
            )
        model = None  # release the last point's factorisation before the final point's is formed
        measured_last = bool(residual_iterations) and residual_iterations[-1] == iterations
        for_the_ledger = self.final_residual and subproblem.booked_parts == "split"
        if (for_the_ledger or tolerance > 0) and not measured_last:
            residuals.append(subproblem.tangential_residual(theta))
            residual_iterations.append(iterations)
        if stop is StopReason.MAX_ITERATIONS and residuals and residuals[-1] <= tolerance:
            stop = StopReason.CONVERGED
        carried = {}
        if self.momentum > 0:
            carried["previous_direction"] = () if direction is None else tuple(direction.tolist())
        return InnerResult(
            theta,
            iterations,
            costs,
            residuals,
            residual_iterations,
            0.0,
            stop,
            failed_iteration=failed_at,
            extra=forcing.extra()
            | self._sampling_extra(sampled_iterations, sampled_rows_used)
            | self._damping_extra(damping_record),
            state=dataclasses.replace(state, step_length=step_length, relative_damping=relative_damping, **carried),
        )

    def _damping_extra(self, record: _DampingRecord) -> dict:
        """``{"raised_damping": [...]}`` (:class:`_DampingRecord`, possibly empty) for ``InnerResult.extra`` with ``step_filter="tikhonov"``; empty with ``"truncate"``, whose steps take no damping."""
        return {} if self.step_filter == "truncate" else {"raised_damping": record.records}

    def _sampling_extra(self, iterations: int, rows: int) -> dict:
        """``{"row_sampling": {"sampled_iterations": ..., "sampled_rows": ...}}`` (rows summed over those iterations) for ``InnerResult.extra``; empty without the rule."""
        if self.row_sampling is None:
            return {}
        return {"row_sampling": {"sampled_iterations": iterations, "sampled_rows": rows}}

    def _previous_direction(self, state: GaussNewtonState, theta: torch.Tensor) -> torch.Tensor | None:
        r"""SPRING's :math:`\phi_{k-1}` from ``state`` on ``theta``'s device and dtype, ``None`` for :math:`\phi = 0` (and without momentum).

        Raises:
            ValueError: the state's direction has another length than ``theta`` (a state of another problem).
        """
        if self.momentum == 0 or not state.previous_direction:
            return None
        if len(state.previous_direction) != theta.numel():
            raise ValueError(
                f"the state's previous_direction has {len(state.previous_direction)} entries, theta {theta.numel()}"
            )
        return torch.tensor(state.previous_direction, dtype=theta.dtype, device=theta.device)

    def _rounding_level(self, model: GaussNewtonModel) -> float:
        r""":math:`8\varepsilon\max(|f|, \min(1, |f|/\sqrt\varepsilon))`, the rounding level of the cost's value.

        Below it a change of the cost cannot be told from rounding. It is the level of the computed value,
        not of its terms: where a sum's terms cancel (a Ritz energy's :math:`\tfrac12|u'|^2` against
        :math:`-fu`) the true rounding can be somewhat larger, and the search then follows rounding for a
        few steps; an earlier level :math:`8\varepsilon\sqrt{Nm}\max(|f|, 1)` stopped it too early instead
        (measured in ``docs/gauss_newton.md``: 30 against 36 of 40 seeds of the nonlinear Ritz benchmark at
        1e-7). The floor of 1 guards costs of ordinary size; for :math:`|f| < \sqrt\varepsilon` it would
        exceed the cost itself by more than :math:`1/\sqrt\varepsilon` and call every step rounding (a problem
        scaled by :math:`10^{-10}` stalled at its first iteration while gradient descent kept decreasing it),
        so there the level is :math:`8\sqrt\varepsilon|f|`, still far above the value's own rounding.
        """
        epsilon, cost = torch.finfo(model.gradient.dtype).eps, abs(model.cost)
        return 8 * epsilon * max(cost, min(1.0, cost / math.sqrt(epsilon)))

    def _unresolvable(self, model: GaussNewtonModel, predicted: float) -> bool:
        """Whether a predicted decrease is at or below the cost's rounding level (:meth:`_rounding_level`)."""
        return not predicted > self._rounding_level(model)

    def _accept_on_residual(
        self, subproblem: MMSSubproblem, theta: torch.Tensor, step: torch.Tensor
    ) -> tuple[torch.Tensor, float] | StopReason:
        """At the rounding level the cost cannot judge a step: accept the full step if it lowers the tangential residual.

        ``theta``'s residual is taken first, while its factorisation is the cached one (the candidate's evicts it);
        the subproblem keeps both residuals, so the end of a stalled solve does not form ``theta``'s again.
        """
        current = subproblem.tangential_residual(theta)
        candidate = theta + step
        if bool(torch.isfinite(candidate).all()):
            candidate_cost = subproblem.cost(candidate)
            if math.isfinite(candidate_cost) and subproblem.tangential_residual(candidate) < current:
                return candidate, candidate_cost
        return StopReason.STALLED

    def _trial_cost(self, subproblem: MMSSubproblem, candidate: torch.Tensor) -> float:
        return subproblem.cost(candidate) if bool(torch.isfinite(candidate).all()) else math.nan

    def _filter_damping(
        self, model: GaussNewtonModel, cutoff: float | None, record: _DampingRecord | None = None
    ) -> float:
        r"""The line search's damping for a factorisation that pseudo-inverts: 0 (``"truncate"``); for ``"tikhonov"`` ``step_damping`` :math:`\cdot\operatorname{tr}A/p` where given (``step_damping`` itself with ``absolute_damping``), else the relative ``cutoff`` (the factorisation's ``rtol`` for ``None``) times :math:`\operatorname{tr}A`; for a row-sampled model at least its ``damping_floor``; raised where the computed Gram matrix does not resolve it (:meth:`~mms_manifolds.linalg.GramFactorization.resolved_damping`), which ``record`` (where given) keeps."""
        if self.step_filter == "truncate":
            return 0.0
        sampled = isinstance(model.factorization, RowSampledFactorization)
        floor = model.factorization.damping_floor if sampled else 0.0  # above the rounding of its kernel's dtype
        if self.step_damping is not None:
            damping = max(floor, self.step_damping * (1.0 if self.absolute_damping else model.mean_eigenvalue))
        else:
            size = model.gradient.numel()
            if cutoff is None:  # the factorisation's own cutoff, else the library's rounding rule
                cutoff = getattr(model.factorization, "rtol", None) or pseudo_inverse_rtol(size, model.gradient.dtype)
            damping = max(floor, cutoff * model.mean_eigenvalue * size)
        wanted = damping / model.scale  # the factorisation factors A/s
        resolved = model.factorization.resolved_damping(wanted)
        if record is not None:
            record.resolved(damping, damping if resolved == wanted else model.scale * resolved)
        return model.scale * resolved

    def _line_search(
        self,
        subproblem: MMSSubproblem,
        model: GaussNewtonModel,
        theta: torch.Tensor,
        previous_length: float,
        forcing: _ForcingRecord,
        previous: torch.Tensor | None = None,
        *,
        damping_record: _DampingRecord | None = None,
    ) -> tuple[tuple[torch.Tensor, float] | StopReason | None, float, torch.Tensor | None]:
        r"""``((candidate, cost), length, direction)`` of the accepted point on the search curve, ``(STALLED, 1, previous)`` (the step not taken), or ``(None, 0, None)`` if none decreased the cost.

        The curve is :math:`\eta \mapsto \theta + \eta\delta + \tfrac{\eta^2}2a` (:math:`a = 0` without
        ``geodesic_acceleration``); its velocity at :math:`\eta = 0` is :math:`\delta`, so Armijo's condition
        with the slope :math:`g\cdot\delta` is the usual one. With ``momentum`` and SPRING's last direction
        ``previous`` (``None``: :math:`\phi = 0`), :math:`\delta` is SPRING's :math:`\phi_k`
        (:func:`~mms_manifolds.solvers.momentum.momentum_direction`), or the plain step where that is no descent
        direction; ``direction`` is the :math:`\delta` searched along (``None`` without momentum).
        """
        if damping_record is not None:
            damping_record.begin_search()
        pseudo_inverts = model.factorization.pseudo_inverts
        cutoff = None if self.step_damping is not None else self.step_cutoff_after(previous_length)
        if pseudo_inverts:
            damping = self._filter_damping(model, cutoff, damping_record)
        else:
            damping = self.initial_damping * model.mean_eigenvalue
        step = model.step(damping, cutoff) if pseudo_inverts else forcing.step(model, damping)
        predicted = model.predicted_decrease(step, damping)
        if cutoff is not None and pseudo_inverts and self._unresolvable(model, predicted):
            cutoff = None  # the truncated step has nothing left to give: the full pseudo-inverse
            damping = self._filter_damping(model, cutoff, damping_record)
            step = model.step(damping, cutoff)
            predicted = model.predicted_decrease(step, damping)
        if self.momentum > 0 and previous is not None:
            spring = momentum_direction(model, step, damping, previous, self.momentum)
            spring_slope = float(model.gradient @ spring)
            if math.isfinite(spring_slope) and spring_slope < 0:  # else the plain step, and phi restarts from it
                step = spring
                predicted = momentum_predicted_decrease(model, step, damping, previous, self.momentum)
        direction = step if self.momentum > 0 else None
        slope = float(model.gradient @ step)
        if not (math.isfinite(slope) and slope < 0):
            return None, 0.0, None
        if self._unresolvable(model, predicted):
            accepted = self._accept_on_residual(subproblem, theta, step)
            return accepted, 1.0, previous if accepted is StopReason.STALLED else direction  # a stalled step is not taken
        acceleration = torch.zeros_like(step)
        if self.geodesic_acceleration:
            acceleration = subproblem.geodesic_acceleration(theta, model, step, damping, cutoff)
            if not bool(torch.isfinite(acceleration).all()):
                acceleration = torch.zeros_like(step)

        def curve(length: float) -> torch.Tensor:
            return theta + length * step + (0.5 * length**2) * acceleration

        if self.line_search == "logarithmic-grid":
            lengths = logarithmic_grid(self.grid_largest)
        else:
            longest = self.max_step_length
            first = longest if self.search_start == "full" else min(longest, 2 * previous_length)
            lengths = self._halvings(model, slope, first)
        if self.line_search == "armijo":
            for length in lengths:
                candidate = curve(length)
                candidate_cost = self._trial_cost(subproblem, candidate)
                if candidate_cost <= model.cost + self.armijo * length * slope:
                    return (candidate, candidate_cost), length, direction
            return None, 0.0, None
        best = grid_minimiser(lambda length: self._trial_cost(subproblem, curve(length)), lengths, model.cost)
        if best is None:
            return None, 0.0, None
        return (curve(best.length), best.cost), best.length, direction

    def _halvings(self, model: GaussNewtonModel, slope: float, first: float) -> list[float]:
        r"""The lengths :math:`\eta_0, \eta_0/2, \dots` (at most ``max_halvings`` halvings) whose first-order decrease
        :math:`-\eta\,g\cdot\delta` the cost can still resolve (:meth:`_unresolvable`): no shorter length can be judged by it."""
        lengths, length = [], first
        for _ in range(self.max_halvings + 1):
            if self._unresolvable(model, -length * slope):
                break
            lengths.append(length)
            length /= 2
        return lengths

    def trial_point(
        self,
        subproblem: MMSSubproblem,
        model: GaussNewtonModel,
        theta: torch.Tensor,
        step: torch.Tensor,
        damping: float,
    ) -> torch.Tensor:
        r"""The Levenberg–Marquardt trial point of ``step``: :math:`\theta + \delta`, or :math:`\theta + \delta + \tfrac12 a` with ``geodesic_acceleration`` where :math:`2|a| \le 0.75|\delta|`.

        The extension point for the move along a step (a retraction): a subclass may return any point reached
        from ``theta`` (shape ``(p,)``) along :math:`\delta` = ``step`` of the damped model ``model`` (damping
        ``damping``, absolute); the iteration accepts it by the gain ratio of its cost, as it does the chart's.
        A non-finite point is a failed trial (more damping). ``benchmarks/retractions.py`` moves along geodesics.
        """
        if self.geodesic_acceleration:
            acceleration = subproblem.geodesic_acceleration(theta, model, step, damping)
            if 2 * float(acceleration.norm()) <= ACCELERATION_RATIO * float(step.norm()):
                return theta + (step + 0.5 * acceleration)
        return theta + step

    def _levenberg_marquardt(
        self,
        subproblem: MMSSubproblem,
        model: GaussNewtonModel,
        theta: torch.Tensor,
        relative_damping: float,
        nu: float,
        forcing: _ForcingRecord,
    ) -> tuple[tuple[torch.Tensor, float] | StopReason | None, float, float]:
        """Nielsen's damped steps on one model: ``(accepted (candidate, cost) | STALLED | None, damping, nu)``."""
        for _ in range(self.max_retries):
            damping = relative_damping * model.mean_eigenvalue
            step = forcing.step(model, damping)
            predicted = model.predicted_decrease(step, damping)
            if self._unresolvable(model, predicted):
                return self._accept_on_residual(subproblem, theta, step), relative_damping, nu
            candidate = self.trial_point(subproblem, model, theta, step, damping)
            candidate_cost = self._trial_cost(subproblem, candidate)
            ratio = (model.cost - candidate_cost) / predicted if math.isfinite(candidate_cost) else -math.inf
            if ratio > 0:
                shrunk = relative_damping * max(1 / 3, 1 - (2 * ratio - 1) ** 3)
                return (candidate, candidate_cost), max(shrunk, MIN_RELATIVE_DAMPING), 2.0
            relative_damping *= nu
            nu *= 2
        return None, relative_damping, nu


class _DampingRecord:
    r"""The iterations of one Gauss–Newton solve whose step was taken with a Tikhonov damping above the one asked for.

    Where the computed Gram matrix :math:`G` plus :math:`\lambda I` has no Cholesky factor,
    :meth:`~mms_manifolds.linalg.GramFactorization.resolved_damping` takes the first shift :math:`\lambda' > \lambda`
    that has one. Each iteration whose accepted line-search step was solved with such a :math:`\lambda'` is kept once,
    as ``{"iteration": k, "requested": lambda, "resolved": lambda'}`` (dampings in the units of :math:`A`), for
    ``InnerResult.extra["raised_damping"]``. Searches whose step is not taken (a rejected row-sampled model, a search
    that falls back to Levenberg–Marquardt or stalls) and a damping replaced within the search (the truncated step's,
    where the full pseudo-inverse's follows) leave no entry.
    """

    def __init__(self) -> None:
        self.iteration = 0
        self.records: list[dict[str, float | int]] = []
        self._pending: dict[str, float | int] | None = None

    def start(self, iteration: int) -> None:
        """Iteration ``iteration`` (counted from 1) begins."""
        self.iteration, self._pending = iteration, None

    def begin_search(self) -> None:
        """A line search begins: what an earlier search of this iteration resolved is dropped."""
        self._pending = None

    def resolved(self, requested: float, resolved: float) -> None:
        """The search's step is solved with ``resolved`` where ``requested`` was asked for (the latest of the search counts)."""
        raised = resolved > requested
        self._pending = {"iteration": self.iteration, "requested": requested, "resolved": resolved} if raised else None

    def accept(self) -> None:
        """The search's step is taken: its damping is kept if it was raised."""
        if self._pending is not None:
            self.records.append(self._pending)
            self._pending = None


class _ForcingRecord:
    r"""The forcing terms of one Gauss–Newton solve and what each iteration's step solves reached.

    Without a rule every step is :meth:`GaussNewtonModel.step` (the solve mode's tolerance) and nothing is
    recorded. With an :class:`~mms_manifolds.linalg.EisenstatWalker` rule, :meth:`start` takes iteration
    :math:`k`'s term :math:`\eta_k` from :math:`\|g_k\|` and sets it on the model (its damped solves, the
    geodesic acceleration's included, stop by it), :meth:`step` solves by
    :meth:`GaussNewtonModel.inexact_step` and keeps the last solve, :meth:`accept` records the accepted one.
    """

    def __init__(self, rule: EisenstatWalker | None):
        self.rule = rule
        self.sequence: ForcingSequence | None = None if rule is None else rule.sequence()
        self.records: list[dict[str, float | int | bool]] = []
        self._iteration, self._term = 0, math.nan
        self._last: LinearSolution | None = None
        self._gradient_norm = math.nan
        self._linear_iterations = 0

    def start(self, iteration: int, model: GaussNewtonModel) -> GaussNewtonModel:
        """Iteration ``iteration`` begins at ``model``: its forcing term from the gradient's norm, set on the model it returns."""
        if self.sequence is None:
            return model
        self._iteration, self._last, self._linear_iterations = iteration, None, 0
        self._gradient_norm = float(torch.linalg.vector_norm(model.gradient))
        self._term = self.sequence.term(self._gradient_norm)
        return dataclasses.replace(model, forcing=(self._term, self.rule.fraction))

    def restart(self, model: GaussNewtonModel) -> GaussNewtonModel:
        """The same iteration on another model of the same gradient (a rejected row-sampled model's full one): :meth:`start`'s term, not a new one."""
        if self.sequence is None:
            return model
        return dataclasses.replace(model, forcing=(self._term, self.rule.fraction))

    def step(self, model: GaussNewtonModel, damping: float) -> torch.Tensor:
        r"""The damped step :math:`-(A + \mu I)^{-1}g` of ``model``, stopped by the forcing term where there is one."""
        if self.sequence is None:
            return model.step(damping)
        step, solution = model.inexact_step(damping)
        self._last = solution
        self._linear_iterations += solution.iterations
        return step

    def accept(self) -> None:
        """The iteration accepted its step: record the step solve (and its linear residual for choice 1)."""
        if self.sequence is None:
            return
        solution = self._last
        fraction = 1.0 if solution is None else solution.certified_fraction
        relative = 0.0 if solution is None or math.isnan(solution.relative_residual) else solution.relative_residual
        self.sequence.record_step(relative * self._gradient_norm)
        self.records.append(
            {
                "iteration": self._iteration,
                "forcing_term": self._term,
                "cg_iterations": self._linear_iterations,
                "relative_residual": relative,
                "certified_fraction": fraction,
                "certified": fraction >= self.rule.fraction,
            }
        )

    def extra(self) -> dict:
        """``{"forcing": [...], "uncertified_iterations": [...]}`` for ``InnerResult.extra``; empty without a rule."""
        if self.sequence is None:
            return {}
        uncertified = [record["iteration"] for record in self.records if not record["certified"]]
        return {"forcing": self.records, "uncertified_iterations": uncertified}
