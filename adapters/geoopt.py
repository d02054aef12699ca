r"""The increment manifold as a geoopt ``Manifold`` on one flat ``ManifoldParameter``, and an MMS inner solver.

geoopt applies manifold operations per parameter tensor; the pullback metric couples all layers of a
network, so all of its parameters live in one flat vector :math:`\theta` of length :math:`p`. Every
geometric operation is delegated to :class:`mms_manifolds.IncrementManifold`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import geoopt
import torch

from mms_manifolds._checks import check_positive_float
from mms_manifolds.manifold import IncrementManifold, check_transport_kind
from mms_manifolds.metrics.base import Metric
from mms_manifolds.parametrizations import TorchParametrization
from mms_manifolds.solvers import TorchOptimizerSolver
from mms_manifolds.subproblem import MMSSubproblem

__all__ = ["GeooptIncrementManifold", "GeooptNetwork", "GeooptSolver", "network_parameter"]


class GeooptIncrementManifold(geoopt.Manifold):
    r"""An :class:`~mms_manifolds.IncrementManifold` as a ``geoopt.Manifold`` over flat parameter vectors.

    ``retr`` is the chart retraction :math:`\theta + \xi`, ``expmap`` integrates the geodesic,
    ``inner`` is :math:`g_\theta`, ``egrad2rgrad`` is :math:`G^{-1}g`, ``proju``/``projx`` are the
    identity (tangent spaces are :math:`\mathbb{R}^p`, every finite vector is a point), ``transp``
    is the core's transport (``"projection"`` by default), ``dist`` the function-space chord.

    geoopt's ``RiemannianAdam`` keeps one scalar second moment per tensor,
    :math:`v \leftarrow \beta_2 v + (1 - \beta_2)\|\operatorname{grad} f\|_G^2`; on this manifold, with one
    tensor, it is a normalised Riemannian (Gauss–Newton-preconditioned) gradient method, not
    coordinate-wise Adam.

    Args:
        manifold: the core manifold.
        transport_kind: ``"projection"`` or ``"identity"``.
    """

    name = "IncrementManifold"
    ndim = 1
    reversible = False

    def __init__(self, manifold: IncrementManifold, transport_kind: str = "projection"):
        super().__init__()
        if not isinstance(manifold, IncrementManifold):
            raise TypeError(f"manifold must be an IncrementManifold, got {type(manifold).__name__}")
        self.core = manifold
        self.transport_kind = check_transport_kind(transport_kind)

    def _point(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        return self.core.check_point(x.detach(), name)

    def _check_point_on_manifold(self, x: torch.Tensor, *, atol=1e-5, rtol=1e-5) -> tuple[bool, str | None]:
        if x.shape != (self.core.dim,):
            return False, f"a point is a flat vector of shape ({self.core.dim},), got {tuple(x.shape)}"
        if x.dtype != self.core.parametrization.dtype:
            return False, f"point dtype {x.dtype} differs from the model's {self.core.parametrization.dtype}"
        if not bool(torch.isfinite(x).all()):
            return False, "point contains non-finite values"
        return True, None

    def _check_vector_on_tangent(
        self, x: torch.Tensor, u: torch.Tensor, *, atol=1e-5, rtol=1e-5
    ) -> tuple[bool, str | None]:
        ok, reason = self._check_point_on_manifold(x)
        if not ok:
            return ok, reason
        if u.shape != x.shape:
            return False, f"a tangent vector has the point's shape {tuple(x.shape)}, got {tuple(u.shape)}"
        if not bool(torch.isfinite(u).all()):
            return False, "tangent vector contains non-finite values"
        return True, None

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.core.retract(self._point(x), self._point(u, "u"))

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.core.exp(self._point(x), self._point(u, "u"))

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None, *, keepdim=False) -> torch.Tensor:
        value = self.core.inner(self._point(x), self._point(u, "u"), self._point(u if v is None else v, "v"))
        return value.reshape(1) if keepdim else value

    def norm(self, x: torch.Tensor, u: torch.Tensor, *, keepdim=False) -> torch.Tensor:
        return self.inner(x, u, keepdim=keepdim).clamp_min(0).sqrt()

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.core.egrad2rgrad(self._point(x), self._point(u, "egrad"))

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.core.transport(self._point(x), self._point(y, "y"), self._point(v, "v"), kind=self.transport_kind)

    def retr_transp(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.retr(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def transp_follow_retr(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.transp(x, self.retr(x, u), v)

    def transp_follow_expmap(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.transp(x, self.expmap(x, u), v)

    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim=False) -> torch.Tensor:
        value = self.core.dist(self._point(x), self._point(y, "y"))
        return value.reshape(1) if keepdim else value

    def random(self, *size, dtype=None, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point near the initial parameters (``size`` must be ``(p,)`` or empty)."""
        if size and tuple(size) not in ((self.core.dim,), ((self.core.dim,),)):
            raise ValueError(f"points of this manifold have shape ({self.core.dim},), got size {size}")
        return self.core.random_point(generator)

    def origin(self, *size, dtype=None, device=None, seed=None) -> torch.Tensor:
        """The parametrisation's initial point."""
        return self.core.parametrization.initial_point()


