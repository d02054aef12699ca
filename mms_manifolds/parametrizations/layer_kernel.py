r"""The kernel :math:`JJ^\top` of a network of linear layers from per-layer factors, without forming :math:`J`.

Where every trainable parameter of a node-separable network is the weight or bias of a
``torch.nn.Linear`` layer :math:`l` that is applied once, to an ``(N, d_in)`` batch whose row :math:`i`
belongs to node :math:`i`, the gradient of output component :math:`j` at node :math:`i` with respect to
that layer is an outer product: :math:`\partial u_{ij}/\partial W_l = g^l_{ij}\,(a^l_i)^\top` and
:math:`\partial u_{ij}/\partial b_l = g^l_{ij}`, with :math:`a^l_i` the layer's input row (``(d_in,)``) and
:math:`g^l_{ij} = \partial u_{ij}/\partial z^l_i` the gradient with respect to its output row (``(d_out,)``).
Hence

.. math:: (JJ^\top)_{(i,j),(i',j')} = \sum_l \big(g^l_{ij}\cdot g^l_{i'j'}\big)
          \big([W_l]\,a^l_i\cdot a^l_{i'} + [b_l]\big),

:math:`[\,\cdot\,]` one where that parameter is trainable. One forward pass and :math:`m` backward passes
give every :math:`a^l` and :math:`g^l` (node separability makes the gradient of :math:`\sum_i u_{ij}` with
respect to :math:`z^l` the per-node rows), and the kernel costs :math:`\sum_l (Nm)^2 d^l_{out} + N^2 d^l_{in}`
flops instead of the :math:`(Nm)^2 p` of :math:`BB^\top` (at :math:`p = 20601`, :math:`N = 4900`, an MLP of
width 100: about 12 times fewer). This is the structure of the neural tangent kernel's layer-wise
computation (Novak, Sohl-Dickstein, Schoenholz, "Fast finite width neural tangent kernel", ICML 2022).

The same factors give any set of columns of :math:`J` (:func:`linear_layer_columns`): the column of the
weight entry :math:`(W_l)_{qr}` is :math:`\partial u_{ij}/\partial (W_l)_{qr} = g^l_{ijq}\,a^l_{ir}`, of the bias
entry :math:`(b_l)_q` it is :math:`g^l_{ijq}`: :math:`s` columns cost :math:`O(Nms)` products after the one forward
and :math:`m` backward passes, where per-node gradients cost the full :math:`(N, m, p)` Jacobian's work and
:math:`s` JVPs :math:`s` forward passes.
"""

from __future__ import annotations

import torch

__all__ = ["linear_layer_columns", "linear_layer_kernel"]


def _trainable_layers(
    module: torch.nn.Module, trainable: list[str]
) -> tuple[list[tuple[str, torch.nn.Linear, bool, bool]], list[str]]:
    """``(prefix, layer, weight trainable, bias trainable)`` of the ``Linear`` layers owning names in ``trainable``, and the names no ``Linear`` layer owns."""
    layers, owned = [], set()
    names = set(trainable)
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear):
            continue
        prefix = f"{name}." if name else ""
        weight, bias = f"{prefix}weight" in names, f"{prefix}bias" in names
        owned.update(key for key, held in ((f"{prefix}weight", weight), (f"{prefix}bias", bias)) if held)
        if weight or bias:
            layers.append((prefix, layer, weight, bias))
    return layers, [name for name in trainable if name not in owned]


