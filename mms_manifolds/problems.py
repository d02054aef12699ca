r"""Ready-made networks and flows, shared by the demo, the experiments, the examples, the benchmarks and the tests.

The regression flow is the library's running example: :math:`E(u) = \|u - g\|_M^2/2` with
:math:`g(x) = |x| + 0.3\sin 5x` on :math:`[-1, 1]`, a tanh MLP, :math:`\tau = 0.2`; its exact MMS step is
:math:`(u_k + \tau g)/(1 + \tau)`. The Cahn–Hilliard flow is the :math:`H^{-1}` flow of Ginzburg–Landau on a
periodic grid with a network of fixed mass (``docs/constrained_metrics.md``).
"""

from __future__ import annotations

import math

import torch

from .energies import GinzburgLandau, L2Regression
from .grids import stiffness_1d, trapezoid_weights, uniform_nodes
from .metrics import HMinusOneMetric, L2Metric
from .mms import MinimizingMovement
from .parametrizations import ConstrainedParametrization, TorchParametrization
from .parametrizations.networks import mlp
from .solvers import GaussNewton

__all__ = ["cahn_hilliard_flow", "mlp", "regression_flow"]


def regression_flow(
    nodes: int = 128,
    widths: tuple[int, ...] = (1, 12, 12, 1),
    seed: int = 0,
    tau: float = 0.2,
    *,
    weights: str = "trapezoid",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    damping: float | str = "auto",
    solve_mode: object = "auto",
) -> MinimizingMovement:
    """The regression flow on ``nodes`` equispaced points of [-1, 1] with ``mlp(widths, seed)``.

    Args:
        weights: quadrature of the :math:`L^2` metric: ``"trapezoid"`` (default) or ``"uniform"``
            (:math:`2/N` per node, the benchmarks' choice).
    """
    if weights not in ("trapezoid", "uniform"):
        raise ValueError(f"weights must be 'trapezoid' or 'uniform', got {weights!r}")
    options = {"dtype": dtype, "device": device}
    x = torch.linspace(-1.0, 1.0, nodes, **options).unsqueeze(-1)
    if weights == "trapezoid":
        quadrature = trapezoid_weights(nodes, -1.0, 1.0, dtype=dtype).to(device)
    else:
        quadrature = torch.full((nodes,), 2 / nodes, **options)
    metric = L2Metric(quadrature)
    parametrization = TorchParametrization(mlp(widths, seed, dtype, device=device), x)
    energy = L2Regression(x.abs() + 0.3 * torch.sin(5 * x), metric)
    return MinimizingMovement(parametrization, energy, metric, tau, damping=damping, solve_mode=solve_mode)


def cahn_hilliard_flow(
    nodes: int = 64, epsilon: float = 0.1, tau: float = 0.005, mass: float = 0.1, seed: int = 0
) -> tuple[MinimizingMovement, torch.Tensor]:
    r"""Cahn–Hilliard as the :math:`H^{-1}` flow of Ginzburg–Landau on ``nodes`` periodic nodes of :math:`[0, 1)`; returns ``(flow, theta0)``.

    :math:`E(u) = \frac{\varepsilon^2}{2}u\cdot Ku + \sum_i w_i(u_i^2 - 1)^2/4`, :math:`w_i = 1/N`, the metric
    :class:`~mms_manifolds.metrics.HMinusOneMetric` on zero-mean functions, and a 2-12-12-1 tanh network of the
    periodic features :math:`(\cos 2\pi x, \sin 2\pi x)` held at mass :math:`\sum_i w_iu_i =` ``mass``
    (:meth:`~mms_manifolds.parametrizations.ConstrainedParametrization.fixed_mass`). ``theta0`` fits
    :math:`m + 0.4\cos 2\pi x + 0.3\sin 4\pi x` (an :math:`L^2` fit of the fixed-mass network). Each MMS step is
    the implicit Euler step of :math:`u_t = \Delta_h(-\varepsilon^2\Delta_h u + u^3 - u)`; the energy is
    :math:`-23.9`-convex in this metric for the defaults, so :math:`\tau < 0.042`.
    """
    x = uniform_nodes(nodes, 0.0, 1.0, "periodic")
    weights = torch.full((nodes,), 1.0 / nodes, dtype=torch.float64)
    stiffness = stiffness_1d(nodes, 0.0, 1.0, "periodic")
    features = torch.stack([torch.cos(2 * math.pi * x), torch.sin(2 * math.pi * x)], dim=-1)
    network = TorchParametrization(mlp((2, 12, 12, 1), seed), features)
    parametrization = ConstrainedParametrization.fixed_mass(network, weights, mass)
    target = (mass + 0.4 * torch.cos(2 * math.pi * x) + 0.3 * torch.sin(4 * math.pi * x)).unsqueeze(-1)
    l2 = L2Metric(weights)
    fit = MinimizingMovement(parametrization, L2Regression(target, l2), l2, tau=1e4)
    theta0 = fit.run(parametrization.initial_point(), steps=3, solver=GaussNewton(max_iterations=15)).thetas[-1]
    energy = GinzburgLandau(epsilon, stiffness, weights)
    return MinimizingMovement(parametrization, energy, HMinusOneMetric(stiffness, weights), tau), theta0
