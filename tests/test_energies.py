"""Energies: closed-form gradients and Hessians against autodiff, exact proximal maps, convexity moduli."""

import math

import pytest
import torch
from torch.func import grad, jvp

from mms_manifolds import (
    CallableEnergy,
    DirichletEnergy,
    Energy,
    GinzburgLandau,
    L2Metric,
    L2Regression,
    MatrixMetric,
    exact_trajectory,
)
from mms_manifolds.grids import grid_spacing, stiffness_1d, stiffness_2d, trapezoid_weights, uniform_nodes

from cases import random_spd


def _energies():
    count = 9
    weights = trapezoid_weights(count, -1.0, 1.0)
    metric = L2Metric(weights)
    stiffness = stiffness_1d(count, 0.0, 0.25 * (count - 1), "neumann")
    target = torch.cos(torch.linspace(0, 3, count, dtype=torch.float64)).unsqueeze(-1)
    return metric, {
        "regression": L2Regression(target, metric),
        "regression-other-metric": L2Regression(target, MatrixMetric(random_spd(count, 0))),
        "dirichlet": DirichletEnergy(stiffness),
        "ginzburg-landau": GinzburgLandau(0.3, stiffness, weights),
    }


@pytest.mark.parametrize("name", ["regression", "regression-other-metric", "dirichlet", "ginzburg-landau"])
def test_closed_forms_match_autodiff(name):
    metric, energies = _energies()
    energy = energies[name]
    u = torch.sin(torch.arange(9.0, dtype=torch.float64)).unsqueeze(-1)
    v = torch.cos(torch.arange(9.0, dtype=torch.float64)).unsqueeze(-1)
    assert torch.allclose(energy.gradient(u), grad(energy.value)(u), atol=1e-12)
    assert torch.allclose(energy.hessian_matvec(u, v), jvp(grad(energy.value), (u,), (v,))[1], atol=1e-12)


@pytest.mark.parametrize("name", ["regression", "regression-other-metric", "dirichlet", "ginzburg-landau"])
def test_prox_satisfies_the_optimality_condition(name):
    metric, energies = _energies()
    energy, tau = energies[name], 0.3
    u = 0.5 * torch.sin(torch.arange(9.0, dtype=torch.float64)).unsqueeze(-1)
    step = energy.prox(u, tau, metric)
    optimality = energy.gradient(step) + metric.apply(step - u) / tau
    assert float(optimality.abs().max()) < 1e-10


def test_regression_reference_is_the_closed_form_trajectory():
    metric, energies = _energies()
    energy, tau = energies["regression"], 0.2
    v0 = torch.zeros(9, 1, dtype=torch.float64)
    trajectory = exact_trajectory(energy, metric, v0, tau, 5)
    for k in range(6):
        assert torch.allclose(trajectory[k], energy.target + (1 + tau) ** -k * (v0 - energy.target), atol=1e-14)


def test_heat_equation_amplitude_and_convexity():
    """u_t = u_xx / 4 on [0, 1], zero boundary values, u_0 = sin(pi x): v_k = (1 + tau lambda_h)^-k u_0."""
    count = 63
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    x = uniform_nodes(count, 0.0, 1.0, "dirichlet")
    metric = L2Metric(torch.full((count,), spacing, dtype=torch.float64))
    energy = DirichletEnergy(0.25 * stiffness_1d(count, 0.0, 1.0, "dirichlet"))
    grid_eigenvalue = 0.25 * 4 / spacing**2 * math.sin(math.pi * spacing / 2) ** 2
    assert energy.convexity(metric) == pytest.approx(grid_eigenvalue, rel=1e-10)
    assert energy.convexity(metric) == pytest.approx(math.pi**2 / 4, rel=1e-3)
    tau, u0 = 0.1, torch.sin(math.pi * x).unsqueeze(-1)
    trajectory = exact_trajectory(energy, metric, u0, tau, 4)
    for k in range(5):
        assert torch.allclose(trajectory[k], (1 + tau * grid_eigenvalue) ** -k * u0, atol=1e-12)


def test_two_dimensional_stiffness_eigenvalue():
    count = 15
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    energy = DirichletEnergy(stiffness_2d(count, count, (0.0, 1.0, 0.0, 1.0), "dirichlet"))
    metric = L2Metric(torch.full((count * count,), spacing**2, dtype=torch.float64))
    assert energy.convexity(metric) == pytest.approx(2 * math.pi**2, rel=1e-2)


def test_ginzburg_landau_convexity_is_at_least_minus_one():
    count = 20
    weights = torch.full((count,), 0.1, dtype=torch.float64)
    energy = GinzburgLandau(0.05, stiffness_1d(count, 0.0, 0.1 * count, "periodic"), weights)
    modulus = energy.convexity(L2Metric(weights))
    assert -1.0 - 1e-12 <= modulus < 0
    with pytest.raises(ValueError, match="not strongly convex"):
        energy.prox(torch.zeros(count, 1, dtype=torch.float64), 2.0, L2Metric(weights))


def test_callable_energy_and_missing_prox():
    energy = CallableEnergy(lambda u: (u**4).sum())
    assert energy.convexity(L2Metric(torch.ones(3, dtype=torch.float64))) is None and not energy.has_prox
    with pytest.raises(NotImplementedError, match="CallableEnergy.prox"):
        energy.prox(torch.zeros(3, 1, dtype=torch.float64), 0.1, L2Metric(torch.ones(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="no exact proximal map"):
        exact_trajectory(energy, L2Metric(torch.ones(3, dtype=torch.float64)), torch.zeros(3, 1, dtype=torch.float64), 0.1, 2)
    assert isinstance(energy, Energy)
