"""Parametrisations: JVP/VJP adjointness, Jacobians, second derivatives, autograd = torch."""

import autograd.numpy as anp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mms_manifolds import AutogradParametrization, LinearParametrization, TorchParametrization
from mms_manifolds.parametrizations import FunctionParametrization
from mms_manifolds.testing import adjoint_mismatch

from cases import mlp, mlp_parametrization, nodes_1d

SEEDS = st.integers(0, 2**16)


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_jvp_vjp_adjoint(seed):
    phi = mlp_parametrization(seed)
    theta = phi.initial_point()
    xi, w = _random(phi.num_parameters, seed + 1), _random(phi.output_shape, seed + 2)
    assert torch.allclose((phi.jvp(theta, xi) * w).sum(), phi.vjp(theta, w) @ xi, rtol=1e-12, atol=1e-12)
    assert adjoint_mismatch(lambda v: phi.jvp(theta, v), lambda c: phi.vjp(theta, c), xi, w) < 1e-13


@settings(max_examples=5, deadline=None)
@given(seed=SEEDS)
def test_jacobian_matches_jvp_and_loop(seed):
    phi = mlp_parametrization(seed)
    theta = phi.initial_point()
    xi = _random(phi.num_parameters, seed)
    jacobian = phi.jacobian(theta)
    assert jacobian.shape == (*phi.output_shape, phi.num_parameters)
    assert torch.allclose(jacobian @ xi, phi.jvp(theta, xi), atol=1e-12)
    looped = super(type(phi).__mro__[1], phi).jacobian(theta)  # Parametrization's one-JVP-per-column default
    assert torch.allclose(jacobian, looped, atol=1e-12)


def test_node_wise_jacobian_equals_the_batched_jvp_jacobian():
    phi = mlp_parametrization(3)
    theta = phi.initial_point() + 0.1
    forward_mode = FunctionParametrization.jacobian(phi, theta)
    assert phi.node_separable is None
    assert torch.allclose(phi.jacobian(theta), forward_mode, rtol=1e-12, atol=1e-13)
    assert phi.node_separable is True  # decided by the check at the first Jacobian


class _CoupledNetwork(torch.nn.Module):
    """Couples the nodes: the network's output minus its mean over the nodes (and divided by their spread)."""

    def __init__(self, scaled: bool):
        super().__init__()
        self.inner, self.scaled = mlp((1, 4, 1), 0), scaled

    def forward(self, x):
        out = self.inner(x)
        centred = out - out.mean(0, keepdim=True)
        return centred / out.std(0, keepdim=True) if self.scaled else centred  # NaN at a single node


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # the standardised module at a single node: NaN on purpose
@pytest.mark.parametrize("module", [_CoupledNetwork(False), _CoupledNetwork(True)], ids=["centred", "standardised"])
def test_a_module_that_couples_nodes_is_detected_and_gets_the_generic_jacobian(module):
    phi = TorchParametrization(module, nodes_1d(12))
    theta = phi.initial_point()
    with pytest.warns(UserWarning, match="Jacobian is formed by batched JVPs"):
        jacobian = phi.jacobian(theta)
    assert phi.node_separable is False
    assert torch.allclose(jacobian, FunctionParametrization.jacobian(phi, theta), atol=1e-13)


@settings(max_examples=5, deadline=None)
@given(seed=SEEDS)
def test_second_derivative_against_finite_differences_and_symmetry(seed):
    phi = mlp_parametrization(seed)
    theta = phi.initial_point()
    xi, eta = _random(phi.num_parameters, seed + 1), _random(phi.num_parameters, seed + 2)
    step = 1e-5
    finite = (phi.jvp(theta + step * eta, xi) - phi.jvp(theta - step * eta, xi)) / (2 * step)
    exact = phi.second_derivative(theta, xi, eta)
    assert torch.allclose(exact, finite, atol=1e-8)
    assert torch.allclose(exact, phi.second_derivative(theta, eta, xi), atol=1e-12)


