"""In a session whose default dtype is torch's float32, geometry defaults to float64 and flows follow their model's dtype.

The suite leaves torch's default alone (tests/conftest.py checks it), so every test here runs with the float32
default a user starts with: the library's builders must not pick it up, and a float32 model must stay float32.
"""

import math

import pytest
import torch

from mms_manifolds import GaussNewton, L2Regression, MinimizingMovement, exact_trajectory, problems
from mms_manifolds.grids import grid_2d, stiffness_1d, stiffness_2d, trapezoid_weights, uniform_nodes
from mms_manifolds.meshfree import box_boundary_grid, box_interior_grid
from mms_manifolds.meshfree.periodic import periodic_mlp, torus_grid
from mms_manifolds.parametrizations.networks import mlp
from mms_manifolds.reproduce.experiments import build
from mms_manifolds.schemes import BDF2


def test_the_session_default_is_torchs_own():
    assert torch.get_default_dtype() is torch.float32


def test_grids_nodes_and_networks_default_to_float64():
    tensors = [
        uniform_nodes(8, 0.0, 1.0, "dirichlet"),
        trapezoid_weights(8, -1.0, 1.0),
        stiffness_1d(8, 0.0, 1.0, "dirichlet"),
        *grid_2d(3, 4, (0.0, 1.0, 0.0, 1.0), "dirichlet"),
        stiffness_2d(3, 4, (0.0, 1.0, 0.0, 1.0), "dirichlet"),
    ]
    for nodes in (box_interior_grid(3, 2), box_boundary_grid(3), torus_grid(3, 2)):
        tensors += [nodes.points, nodes.weights]
    for network in (mlp((1, 4, 1), 0), periodic_mlp(2, (4, 1), 0)):
        tensors += list(network.parameters())
    assert all(tensor.dtype is torch.float64 for tensor in tensors), [tensor.dtype for tensor in tensors]


@pytest.mark.parametrize("name", ["heat_1d", "regression", "allen_cahn"])
def test_experiments_are_float64_end_to_end(name):
    experiment = build(name, "quick")
    flow = experiment.flow
    assert flow.parametrization.dtype is torch.float64 and experiment.theta0.dtype is torch.float64
    result = flow.run(experiment.theta0, 2, GaussNewton(max_iterations=2))
    assert result.thetas[-1].dtype is torch.float64 and math.isfinite(result.residual_total[-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_flow_follows_its_models_dtype(dtype):
    flow = problems.regression_flow(16, (1, 4, 1), 0, 0.2, dtype=dtype)
    theta = flow.parametrization.initial_point()
    assert theta.dtype is dtype
    step = flow.subproblem(theta)
    u, gradient = step.node_values(theta), step.euclidean_gradient(theta)
    assert u.dtype is dtype and gradient.dtype is dtype
    assert flow.manifold.egrad2rgrad(theta, gradient).dtype is dtype
    assert step.gauss_newton_model(theta).gradient.dtype is dtype
    inner = GaussNewton(max_iterations=2).solve(step, theta)
    assert inner.point.dtype is dtype
    assert all(math.isfinite(value) for value in (step.residual(inner.point).total, inner.cost_history[-1]))
    assert exact_trajectory(flow.energy, flow.metric, u, flow.tau, 2).dtype is dtype
    for scheme in (None, BDF2()):
        run = MinimizingMovement(flow.parametrization, flow.energy, flow.metric, flow.tau, scheme=scheme)
        result = run.run(theta, 2, GaussNewton(max_iterations=2))
        assert math.isfinite(result.residual_total[-1]) and math.isfinite(result.tracking_bound[-1])
        assert result.certified and (result.trajectory_error <= result.tracking_bound).all()


def test_a_float32_model_refuses_float64_data_naming_it():
    flow = problems.regression_flow(16, (1, 4, 1), 0, 0.2, dtype=torch.float32)
    target = torch.zeros(16, 1, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        MinimizingMovement(flow.parametrization, L2Regression(target, flow.metric), flow.metric, 0.2)
