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

from dataclasses import dataclass

import torch

__all__ = ["LayerFactor", "LinearLayerFactors", "linear_layer_columns", "linear_layer_factors"]


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


@dataclass(frozen=True)
class LayerFactor:
    r"""One ``Linear`` layer's factors of :math:`J`: its input rows :math:`a_i` and output gradients :math:`g_{ij}`.

    Attributes:
        inputs: :math:`A`, shape ``(N, d_in)``, row :math:`i` the layer's input at node :math:`i`.
        output_gradients: :math:`G`, shape ``(Nm, d_out)``, row :math:`(i, j)` (``i * m + j``) the gradient
            :math:`g_{ij} = \partial u_{ij}/\partial z_i` with respect to the layer's output row.
        weight: whether the layer's weight is trainable.
        bias: whether the layer's bias is trainable.
    """

    inputs: torch.Tensor
    output_gradients: torch.Tensor
    weight: bool
    bias: bool


@dataclass(frozen=True)
class LinearLayerFactors:
    r""":math:`J` of a network of ``Linear`` layers held as per-layer factors (module docstring); :math:`JJ^\top` and its parts without :math:`J`.

    Rows are those of :math:`u` flattened from ``(N, m)``. With :math:`\hat A_l` (``(Nm, d_in)``) the inputs
    repeated per output component, the products below cost, per layer: the kernel
    :math:`(Nm)^2 d_{out} + N^2 d_{in}`, its diagonal :math:`Nm\,(d_{out} + d_{in})`, :math:`k` of its columns
    :math:`k\,Nm\,(d_{out} + d_{in})`, and :math:`J^\top V` for ``(Nm, k)`` :math:`V` (hence :math:`JJ^\top V`)
    :math:`2k\,Nm\,d_{out}d_{in}`: what :math:`k` VJPs cost, without autograd.
    """

    layers: tuple[LayerFactor, ...]
    count: int
    outputs: int

    #: Most numbers of the transient ``(Nm, k, d_out)`` product in :meth:`transpose_products` (chunks of :math:`k`).
    CHUNK_NUMBERS = 2**22

    @property
    def size(self) -> int:
        """:math:`Nm`, the number of rows of :math:`J`."""
        return self.count * self.outputs

    def _repeated_inputs(self, layer: LayerFactor) -> torch.Tensor:
        r""":math:`\hat A` (``(Nm, d_in)``): row :math:`(i, j)` is :math:`a_i`."""
        inputs = layer.inputs.detach()
        return inputs if self.outputs == 1 else inputs.repeat_interleave(self.outputs, 0)

    def kernel(self) -> torch.Tensor:
        r""":math:`JJ^\top = \sum_l (G_lG_l^\top)\circ([W_l]\,\hat A_l\hat A_l^\top + [b_l])`, shape ``(Nm, Nm)``, exactly symmetric."""
        count, outputs = self.count, self.outputs
        size = self.size
        like = self.layers[0].output_gradients
        kernel = torch.zeros(size, size, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            for layer in self.layers:
                inputs = layer.inputs.detach()
                factor = layer.output_gradients
                inner = (
                    inputs @ inputs.T
                    if layer.weight
                    else torch.zeros(count, count, dtype=like.dtype, device=like.device)
                )
                if layer.bias:
                    inner += 1.0
                if outputs > 1:
                    inner = inner.repeat_interleave(outputs, 0).repeat_interleave(outputs, 1)
                kernel += (factor @ factor.T).mul_(inner)
            return 0.5 * (kernel + kernel.T)

    def diagonal(self) -> torch.Tensor:
        r""":math:`\operatorname{diag}(JJ^\top)_{ij} = \sum_l |g^l_{ij}|^2([W_l]\,|a^l_i|^2 + [b_l])`, shape ``(Nm,)``."""
        like = self.layers[0].output_gradients
        diagonal = torch.zeros(self.size, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            for layer in self.layers:
                inner = self._repeated_inputs(layer).square().sum(1) if layer.weight else torch.zeros_like(diagonal)
                diagonal += layer.output_gradients.square().sum(1) * (inner + float(layer.bias))
        return diagonal

    def columns(self, indices: torch.Tensor) -> torch.Tensor:
        r""":math:`(JJ^\top)_{:,S}` for the rows ``indices`` :math:`S` (``(k,)``), shape ``(Nm, k)``."""
        like = self.layers[0].output_gradients
        columns = torch.zeros(self.size, indices.numel(), dtype=like.dtype, device=like.device)
        with torch.no_grad():
            for layer in self.layers:
                factor = layer.output_gradients
                inputs = self._repeated_inputs(layer)
                inner = inputs @ inputs[indices].T if layer.weight else torch.zeros_like(columns)
                columns += (factor @ factor[indices].T) * (inner + float(layer.bias))
        return columns

    def transpose_products(self, vectors: torch.Tensor) -> torch.Tensor:
        r""":math:`(J^\top V)^\top` for ``vectors`` :math:`V` (``(Nm, k)``), shape ``(k, q)``, in the layers' own order.

        Per layer, :math:`\partial/\partial W_l` of :math:`v\cdot u` is :math:`G_l^\top\operatorname{diag}(v)\hat A_l`
        (``(d_out, d_in)``) and :math:`\partial/\partial b_l` is :math:`G_l^\top v`, flattened and concatenated
        (:math:`q = p`, the trainable parameters, ordered layer by layer: the order of :math:`\theta` need not be
        kept, since only products of these rows are taken).
        """
        pieces = []
        with torch.no_grad():
            for layer in self.layers:
                factor = layer.output_gradients
                if layer.weight:
                    inputs = self._repeated_inputs(layer)
                    step = max(1, self.CHUNK_NUMBERS // max(1, self.size * factor.shape[1]))
                    blocks = []
                    for start in range(0, vectors.shape[1], step):
                        chunk = vectors[:, start : start + step]
                        scaled = (factor.unsqueeze(1) * chunk.unsqueeze(2)).reshape(self.size, -1)  # (Nm, k d_out)
                        blocks.append((scaled.T @ inputs).reshape(chunk.shape[1], -1))  # (k, d_out d_in)
                    pieces.append(torch.cat(blocks, dim=0))
                if layer.bias:
                    pieces.append(vectors.T @ factor)
        return torch.cat(pieces, dim=1)

    def kernel_product(self, vectors: torch.Tensor) -> torch.Tensor:
        r""":math:`JJ^\top V` for ``vectors`` :math:`V` (``(Nm, k)``), shape ``(Nm, k)``: :math:`J^\top V` by :meth:`transpose_products`, then :math:`J`.

        :math:`(Jx)_{ij} = \sum_l g^l_{ij}\cdot(X_l a^l_i + y_l)` for the layer blocks :math:`(X_l, y_l)` of :math:`x`.
        """
        rows = self.transpose_products(vectors)  # (k, q)
        product = torch.zeros_like(vectors)
        offset = 0
        with torch.no_grad():
            for layer in self.layers:
                factor = layer.output_gradients
                width = factor.shape[1]
                if layer.weight:
                    inputs = self._repeated_inputs(layer)
                    depth = inputs.shape[1]
                    block = rows[:, offset : offset + width * depth].reshape(-1, width, depth)  # (k, d_out, d_in)
                    offset += width * depth
                    for index in range(vectors.shape[1]):
                        product[:, index] += ((inputs @ block[index].T) * factor).sum(1)
                if layer.bias:
                    product += factor @ rows[:, offset : offset + width].T
                    offset += width
        return product


def _collect_factors(
    layers: list[tuple[str, torch.nn.Linear, bool, bool]],
    forward: object,
    theta: torch.Tensor,
    output_shape: tuple[int, int],
) -> tuple[LayerFactor, ...] | None:
    r"""Each layer's :class:`LayerFactor` from one forward pass with the layers hooked and :math:`m` backward passes, or ``None``.

    The backward passes are of :math:`\sum_i u_{ij}`, one per output component :math:`j`. ``None`` where a layer is
    applied more or less than once, or to anything but an ``(N, d_in)`` batch, or the output is not ``(N, m)``.
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
    size = count * outputs
    return tuple(
        LayerFactor(call[0][0].detach(), torch.stack(grads, dim=1).reshape(size, -1).detach(), weight, bias)
        for (_prefix, _layer, weight, bias), call, grads in zip(layers, calls, gradients)
    )


def linear_layer_factors(
    module: torch.nn.Module,
    forward: object,
    trainable: list[str],
    theta: torch.Tensor,
    output_shape: tuple[int, int],
) -> LinearLayerFactors | None:
    r"""The per-layer factors of :math:`J` (:class:`LinearLayerFactors`) from one forward and :math:`m` backward passes, or ``None``.

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
    if others or not layers:
        return None
    factors = _collect_factors(layers, forward, theta, output_shape)
    return None if factors is None else LinearLayerFactors(factors, *output_shape)


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
    factors = _collect_factors(layers, forward, theta, output_shape)
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
        for (prefix, layer, weight, bias), factor in zip(layers, factors):
            inputs = factor.inputs
            by_unit = factor.output_gradients.reshape(count, outputs, -1).permute(2, 0, 1).contiguous()  # (d_out, N, m)
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
