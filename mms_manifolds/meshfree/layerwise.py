r"""Jets of a plain MLP layer by layer, all nodes at once (the forward Laplacian), and their parameter Jacobian from per-layer factors.

For a network :math:`f = L_k \circ \sigma \circ \dots \circ \sigma \circ L_1` given as a ``torch.nn.Sequential`` of
``torch.nn.Linear`` layers and elementwise activations (:data:`ACTIVATIONS`), the jet
:math:`(z, \partial_1 z, \dots, \partial_d z, \Delta z)` of every hidden quantity (``C`` channels of width
:math:`h`, shape ``(N, C, h)`` for :math:`N` nodes) is carried forward with the nodes batched
(Li, Ye, Wang, Zhang, Wang, "A computational framework for neural network-based variational Monte Carlo with
Forward Laplacian", Nature Machine Intelligence 2024):

.. math:: L(z) = Wz + b:\quad z \mapsto Wz + b,\ \ \partial_k z \mapsto W\partial_k z,\ \ \Delta z \mapsto W\Delta z;

.. math:: \sigma:\quad z \mapsto \sigma(z),\ \ \partial_k z \mapsto \sigma'(z)\,\partial_k z,\ \
          \Delta z \mapsto \sigma'(z)\,\Delta z + \sigma''(z)\textstyle\sum_k(\partial_k z)^2,

from :math:`(x, e_1, \dots, e_d, 0)` at the input: the value channel alone for values, the :math:`d` gradient
channels for gradients and Laplacians, the Laplacian channel for Laplacians. The exact Laplacian costs
:math:`d + 2` forward passes of the batch, with no per-node ``vmap`` of nested ``torch.func`` transforms.

The parameter Jacobian of a jet component :math:`j_{iq}` (node :math:`i`, component :math:`q`) has, for each
layer :math:`l`, the structure of a sum of :math:`C` outer products, because the layer acts on each channel
with the same :math:`W_l` and adds :math:`b_l` to the value channel only:

.. math:: \frac{\partial j_{iq}}{\partial W_l} = \sum_{c} g^l_{iqc}\,(z^l_{ic})^\top, \qquad
          \frac{\partial j_{iq}}{\partial b_l} = g^l_{iq0},

:math:`z^l_{ic}` the layer's input channel :math:`c` at node :math:`i` and :math:`g^l_{iqc}` the gradient of
:math:`j_{iq}` with respect to its output channel. Nodes do not interact, so one backward pass of
:math:`\sum_i j_{iq}` per component :math:`q` gives every :math:`g^l_{iq}` (as
:func:`~mms_manifolds.parametrizations.layer_kernel.linear_layer_factors` does for plain values). The
second derivative :math:`D^2j[\xi, \xi]` that the geodesic acceleration needs comes from second-order Taylor
arithmetic along :math:`\theta + t\xi` through the same layers (:func:`layerwise_second_derivative`). The
per-node reverse mode over nested transforms (:class:`~mms_manifolds.meshfree.JetParametrization` with
``layerwise=False``) stays the reference; the two agree to rounding (``tests/test_layerwise_jets.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "ACTIVATIONS",
    "LayerwiseNetwork",
    "layerwise_jacobian",
    "layerwise_jets",
    "layerwise_network",
    "layerwise_second_derivative",
]


def _tanh(z):
    r""":math:`(\tanh, \tanh', \tanh'')` at ``z``, a tensor or a :class:`_Taylor`."""
    value = z.tanh()
    first = 1 - value * value
    return value, first, -2 * value * first


def _sigmoid(z):
    """The logistic function and its first two derivatives at ``z``, a tensor or a :class:`_Taylor`."""
    value = z.sigmoid()
    first = value * (1 - value)
    return value, first, first * (1 - 2 * value)


def _silu(z):
    r""":math:`z\,\mathrm{sigmoid}(z)` and its first two derivatives at ``z``, a tensor or a :class:`_Taylor`."""
    logistic = z.sigmoid()
    slope = logistic * (1 - logistic)
    return z * logistic, logistic + z * slope, slope * (2 + z * (1 - 2 * logistic))


class _Taylor:
    r"""A second-order Taylor polynomial :math:`x(t) = x_0 + tx_1 + \tfrac{t^2}2x_2` of tensors, with its arithmetic.

    Carried through the layers it gives the second derivative :math:`\tfrac{d^2}{dt^2}j_{\theta + t\xi}` of the
    jets at :math:`t = 0` (:func:`layerwise_second_derivative`); the activations (:data:`ACTIVATIONS`) are written
    with ``tanh``, ``sigmoid``, sums and products only, so they apply to tensors and Taylor polynomials alike.
    """

    __slots__ = ("terms",)

    def __init__(self, *terms: torch.Tensor):
        self.terms = terms

    def _map(self, function: Callable) -> _Taylor:
        return _Taylor(*(function(term) for term in self.terms))

    def __getitem__(self, index) -> _Taylor:
        return self._map(lambda term: term[index])

    def unsqueeze(self, dim: int) -> _Taylor:
        return self._map(lambda term: term.unsqueeze(dim))

    def sum(self, dim: int) -> _Taylor:
        return self._map(lambda term: term.sum(dim))

    def __add__(self, other) -> _Taylor:
        if isinstance(other, _Taylor):
            return _Taylor(*(a + b for a, b in zip(self.terms, other.terms)))
        return _Taylor(self.terms[0] + other, *self.terms[1:])

    __radd__ = __add__

    def __neg__(self) -> _Taylor:
        return self._map(lambda term: -term)

    def __sub__(self, other) -> _Taylor:
        return self + (-other)

    def __rsub__(self, other) -> _Taylor:
        return (-self) + other

    def __mul__(self, other) -> _Taylor:
        if not isinstance(other, _Taylor):
            return self._map(lambda term: term * other)
        (a0, a1, a2), (b0, b1, b2) = self.terms, other.terms
        return _Taylor(a0 * b0, a1 * b0 + a0 * b1, a2 * b0 + 2 * (a1 * b1) + a0 * b2)

    __rmul__ = __mul__

    def _compose(self, value: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> _Taylor:
        """:math:`f(x(t))` from :math:`f(x_0), f'(x_0), f''(x_0)`."""
        _, x1, x2 = self.terms
        return _Taylor(value, first * x1, first * x2 + second * (x1 * x1))

    def tanh(self) -> _Taylor:
        value = self.terms[0].tanh()
        first = 1 - value * value
        return self._compose(value, first, -2 * value * first)

    def sigmoid(self) -> _Taylor:
        value = self.terms[0].sigmoid()
        first = value * (1 - value)
        return self._compose(value, first, first * (1 - 2 * value))


def _cat(parts: list, dim: int):
    """``torch.cat`` of tensors, or of Taylor polynomials term by term."""
    if isinstance(parts[0], _Taylor):
        return _Taylor(*(torch.cat(terms, dim=dim) for terms in zip(*(part.terms for part in parts))))
    return torch.cat(parts, dim=dim)


#: Elementwise activations by module type: :math:`z \mapsto (\sigma(z), \sigma'(z), \sigma''(z))`, differentiable expressions.
ACTIVATIONS: dict[type[torch.nn.Module], Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
    torch.nn.Tanh: _tanh,
    torch.nn.Sigmoid: _sigmoid,
    torch.nn.SiLU: _silu,
}


@dataclass(frozen=True)
class LayerwiseNetwork:
    """A ``Sequential``'s layers in order: ``(name, None)`` for a ``Linear`` layer, ``(name, derivatives)`` for an activation."""

    layers: tuple[tuple[str, Callable | None], ...]


