r"""Riemannian gradient descent along geodesics: the paper's discrete companion of the gradient flow."""

from __future__ import annotations

import copy
import math

import torch

from .._checks import check_flag, check_positive_float
from ..subproblem import MMSSubproblem
from .base import InnerResult, InnerSolver, StopReason
from .state import NoState

__all__ = ["RiemannianGradientDescent"]


class RiemannianGradientDescent(InnerSolver):
    r"""Riemannian gradient descent :math:`\theta_{j+1} = \exp_{\theta_j}(-t_j\,\operatorname{grad} f(\theta_j))`.

    With ``use_exp=False`` the chart retraction :math:`\theta + \xi` replaces the exponential map. The
    step :math:`t_j` starts at ``step_size`` and, with ``line_search=True``, is halved until the Armijo
    condition :math:`f(\theta_{j+1}) \le f(\theta_j) - 10^{-4}\,t_j\|\operatorname{grad} f\|^2_G` holds.

    Args:
        step_size: initial step; ``None`` means :math:`\tau/(1 + \tau\max(\lambda, 0))`, the inverse of the
            step's Hessian in the direction of a well-represented function (exact for regression).
        use_exp: move along geodesics (default) or by the chart retraction.
        line_search: Armijo backtracking (default ``True``); without it every step uses ``step_size``.
        max_iterations: iterations. Default ``20``.
        tolerance: stop when the tangential residual is at or below it.
        exp_rtol: relative tolerance of the geodesic integration. Default ``1e-8``.
    """

    name = "riemannian-gd"

    def __init__(
        self,
        step_size: float | None = None,
        use_exp: bool = True,
        line_search: bool = True,
        max_iterations: int = 20,
        tolerance: float = 0.0,
        exp_rtol: float = 1e-8,
    ):
        super().__init__(max_iterations, tolerance)
        self.step_size = None if step_size is None else check_positive_float("step_size", step_size)
        self.use_exp, self.line_search = check_flag("use_exp", use_exp), check_flag("line_search", line_search)
        self.exp_rtol = check_positive_float("exp_rtol", exp_rtol)

    def fallback(self) -> RiemannianGradientDescent | None:
        """With a fixed step: the same solver with a ten times smaller step; with a line search, none."""
        if self.line_search or self.step_size is None:
            return None
        cautious = copy.copy(self)
        cautious.step_size = self.step_size / 10
        return cautious

    def move(self, subproblem: MMSSubproblem, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""The point reached from ``theta`` along the tangent vector ``xi`` (shapes ``(p,)``): :math:`\exp_\theta(\xi)` or :math:`\theta + \xi`.

        The extension point for the move (a retraction): a subclass may return another point; a
        ``RuntimeError`` or ``ValueError`` it raises, or a non-finite cost there, fails the trial step.
        """
        if self.use_exp:
            return subproblem.manifold.geodesic(theta, xi, rtol=self.exp_rtol, atol=self.exp_rtol * 1e-2).point
        return subproblem.manifold.retract(theta, xi)

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: NoState
    ) -> InnerResult:
        theta, cost = theta0, subproblem.cost(theta0)
        initial_step = self.step_size
        if initial_step is None:
            initial_step = subproblem.tau / (1 + subproblem.tau * max(subproblem.convexity or 0.0, 0.0))
        costs, residuals, residual_iterations = [cost], [], []
        stop, failed_at, iterations = StopReason.MAX_ITERATIONS, None, 0
        for iteration in range(self.max_iterations + 1):
            egrad = subproblem.euclidean_gradient(theta)
            rgrad = subproblem.manifold.egrad2rgrad(theta, egrad)
            squared_norm = float(egrad @ rgrad)
            if not math.isfinite(squared_norm):
                residuals.append(math.nan)
                residual_iterations.append(iteration)
                stop, failed_at = StopReason.NON_FINITE, iteration
                break
            residuals.append(subproblem.tangential_residual(theta))
            residual_iterations.append(iteration)
            if residuals[-1] <= tolerance:
                stop = StopReason.CONVERGED
                break
            if iteration == self.max_iterations:
                break
            step, accepted = initial_step, False
            for _ in range(40 if self.line_search else 1):
                try:
                    candidate = self.move(subproblem, theta, -step * rgrad)
                    candidate_cost = subproblem.cost(candidate)
                except (RuntimeError, ValueError):
                    candidate_cost = math.nan
                if math.isfinite(candidate_cost) and (
                    not self.line_search or candidate_cost <= cost - 1e-4 * step * squared_norm
                ):
                    accepted = True
                    break
                step /= 2
            iterations += 1
            if not accepted:
                stop, failed_at = StopReason.NO_PROGRESS, iteration
                break
            theta, cost = candidate, candidate_cost
            costs.append(cost)
        return InnerResult(
            theta, iterations, costs, residuals, residual_iterations, 0.0, stop, failed_iteration=failed_at
        )
