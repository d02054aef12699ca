r"""First-order baselines on raw parameters, as neural-MMS codes use them today: Adam, SGD, L-BFGS."""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod

import torch

from .._checks import check_integer, check_positive_float
from ..progress import InnerProgress, report_inner_iteration, reporting
from ..subproblem import MMSSubproblem
from .base import InnerResult, InnerSolver, StopReason
from .state import NoState

__all__ = ["LBFGS", "SGD", "Adam", "TorchOptimizerSolver"]


class TorchOptimizerSolver(InnerSolver):
    r"""Minimise :math:`f(\theta)` with a ``torch.optim`` optimiser on the flat parameter vector.

    The cost is recorded after every step; the tangential residual (a linearisation, costlier
    than the step itself) only where a tolerance is set, for its stopping test: at the start, every
    ``check_every`` steps and at the end (``InnerResult.residual_history`` is empty without a tolerance).
    The driver books the end point's residual itself, as its ``residual=`` setting asks (the split from the
    subproblem's cache where this solve measured it, or the total alone), so a first-order baseline pays
    for no linearisation it does not read. Each step is reported to :mod:`mms_manifolds.progress`.

    Args:
        max_iterations: optimiser steps.
        tolerance: stop when the tangential residual is at or below it (checked every ``check_every``).
        check_every: steps between tolerance checks. Default ``10``.
    """

    def __init__(self, max_iterations: int, tolerance: float = 0.0, check_every: int = 10):
        super().__init__(max_iterations, tolerance)
        self.check_every = check_integer("check_every", check_every, minimum=1)

    @abstractmethod
    def _optimizer(self, parameter: torch.Tensor, subproblem: MMSSubproblem) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimiser over the single flat ``parameter`` (``subproblem`` sets scale-derived defaults)."""

    def fallback(self) -> TorchOptimizerSolver | None:
        """The same solver with a ten times smaller learning rate (``None`` for rate-free optimisers)."""
        if not hasattr(self, "lr"):
            return None
        cautious = copy.copy(self)
        cautious.lr = self.lr / 10
        return cautious

    def _parameter(self, subproblem: MMSSubproblem, theta0: torch.Tensor) -> torch.Tensor:
        """The leaf tensor the optimiser updates, a copy of ``theta0`` (subclasses may attach a manifold)."""
        return theta0.clone().requires_grad_(True)

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: NoState
    ) -> InnerResult:
        parameter = self._parameter(subproblem, theta0)
        optimizer = self._optimizer(parameter, subproblem)
        last_good = theta0.clone()
        costs = [subproblem.cost(theta0)]
        residuals, residual_iterations = [], []
        stop, failed_at, iterations = StopReason.MAX_ITERATIONS, None, 0
        if tolerance > 0:  # the start's residual only where a stopping test reads it (it costs a solve with G)
            residuals, residual_iterations = [subproblem.tangential_residual(theta0)], [0]
            if residuals[0] <= tolerance:
                return InnerResult(theta0, 0, costs, residuals, residual_iterations, 0.0, StopReason.CONVERGED)
        started = time.perf_counter()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = subproblem.cost_tensor(parameter)
            loss.backward()
            return loss

        for iteration in range(1, self.max_iterations + 1):
            try:
                optimizer.step(closure)
            except ValueError:  # the core refuses non-finite points and vectors: a divergence
                stop, failed_at = StopReason.NON_FINITE, iteration
                break
            iterations = iteration
            current = parameter.detach().clone()
            cost = subproblem.cost(current) if bool(torch.isfinite(current).all()) else math.nan
            if not math.isfinite(cost):
                stop, failed_at = StopReason.NON_FINITE, iteration
                break
            costs.append(cost)
            last_good = current
            checked = tolerance > 0 and iteration % self.check_every == 0
            if checked:
                residuals.append(subproblem.tangential_residual(current))
                residual_iterations.append(iteration)
            if reporting():
                seconds = time.perf_counter() - started
                residual = residuals[-1] if checked else math.nan
                report_inner_iteration(InnerProgress(self.name, iteration, cost, residual, 0, seconds, current))
            if checked and residuals[-1] <= tolerance:
                stop = StopReason.CONVERGED
                break
        measured_last = bool(residual_iterations) and residual_iterations[-1] == iterations
        if tolerance > 0 and not measured_last and stop is not StopReason.NON_FINITE:
            residuals.append(subproblem.tangential_residual(last_good))
            residual_iterations.append(iterations)
        return InnerResult(
            last_good, iterations, costs, residuals, residual_iterations, 0.0, stop, failed_iteration=failed_at
        )


class Adam(TorchOptimizerSolver):
    """``torch.optim.Adam`` on the raw parameters (a fresh optimiser state for every MMS step).

    Args:
        lr: learning rate. Default ``1e-2``.
        max_iterations: steps. Default ``100``.
        tolerance: see :class:`TorchOptimizerSolver`.
        check_every: see :class:`TorchOptimizerSolver`.
    """

    name = "adam"

    def __init__(self, lr: float = 1e-2, max_iterations: int = 100, tolerance: float = 0.0, check_every: int = 10):
        super().__init__(max_iterations, tolerance, check_every)
        self.lr = check_positive_float("lr", lr)

    def _optimizer(self, parameter: torch.Tensor, subproblem: MMSSubproblem) -> torch.optim.Optimizer:
        return torch.optim.Adam([parameter], lr=self.lr)


class SGD(TorchOptimizerSolver):
    """``torch.optim.SGD`` (optionally with momentum) on the raw parameters.

    Args:
        lr: learning rate. Default ``1e-2``.
        momentum: heavy-ball momentum in ``[0, 1)``. Default ``0``.
        max_iterations: steps. Default ``100``.
        tolerance: see :class:`TorchOptimizerSolver`.
        check_every: see :class:`TorchOptimizerSolver`.
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 1e-2,
        momentum: float = 0.0,
        max_iterations: int = 100,
        tolerance: float = 0.0,
        check_every: int = 10,
    ):
        super().__init__(max_iterations, tolerance, check_every)
        self.lr = check_positive_float("lr", lr)
        self.momentum = check_positive_float("momentum", momentum, allow_zero=True)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")

    def _optimizer(self, parameter: torch.Tensor, subproblem: MMSSubproblem) -> torch.optim.Optimizer:
        return torch.optim.SGD([parameter], lr=self.lr, momentum=self.momentum)


