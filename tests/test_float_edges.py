"""Bounds and solvers at the edges of floating point: conditioning, underflow, small scales, float32 ulps, budgets."""

import math
import warnings

import numpy as np
import pytest
import torch

from mms_manifolds import (
    SGD,
    CallableEnergy,
    GaussNewton,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    RiemannianGradientDescent,
    TorchParametrization,
    TrajectoryBudget,
)
from mms_manifolds.grids import trapezoid_weights
from mms_manifolds.metrics import MatrixMetric
from mms_manifolds.solvers.base import InnerResult, InnerSolver, StopReason


class Scaled(torch.nn.Module):
    """A tanh MLP whose output is multiplied by ``scale``: the same flow at another scale."""

    def __init__(self, scale: float, seed: int = 0, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 8, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(8, 1, dtype=torch.float64)).to(dtype)
        self.scale = scale

    def forward(self, points):
        return self.net(points) * self.scale


def _scaled_flow(scale: float, seed: int = 0, count: int = 32, dtype=torch.float64) -> MinimizingMovement:
    x = torch.linspace(-1.0, 1.0, count, dtype=dtype).unsqueeze(-1)
    metric = L2Metric(trapezoid_weights(count, -1.0, 1.0, dtype=dtype))
    energy = L2Regression(torch.sin(3 * x) * scale, metric)
    return MinimizingMovement(TorchParametrization(Scaled(scale, seed, dtype), x), energy, metric, 0.2)


def _holds(result) -> bool:
    return bool(np.all(result.trajectory_error <= result.tracking_bound))


def test_an_ill_conditioned_matrix_metric_keeps_a_certified_bound_that_holds_as_computed():
    count, condition = 8, 1e12
    x = torch.linspace(-1.0, 1.0, count, dtype=torch.float64).unsqueeze(-1)
    rotation, _ = torch.linalg.qr(torch.randn(count, count, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    matrix = rotation @ torch.diag(torch.logspace(0, math.log10(condition), count, dtype=torch.float64)) @ rotation.T
    metric = MatrixMetric((matrix + matrix.T) / 2)
    assert metric.solve_condition((count, 1), dtype=torch.float64, device=torch.device("cpu")) > 1e11
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(4, 1, dtype=torch.float64))
    flow = MinimizingMovement(TorchParametrization(net, x), L2Regression(torch.sin(3 * x), metric), metric, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a withdrawn certification warns
        result = flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=4))
    assert result.certified and _holds(result)


@pytest.mark.parametrize("seed", [1, 2])
def test_node_values_whose_squares_underflow_keep_a_bound_that_holds(seed):
    flow = _scaled_flow(1e-158, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = flow.run(flow.parametrization.initial_point(), 3, SGD(lr=0.5, max_iterations=5))
    assert result.certified and _holds(result)
    assert result.bound_rounding[-1] > 0 and result.tracking_bound[-1] < 1e-140  # honest, and still informative


def test_a_certified_record_never_states_a_bound_its_own_error_exceeds():
    """A reference that is not the exact flow: e_k > B_k is observed, so certification is withdrawn with the reason."""
    count = 16
    x = torch.linspace(-1.0, 1.0, count, dtype=torch.float64).unsqueeze(-1)
    metric = L2Metric(trapezoid_weights(count, -1.0, 1.0))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(4, 1, dtype=torch.float64)).double()
    energy = CallableEnergy(lambda u: 0.5 * metric.norm(u - x.abs()) ** 2, convexity=1.0)
    flow = MinimizingMovement(TorchParametrization(net, x), energy, metric, 0.2)
    theta0 = flow.parametrization.initial_point()
    wrong = torch.stack([flow.parametrization.value(theta0) * (1 - 0.1 * k) for k in range(3)])
    with pytest.warns(RuntimeWarning, match="trajectory error e_k = .* exceeds the bound"):
        result = flow.run(theta0, 2, GaussNewton(max_iterations=3), reference=wrong)
    assert not result.certified and "exceeds the bound" in result.metadata["certification_withdrawn"]["reason"]


def test_gauss_newton_at_a_small_scale_decreases_the_cost_like_at_scale_one():
    ordinary, small = _scaled_flow(1.0), _scaled_flow(1e-10)
    solver = GaussNewton(max_iterations=5)
    at_one = ordinary.run(ordinary.parametrization.initial_point(), 3, solver)
    at_small = small.run(small.parametrization.initial_point(), 3, solver)
    assert "stalled" not in at_small.stop_reasons
    np.testing.assert_allclose(at_small.energy / 1e-20, at_one.energy, rtol=1e-9)
    descent = small.run(small.parametrization.initial_point(), 3, RiemannianGradientDescent(max_iterations=5))
    assert at_small.energy[-1] < 0.34 * at_small.energy[0] and descent.energy[-1] < 0.34 * descent.energy[0]


class _OneUlpHigher(InnerSolver):
    """Returns the initial point with a final cost one rounding unit above the initial one (float32)."""

    def _solve(self, subproblem, theta, tolerance, state):
        cost = subproblem.cost(theta)
        higher = float(np.nextafter(np.float32(cost), np.float32(np.inf)))
        return InnerResult(theta, 1, [cost, higher], [], [], 0.0, StopReason.MAX_ITERATIONS, None, state=state)


def test_a_float32_cost_one_ulp_higher_is_not_a_cost_increase():
    flow = _scaled_flow(1.0, dtype=torch.float32)
    theta0 = flow.parametrization.initial_point()
    result = _OneUlpHigher(max_iterations=1).solve(flow.subproblem(theta0), theta0)
    assert result.stop_reason is StopReason.MAX_ITERATIONS
    flow.run(theta0, 2, _OneUlpHigher(max_iterations=1), on_failure="raise")


def test_a_budget_that_is_not_met_says_so():
    flow = _scaled_flow(1.0)
    with pytest.warns(RuntimeWarning, match="trajectory budget was not met: the propagated inexactness is"):
        result = flow.run(
            flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=1), budget=TrajectoryBudget(1e-9)
        )
    assert result.bound_inexactness[-1] > 1e-9
    assert any("budget was not met" in note for note in result.metadata["notes"])