def _has_hooks(module: torch.nn.Module) -> bool:
    return any(getattr(module, attribute, None) for attribute in ("_forward_hooks", "_forward_pre_hooks"))


def layerwise_network(module: torch.nn.Module) -> LayerwiseNetwork | None:
    """The layers of ``module`` where it is exactly a ``torch.nn.Sequential`` of ``Linear`` layers and :data:`ACTIVATIONS`, else ``None``.

    Subclasses (which may change ``forward``) and modules with forward hooks are refused, so the layer-wise
    jets are the module's own.
    """
    if type(module) is not torch.nn.Sequential or _has_hooks(module) or len(module) == 0:
        return None
    layers: list[tuple[str, Callable | None]] = []
    for name, child in module.named_children():
        if _has_hooks(child):
            return None
        if type(child) is torch.nn.Linear:
            layers.append((name, None))
        elif type(child) in ACTIVATIONS:
            layers.append((name, ACTIVATIONS[type(child)]))
        else:
            return None
    return LayerwiseNetwork(tuple(layers))


def _order(derivatives: tuple[str, ...]) -> int:
    """Channels needed: 0 (value), 1 (value and gradient) or 2 (value, gradient and Laplacian)."""
    return 2 if "laplacian" in derivatives else 1 if "gradient" in derivatives else 0


def _input_channels(points: torch.Tensor, order: int) -> torch.Tensor:
    r"""The jet of :math:`x \mapsto x` at ``points`` (``(N, d)``): ``(N, C, d)`` with channels :math:`x, e_1..e_d, 0`."""
    count, dimension = points.shape
    channels = [points.unsqueeze(1)]
    if order >= 1:
        channels.append(torch.eye(dimension, dtype=points.dtype, device=points.device).expand(count, dimension, dimension))
    if order == 2:
        channels.append(torch.zeros_like(points).unsqueeze(1))
    return torch.cat(channels, dim=1)


