"""Periodic domains: torus node sets, the periodic embedding's jets (analytic and finite differences), periodicity."""

import math

import pytest
import torch
from test_meshfree import _finite_difference_jet

from mms_manifolds.meshfree import JetParametrization, PeriodicEmbedding, periodic_mlp, torus_grid, torus_monte_carlo

ALL = ("value", "gradient", "laplacian")


def test_torus_grid_is_the_periodic_trapezoid_rule():
    nodes = torus_grid(8, 2)
    assert nodes.points.shape == (64, 2) and float(nodes.points.max()) < 2 * math.pi
    assert float(nodes.weights.sum()) == pytest.approx(4 * math.pi**2)
    x, y = nodes.points[:, 0], nodes.points[:, 1]
    # exact for trigonometric polynomials of degree < 8 per axis: int cos(3x)^2 sin(5y)^2 = pi^2
    integral = float((nodes.weights * torch.cos(3 * x) ** 2 * torch.sin(5 * y) ** 2).sum())
    assert integral == pytest.approx(math.pi**2, rel=1e-14)
    assert abs(float((nodes.weights * torch.cos(7 * x) * torch.cos(2 * y)).sum())) < 1e-13


def test_torus_monte_carlo_lies_on_the_torus_and_integrates_constants():
    nodes = torus_monte_carlo(500, 3, generator=torch.Generator().manual_seed(0), period=1.5)
    assert float(nodes.points.min()) >= 0 and float(nodes.points.max()) < 1.5
    assert float(nodes.weights.sum()) == pytest.approx(1.5**3)
    with pytest.raises(ValueError, match="period"):
        torus_grid(4, 2, period=-1.0)


class _Trigonometric(torch.nn.Module):
    """f(x) = sum_i a_i cos x_i + b_i sin x_i through the embedding and a linear layer: grad and Laplacian in closed form."""

    def __init__(self, a, b):
        super().__init__()
        self.embedding = PeriodicEmbedding()
        self.linear = torch.nn.Linear(2 * a.shape[0], 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([a, b]).unsqueeze(0))

    def forward(self, points):
        return self.linear(self.embedding(points))


def test_embedded_jets_match_the_closed_form():
    a, b = torch.tensor([0.7, -1.3], dtype=torch.float64), torch.tensor([0.4, 2.0], dtype=torch.float64)
    nodes = torus_monte_carlo(7, 2, ALL, generator=torch.Generator().manual_seed(1))
    jets = JetParametrization(_Trigonometric(a, b), {"torus": nodes})
    jet = jets.jets(jets.initial_point())["torus"]
    x = nodes.points
    value = (a * torch.cos(x) + b * torch.sin(x)).sum(-1, keepdim=True)
    gradient = (-a * torch.sin(x) + b * torch.cos(x)).unsqueeze(1)
    torch.testing.assert_close(jet.value, value, rtol=0, atol=1e-14)
    torch.testing.assert_close(jet.gradient, gradient, rtol=0, atol=1e-14)
    torch.testing.assert_close(jet.laplacian, -value, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dimension", [1, 2, 3])
def test_embedded_network_jets_match_finite_differences(dimension):
    net = periodic_mlp(dimension, (8, 8, 1), seed=dimension, period=3.0)
    nodes = torus_monte_carlo(4, dimension, ALL, generator=torch.Generator().manual_seed(2), period=3.0)
    jets = JetParametrization(net, {"torus": nodes})
    jet = jets.jets(jets.initial_point())["torus"]
    with torch.no_grad():
        for i, x in enumerate(nodes.points):
            value, gradient, laplacian = _finite_difference_jet(net, x)
            torch.testing.assert_close(jet.value[i], value, rtol=0, atol=1e-12)
            torch.testing.assert_close(jet.gradient[i], gradient, rtol=0, atol=1e-7)
            torch.testing.assert_close(jet.laplacian[i], laplacian, rtol=0, atol=1e-5)


def test_embedded_network_and_its_jets_are_periodic():
    period = 2 * math.pi
    net = periodic_mlp(2, (10, 10, 1), seed=0)
    generator = torch.Generator().manual_seed(3)
    base = torus_monte_carlo(6, 2, ALL, generator=generator)
    shifts = torch.tensor([[period, 0.0], [0.0, -period], [2 * period, 3 * period]], dtype=torch.float64)
    reference = JetParametrization(net, {"torus": base})
    expected = reference.value(reference.initial_point())
    for shift in shifts:
        moved = type(base)(base.points + shift, base.weights, ALL)
        shifted = JetParametrization(net, {"torus": moved})
        # equal to rounding: cos and sin of x + 2 pi k differ from those of x by the rounding of the argument
        torch.testing.assert_close(shifted.value(shifted.initial_point()), expected, rtol=0, atol=1e-13)
