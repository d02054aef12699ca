r"""The metric linearised at the last point asked for: :math:`J(\theta)`, :math:`J^\top MJ` and its factorisation, formed once."""

from __future__ import annotations

import torch

from ..metrics.base import Metric
from ..parametrizations.base import Parametrization
from .operator import GramOperator
from .solution import Factorization

__all__ = ["MetricLinearization"]


class MetricLinearization:
    r"""The Gram operator :math:`J(\theta)^\top MJ(\theta)` and its factorisation at the most recent point, cached.

    Every geometric operation at one point (gradient, Hessian, projection, transport, residual split)
    reads the same operator, so :math:`J` is formed at most once per point and the factorisation (one
    Cholesky per damping, or the SVD) is shared. Products with :math:`J` and :math:`J^\top` use the formed
    Jacobian where it exists, else a JVP or VJP.

    Args:
        parametrization: :math:`\phi`.
        metric: :math:`M`.
        solve_mode: the solve mode in use (resolved, not ``"auto"``); it factorises every point's operator.
    """

    def __init__(self, parametrization: Parametrization, metric: Metric, solve_mode: object):
        self.parametrization, self.metric, self.solve_mode = parametrization, metric, solve_mode
        self._point: tuple[torch.Tensor, GramOperator, Factorization] | None = None

    def at(self, theta: torch.Tensor) -> tuple[GramOperator, Factorization]:
        """The operator and factorisation at ``theta`` (a new point replaces the cached one)."""
        if self._point is not None and torch.equal(self._point[0], theta):
            return self._point[1], self._point[2]
        operator = GramOperator(self.parametrization, self.metric, theta.detach().clone())
        factorization = self.solve_mode.factorize(operator)
        self._point = (operator.theta, operator, factorization)
        return operator, factorization

    def solve(self, theta: torch.Tensor, rhs: torch.Tensor, damping: float) -> torch.Tensor:
        r""":math:`(J^\top MJ + \lambda I)^{-1}` ``rhs`` at ``theta``, shape ``(p,)``."""
        return self.at(theta)[1].solve(rhs, damping).value

    def formed_jacobian(self, theta: torch.Tensor) -> torch.Tensor | None:
        r""":math:`J(\theta)` as ``(Nm, p)`` if the cached point is ``theta`` and its Jacobian is formed, else ``None``."""
        point = self._point
        if point is not None and point[1].has_jacobian and torch.equal(point[0], theta):
            return point[1].jacobian().reshape(-1, self.parametrization.num_parameters)
        return None

    def jvp(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r""":math:`J\xi`, shape ``(N, m)``: a product with the cached Jacobian where it exists, else a JVP."""
        jacobian = self.formed_jacobian(theta)
        if jacobian is None:
            return self.parametrization.jvp(theta, xi)
        return (jacobian @ xi).reshape(self.parametrization.output_shape)

    def vjp(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r""":math:`J^\top w`, shape ``(p,)``: a product with the cached Jacobian where it exists, else a VJP."""
        jacobian = self.formed_jacobian(theta)
        if jacobian is None:
            return self.parametrization.vjp(theta, w)
        return jacobian.T @ w.reshape(-1)
