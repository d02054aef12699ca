"""The layer-wise jets (forward Laplacian) and their per-layer Jacobian, held to the per-node ``torch.func`` path to 1e-10.

Every derivative the geometry uses (values, JVP, VJP, second derivative, dense Jacobian) is compared with
``JetParametrization(..., layerwise=False)``, on networks of each supported activation, frozen parameters,
a bias-free layer and every combination of jet components; modules outside the supported form fall back
to the per-node path. Every tensor and module has an explicit dtype.
"""

from __future__ import annotations

import pytest
import torch

from mms_manifolds.meshfree import JetParametrization, NodeSet
from mms_manifolds.meshfree.layerwise import ACTIVATIONS, layerwise_jacobian, layerwise_jets, layerwise_network

DTYPE = torch.float64
TOLERANCE = 1e-10


def _network(activation: type[torch.nn.Module], dimension: int, outputs: int, seed: int, bias: bool = True):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(dimension, 7, dtype=DTYPE),
        activation(),
        torch.nn.Linear(7, 5, bias=bias, dtype=DTYPE),
        activation(),
        torch.nn.Linear(5, outputs, dtype=DTYPE),
    )


def _node_sets(dimension: int, derivatives: tuple[str, ...], seed: int) -> dict[str, NodeSet]:
    """Six interior points with ``derivatives`` and four more with values only (a second set, as a boundary)."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(10, dimension, generator=generator, dtype=DTYPE)
    weights = torch.full((10,), 0.1, dtype=DTYPE)
    return {
        "interior": NodeSet(points[:6], weights[:6], derivatives),
        "boundary": NodeSet(points[6:], weights[6:], ("value",)),
    }


class _ExplicitSiLU(torch.nn.Module):
    """``x sigmoid(x)`` written out: torch's own SiLU has no forward-mode second derivative, which the per-node path needs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _pair(network: torch.nn.Module, node_sets: dict[str, NodeSet]) -> tuple[JetParametrization, JetParametrization]:
    """The layer-wise parametrisation and the per-node reference of the same network (SiLU written out for the reference)."""
    explicit = torch.nn.Sequential(*(_ExplicitSiLU() if isinstance(layer, torch.nn.SiLU) else layer for layer in network))
    fast, reference = JetParametrization(network, node_sets), JetParametrization(explicit, node_sets, layerwise=False)
    assert fast._layers is not None and reference._layers is None
    return fast, reference


def _close(first: torch.Tensor, second: torch.Tensor) -> None:
    assert first.shape == second.shape
    scale = max(float(second.abs().max()), 1.0)
    assert float((first - second).abs().max()) <= TOLERANCE * scale


CASES = [
    *((activation, ("value", "laplacian"), 2, 1) for activation in ACTIVATIONS),
    *((torch.nn.Tanh, derivatives, 2, 1) for derivatives in [("value",), ("gradient",), ("laplacian",)]),
    (torch.nn.Tanh, ("value", "gradient", "laplacian"), 1, 1),
    (torch.nn.Sigmoid, ("value", "gradient", "laplacian"), 3, 2),
    (torch.nn.SiLU, ("gradient", "laplacian"), 3, 2),
]


@pytest.mark.parametrize("activation, derivatives, dimension, outputs", CASES)
def test_layerwise_jets_and_derivatives_equal_the_per_node_path(activation, derivatives, dimension, outputs):
    network = _network(activation, dimension, outputs, seed=dimension + outputs)
    fast, reference = _pair(network, _node_sets(dimension, derivatives, seed=5))
    theta = fast.initial_point()
    generator = torch.Generator().manual_seed(11)
    tangent = torch.randn(theta.shape, generator=generator, dtype=DTYPE)
    other = torch.randn(theta.shape, generator=generator, dtype=DTYPE)
    cotangent = torch.randn(fast.output_shape, generator=generator, dtype=DTYPE)
    _close(fast.value(theta), reference.value(theta))
    _close(fast.jvp(theta, tangent), reference.jvp(theta, tangent))
    _close(fast.vjp(theta, cotangent), reference.vjp(theta, cotangent))
    _close(fast.second_derivative(theta, tangent, other), reference.second_derivative(theta, tangent, other))
    taylor = fast.second_derivative(theta, tangent, tangent)  # by Taylor arithmetic through the layers
    _close(taylor, reference.second_derivative(theta, tangent, tangent))
    _close(fast.second_derivative(theta, tangent, tangent.clone()), taylor)
    _close(fast.jacobian(theta), reference.jacobian(theta))