def _activation_channels(derivatives: Callable, channels, order: int):
    """An elementwise activation applied to the jet channels ``(N, C, h)`` (module docstring), a tensor or a :class:`_Taylor`."""
    value, first, second = derivatives(channels[:, 0])
    parts = [value.unsqueeze(1)]
    if order >= 1:
        gradient = channels[:, 1:-1] if order == 2 else channels[:, 1:]
        parts.append(first.unsqueeze(1) * gradient)
    if order == 2:
        laplacian = first * channels[:, -1] + second * (gradient * gradient).sum(1)
        parts.append(laplacian.unsqueeze(1))
    return _cat(parts, dim=1)


def _linear(channels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    r""":math:`Wz + b` on the value channel, :math:`W\cdot` on the others: ``(N, C, h_in) -> (N, C, h_out)``."""
    channels = channels @ weight.T
    if bias is None:
        return channels
    return torch.cat([channels[:, :1] + bias, channels[:, 1:]], dim=1)


def _taylor_linear(channels: _Taylor, layer: tuple, tangent: tuple) -> _Taylor:
    r"""The linear layer on Taylor channels with parameters :math:`(W + t\Xi, b + t\beta)`, ``layer`` :math:`(W, b)`, ``tangent`` :math:`(\Xi, \beta)`."""
    (x0, x1, x2), (weight, bias), (weight_tangent, bias_tangent) = channels.terms, layer, tangent
    return _Taylor(
        _linear(x0, weight, bias),
        _linear(x1, weight, None) + _linear(x0, weight_tangent, bias_tangent),
        _linear(x2, weight, None) + 2 * _linear(x1, weight_tangent, None),
    )


def _propagate(
    network: LayerwiseNetwork,
    parameters: dict[str, torch.Tensor],
    points: torch.Tensor,
    order: int,
    record: list | None = None,
    tangents: dict[str, torch.Tensor] | None = None,
):
    r"""The output channels ``(N, C, m)``; with ``record``, each ``Linear`` layer's ``(name, input, output)`` channels appended.

    With ``tangents`` (a direction for each named tensor, zero for fixed ones), the :class:`_Taylor` polynomial of the
    output channels along :math:`\theta + t\xi` instead.
    """
    channels = _input_channels(points, order)
    if tangents is not None:
        channels = _Taylor(channels, torch.zeros_like(channels), torch.zeros_like(channels))
    for name, derivatives in network.layers:
        if derivatives is not None:
            channels = _activation_channels(derivatives, channels, order)
            continue
        layer = parameters[f"{name}.weight"], parameters.get(f"{name}.bias")
        if tangents is not None:
            channels = _taylor_linear(channels, layer, (tangents[f"{name}.weight"], tangents.get(f"{name}.bias")))
            continue
        inputs = channels
        channels = _linear(inputs, *layer)
        if record is not None:
            record.append((name, inputs, channels))
    return channels


def _stacked(channels: torch.Tensor, derivatives: tuple[str, ...]) -> torch.Tensor:
    """The jets ``(N, c)`` from the output channels ``(N, C, m)``, in the layout of :class:`~mms_manifolds.meshfree.JetLayout`."""
    count, order = channels.shape[0], _order(derivatives)
    parts = []
    if "value" in derivatives:
        parts.append(channels[:, 0])
    if "gradient" in derivatives:
        gradient = channels[:, 1:-1] if order == 2 else channels[:, 1:]
        parts.append(gradient.transpose(1, 2).reshape(count, -1))  # (N, m, d) row-major
    if "laplacian" in derivatives:
        parts.append(channels[:, -1])
    return torch.cat(parts, dim=1)


def layerwise_jets(
    network: LayerwiseNetwork, parameters: dict[str, torch.Tensor], points: torch.Tensor, derivatives: tuple[str, ...]
) -> torch.Tensor:
    r"""The jets of the network at ``points`` (``(N, d)``), shape ``(N, c)``: the ``derivatives`` asked, node by node as the layout stacks them.

    ``parameters`` holds the named tensors (``"0.weight"``, ...). Composable with ``torch.func`` (no in-place updates).
    """
    return _stacked(_propagate(network, parameters, points, _order(derivatives)), derivatives)


def layerwise_second_derivative(
    network: LayerwiseNetwork,
    parameters: dict[str, torch.Tensor],
    tangents: dict[str, torch.Tensor],
    points: torch.Tensor,
    derivatives: tuple[str, ...],
) -> torch.Tensor:
    r""":math:`D^2j[\xi, \xi] = \tfrac{d^2}{dt^2}j_{\theta + t\xi}\big|_{t=0}`, shape ``(N, c)``, by second-order Taylor arithmetic through the layers.

    ``tangents`` holds :math:`\xi` by parameter name (zeros for fixed parameters). The same number as the
    JVP of a JVP (``torch.func``) to rounding, in about three forward passes of plain tensor operations.
    """
    output = _propagate(network, parameters, points, _order(derivatives), tangents=tangents)
    return _stacked(output.terms[2], derivatives)


def _weight_owners(network: LayerwiseNetwork) -> dict[str, str]:
    """``{"<layer>.weight": layer, "<layer>.bias": layer}`` for every ``Linear`` layer."""
    return {
        f"{name}.{kind}": name for name, activation in network.layers if activation is None for kind in ("weight", "bias")
    }


def _layer_factors(
    network: LayerwiseNetwork, parameters: dict[str, torch.Tensor], points: torch.Tensor, derivatives: tuple[str, ...]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    r"""Per ``Linear`` layer by name: its input channels :math:`z^l` ``(N, C, h_in)`` and the output-channel gradients :math:`g^l` ``(N, c, C, h_out)`` of each jet component."""
    with torch.enable_grad():
        leaves = {name: tensor.detach().requires_grad_(True) for name, tensor in parameters.items()}
        record: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        jets = _stacked(_propagate(network, leaves, points.detach(), _order(derivatives), record), derivatives)
        outputs = [channels for _, _, channels in record]
        components = jets.shape[1]
        gradients = [[] for _ in record]  # per layer, per component: (N, C, h_out)
        for component in range(components):
            grads = torch.autograd.grad(
                jets[:, component].sum(), outputs, retain_graph=component < components - 1, allow_unused=True
            )
            for index, (grad, output) in enumerate(zip(grads, outputs)):
                gradients[index].append(torch.zeros_like(output) if grad is None else grad)
    return {name: (inputs.detach(), torch.stack(grads, dim=1)) for (name, inputs, _), grads in zip(record, gradients)}


def _write_layer_block(inputs: torch.Tensor, grads: torch.Tensor, kind: str, target: torch.Tensor) -> None:
    r"""Write the Jacobian columns of one layer's ``kind`` into ``target``: ``(N, c, h_out h_in)`` for ``"weight"``, ``(N, c, h_out)`` for ``"bias"``.

    The weight columns of component :math:`q` are the batched product
    :math:`(g^l_{iq})^\top z^l_i` (``(h_out, C) @ (C, h_in)`` per node), computed into ``target``'s rows in place.
    """
    if kind == "bias":
        target.copy_(grads[:, :, 0])
        return
    shape = (grads.shape[-1], inputs.shape[-1])
    for component in range(grads.shape[1]):
        torch.bmm(grads[:, component].transpose(1, 2), inputs, out=target[:, component].unflatten(-1, shape))


def layerwise_jacobian(
    network: LayerwiseNetwork,
    parameters: dict[str, torch.Tensor],
    trainable: list[tuple[str, int]],
    points: torch.Tensor,
    derivatives: tuple[str, ...],
    out: torch.Tensor | None = None,
) -> torch.Tensor | None:
    r"""The parameter Jacobian of :func:`layerwise_jets`, shape ``(N, c, p)``, from per-layer factors (module docstring); ``None`` if some trainable parameter is no ``Linear`` weight or bias.

    Args:
        trainable: ``(name, size)`` of each trainable parameter in the order of :math:`\theta` (the columns).
        out: where given, the ``(N, c, p)`` tensor the Jacobian is written into (and returned), e.g. a block of
            rows of a larger Jacobian, so that no copy is concatenated afterwards.
    """
    owners = _weight_owners(network)
    if any(name not in owners for name, _ in trainable):
        return None
    factors = _layer_factors(network, parameters, points, derivatives)
    count, components = points.shape[0], next(iter(factors.values()))[1].shape[1]
    size = sum(columns for _, columns in trainable)
    shape = (count, components, size)
    if out is None:
        jacobian = torch.empty(shape, dtype=points.dtype, device=points.device)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape} (nodes, jet components, parameters), got {tuple(out.shape)}")
    else:
        jacobian = out
    start = 0
    for name, columns in trainable:
        inputs, grads = factors[owners[name]]
        _write_layer_block(inputs, grads, name.rsplit(".", 1)[1], jacobian[:, :, start : start + columns])
        start += columns
    return jacobian
