r"""Mesh-free energies of stacked jets: Ritz/Dirichlet, Ginzburg–Landau, and the least-squares (PINN) Poisson energy.

Each energy reads the jets of one :class:`~mms_manifolds.meshfree.JetParametrization` by node-set
name and integrates with the sets' weights, :math:`\int_\Omega g \approx \sum_i w_i g(x_i)`. A boundary
condition :math:`u = g` on :math:`\partial\Omega` enters as the penalty
:math:`\frac\beta2\int_{\partial\Omega}|u - g|^2` on a boundary node set (leave it out for natural
boundary conditions, or build the condition into the network).

Gradients and Hessian-vector products come from autodiff of :meth:`value` (they are cheap: the
energies are sums over nodes). :meth:`convexity` is ``None`` for all of them: on the jet space the
derivatives are independent coordinates, so a modulus there would say nothing about the PDE flow,
and the metric is usually only semi-definite, so no tracking bound is certified (the driver records
why). The continuum moduli are in each docstring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_positive_float
from ..energies import Energy
from .jets import Jet, JetParametrization

__all__ = ["GinzburgLandauJet", "PoissonLeastSquares", "RitzEnergy"]

SourceFunction = Callable[[torch.Tensor], torch.Tensor]
"""A function of the points, ``(N, d) -> (N, m)`` or ``(N,)``."""


class _JetEnergy(Energy):
    """Shared set-up: the parametrisation's layout, node-set lookup with clear errors, sampled functions."""

    def __init__(
        self,
        parametrization: JetParametrization,
        boundary: str | None,
        penalty: float,
        boundary_values: SourceFunction | None,
    ):
        if not isinstance(parametrization, JetParametrization):
            raise TypeError(f"parametrization must be a JetParametrization, got {type(parametrization).__name__}")
        self.parametrization = parametrization
        self.layout = parametrization.layout
        self.boundary = None if boundary is None else self._node_set(boundary, "value")
        self.penalty = check_positive_float("penalty", penalty)
        self.boundary_data = None if boundary is None else self._sample(boundary_values, boundary)

    def _node_set(self, name: str, *needed: str) -> str:
        if name not in self.layout.blocks:
            raise ValueError(f"unknown node set {name!r}; the parametrization has {sorted(self.layout.blocks)}")
        missing = [derivative for derivative in needed if derivative not in self.layout.blocks[name].derivatives]
        if missing:
            raise ValueError(f"node set {name!r} must carry {missing} for {type(self).__name__}")
        return name

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2E(u)\,v = d \odot v` with :math:`d = \nabla^2E(u)\,\mathbf 1`, shape ``(K, 1)``.

        Each jet energy is a sum of functions of single entries of the stacked jets (a node's Laplacian,
        one gradient component, one value), so its Hessian is diagonal and its diagonal is the one
        Hessian-vector product :math:`\nabla^2E(u)\,\mathbf 1`. Batched over many ``v`` (the Gauss–Newton
        model's columns of :math:`J`), that is one HVP instead of one per column.
        """
        return self.hessian_diagonal(u) * v

    def hessian_diagonal(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`d = \nabla^2E(u)\,\mathbf 1`, shape ``(K, 1)``: the Hessian is :math:`\operatorname{diag}(d)` (:meth:`hessian_matvec`)."""
        return super().hessian_matvec(u, torch.ones_like(u))

    def _weights(self, name: str) -> torch.Tensor:
        return self.parametrization.node_sets[name].weights

    def _sample(self, function: SourceFunction | None, name: str) -> torch.Tensor:
        """``function`` at the points of set ``name``, shape ``(N, m)`` (zeros for ``None``)."""
        points = self.parametrization.node_sets[name].points
        shape = (points.shape[0], self.layout.outputs)
        if function is None:
            return points.new_zeros(shape)
        values = function(points)
        if not isinstance(values, torch.Tensor) or values.numel() != shape[0] * shape[1]:
            raise ValueError(f"the function must return {shape[0] * shape[1]} values at the {name!r} nodes")
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"the function has non-finite values at the {name!r} nodes")
        return values.to(points.dtype).reshape(shape)

    def _penalty(self, jets: dict[str, Jet], boundary: str | None, data: torch.Tensor | None, beta: float):
        if boundary is None:
            return 0.0
        mismatch = jets[boundary].value - data
        return 0.5 * beta * (self._weights(boundary) * mismatch.square().sum(-1)).sum()


class RitzEnergy(_JetEnergy):
    r"""The Ritz energy :math:`E(u) = \int_\Omega \frac a2|\nabla u|^2 - f\cdot u + \frac\beta2\int_{\partial\Omega}|u - g|^2`.

    Its :math:`L^2` gradient flow is the heat equation :math:`u_t = a\Delta u + f` (Robin/penalised
    boundary), its minimiser solves :math:`-a\Delta u = f`. With ``source=None`` and no boundary set
    it is the Dirichlet energy. Continuum modulus in :math:`L^2`: :math:`\lambda = a\lambda_1(\Omega) > 0`
    with exact Dirichlet conditions (:math:`2\pi^2 a` on the unit square), 0 in general.

    Args:
        parametrization: jets with gradients on ``interior`` and values on ``boundary``.
        source: :math:`f`, a function of the points (``None`` for 0).
        diffusion: :math:`a > 0`.
        interior: name of the interior node set.
        boundary: name of the boundary node set, or ``None`` for no penalty.
        penalty: :math:`\beta > 0`.
        boundary_values: :math:`g` (``None`` for 0).
    """

    def __init__(
        self,
        parametrization: JetParametrization,
        source: SourceFunction | None = None,
        *,
        diffusion: float = 1.0,
        interior: str = "interior",
        boundary: str | None = None,
        penalty: float = 1.0,
        boundary_values: SourceFunction | None = None,
    ):
        super().__init__(parametrization, boundary, penalty, boundary_values)
        self.interior = (
            self._node_set(interior, "value", "gradient") if source else self._node_set(interior, "gradient")
        )
        self.diffusion = check_positive_float("diffusion", diffusion)
        self.source = self._sample(source, interior) if source else None

    def value(self, u: torch.Tensor) -> torch.Tensor:
        jets = self.layout.split(u)
        inside = jets[self.interior]
        density = 0.5 * self.diffusion * inside.gradient.square().sum((-2, -1))
        if self.source is not None:
            density = density - (self.source * inside.value).sum(-1)
        return (self._weights(self.interior) * density).sum() + self._penalty(
            jets, self.boundary, self.boundary_data, self.penalty
        )


class GinzburgLandauJet(_JetEnergy):
    r"""Mesh-free Ginzburg–Landau energy :math:`E(u) = \int_\Omega \frac{\varepsilon^2}2|\nabla u|^2 + \frac14(u^2 - 1)^2`.

    Plus an optional penalty :math:`\frac\beta2\int_{\partial\Omega}|u - g|^2`. Its :math:`L^2` flow is
    Allen–Cahn, :math:`u_t = \varepsilon^2\Delta u - (u^3 - u)`; in the continuum the energy is
    :math:`(-1)`-convex in :math:`L^2`, so MMS steps need :math:`\tau < 1`.

    Args:
        parametrization: jets with values and gradients on ``interior``.
        epsilon: interface width :math:`\varepsilon > 0`.
        interior: name of the interior node set (values and gradients).
        boundary: name of the boundary node set, or ``None`` for no penalty.
        penalty: :math:`\beta > 0`.
        boundary_values: :math:`g` (``None`` for 0).
    """

    def __init__(
        self,
        parametrization: JetParametrization,
        epsilon: float,
        *,
        interior: str = "interior",
        boundary: str | None = None,
        penalty: float = 1.0,
        boundary_values: SourceFunction | None = None,
    ):
        super().__init__(parametrization, boundary, penalty, boundary_values)
        self.epsilon = check_positive_float("epsilon", epsilon)
        self.interior = self._node_set(interior, "value", "gradient")

    def value(self, u: torch.Tensor) -> torch.Tensor:
        jets = self.layout.split(u)
        inside = jets[self.interior]
        density = 0.5 * self.epsilon**2 * inside.gradient.square().sum((-2, -1))
        density = density + 0.25 * (inside.value.square() - 1).square().sum(-1)
        return (self._weights(self.interior) * density).sum() + self._penalty(
            jets, self.boundary, self.boundary_data, self.penalty
        )


class PoissonLeastSquares(_JetEnergy):
    r"""The least-squares (PINN) energy of :math:`-\Delta u = f`: :math:`E(u) = \frac12\int_\Omega(\Delta u + f)^2 + \frac\beta2\int_{\partial\Omega}|u - g|^2`.

    A quadratic energy of the Laplacian and boundary jets; its minimiser over the network is what
    the energy natural gradient literature computes. Continuum modulus: none useful in :math:`L^2`
    (it is a fourth-order energy), so the flow of it is for reaching the minimiser, not for time accuracy.

    Args:
        parametrization: jets with Laplacians on ``interior`` and values on ``boundary``.
        source: :math:`f`.
        interior: name of the interior node set (Laplacians).
        boundary: name of the boundary node set (values), or ``None`` for no penalty.
        penalty: :math:`\beta > 0`.
        boundary_values: :math:`g` (``None`` for 0).
    """

    def __init__(
        self,
        parametrization: JetParametrization,
        source: SourceFunction | None = None,
        *,
        interior: str = "interior",
        boundary: str | None = "boundary",
        penalty: float = 1.0,
        boundary_values: SourceFunction | None = None,
    ):
        super().__init__(parametrization, boundary, penalty, boundary_values)
        self.interior = self._node_set(interior, "laplacian")
        self.source = self._sample(source, interior)

    def value(self, u: torch.Tensor) -> torch.Tensor:
        jets = self.layout.split(u)
        defect = jets[self.interior].laplacian + self.source
        return 0.5 * (self._weights(self.interior) * defect.square().sum(-1)).sum() + self._penalty(
            jets, self.boundary, self.boundary_data, self.penalty
        )