def test_layerwise_jacobian_with_frozen_parameters_and_a_bias_free_layer():
    network = _network(torch.nn.Tanh, 2, 1, seed=3, bias=False)
    network[0].bias.requires_grad_(False)
    fast, reference = _pair(network, _node_sets(2, ("value", "gradient", "laplacian"), seed=2))
    theta = fast.initial_point() + 0.1
    assert theta.numel() == sum(parameter.numel() for parameter in network.parameters() if parameter.requires_grad)
    _close(fast.jacobian(theta), reference.jacobian(theta))
    _close(fast.value(theta), reference.value(theta))
    tangent = torch.linspace(-1, 1, theta.numel(), dtype=DTYPE)
    _close(fast.second_derivative(theta, tangent, tangent), reference.second_derivative(theta, tangent, tangent))


def test_layerwise_jacobian_writes_into_a_given_block_of_rows():
    """``out=`` a row block of a larger tensor: filled in place, equal to the Jacobian formed alone; the rows around it untouched."""
    network = _network(torch.nn.Sigmoid, 2, 2, seed=7)
    layers = layerwise_network(network)
    parameters = {name: tensor.detach() for name, tensor in network.named_parameters()}
    trainable = [(name, tensor.numel()) for name, tensor in network.named_parameters()]
    points = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    derivatives = ("value", "gradient", "laplacian")
    alone = layerwise_jacobian(layers, parameters, trainable, points, derivatives)
    size = sum(columns for _, columns in trainable)
    assert alone.shape == (5, 2 * (1 + 2 + 1), size)
    larger = torch.full((2 + 5 * 8, size), -7.0, dtype=DTYPE)
    block = larger[1 : 1 + 5 * 8].view(5, 8, size)
    written = layerwise_jacobian(layers, parameters, trainable, points, derivatives, out=block)
    assert written.data_ptr() == block.data_ptr()
    _close(block, alone)
    assert bool((larger[0] == -7.0).all()) and bool((larger[-1] == -7.0).all())
    with pytest.raises(ValueError, match=r"out must have shape \(5, 8, "):
        layerwise_jacobian(layers, parameters, trainable, points, derivatives, out=torch.empty(5, 7, size, dtype=DTYPE))


def test_the_laplacian_of_a_known_function_is_exact():
    """u(x) = w tanh(a.x): Laplacian w |a|^2 tanh''(a.x), gradient w tanh'(a.x) a; along w -> w + t the second derivative is 0."""
    layer, head = torch.nn.Linear(3, 1, bias=False, dtype=DTYPE), torch.nn.Linear(1, 1, bias=False, dtype=DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -1.2, 0.7]], dtype=DTYPE))
        head.weight.fill_(1.5)
    network = torch.nn.Sequential(layer, torch.nn.Tanh(), head)
    points = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.4, 0.9]], dtype=DTYPE)
    parameters = {name: tensor.detach() for name, tensor in network.named_parameters()}
    jets = layerwise_jets(layerwise_network(network), parameters, points, ("value", "gradient", "laplacian"))
    direction = layer.weight.detach()[0]
    t = torch.tanh(points @ direction)
    first, second = 1 - t**2, -2 * t * (1 - t**2)
    expected = torch.cat([1.5 * t[:, None], 1.5 * first[:, None] * direction, 1.5 * second[:, None] * direction.square().sum()], dim=1)
    _close(jets, expected)


def test_other_modules_and_hutchinson_probes_keep_the_per_node_path():
    class Scaled(torch.nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    plain = _network(torch.nn.Tanh, 2, 1, seed=0)
    assert layerwise_network(torch.nn.Sequential(torch.nn.Linear(2, 3, dtype=DTYPE), torch.nn.ReLU())) is None
    assert layerwise_network(Scaled(*plain)) is None
    node_sets = _node_sets(2, ("laplacian",), seed=0)
    assert JetParametrization(plain, node_sets, laplacian_probes=3)._layers is None
    hooked = _network(torch.nn.Tanh, 2, 1, seed=0)
    hooked[1].register_forward_hook(lambda module, inputs, output: output * 2)
    assert layerwise_network(hooked) is None
    scaled = Scaled(*_network(torch.nn.Tanh, 2, 1, seed=1))
    jets = JetParametrization(scaled, node_sets)
    assert jets._layers is None
    twice = JetParametrization(_network(torch.nn.Tanh, 2, 1, seed=1), node_sets)
    _close(jets.value(jets.initial_point()), 2 * twice.value(twice.initial_point()))
    with pytest.raises(TypeError, match="layerwise"):
        JetParametrization(plain, node_sets, layerwise=1)


def test_with_node_sets_keeps_the_choice():
    network = _network(torch.nn.Tanh, 2, 1, seed=0)
    reference = JetParametrization(network, _node_sets(2, ("value",), seed=0), layerwise=False)
    assert reference.with_node_sets(_node_sets(2, ("laplacian",), seed=1))._layers is None
