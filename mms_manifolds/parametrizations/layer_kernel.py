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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LayerFactor", "LinearLayerFactors", "linear_layer_factors"]


def _trainable_layers(
    module: torch.nn.Module, trainable: list[str]
) -> list[tuple[torch.nn.Linear, bool, bool]] | None:
    """``(layer, weight trainable, bias trainable)`` for the ``Linear`` layers owning every name in ``trainable``, or ``None`` if some parameter is owned by none."""
    layers, owned = [], set()
    names = set(trainable)
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear):
            continue
        prefix = f"{name}." if name else ""
        weight, bias = f"{prefix}weight" in names, f"{prefix}bias" in names
        owned.update(key for key, held in ((f"{prefix}weight", weight), (f"{prefix}bias", bias)) if held)
        if weight or bias:
            layers.append((layer, weight, bias))
    return layers if owned == names else None


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
    layers = _trainable_layers(module, trainable)
    if layers is None:
        return None
    count, outputs = output_shape
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {id(layer): [] for layer, _, _ in layers}

    def record(layer: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(layer) in seen:
            seen[id(layer)].append((inputs[0], output))

    handles = [layer.register_forward_hook(record) for layer, _, _ in layers]
    try:
        with torch.enable_grad():
            values = forward(theta.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    calls = [seen[id(layer)] for layer, _, _ in layers]
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
    factors = tuple(
        LayerFactor(call[0][0].detach(), torch.stack(grads, dim=1).reshape(size, -1).detach(), weight, bias)
        for (_layer, weight, bias), call, grads in zip(layers, calls, gradients)
    )
    return LinearLayerFactors(factors, count, outputs)

