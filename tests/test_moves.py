"""The public moves along a step: ``GaussNewton.trial_point``, ``RiemannianGradientDescent.move``, ``Geodesic.evaluations``."""

from __future__ import annotations

import math

import torch

from mms_manifolds import GaussNewton, IncrementManifold, RiemannianGradientDescent, TorchParametrization
from mms_manifolds.solvers import StopReason

from problems import heat_flow, regression_flow


class ChartLevenbergMarquardt(GaussNewton):
    """The trial point theta + delta, through the public extension point; counts its calls."""

    def __init__(self, max_iterations: int):
        super().__init__(max_iterations, globalization="levenberg-marquardt")
        self.calls = 0

    def trial_point(self, subproblem, model, theta, step, damping):
        self.calls += 1
        return theta + step


class FailingLevenbergMarquardt(GaussNewton):
    """Every trial point is non-finite: a failed trial at every damping."""

    def __init__(self):
        super().__init__(3, globalization="levenberg-marquardt", max_retries=4)
        self.calls = 0

    def trial_point(self, subproblem, model, theta, step, damping):
        self.calls += 1
        return torch.full_like(theta, math.nan)


def test_an_overridden_trial_point_is_the_move_levenberg_marquardt_takes():
    """theta + delta through trial_point gives GaussNewton(geodesic_acceleration=False)'s iterates to the bit."""
    flow = heat_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    plugged = ChartLevenbergMarquardt(4)
    ours = plugged.solve(subproblem, theta)
    reference = GaussNewton(4, globalization="levenberg-marquardt", geodesic_acceleration=False).solve(
        subproblem, theta
    )
    assert torch.equal(ours.point, reference.point)
    assert ours.cost_history == reference.cost_history
    assert plugged.calls >= ours.iterations >= 1
    # with the acceleration (the default trial point) the iterates differ: the override is what ran
    accelerated = GaussNewton(4, globalization="levenberg-marquardt").solve(subproblem, theta)
    assert not torch.equal(accelerated.point, ours.point)


def test_a_non_finite_trial_point_is_a_failed_trial():
    flow = regression_flow()
    theta = flow.parametrization.initial_point()
    failing = FailingLevenbergMarquardt()
    result = failing.solve(flow.subproblem(theta), theta)
    assert result.stop_reason == StopReason.NO_PROGRESS
    assert torch.equal(result.point, theta)
    assert failing.calls == failing.max_retries


class ChartDescent(RiemannianGradientDescent):
    """Riemannian gradient descent whose move is the chart retraction, through the public extension point."""

    def __init__(self, max_iterations: int):
        super().__init__(max_iterations=max_iterations, use_exp=True)
        self.calls = 0

    def move(self, subproblem, theta, xi):
        self.calls += 1
        return subproblem.manifold.retract(theta, xi)


def test_an_overridden_move_is_the_move_riemannian_gradient_descent_takes():
    flow = regression_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    plugged = ChartDescent(3)
    ours = plugged.solve(subproblem, theta)
    reference = RiemannianGradientDescent(max_iterations=3, use_exp=False).solve(subproblem, theta)
    assert torch.equal(ours.point, reference.point)
    assert plugged.calls >= 3


class CountingParametrization(TorchParametrization):
    """Counts the second directional derivatives: one per Christoffel product."""

    calls = 0

    def second_derivative(self, theta, xi, eta):
        self.calls += 1
        return super().second_derivative(theta, xi, eta)


def test_a_geodesic_reports_its_christoffel_products():
    flow = regression_flow()
    counting = CountingParametrization(flow.parametrization.module, flow.parametrization.nodes)
    manifold = IncrementManifold(counting, flow.metric)
    theta = counting.initial_point()
    xi = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=theta.dtype)
    geodesic = manifold.geodesic(theta, 0.3 * xi / xi.norm(), rtol=1e-6, atol=1e-8)
    assert geodesic.evaluations == counting.calls
    assert geodesic.evaluations == 1 + 6 * (geodesic.accepted_steps + geodesic.rejected_steps) > 1
    assert manifold.geodesic(theta, xi, time=0.0).evaluations == 0
