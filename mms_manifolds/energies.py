r"""Energies :math:`E(u)` on discretised functions :math:`u \in \mathbb{R}^{N \times m}`.

Each energy gives its value, Euclidean gradient :math:`\nabla E(u)` (the dual object: the
:math:`M`-gradient is :math:`M^{-1}\nabla E`), Hessian-vector product, its convexity modulus with respect
to a metric, and, where one exists, the exact proximal map of the MMS step

.. math:: \operatorname{prox}_{\tau E}(u_k) = \arg\min_u\; E(u) + \frac{1}{2\tau}\|u - u_k\|_M^2 .

Convexity is relative to the metric of the flow: :math:`E` is :math:`\lambda`-convex on :math:`(H_N, M)` when
:math:`\nabla^2 E \succeq \lambda M`. ``None`` means unknown, and the driver then certifies no bound.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch.func import grad, jvp

from ._checks import check_instance, check_positive_float, check_real_tensor
from .metrics.base import Metric
from .step_constants import lipschitz_constant

__all__ = [
    "CallableEnergy",
    "DirichletEnergy",
    "Energy",
    "GinzburgLandau",
    "L2Regression",
    "QuarticEnergy",
    "check_stiffness",
    "smallest_generalized_eigenvalue",
]


def check_stiffness(stiffness: object) -> torch.Tensor:
    r"""A stiffness matrix :math:`K`: real, square, finite and symmetric to rounding.

    :math:`E(u) = \tfrac12 u\cdot Ku` has gradient :math:`\tfrac12(K + K^\top)u`; the energies return :math:`Ku`,
    which is that gradient only for symmetric :math:`K` (an asymmetric one gave a gradient 5.6x off its value).

    Raises:
        TypeError: not a real floating tensor.
        ValueError: not 2-D and square, non-finite entries, or :math:`\max|K - K^\top| > 10^3\varepsilon\max|K|`.
    """
    check_real_tensor("stiffness", stiffness, ndim=2)
    if stiffness.shape[0] != stiffness.shape[1]:
        raise ValueError(f"stiffness must be square, got shape {tuple(stiffness.shape)}")
    asymmetry = float((stiffness - stiffness.T).abs().max())
    scale = float(stiffness.abs().max())
    if asymmetry > 1e3 * torch.finfo(stiffness.dtype).eps * scale:
        raise ValueError(
            f"stiffness must be symmetric: max |K - K^T| = {asymmetry:.3g} (max |K| = {scale:.3g}); "
            "the energy's gradient Ku would not be the gradient of u.Ku/2"
        )
    return stiffness


def smallest_generalized_eigenvalue(
    matrix: torch.Tensor, metric_matrix: torch.Tensor, basis: torch.Tensor | None = None
) -> float:
    r"""Smallest :math:`\lambda` with :math:`Ax = \lambda Mx`: :math:`\lambda_{\min}(C^{-1}AC^{-\top})`, :math:`M = CC^\top`.

    Both matrices are dense, symmetric, shape ``(n, n)``; :math:`M` positive definite (on the subspace).
    With ``basis`` :math:`Z` (``(n, d)``, orthonormal columns) the eigenproblem is that of the subspace
    :math:`\operatorname{range} Z`: :math:`\min_{x = Zy} x\cdot Ax / x\cdot Mx`, from :math:`(Z^\top AZ, Z^\top MZ)`.
    """
    if basis is not None:
        matrix, metric_matrix = basis.T @ matrix @ basis, basis.T @ metric_matrix @ basis
    factor = torch.linalg.cholesky(0.5 * (metric_matrix + metric_matrix.T))
    left = torch.linalg.solve_triangular(factor, matrix, upper=False)
    reduced = torch.linalg.solve_triangular(factor, left.T, upper=False)
    return float(torch.linalg.eigvalsh(0.5 * (reduced + reduced.T))[0])


class Energy(ABC):
    r"""An energy :math:`E: \mathbb{R}^{N \times m} \to \mathbb{R}`.

    Subclasses implement :meth:`value` (torch-differentiable). :meth:`gradient` and
    :meth:`hessian_matvec` default to ``torch.func`` autodiff; :meth:`convexity` defaults to
    ``None`` (unknown); :meth:`prox` exists only where an exact proximal map is known.
    """

    @abstractmethod
    def value(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`E(u)` for ``u`` of shape ``(N, m)``; a scalar tensor."""

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        r"""Euclidean gradient :math:`\nabla E(u)`, shape ``(N, m)``."""
        return grad(self.value)(u)

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2 E(u)\,v`, shape ``(N, m)`` (forward-over-reverse autodiff by default)."""
        return jvp(grad(self.value), (u,), (v,))[1]

    def hessian_diagonal(self, u: torch.Tensor) -> torch.Tensor | None:
        r"""The diagonal :math:`d` (shape ``(N, m)``) where :math:`\nabla^2E(u) = \operatorname{diag}(d)` exactly, else ``None`` (the default: not known).

        A Gauss–Newton model with a diagonal Hessian and a diagonal metric is solved on the kernel side
        (:func:`~mms_manifolds.linalg.diagonal_weight_factorization`) when :math:`Nm < p`.
        """
        return None

    def convexity(self, metric: Metric) -> float | None:
        r"""Convexity modulus :math:`\lambda` with :math:`\nabla^2 E \succeq \lambda M`, or ``None`` if unknown."""
        return None

    def hessian_metric_multiple(self, metric: Metric) -> float | None:
        r"""The constant :math:`c` with :math:`\nabla^2 E \equiv cM` when there is one (else ``None``).

        The Gauss–Newton solver then reuses the metric factorisation for its model
        :math:`J^\top(\nabla^2E + M/\tau)J = (c + 1/\tau)J^\top M J`.
        """
        return None

    def check_evaluates(self, u: torch.Tensor) -> None:
        r"""Raise unless :math:`E(u)` is a finite scalar and :math:`\nabla E(u)` has ``u``'s shape and dtype.

        The MMS driver calls it once with the network's initial values, so a target with the wrong number
        of rows, an energy that returns a vector, or data in another dtype is named where the flow is built.

        Raises:
            ValueError: the energy cannot be evaluated at ``u``, returns a non-scalar or non-finite value, or
                a gradient of another shape.
            TypeError: value or gradient in another dtype than ``u``.
        """
        name = type(self).__name__

        def evaluate(method):
            try:
                return method(u)
            except (ValueError, RuntimeError, IndexError) as error:
                raise ValueError(
                    f"energy {name} cannot be evaluated at the network's values of shape {tuple(u.shape)}: {error}"
                ) from error

        value = evaluate(self.value)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"energy {name}.value must return a scalar tensor, got {got}")
        gradient = evaluate(self.gradient)
        if not isinstance(gradient, torch.Tensor) or gradient.shape != u.shape:
            got = tuple(gradient.shape) if isinstance(gradient, torch.Tensor) else type(gradient).__name__
            raise ValueError(f"energy {name}.gradient has shape {got}, the values {tuple(u.shape)}")
        for label, tensor in (("value", value), ("gradient", gradient)):
            if tensor.dtype != u.dtype:
                raise TypeError(f"energy {name}.{label} has dtype {tensor.dtype}, the model {u.dtype}")
        if not math.isfinite(float(value)):
            raise ValueError(f"energy {name} is not finite at the network's initial values: {float(value)}")

    @property
    def has_prox(self) -> bool:
        """Whether :meth:`prox` gives the exact MMS step."""
        return type(self).prox is not Energy.prox

    def prox(self, u: torch.Tensor, tau: float, metric: Metric) -> torch.Tensor:
        r"""Exact MMS step :math:`\arg\min_v E(v) + \|v - u\|_M^2/(2\tau)`, shape ``(N, m)``.

        Raises:
            NotImplementedError: the energy has no exact proximal map (check :attr:`has_prox`).
        """
        raise NotImplementedError(f"{type(self).__name__}.prox: this energy has no exact proximal map")


def _dense_metric(metric: Metric, like: torch.Tensor) -> torch.Tensor:
    return metric.to_dense((like.shape[0], like.shape[1]), dtype=like.dtype, device=like.device)


def _subspace(metric: Metric, like: torch.Tensor) -> torch.Tensor | None:
    """The orthonormal basis ``(Nm, d)`` of the subspace the flow moves in (``None``: all of :math:`H_N`)."""
    return metric.subspace_basis((like.shape[0], like.shape[1]), dtype=like.dtype, device=like.device)


def _newton_step(hessian: torch.Tensor, gradient: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    r"""The Newton step :math:`-H^{-1}g` (flat, ``(Nm,)``), or over :math:`\operatorname{range} Z`: :math:`-Z(Z^\top HZ)^{-1}Z^\top g`.

    The restricted step keeps the iterate in :math:`u_k + \operatorname{range} Z`, which for a
    :class:`~mms_manifolds.metrics.SubspaceMetric` conserves :math:`C^\top u` to rounding.
    """
    if basis is None:
        return torch.linalg.solve(hessian, -gradient)
    return basis @ torch.linalg.solve(basis.T @ hessian @ basis, -(basis.T @ gradient))


def _node_matrix(matrix: torch.Tensor, outputs: int) -> torch.Tensor:
    """:math:`K \\otimes I_m`, the node matrix acting on flattened ``(N, m)`` values."""
    return torch.kron(matrix, torch.eye(outputs, dtype=matrix.dtype, device=matrix.device))


class L2Regression(Energy):
    r"""Regression energy :math:`E(u) = \tfrac12\|u - g\|_{M_E}^2`.

    With the flow metric :math:`M = M_E`: :math:`\lambda = 1` and the closed-form step
    :math:`\operatorname{prox}_{\tau E}(u_k) = (u_k + \tau g)/(1 + \tau)`. With another flow metric
    both come from dense linear algebra (generalized eigenvalue, linear solve).

    Args:
        target: :math:`g`, shape ``(N, m)``.
        metric: :math:`M_E`, the metric of the misfit.
    """

    def __init__(self, target: torch.Tensor, metric: Metric):
        self.target = check_real_tensor("target", target, ndim=2)
        self.metric = check_instance("metric", metric, Metric, " (e.g. L2Metric(weights))")

    def value(self, u: torch.Tensor) -> torch.Tensor:
        difference = u - self.target
        return 0.5 * self.metric.inner(difference, difference)

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        return self.metric.apply(u - self.target)

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.metric.apply(v)

    def hessian_metric_multiple(self, metric: Metric) -> float | None:
        return 1.0 if metric is self.metric else None

    def convexity(self, metric: Metric) -> float | None:
        if metric is self.metric:
            return 1.0
        return smallest_generalized_eigenvalue(
            _dense_metric(self.metric, self.target), _dense_metric(metric, self.target), _subspace(metric, self.target)
        )

    def prox(self, u: torch.Tensor, tau: float, metric: Metric) -> torch.Tensor:
        basis = _subspace(metric, u)
        if metric is self.metric and basis is None:
            return (u + tau * self.target) / (1 + tau)
        own, flow = _dense_metric(self.metric, u), _dense_metric(metric, u)
        step = _newton_step(own + flow / tau, own @ (u - self.target).reshape(-1), basis)
        return u + step.reshape(u.shape)


class DirichletEnergy(Energy):
    r"""Dirichlet energy :math:`E(u) = \tfrac12 u \cdot Ku` (per output component); its :math:`L^2` flow is the heat equation.

    :math:`\lambda` = the smallest generalized eigenvalue of :math:`(K, M)` (about :math:`\pi^2` on
    :math:`[0, 1]` with Dirichlet boundaries; :math:`\pi^2/4` when :math:`K` carries the diffusivity
    :math:`1/4`). Exact step: :math:`(K + M/\tau)\,u_{k+1} = M u_k/\tau`.

    Args:
        stiffness: :math:`K`, shape ``(N, N)``, symmetric positive semidefinite (dense), e.g. from
            :func:`mms_manifolds.grids.stiffness_1d` times a diffusivity.
    """

    def __init__(self, stiffness: torch.Tensor):
        self.stiffness = check_stiffness(stiffness)

    def _check(self, u: torch.Tensor) -> None:
        if u.ndim != 2 or u.shape[0] != self.stiffness.shape[0]:
            raise ValueError(
                f"DirichletEnergy has {self.stiffness.shape[0]} nodes, got values of shape {tuple(u.shape)}"
            )

    def value(self, u: torch.Tensor) -> torch.Tensor:
        self._check(u)
        return 0.5 * (u * (self.stiffness @ u)).sum()

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        self._check(u)
        return self.stiffness @ u

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.stiffness @ v

    def convexity(self, metric: Metric) -> float | None:
        like = torch.zeros(self.stiffness.shape[0], 1, dtype=self.stiffness.dtype, device=self.stiffness.device)
        return smallest_generalized_eigenvalue(self.stiffness, _dense_metric(metric, like), _subspace(metric, like))

    def prox(self, u: torch.Tensor, tau: float, metric: Metric) -> torch.Tensor:
        self._check(u)
        flow = _dense_metric(metric, u)
        stiffness = _node_matrix(self.stiffness, u.shape[1])
        step = _newton_step(stiffness + flow / tau, stiffness @ u.reshape(-1), _subspace(metric, u))
        return u + step.reshape(u.shape)


class GinzburgLandau(Energy):
    r"""Ginzburg–Landau energy (Allen–Cahn flow): :math:`E(u) = \frac{\varepsilon^2}{2}u\cdot Ku + \sum_i w_i\frac{(u_i^2 - 1)^2}{4}`.

    :math:`\nabla^2E = \varepsilon^2K + \operatorname{diag}(w(3u^2 - 1)) \succeq \varepsilon^2K - \operatorname{diag}(w)`,
    so :meth:`convexity` returns :math:`\lambda_{\min}(\varepsilon^2K - \operatorname{diag}(w), M)`, which depends on
    the metric: at least :math:`-1` for :math:`M = \operatorname{diag}(w)` (Allen–Cahn), :math:`-23.886` for the
    :math:`H^{-1}` metric on zero-mean functions (Cahn–Hilliard; 64 periodic nodes on :math:`[0, 1)`,
    :math:`\varepsilon = 0.1`), taken over the subspace for a :class:`~mms_manifolds.metrics.SubspaceMetric`.
    The MMS step is strongly convex for :math:`\tau < 1/|\lambda|`, and :meth:`prox` solves it by damped Newton
    on the grid (over :math:`u_k + V` for a metric on a subspace :math:`V`, conserving :math:`C^\top u`).

    Args:
        epsilon: interface width :math:`\varepsilon > 0`.
        stiffness: :math:`K`, shape ``(N, N)``, dense.
        weights: quadrature weights :math:`w`, shape ``(N,)``, positive.
    """

    def __init__(self, epsilon: float, stiffness: torch.Tensor, weights: torch.Tensor):
        self.epsilon = check_positive_float("epsilon", epsilon)
        if self.epsilon > 1e100:
            raise ValueError(f"epsilon = {self.epsilon:.3g} is too large: epsilon^2 would overflow")
        check_real_tensor("weights", weights, ndim=1)
        check_stiffness(stiffness)
        if stiffness.shape != (weights.shape[0], weights.shape[0]):
            raise ValueError(f"stiffness has shape {tuple(stiffness.shape)}, expected {(weights.shape[0],) * 2}")
        if bool((weights <= 0).any()):
            raise ValueError("weights must be strictly positive")
        self.stiffness, self.weights = stiffness, weights

    def value(self, u: torch.Tensor) -> torch.Tensor:
        bulk = (self.weights.unsqueeze(-1) * (u**2 - 1) ** 2).sum() / 4
        return 0.5 * self.epsilon**2 * (u * (self.stiffness @ u)).sum() + bulk

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        return self.epsilon**2 * (self.stiffness @ u) + self.weights.unsqueeze(-1) * u * (u**2 - 1)

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.epsilon**2 * (self.stiffness @ v) + self.weights.unsqueeze(-1) * (3 * u**2 - 1) * v

    def convexity(self, metric: Metric) -> float | None:
        like = torch.zeros(self.stiffness.shape[0], 1, dtype=self.stiffness.dtype, device=self.stiffness.device)
        lower = self.epsilon**2 * self.stiffness - torch.diag(self.weights)
        return smallest_generalized_eigenvalue(lower, _dense_metric(metric, like), _subspace(metric, like))

    def prox(
        self, u: torch.Tensor, tau: float, metric: Metric, *, tolerance: float = 1e-11, max_iterations: int = 100
    ) -> torch.Tensor:
        modulus = self.convexity(metric)
        if modulus is not None:
            lipschitz_constant(modulus, tau)  # raises unless the step is strongly convex
        stiffness = self.epsilon**2 * _node_matrix(self.stiffness, u.shape[1])
        weights = self.weights.repeat_interleave(u.shape[1])

        def hessian(point: torch.Tensor) -> torch.Tensor:
            return stiffness + torch.diag(weights * (3 * point.reshape(-1) ** 2 - 1))

        return _newton_prox(self, hessian, u, tau, metric, tolerance, max_iterations)


def _newton_prox(
    energy: Energy,
    hessian: Callable[[torch.Tensor], torch.Tensor],
    u: torch.Tensor,
    tau: float,
    metric: Metric,
    tolerance: float,
    max_iterations: int,
) -> torch.Tensor:
    r"""The MMS step :math:`\arg\min_v E(v) + \|v - u\|_M^2/(2\tau)` by damped Newton (Armijo backtracking) on the grid.

    ``hessian(v)`` is the dense :math:`\nabla^2 E(v)`, shape ``(Nm, Nm)``. For a metric on a subspace :math:`V`
    the minimum is over :math:`u + V` (Newton steps restricted to :math:`V`, so :math:`C^\top v = C^\top u` to
    rounding). Stops when the Newton step is
    below ``tolerance`` relative to :math:`\max|v|`, or when the predicted decrease (Newton decrement) is
    below the objective's rounding level (then the full Newton step is taken).

    Raises:
        RuntimeError: no convergence in ``max_iterations``.
    """
    flow, basis = _dense_metric(metric, u), _subspace(metric, u)

    def objective(v: torch.Tensor) -> torch.Tensor:
        difference = (v - u).reshape(-1)
        return energy.value(v) + difference @ flow @ difference / (2 * tau)

    point = u.clone()
    for _ in range(max_iterations):
        gradient = (energy.gradient(point) + (flow @ (point - u).reshape(-1)).reshape(u.shape) / tau).reshape(-1)
        step = _newton_step(hessian(point) + flow / tau, gradient, basis).reshape(u.shape)
        length, current = 1.0, objective(point)
        decrement = -float(gradient @ step.reshape(-1))  # twice the predicted decrease
        if decrement <= 64 * torch.finfo(u.dtype).eps * max(1.0, abs(float(current))):
            return point + step  # the objective cannot resolve the decrease: the full Newton step is the answer
        while objective(point + length * step) > current + 1e-4 * length * float(gradient @ step.reshape(-1)):
            length /= 2
            if length < 1e-10:
                return point  # no decrease left at the objective's rounding level: converged
        point = point + length * step
        if float(step.abs().max()) <= tolerance * max(1.0, float(point.abs().max())):
            return point
    raise RuntimeError(f"{type(energy).__name__}.prox: Newton did not converge in {max_iterations} iterations")


class QuarticEnergy(Energy):
    r"""A convex semilinear energy :math:`E(u) = \tfrac12 u\cdot Ku + \sum_i w_i\big(\tfrac14 u_i^4 - f_i u_i\big)`.

    The grid form of :math:`\int \tfrac12|v'|^2 + \tfrac14 v^4 - fv`. :math:`\nabla^2E = K + \operatorname{diag}(3wu^2)
    \succeq K`, so :meth:`convexity` is :math:`\lambda_{\min}(K, M) \ge 0` (0 with Neumann :math:`K`);
    :meth:`prox` solves the step by damped Newton. With :math:`f = \pi^2\cos\pi x + \cos^3\pi x` on
    :math:`[-1, 1]` (Neumann) the minimiser is :math:`\cos\pi x` up to the grid error.

    Args:
        stiffness: :math:`K`, shape ``(N, N)``, symmetric positive semi-definite.
        weights: quadrature weights :math:`w`, shape ``(N,)``, positive.
        source: :math:`f`, shape ``(N, m)``.
    """

    def __init__(self, stiffness: torch.Tensor, weights: torch.Tensor, source: torch.Tensor):
        check_stiffness(stiffness)
        check_real_tensor("weights", weights, ndim=1)
        self.source = check_real_tensor("source", source, ndim=2)
        if stiffness.shape != (weights.shape[0], weights.shape[0]) or source.shape[0] != weights.shape[0]:
            raise ValueError(
                f"stiffness {tuple(stiffness.shape)}, weights {tuple(weights.shape)} and source "
                f"{tuple(source.shape)} must agree on N"
            )
        if bool((weights <= 0).any()):
            raise ValueError("weights must be strictly positive")
        self.stiffness, self.weights = stiffness, weights

    def value(self, u: torch.Tensor) -> torch.Tensor:
        local = self.weights.unsqueeze(-1) * (u**4 / 4 - self.source * u)
        return 0.5 * (u * (self.stiffness @ u)).sum() + local.sum()

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        return self.stiffness @ u + self.weights.unsqueeze(-1) * (u**3 - self.source)

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.stiffness @ v + self.weights.unsqueeze(-1) * 3 * u**2 * v

    def convexity(self, metric: Metric) -> float | None:
        like = torch.zeros(self.stiffness.shape[0], 1, dtype=self.stiffness.dtype, device=self.stiffness.device)
        modulus = smallest_generalized_eigenvalue(self.stiffness, _dense_metric(metric, like), _subspace(metric, like))
        return max(0.0, modulus)

    def prox(
        self, u: torch.Tensor, tau: float, metric: Metric, *, tolerance: float = 1e-11, max_iterations: int = 100
    ) -> torch.Tensor:
        stiffness = _node_matrix(self.stiffness, u.shape[1])
        weights = self.weights.repeat_interleave(u.shape[1])

        def hessian(point: torch.Tensor) -> torch.Tensor:
            return stiffness + torch.diag(3 * weights * point.reshape(-1) ** 2)

        return _newton_prox(self, hessian, u, tau, metric, tolerance, max_iterations)


class CallableEnergy(Energy):
    r"""A user's energy from a function ``fn(u) -> scalar tensor``, with a declared convexity modulus.

    Args:
        fn: torch-differentiable :math:`E`, ``(N, m) -> ()``.
        convexity: :math:`\lambda` with respect to the flow's metric, or ``None`` (bounds then
            stay uncertified). It is taken on trust: state it only if you know it.
        prox: optional exact step ``prox(u, tau, metric) -> (N, m)``.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        convexity: float | None = None,
        prox: Callable[[torch.Tensor, float, Metric], torch.Tensor] | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be a function u -> E(u), got {type(fn).__name__}")
        if convexity is not None:
            if isinstance(convexity, bool) or not isinstance(convexity, (int, float)):
                raise TypeError(f"convexity must be a real number or None, got {convexity!r}")
            if not math.isfinite(convexity):
                raise ValueError(f"convexity must be finite or None, got {convexity}: a modulus is taken on trust")
        if prox is not None and not callable(prox):
            raise TypeError(
                f"prox must be a function (u, tau, metric) -> the exact step, or None; got {type(prox).__name__} "
                f"{prox!r}"
            )
        self._fn = fn
        self._convexity = None if convexity is None else float(convexity)
        self._prox = prox

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return self._fn(u)

    def convexity(self, metric: Metric) -> float | None:
        return self._convexity

    @property
    def has_prox(self) -> bool:
        return self._prox is not None

    def prox(self, u: torch.Tensor, tau: float, metric: Metric) -> torch.Tensor:
        if self._prox is None:
            return super().prox(u, tau, metric)
        return self._prox(u, tau, metric)