class LBFGS(TorchOptimizerSolver):
    """``torch.optim.LBFGS`` with strong-Wolfe line search, one quasi-Newton iteration per step.

    The history persists across the iterations of one MMS step (the optimiser's state), as in published
    neural-MMS code; the gradient and change tolerances of torch are disabled so that
    ``max_iterations`` is honoured, and each iteration may use up to 25 line-search evaluations.

    Args:
        lr: initial step length. Default ``1``.
        history_size: stored curvature pairs. Default ``50``.
        max_iterations: iterations. Default ``50``.
        tolerance: see :class:`TorchOptimizerSolver`.
        check_every: see :class:`TorchOptimizerSolver`.
    """

    name = "lbfgs"

    def __init__(
        self,
        lr: float = 1.0,
        history_size: int = 50,
        max_iterations: int = 50,
        tolerance: float = 0.0,
        check_every: int = 10,
    ):
        super().__init__(max_iterations, tolerance, check_every)
        self.lr = check_positive_float("lr", lr)
        self.history_size = check_integer("history_size", history_size, minimum=1)

    def _optimizer(self, parameter: torch.Tensor, subproblem: MMSSubproblem) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(
            [parameter],
            lr=self.lr,
            max_iter=1,
            max_eval=26,  # torch's default, 1.25 * max_iter, would leave the line search no evaluations
            history_size=self.history_size,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )
