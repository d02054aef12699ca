"""Small MMS problems with exact references, shared by the driver, solver and adapter tests."""

from __future__ import annotations

import math

import torch

from mms_manifolds import (
    DirichletEnergy,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MinimizingMovement,
    TorchParametrization,
    problems,
)
from mms_manifolds.grids import grid_spacing, stiffness_1d, trapezoid_weights, uniform_nodes

from cases import mlp


def regression_flow(
    seed: int = 0, count: int = 32, widths=(1, 8, 1), tau: float = 0.2, **options
) -> MinimizingMovement:
    """E(u) = |u - g|^2 / 2 with g = |x| + 0.3 sin(5x) on [-1, 1], a tanh MLP (``mms_manifolds.problems``)."""
    return problems.regression_flow(count, widths, seed, tau, **options)


def heat_flow(seed: int = 0, count: int = 24, tau: float = 0.05) -> MinimizingMovement:
    """u_t = u_xx / 4 on [0, 1] with zero boundary values, a tanh MLP times x(1 - x)."""
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    x = uniform_nodes(count, 0.0, 1.0, "dirichlet").unsqueeze(-1)
    net = mlp((1, 8, 1), seed)

    class Bubble(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, points):
            return points * (1 - points) * self.net(points)

    metric = L2Metric(torch.full((count,), spacing, dtype=torch.float64))
    energy = DirichletEnergy(0.25 * stiffness_1d(count, 0.0, 1.0, "dirichlet"))
    return MinimizingMovement(TorchParametrization(Bubble(), x), energy, metric, tau)


def linear_regression_flow(
    seed: int = 0, count: int = 30, features: int = 6, tau: float = 0.3, damping: float | str = "auto"
) -> MinimizingMovement:
    """A Fourier-feature linear model: the increment set is flat, the MMS step has a closed form."""
    x = torch.linspace(-1.0, 1.0, count, dtype=torch.float64)
    basis = torch.stack([torch.cos(math.pi * j * x / 2) for j in range(features)], dim=-1)
    metric = L2Metric(trapezoid_weights(count, -1.0, 1.0))
    target = (torch.exp(x) + (x > 0.3).double()).unsqueeze(-1)
    generator = torch.Generator().manual_seed(seed)
    return MinimizingMovement(
        LinearParametrization(basis, torch.randn(features, generator=generator, dtype=torch.float64)),
        L2Regression(target, metric),
        metric,
        tau,
        damping=damping,
    )