def _layer_factors(
    layers: list[tuple[str, torch.nn.Linear, bool, bool]],
    forward: object,
    theta: torch.Tensor,
    output_shape: tuple[int, int],
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    r"""Per layer its input rows :math:`a^l` (``(N, d_in)``) and output gradients :math:`g^l` (``(N, m, d_out)``), or ``None``.

    One forward pass with the layers hooked and :math:`m` backward passes (of :math:`\sum_i u_{ij}`, per output
    component :math:`j`). ``None`` where a layer is applied more or less than once, or to anything but an
    ``(N, d_in)`` batch, or the output is not ``(N, m)``.
    """
    count, outputs = output_shape
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {id(layer): [] for _, layer, _, _ in layers}

    def record(layer: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(layer) in seen:
            seen[id(layer)].append((inputs[0], output))

    handles = [layer.register_forward_hook(record) for _, layer, _, _ in layers]
    try:
        with torch.enable_grad():
            values = forward(theta.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    calls = [seen[id(layer)] for _, layer, _, _ in layers]
    if any(len(call) != 1 or call[0][0].ndim != 2 or call[0][0].shape[0] != count for call in calls):
        return None
    if tuple(values.shape) != (count, outputs):
        return None
    layer_outputs = [call[0][1] for call in calls]
    gradients = [[] for _ in layers]  # per layer, per output component: (N, d_out)
    for component in range(outputs):
        grads = torch.autograd.grad(
            values[:, component].sum(), layer_outputs, retain_graph=component < outputs - 1, allow_unused=True
        )
        for index, (grad, output) in enumerate(zip(grads, layer_outputs)):
            gradients[index].append(torch.zeros_like(output) if grad is None else grad)
    inputs = [call[0][0].detach() for call in calls]
    return inputs, [torch.stack(grads, dim=1).detach() for grads in gradients]


def linear_layer_kernel(
    module: torch.nn.Module,
    forward: object,
    trainable: list[str],
    theta: torch.Tensor,
    output_shape: tuple[int, int],
) -> torch.Tensor | None:
    r""":math:`JJ^\top` (``(Nm, Nm)``, rows in the order of :math:`u` flattened from ``(N, m)``) from per-layer factors, or ``None``.

    Args:
        module: the network; its ``Linear`` layers are hooked for one forward pass.
        forward: ``theta -> u`` (``(p,) -> (N, m)``), evaluating ``module`` at the nodes.
        trainable: the names of the trainable parameters (``module.named_parameters()`` names).
        theta: the point, shape ``(p,)``.
        output_shape: ``(N, m)``.

    Returns ``None`` (the caller forms :math:`BB^\top` instead) where the structure of the module docstring
    is absent: a trainable parameter outside a ``Linear`` layer, a layer applied more or less than once, or
    to anything but an ``(N, d_in)`` batch. Node separability itself is the caller's to know.
    """
    layers, others = _trainable_layers(module, trainable)
    if others:
        return None
    factors = _layer_factors(layers, forward, theta, output_shape)
    if factors is None:
        return None
    count, outputs = output_shape
    size = count * outputs
    kernel = torch.zeros(size, size, dtype=theta.dtype, device=theta.device)
    with torch.no_grad():
        for (_prefix, _layer, weight, bias), inputs, grads in zip(layers, *factors):
            factor = grads.reshape(size, -1)  # (Nm, d_out), row (i, j)
            inner = inputs @ inputs.T if weight else torch.zeros(count, count, dtype=theta.dtype, device=theta.device)
            if bias:
                inner += 1.0
            if outputs > 1:
                inner = inner.repeat_interleave(outputs, 0).repeat_interleave(outputs, 1)
            kernel += (factor @ factor.T).mul_(inner)
        return 0.5 * (kernel + kernel.T)


def linear_layer_columns(
    module: torch.nn.Module,
    forward: object,
    trainable: list[str],
    sizes: list[int],
    theta: torch.Tensor,
    output_shape: tuple[int, int],
    indices: torch.Tensor,
    other_columns: object,
) -> torch.Tensor | None:
    r"""The columns :math:`J_S` (``(N, m, s)``) of the flat parameters ``indices`` from per-layer factors, or ``None``.

    A weight entry :math:`(W_l)_{qr}` (``torch.nn.Linear`` stores :math:`W_l` as ``(d_out, d_in)``, flattened row
    by row: flat offset :math:`q\,d_{in} + r`) has the column :math:`g^l_{:, :, q}\,a^l_{:, r}`, a bias entry
    :math:`(b_l)_q` the column :math:`g^l_{:, :, q}` (module docstring). The columns of parameters no ``Linear``
    layer owns come from ``other_columns(names, positions)``: for those parameter names (each with the flat
    positions wanted inside it, ``(k,)`` tensors) it returns their columns, ``(N, m, sum k)`` in that order.
    The largest tensors are :math:`J_S` itself and the factors (``(N, d)`` per layer); never ``(N, m, p)``.

    Args:
        module: the network; its ``Linear`` layers are hooked for one forward pass.
        forward: ``theta -> u`` (``(p,) -> (N, m)``), evaluating ``module`` at the nodes.
        trainable: the names of the trainable parameters, in the order of :math:`\theta`.
        sizes: their numbers of entries.
        theta: the point, shape ``(p,)``.
        output_shape: ``(N, m)``.
        indices: :math:`S`, shape ``(s,)``, distinct.
        other_columns: as above.

    Returns ``None`` (the caller forms the columns otherwise) where a ``Linear`` layer is applied more or less
    than once or to anything but an ``(N, d_in)`` batch. Node separability is the caller's to know.
    """
    layers, others = _trainable_layers(module, trainable)
    factors = _layer_factors(layers, forward, theta, output_shape)
    if factors is None:
        return None
    count, outputs = output_shape
    starts = torch.tensor([0, *sizes], device=indices.device).cumsum(0)
    owner = torch.bucketize(indices, starts[1:], right=True)  # the parameter each index belongs to
    local = indices - starts[owner]
    position = {name: number for number, name in enumerate(trainable)}
    # stored column by column, (s, N, m), and returned as its (N, m, s) view: a consumer that moves the column
    # axis first (J_S^T products) reads contiguous columns, and every column is written as one contiguous row
    stored = torch.empty(indices.numel(), count, outputs, dtype=theta.dtype, device=theta.device)
    with torch.no_grad():
        for (prefix, layer, weight, bias), inputs, grads in zip(layers, *factors):
            by_unit = grads.permute(2, 0, 1).contiguous()  # (d_out, N, m)
            if weight:
                chosen = (owner == position[f"{prefix}weight"]).nonzero().squeeze(-1)
                rows, cols = local[chosen] // layer.in_features, local[chosen] % layer.in_features
                stored[chosen] = by_unit[rows] * inputs.T.contiguous()[cols].unsqueeze(-1)
            if bias:
                chosen = (owner == position[f"{prefix}bias"]).nonzero().squeeze(-1)
                stored[chosen] = by_unit[local[chosen]]
        wanted = [(name, (owner == position[name]).nonzero().squeeze(-1)) for name in others]
        wanted = [(name, chosen) for name, chosen in wanted if chosen.numel()]
    if wanted:
        block = other_columns([name for name, _ in wanted], [local[chosen] for _, chosen in wanted])
        stored[torch.cat([chosen for _, chosen in wanted])] = block.detach().movedim(-1, 0)
    return stored.movedim(0, -1)
