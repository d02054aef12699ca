"""Mistakes are named where the user makes them: when the parametrization, manifold or flow is built."""

import numpy as np
import pytest
import torch

from mms_manifolds import (
    CallableEnergy,
    GaussNewton,
    IncrementManifold,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.grids import trapezoid_weights

from cases import mlp


def _net(dtype=torch.float64):
    return mlp((1, 6, 1), 0).to(dtype)


def _nodes(count=16, dtype=torch.float64):
    return torch.linspace(-1.0, 1.0, count, dtype=dtype).unsqueeze(-1)


def test_float32_network_with_the_default_float64_weights_is_refused_naming_the_metric():
    phi = TorchParametrization(_net(torch.float32), _nodes(dtype=torch.float32))
    metric = L2Metric(trapezoid_weights(16, -1.0, 1.0))  # float64 by default
    target = torch.zeros(16, 1, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"metric\.weights has dtype torch\.float64, the model torch\.float32"):
        MinimizingMovement(phi, L2Regression(target, metric), metric, 0.1)
    with pytest.raises(TypeError, match=r"metric\.weights"):
        IncrementManifold(phi, metric)
    matching = L2Metric(trapezoid_weights(16, -1.0, 1.0, dtype=torch.float32))
    MinimizingMovement(phi, L2Regression(target, matching), matching, 0.1)  # the fix the message suggests


def test_a_target_in_another_dtype_or_with_other_rows_is_named():
    phi, metric = TorchParametrization(_net(), _nodes()), L2Metric(trapezoid_weights(16, -1.0, 1.0))
    with pytest.raises(TypeError, match=r"energy\.target has dtype torch\.float32"):
        MinimizingMovement(phi, L2Regression(torch.zeros(16, 1, dtype=torch.float32), metric), metric, 0.1)
    with pytest.raises(ValueError, match=r"energy L2Regression cannot be evaluated at the network's values of shape"):
        MinimizingMovement(phi, L2Regression(torch.zeros(15, 1, dtype=torch.float64), metric), metric, 0.1)
    with pytest.raises(ValueError, match=r"gradient has shape \(16, 3\), the values \(16, 1\)"):
        MinimizingMovement(phi, L2Regression(torch.zeros(16, 3, dtype=torch.float64), metric), metric, 0.1)


def test_wrong_kinds_of_energy_and_metric_are_named():
    phi, metric = TorchParametrization(_net(), _nodes()), L2Metric(trapezoid_weights(16, -1.0, 1.0))
    with pytest.raises(TypeError, match=r"wrap a function u -> E\(u\) in CallableEnergy"):
        MinimizingMovement(phi, lambda u: (u**2).sum(), metric, 0.1)
    with pytest.raises(TypeError, match=r"metric must be a Metric .* got NoneType"):
        MinimizingMovement(phi, L2Regression(torch.zeros(16, 1, dtype=torch.float64), metric), None, 0.1)
    with pytest.raises(ValueError, match=r"value must return a scalar tensor, got \(16, 1\)"):
        MinimizingMovement(phi, CallableEnergy(lambda u: u**2), metric, 0.1)


def test_nodes_in_another_dtype_raise_type_error_and_flat_nodes_get_a_hint():
    with pytest.raises(TypeError, match="nodes have dtype torch.float64, the module's parameters torch.float32"):
        TorchParametrization(_net(torch.float32), _nodes())
    with pytest.raises(ValueError, match=r"pass nodes\.unsqueeze\(-1\), shape \(N, 1\)"):
        TorchParametrization(_net(), _nodes().squeeze(-1))


def test_a_metric_on_another_node_count_names_both_counts():
    with pytest.raises(ValueError, match=r"does not fit the parametrization's 16 nodes.*L2Metric has 15 nodes"):
        IncrementManifold(TorchParametrization(_net(), _nodes()), L2Metric(trapezoid_weights(15, -1.0, 1.0)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_refused_with_the_cast_named(dtype):
    weights = trapezoid_weights(16, -1.0, 1.0, dtype=dtype)
    with pytest.raises(TypeError, match=r"geometry needs float32 or float64.*module\.double\(\)"):
        IncrementManifold(TorchParametrization(_net(dtype), _nodes(dtype=dtype)), L2Metric(weights))


def test_numpy_points_are_refused_everywhere_with_the_conversion_named():
    phi, metric = TorchParametrization(_net(), _nodes()), L2Metric(trapezoid_weights(16, -1.0, 1.0))
    flow = MinimizingMovement(phi, L2Regression(torch.zeros(16, 1, dtype=torch.float64), metric), metric, 0.1)
    theta = phi.initial_point()
    with pytest.raises(
        TypeError, match=r"theta0 must be a torch\.Tensor, got ndarray: convert it with torch\.as_tensor"
    ):
        flow.run(theta.numpy(), 1, GaussNewton(max_iterations=1))
    with pytest.raises(TypeError, match=r"theta must be a torch\.Tensor, got ndarray"):
        flow.manifold.egrad2rgrad(theta.numpy(), theta)
    with pytest.raises(TypeError, match=r"xi must be a torch\.Tensor, got list"):
        flow.manifold.retract(theta, list(np.zeros(phi.num_parameters)))
