r"""Parametrisation of a network written in ``autograd.numpy``, for pymanopt's autograd users."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from autograd import make_jvp, make_vjp

from .._checks import check_finite
from .base import Parametrization

__all__ = ["AutogradParametrization"]


class AutogradParametrization(Parametrization):
    r"""Node values :math:`\phi(\theta) = \mathrm{fun}(\theta, \mathrm{nodes})` of an ``autograd.numpy`` function.

    Derivatives come from HIPS autograd: JVP by ``make_jvp``, VJP by ``make_vjp``, and the second
    derivative :math:`D^2\phi[\xi, \eta]` and its adjoint by nesting them on
    :math:`\theta \mapsto J(\theta)\xi`. Values cross into torch as float64 CPU tensors, so the
    geometry (metric, manifold, solvers) is the same as for torch models.

    Args:
        fun: ``fun(theta, nodes)`` written with ``autograd.numpy``, ``theta`` a float64 vector of
            shape ``(p,)``, returning ``(N,)`` or ``(N, m)``.
        theta0: initial parameters, shape ``(p,)``.
        nodes: evaluation points, passed to ``fun`` unchanged (a numpy array).

    Raises:
        ValueError: ``theta0`` is not a finite vector, or ``fun`` does not return a finite array
            of shape ``(N,)`` or ``(N, m)``.
    """

    def __init__(self, fun: Callable[[np.ndarray, np.ndarray], np.ndarray], theta0: np.ndarray, nodes: np.ndarray):
        theta0 = np.asarray(theta0, dtype=np.float64)
        if theta0.ndim != 1 or not np.all(np.isfinite(theta0)):
            raise ValueError("theta0 must be a finite 1-D array of parameters")
        self._fun = fun
        self.nodes = nodes
        self._theta0 = theta0.copy()
        self.num_parameters = theta0.size
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        output = np.asarray(fun(theta0, nodes))
        if output.ndim not in (1, 2):
            raise ValueError(f"fun must return an array of shape (N,) or (N, m), got shape {output.shape}")
        check_finite("fun(theta0, nodes)", torch.from_numpy(np.asarray(output, dtype=np.float64)))
        self._squeezed = output.ndim == 1
        self.output_shape = (output.shape[0], 1 if self._squeezed else output.shape[1])

    def _phi(self, theta: np.ndarray) -> np.ndarray:
        output = self._fun(theta, self.nodes)
        return output[:, None] if self._squeezed else output

    def _directional_jacobian(self, tangent: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return lambda point: make_jvp(self._phi)(point)(tangent)[1]

    @staticmethod
    def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().astype(np.float64, copy=False)

    @staticmethod
    def _to_torch(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(array, dtype=np.float64))

    def initial_point(self) -> torch.Tensor:
        return self._to_torch(self._theta0)

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self._to_torch(self._phi(self._to_numpy(theta)))

    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return self._to_torch(make_jvp(self._phi)(self._to_numpy(theta))(self._to_numpy(tangent))[1])

    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        pullback, _ = make_vjp(self._phi)(self._to_numpy(theta))
        return self._to_torch(pullback(self._to_numpy(cotangent)))

    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        directional = self._directional_jacobian(self._to_numpy(first))
        return self._to_torch(make_jvp(directional)(self._to_numpy(theta))(self._to_numpy(second))[1])

    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        pullback, _ = make_vjp(self._directional_jacobian(self._to_numpy(tangent)))(self._to_numpy(theta))
        return self._to_torch(pullback(self._to_numpy(cotangent)))