@dataclass
class GeooptNetwork:
    r"""A network as one flat ``geoopt.ManifoldParameter`` on its increment manifold.

    Attributes:
        parameter: :math:`\theta`, shape ``(p,)``, a ``ManifoldParameter`` of ``manifold``.
        manifold: the geoopt manifold.
        parametrization: the module's parametrisation (nodes fixed).
    """

    parameter: geoopt.ManifoldParameter
    manifold: GeooptIncrementManifold
    parametrization: TorchParametrization

    def forward(self) -> torch.Tensor:
        r"""Node values :math:`\phi(\theta)`, shape ``(N, m)``, differentiable with respect to :attr:`parameter`."""
        return self.parametrization.value(self.parameter)

    def write_back(self) -> None:
        """Copy the parameter's current values into the module."""
        self.parametrization.write_to_module(self.parameter.detach())


def network_parameter(
    module: torch.nn.Module,
    nodes: torch.Tensor,
    metric: Metric,
    *,
    damping: float | str = "auto",
    solve_mode: object = "auto",
) -> GeooptNetwork:
    """Turn an ``nn.Module`` evaluated at ``nodes`` into one flat ``ManifoldParameter`` on its increment manifold.

    Examples:
        >>> import torch, geoopt
        >>> from mms_manifolds import L2Metric
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> x = torch.linspace(-1, 1, 16, dtype=torch.float64).unsqueeze(-1)
        >>> network = network_parameter(net, x, L2Metric(torch.full((16,), 1 / 8, dtype=torch.float64)))
        >>> optimizer = geoopt.optim.RiemannianSGD([network.parameter], lr=0.5)
        >>> loss = (network.forward() - x.abs()).square().mean()
        >>> loss.backward(); optimizer.step(); network.write_back()
    """
    parametrization = TorchParametrization(module, nodes)
    manifold = GeooptIncrementManifold(
        IncrementManifold(parametrization, metric, damping=damping, solve_mode=solve_mode)
    )
    parameter = geoopt.ManifoldParameter(parametrization.initial_point(), manifold=manifold)
    return GeooptNetwork(parameter, manifold, parametrization)


