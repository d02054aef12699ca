r"""Generalized Gauss–Newton with Levenberg–Marquardt damping adapted by actual over predicted decrease."""

from __future__ import annotations

import copy
import math

import torch

from .._checks import check_integer, check_positive_float
from ..linalg import EigenFactorization, Factorization, GramOperator, make_solve_mode
from ..metrics.base import Metric
from ..subproblem import MMSSubproblem
from .base import InnerResult, InnerSolver, StopReason

__all__ = ["GaussNewton"]


class _StepHessian(Metric):
    r"""The function-space Hessian of the MMS step, :math:`W = \nabla^2E(u) + M/\tau`, as an SPD operator."""

    def __init__(self, subproblem: MMSSubproblem, u: torch.Tensor):
        self.subproblem, self.u = subproblem, u

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        energy, metric, tau = self.subproblem.energy, self.subproblem.manifold.metric, self.subproblem.tau
        if v.ndim == 2:
            return energy.hessian_matvec(self.u, v) + metric.apply(v) / tau
        flat = v.reshape(-1, *v.shape[-2:])
        product = torch.vmap(lambda column: energy.hessian_matvec(self.u, column))(flat)
        return product.reshape(v.shape) + metric.apply(v) / tau


class GaussNewton(InnerSolver):
    r"""Generalized Gauss–Newton for the MMS step with adaptive Levenberg–Marquardt damping.

    Each iteration linearises :math:`\phi` once and minimises the quadratic model

    .. math:: m(\delta) = f + g\cdot\delta + \tfrac12\delta\cdot(A + \mu I)\delta,\qquad
              A = J^\top\big(\nabla^2 E(u) + M/\tau\big)J,\quad g = \nabla_\theta f,

    i.e. :math:`\delta = -(A + \mu I)^{-1}g`. The step is accepted when the ratio
    :math:`\rho = (f(\theta) - f(\theta + \delta)) / (m(0) - m(\delta))` is positive, and :math:`\mu` follows
    Nielsen's rule: :math:`\mu \leftarrow \mu\max(1/3, 1 - (2\rho - 1)^3)` on acceptance,
    :math:`\mu \leftarrow \nu\mu`, :math:`\nu \leftarrow 2\nu` on rejection. When the predicted decrease
    is below the cost's rounding level, the step is accepted if it lowers the tangential residual
    (otherwise the solve ends as ``STALLED``). Retries reuse the factorisation
    of :math:`A` (no new Jacobian). When :math:`\nabla^2E = cM` (regression), :math:`A = (c + 1/\tau)J^\top MJ`
    and the manifold's own factorisation is reused.

    Every call starts from ``initial_damping``: the solver keeps no state between MMS steps, so a
    resumed run repeats an uninterrupted one exactly.

    Args:
        max_iterations: Gauss–Newton iterations (Jacobian evaluations). Default ``5``.
        tolerance: stop when the tangential residual :math:`\\|P_T r\\|_M` is at or below it. Default ``0``.
        initial_damping: :math:`\mu_0` relative to :math:`\operatorname{tr}(A)/p`. Default ``1e-3``.
        max_retries: rejected steps allowed per iteration before stopping with ``NO_PROGRESS``. Default ``30``.
        solve_mode: ``"auto"``, ``"dense"`` or ``"cg"`` for the model solve (``"woodbury"`` applies on
            the regression fast path, where the manifold's factorisation is reused).

    References:
        H. B. Nielsen, "Damping parameter in Marquardt's method", IMM-REP-1999-05, DTU, 1999.
    """

    name = "gauss-newton"

    def __init__(
        self,
        max_iterations: int = 5,
        tolerance: float = 0.0,
        initial_damping: float = 1e-3,
        max_retries: int = 30,
        solve_mode: object = "auto",
    ):
        super().__init__(max_iterations, tolerance)
        self.initial_damping = check_positive_float("initial_damping", initial_damping)
        self.max_retries = check_integer("max_retries", max_retries, minimum=1)
        self.solve_mode = make_solve_mode(solve_mode)

    def fallback(self) -> GaussNewton | None:
        """The same solver with 100 times the initial Levenberg–Marquardt damping (none beyond ``1e3``)."""
        if self.initial_damping * 100 > 1e3:
            return None
        cautious = copy.copy(self)
        cautious.initial_damping = self.initial_damping * 100
        return cautious

    def _model(self, subproblem: MMSSubproblem, theta: torch.Tensor) -> tuple[Factorization, float, float]:
        """Factorisation of :math:`A/s`, the scale :math:`s`, and :math:`\\operatorname{tr}(A)/p`."""
        manifold = subproblem.manifold
        multiple = subproblem.energy.hessian_metric_multiple(manifold.metric)
        metric_operator = manifold.linearization(theta)
        if multiple is not None:
            scale = multiple + 1 / subproblem.tau
            factorization = manifold.metric_factorization(theta)
            mean_eigenvalue = scale * metric_operator.trace(exact=factorization.mode != "cg") / manifold.dim
            return factorization, scale, mean_eigenvalue
        weight = _StepHessian(subproblem, subproblem.node_values(theta))
        mode = self.solve_mode if self.solve_mode.name != "auto" else manifold.selected_solve_mode()
        if mode.name == "cg":
            operator = GramOperator(manifold.parametrization, weight, theta)
            factorization = mode.factorize(operator)
            return factorization, 1.0, operator.trace(exact=False) / manifold.dim
        gram = GramOperator(manifold.parametrization, weight, theta, jacobian=metric_operator.jacobian()).gram_matrix()
        return EigenFactorization(gram), 1.0, float(torch.trace(gram)) / manifold.dim

    def _solve(self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float) -> InnerResult:
        theta = theta0
        cost = subproblem.cost(theta)
        costs, residuals, residual_iterations = [cost], [], []
        stop, failed_at, iterations = StopReason.MAX_ITERATIONS, None, 0
        if not math.isfinite(cost):
            return InnerResult(theta, 0, costs, [], [], 0.0, StopReason.NON_FINITE, failed_iteration=0)
        nu, relative_damping = 2.0, self.initial_damping
        for iteration in range(self.max_iterations):
            egrad = subproblem.euclidean_gradient(theta)
            residuals.append(subproblem.tangential_residual(theta))
            residual_iterations.append(iteration)
            if not math.isfinite(residuals[-1]):
                stop, failed_at = StopReason.NON_FINITE, iteration
                break
            if residuals[-1] <= tolerance:
                stop = StopReason.CONVERGED
                break
            factorization, scale, mean_eigenvalue = self._model(subproblem, theta)
            iterations += 1
            accepted = False
            for _ in range(self.max_retries):
                damping = relative_damping * mean_eigenvalue
                step = -factorization.solve(egrad, damping / scale).value / scale
                predicted = 0.5 * float(-(egrad @ step) + damping * (step @ step))
                candidate = theta + step
                candidate_cost = subproblem.cost(candidate) if bool(torch.isfinite(candidate).all()) else math.nan
                if not predicted > 8 * torch.finfo(theta.dtype).eps * max(abs(cost), 1.0):
                    # The cost cannot resolve the decrease: accept on a smaller gradient norm instead.
                    if math.isfinite(candidate_cost) and subproblem.tangential_residual(candidate) < residuals[-1]:
                        theta, cost, accepted = candidate, candidate_cost, True
                    else:
                        stop = StopReason.STALLED
                    break
                ratio = (cost - candidate_cost) / predicted if math.isfinite(candidate_cost) else -math.inf
                if ratio > 0:
                    theta, cost, accepted = candidate, candidate_cost, True
                    relative_damping *= max(1 / 3, 1 - (2 * ratio - 1) ** 3)
                    nu = 2.0
                    break
                relative_damping *= nu
                nu *= 2
            costs.append(cost)
            if stop is StopReason.STALLED:
                break
            if not accepted:
                stop, failed_at = StopReason.NO_PROGRESS, iteration
                break
        else:
            residuals.append(subproblem.tangential_residual(theta))
            residual_iterations.append(self.max_iterations)
            if residuals[-1] <= tolerance:
                stop = StopReason.CONVERGED
        return InnerResult(
            theta,
            iterations,
            costs,
            residuals,
            residual_iterations,
            0.0,
            stop,
            failed_iteration=failed_at,
            extra={"relative_damping": relative_damping},
        )