@settings(max_examples=5, deadline=None)
@given(seed=SEEDS)
def test_second_derivative_adjoint(seed):
    phi = mlp_parametrization(seed)
    theta = phi.initial_point()
    xi, eta, w = (
        _random(phi.num_parameters, seed),
        _random(phi.num_parameters, seed + 1),
        _random(phi.output_shape, seed + 2),
    )
    lhs = (phi.second_derivative(theta, xi, eta) * w).sum()
    assert torch.allclose(lhs, phi.second_derivative_adjoint(theta, xi, w) @ eta, atol=1e-12)


def _numpy_mlp(theta, x):
    w1, b1, w2, b2 = theta[:4], theta[4:8], theta[8:12], theta[12]
    return anp.dot(anp.tanh(anp.outer(x, w1) + b1), w2) + b2


def test_autograd_parametrization_matches_torch():
    net = mlp((1, 4, 1), seed=3)
    x = nodes_1d(9)
    torch_phi = TorchParametrization(net, x)
    theta = torch_phi.initial_point()
    numpy_phi = AutogradParametrization(_numpy_mlp, theta.numpy(), x[:, 0].numpy())
    assert numpy_phi.output_shape == torch_phi.output_shape == (9, 1)
    xi, eta, w = _random(13, 1), _random(13, 2), _random((9, 1), 3)
    assert torch.allclose(numpy_phi.value(theta), torch_phi.value(theta), atol=1e-13)
    assert torch.allclose(numpy_phi.jvp(theta, xi), torch_phi.jvp(theta, xi), atol=1e-12)
    assert torch.allclose(numpy_phi.vjp(theta, w), torch_phi.vjp(theta, w), atol=1e-12)
    assert torch.allclose(numpy_phi.jacobian(theta), torch_phi.jacobian(theta), atol=1e-12)
    assert torch.allclose(
        numpy_phi.second_derivative(theta, xi, eta), torch_phi.second_derivative(theta, xi, eta), atol=1e-12
    )
    assert torch.allclose(
        numpy_phi.second_derivative_adjoint(theta, xi, w), torch_phi.second_derivative_adjoint(theta, xi, w), atol=1e-12
    )


def test_write_to_module_round_trip():
    net = mlp((1, 4, 1), seed=0)
    phi = TorchParametrization(net, nodes_1d(5))
    theta = phi.initial_point() + 1.0
    phi.write_to_module(theta)
    assert torch.allclose(net(phi.nodes), phi.value(theta))
    assert torch.equal(torch.nn.utils.parameters_to_vector(net.parameters()), theta)


def test_linear_parametrization_is_linear():
    basis = _random((6, 3), 0)
    phi = LinearParametrization(basis)
    theta, xi = _random(3, 1), _random(3, 2)
    assert torch.allclose(phi.value(theta)[:, 0], basis @ theta)
    assert torch.count_nonzero(phi.second_derivative(theta, xi, xi)) == 0


def test_float32_module_is_followed():
    phi = mlp_parametrization(0, dtype=torch.float32)
    assert phi.dtype == torch.float32 and phi.initial_point().dtype == torch.float32
    assert phi.jacobian(phi.initial_point()).dtype == torch.float32


@pytest.mark.parametrize(
    "nodes, message",
    [
        (nodes_1d(5, torch.float32), "dtype"),
        (torch.empty(0, 1, dtype=torch.float64), "at least one node"),
        (torch.tensor([[0.0], [float("nan")]], dtype=torch.float64), "non-finite"),
    ],
)
def test_bad_nodes_are_rejected(nodes, message):
    error = TypeError if message == "dtype" else ValueError  # a dtype mix is a TypeError, as everywhere
    with pytest.raises(error, match=message):
        TorchParametrization(mlp((1, 3, 1), 0), nodes)


def test_bad_points_are_rejected():
    phi = mlp_parametrization(0)
    with pytest.raises(ValueError, match="shape"):
        phi.check_point(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        phi.check_point(torch.full((phi.num_parameters,), float("nan"), dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        phi.check_point(torch.zeros(phi.num_parameters, dtype=torch.float32))
    with pytest.raises(ValueError, match="theta0"):
        AutogradParametrization(_numpy_mlp, np.array([[1.0]]), np.zeros(3))