class GeooptSolver(TorchOptimizerSolver):
    r"""An MMS inner solver running a geoopt optimiser (``RiemannianSGD``, ``RiemannianAdam``, ``RiemannianLineSearch``).

    Each call wraps :math:`\theta_0` in one ``ManifoldParameter`` of :class:`GeooptIncrementManifold`
    and takes ``max_iterations`` optimiser steps on :math:`f(\theta) = F_k(\phi(\theta))` (a fresh
    optimiser state per MMS step); the loop, records and divergence handling are those of
    :class:`~mms_manifolds.solvers.TorchOptimizerSolver`.

    Without an ``lr`` option the rate comes from the step problem at :math:`\theta_0`
    (:meth:`~mms_manifolds.MMSSubproblem.riemannian_step_size`, :math:`\eta = 1/(c + 1/\tau)` when
    :math:`\nabla^2E = cM`): ``RiemannianSGD`` gets :math:`\eta`, whose first step is the Gauss–Newton step;
    ``RiemannianAdam``, whose steps have length about ``lr`` in the metric (one second moment for the one
    flat tensor), gets a third of that step's length, :math:`\eta\|\operatorname{grad} f(\theta_0)\|_G/3`
    (the best of 1, 1/3 and 1/10 measured on a regression and a heat step, docs/adapters.md).

    Args:
        optimizer_class: a geoopt optimiser class.
        max_iterations: steps. Default ``20``.
        tolerance: stop when the tangential residual is at or below it.
        check_every: steps between tolerance checks. Default ``1``.
        transport_kind: passed to :class:`GeooptIncrementManifold`.
        **options: keyword arguments of the optimiser (``lr``, ``momentum``, ``betas``, ...).
    """

    ADAM_STEP_FRACTION = 1 / 3
    """``RiemannianAdam``'s default ``lr`` as a fraction of the Gauss–Newton-equivalent step length."""

    def __init__(
        self,
        optimizer_class: type[torch.optim.Optimizer],
        max_iterations: int = 20,
        tolerance: float = 0.0,
        check_every: int = 1,
        transport_kind: str = "projection",
        **options: object,
    ):
        super().__init__(max_iterations, tolerance, check_every)
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise TypeError(f"optimizer_class must be a torch optimizer class, got {optimizer_class!r}")
        for name in ("lr", "momentum", "weight_decay", "dampening"):  # numbers the optimizer would take unchecked
            if name in options:
                check_positive_float(name, options[name], allow_zero=name != "lr")
        self.optimizer_class, self.options = optimizer_class, options
        self.transport_kind = check_transport_kind(transport_kind)
        self.rate_factor = 1.0  # the fallback's tenfold smaller derived rate
        self.name = f"geoopt-{optimizer_class.__name__}"

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in sorted(self.options.items()))
        derived = "" if "lr" in self.options or not self._derives_rate() else f"lr=derived x {self.rate_factor:g}, "
        return (
            f"GeooptSolver({self.optimizer_class.__name__}, max_iterations={self.max_iterations}, "
            f"tolerance={self.tolerance!r}, check_every={self.check_every}, "
            f"transport_kind={self.transport_kind!r}, {derived}{options})"
        )

    def _derives_rate(self) -> bool:
        return issubclass(self.optimizer_class, (geoopt.optim.RiemannianSGD, geoopt.optim.RiemannianAdam))

    def fallback(self) -> GeooptSolver | None:
        """The same solver with a ten times smaller ``lr`` (given or derived); ``None`` for rate-free optimisers."""
        cautious = copy.copy(self)
        if "lr" in self.options:
            cautious.options = {**self.options, "lr": self.options["lr"] / 10}
        elif self._derives_rate():
            cautious.rate_factor = self.rate_factor / 10
        else:
            return None
        return cautious

    def learning_rate(self, subproblem: MMSSubproblem, theta0: torch.Tensor) -> float | None:
        """The ``lr`` a solve from ``theta0`` uses: the given one, else derived as the class docstring says."""
        if "lr" in self.options:
            return float(self.options["lr"])
        if not self._derives_rate():
            return None
        if issubclass(self.optimizer_class, geoopt.optim.RiemannianAdam):
            return self.rate_factor * self.ADAM_STEP_FRACTION * subproblem.riemannian_step_length(theta0)
        return self.rate_factor * subproblem.riemannian_step_size(theta0)

    def _parameter(self, subproblem: MMSSubproblem, theta0: torch.Tensor) -> torch.Tensor:
        manifold = GeooptIncrementManifold(subproblem.manifold, self.transport_kind)
        return geoopt.ManifoldParameter(theta0.clone(), manifold=manifold)

    def _optimizer(self, parameter: torch.Tensor, subproblem: MMSSubproblem) -> torch.optim.Optimizer:
        rate = self.learning_rate(subproblem, parameter.detach())
        options = self.options if rate is None else {**self.options, "lr": rate}
        return self.optimizer_class([parameter], **options)
