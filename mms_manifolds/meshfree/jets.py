r"""Jets of a network at node sets: value, input gradient and Laplacian, stacked into one vector.

For a network :math:`f_\theta: \mathbb{R}^d \to \mathbb{R}^m` and node sets :math:`S_1, \dots, S_r`, the jet
parametrisation is

.. math:: \phi(\theta) = \big(\,f_\theta(x_i),\ \nabla_x f_\theta(x_i),\ \Delta_x f_\theta(x_i)\,\big)_{x_i \in S_s,\ s = 1..r}

with, at each set, only the components the set asks for. It is still a smooth map from
:math:`\theta \in \mathbb{R}^p` to a finite-dimensional space :math:`\mathbb{R}^K`, so the increment
manifold's geometry (pullback metric, projection, exp map, Hessian) applies unchanged; the input
derivatives come from ``torch.func`` and every parameter derivative of them (JVP, VJP, second
derivative) from ``torch.func`` again, through the nested transforms.

Layout: the output has shape ``(K, 1)``; set :math:`s` occupies a contiguous block of
:math:`N_s c_s` entries, node by node, each node holding its value (:math:`m`), then its gradient
(:math:`m d`, row-major ``(m, d)``), then its Laplacian (:math:`m`), as asked. :class:`JetLayout`
splits such vectors into named :class:`Jet` records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.func import functional_call, jacfwd, jacrev, jvp, vmap

from .._checks import check_flag, check_integer
from .._random import rademacher_probes
from ..parametrizations.torch_function import jacobian_chunk_numbers, serialized
from ..parametrizations.torch_module import TorchParametrization
from .layerwise import layerwise_jacobian, layerwise_jets, layerwise_network, layerwise_second_derivative
from .nodes import NodeSet

__all__ = ["Jet", "JetBlock", "JetLayout", "JetParametrization"]


@dataclass(frozen=True)
class Jet:
    r"""The jet of a function at the :math:`N` points of one node set (``None`` where not evaluated).

    Attributes:
        value: :math:`u(x_i)`, shape ``(..., N, m)``.
        gradient: :math:`\nabla u(x_i)`, shape ``(..., N, m, d)``.
        laplacian: :math:`\Delta u(x_i)`, shape ``(..., N, m)``.
    """

    value: torch.Tensor | None = None
    gradient: torch.Tensor | None = None
    laplacian: torch.Tensor | None = None


@dataclass(frozen=True)
class JetBlock:
    """Where one node set's jets sit in the stacked vector: entries ``offset .. offset + count * width``."""

    name: str
    count: int
    derivatives: tuple[str, ...]
    offset: int
    width: int


class JetLayout:
    r"""The block structure of stacked jets: split a ``(..., K, 1)`` vector into :class:`Jet` records.

    Args:
        node_sets: the node sets by name, in stacking order.
        outputs: :math:`m`, the network's output dimension.
        dimension: :math:`d`, the input dimension.
    """

    def __init__(self, node_sets: Mapping[str, NodeSet], outputs: int, dimension: int):
        self.outputs, self.dimension = outputs, dimension
        self.blocks: dict[str, JetBlock] = {}
        offset = 0
        for name, node_set in node_sets.items():
            width = sum(self.component_size(derivative) for derivative in node_set.derivatives)
            self.blocks[name] = JetBlock(name, node_set.count, node_set.derivatives, offset, width)
            offset += node_set.count * width
        self.size = offset

    def component_size(self, derivative: str) -> int:
        """Entries one node uses for ``derivative``: :math:`m` for values and Laplacians, :math:`md` for gradients."""
        return self.outputs * self.dimension if derivative == "gradient" else self.outputs

    def split(self, u: torch.Tensor) -> dict[str, Jet]:
        """The jets in a stacked vector ``u`` of shape ``(..., K, 1)``, by node-set name (views, no copies)."""
        if u.shape[-2:] != (self.size, 1):
            raise ValueError(f"stacked jets must have shape (..., {self.size}, 1), got {tuple(u.shape)}")
        batch = u.shape[:-2]
        jets = {}
        for name, block in self.blocks.items():
            rows = u[..., block.offset : block.offset + block.count * block.width, 0]
            rows = rows.reshape(*batch, block.count, block.width)
            parts, start = {}, 0
            for derivative in block.derivatives:
                size = self.component_size(derivative)
                part = rows[..., start : start + size]
                if derivative == "gradient":
                    part = part.reshape(*batch, block.count, self.outputs, self.dimension)
                parts[derivative], start = part, start + size
            jets[name] = Jet(**parts)
        return jets


class JetParametrization(TorchParametrization):
    r"""The stacked jets of a network at named node sets, :math:`\phi(\theta) \in \mathbb{R}^{K \times 1}`.

    At one point :math:`x` the jet is computed by ``torch.func`` over the input and batched over the
    nodes with ``vmap``: the gradient by reverse mode, the Laplacian either exactly as the trace of the
    forward-over-reverse Hessian (:math:`O(d)` passes) or, with ``laplacian_probes = s``, by Hutchinson's
    estimate :math:`\frac1s\sum_j z_j^\top \nabla^2 f(x) z_j` over ``s`` fixed Rademacher vectors
    :math:`z_j \in \{\pm1\}^d` (one Hessian-vector product each; unbiased, and a fixed, smooth function
    of :math:`\theta`, so the geometry stays exact for the estimated map).

    Where the module is a ``torch.nn.Sequential`` of ``Linear`` layers and elementwise activations
    (:func:`~mms_manifolds.meshfree.layerwise.layerwise_network`) and the Laplacian is exact, the jets are
    instead carried forward through the layers with all nodes batched (the forward Laplacian,
    :mod:`mms_manifolds.meshfree.layerwise`), and the dense Jacobian is assembled from per-layer factors:
    the same map to rounding, without per-node transforms (at :math:`p = 9873` and 1020 nodes of KFAC's
    2-D Poisson, ``docs/performance.md``). ``layerwise=False`` keeps the per-node path.

    Args:
        module: the network, mapping ``(N, d)`` inputs to ``(N, m)`` outputs.
        node_sets: node sets by name (for example ``{"interior": ..., "boundary": ...}``), all with
            the same input dimension :math:`d` and the module's dtype and device.
        laplacian_probes: ``None`` for the exact Laplacian, or the number of Hutchinson probes.
        seed: seed of the Hutchinson probes.
        layerwise: use the layer-wise jets where the module allows them (above). Default ``True``.

    Raises:
        ValueError: no node sets, node sets of different dimensions, dtypes or devices, or a module
            that cannot be evaluated at single points of shape ``(1, d)``.

    Examples:
        >>> import torch
        >>> from mms_manifolds.meshfree import box_interior_grid
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> nodes = {"interior": box_interior_grid(3, 2, ("value", "gradient"))}
        >>> phi = JetParametrization(net, nodes)
        >>> phi.output_shape  # 9 nodes x (1 value + 2 gradient entries)
        (27, 1)
        >>> sorted(phi.layout.split(phi.value(phi.initial_point()))["interior"].__dict__)
        ['gradient', 'laplacian', 'value']
    """

    def __init__(
        self,
        module: torch.nn.Module,
        node_sets: Mapping[str, NodeSet],
        laplacian_probes: int | None = None,
        seed: int = 0,
        layerwise: bool = True,
    ):
        if not isinstance(node_sets, Mapping) or not node_sets:
            raise ValueError("node_sets must be a non-empty mapping from names to NodeSet")
        for name, node_set in node_sets.items():
            if not isinstance(node_set, NodeSet):
                raise TypeError(f"node_sets[{name!r}] must be a NodeSet, got {type(node_set).__name__}")
        dimensions = {node_set.dimension for node_set in node_sets.values()}
        if len(dimensions) != 1:
            raise ValueError(f"all node sets must have one input dimension, got {sorted(dimensions)}")
        self.node_sets = dict(node_sets)
        self.input_dimension = dimensions.pop()
        self.laplacian_probes = (
            None if laplacian_probes is None else check_integer("laplacian_probes", laplacian_probes, minimum=1)
        )
        self._seed = check_integer("seed", seed, minimum=0)
        self._probes = self._hutchinson_probes(next(iter(self.node_sets.values())).points)
        self.layerwise = check_flag("layerwise", layerwise)
        self._layers = layerwise_network(module) if layerwise and self.laplacian_probes is None else None
        nodes = torch.cat([node_set.points for node_set in self.node_sets.values()])
        super().__init__(module, nodes, node_separable=False)  # jets are not the module's node values
        outputs = self._single_output_size()
        self.layout = JetLayout(self.node_sets, outputs, self.input_dimension)

    def _single_output_size(self) -> int:
        point = self.nodes[:1]
        with torch.no_grad():
            output = functional_call(self.module, {**self._fixed, **self.unflatten(self._initial_point)}, (point,))
        return 1 if output.ndim == 1 else output.shape[-1]

    def _hutchinson_probes(self, like: torch.Tensor) -> torch.Tensor | None:
        """The fixed Rademacher probes, shape ``(s, d)``, drawn once from ``seed`` (``None`` for the exact Laplacian)."""
        if self.laplacian_probes is None:
            return None
        options = {"dtype": like.dtype, "device": like.device, "seed": self._seed}
        return rademacher_probes(self.laplacian_probes, self.input_dimension, **options)

    def _node_jet(
        self, parameters: dict[str, torch.Tensor], x: torch.Tensor, derivatives: tuple[str, ...]
    ) -> torch.Tensor:
        r"""The jet of :math:`f_\theta` at one point ``x`` (shape ``(d,)``): the ``derivatives`` asked, concatenated, shape ``(c,)``."""

        def network(point: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, parameters, (point.unsqueeze(0),)).reshape(-1)

        parts = []
        if "value" in derivatives:
            parts.append(network(x))
        if "gradient" in derivatives:
            parts.append(jacrev(network)(x).reshape(-1))
        if "laplacian" in derivatives:
            if self.laplacian_probes is None:
                hessian = jacfwd(jacrev(network))(x)  # (m, d, d)
                parts.append(hessian.diagonal(dim1=-2, dim2=-1).sum(-1))
            else:
                gradient = jacrev(network)

                def curvature(probe: torch.Tensor) -> torch.Tensor:
                    return jvp(gradient, (x,), (probe,))[1] @ probe  # z^T (Hess f_j) z for each output j

                parts.append(vmap(curvature)(self._probes).mean(0))
        return torch.cat(parts)

    def _forward(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._layers is not None:
            blocks = [
                layerwise_jets(self._layers, parameters, node_set.points, node_set.derivatives)
                for node_set in self.node_sets.values()
            ]
            return torch.cat([block.reshape(-1) for block in blocks]).unsqueeze(-1)
        blocks = [
            vmap(lambda x, wanted=node_set.derivatives: self._node_jet(parameters, x, wanted))(node_set.points)
            for node_set in self.node_sets.values()
        ]
        return torch.cat([block.reshape(-1) for block in blocks]).unsqueeze(-1)

    @serialized
    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Dense :math:`J(\theta)`, shape ``(K, 1, p)``, node by node: the jet at one node depends on that node alone.

        For each node set, the per-node jet :math:`\theta \mapsto j_\theta(x_i) \in \mathbb{R}^{c}` is
        differentiated by reverse mode (``jacrev``, :math:`c` passes) and batched over the nodes with
        ``vmap``, in chunks of at most :func:`~mms_manifolds.parametrizations.torch_function.jacobian_chunk_numbers` ``// (c p)`` nodes: :math:`O(K p)` work instead
        of the :math:`p` batched JVPs through the whole jet map of the generic path
        (:meth:`FunctionParametrization.jacobian`, kept as the reference: equal to rounding, tested).
        With the layer-wise jets, per-layer outer products instead
        (:func:`~mms_manifolds.meshfree.layerwise.layerwise_jacobian`): a few backward passes of the batch.
        """
        theta = self.check_point(theta)
        if self._layers is not None:
            jacobian = self._layerwise_jacobian(theta)
            if jacobian is not None:
                return jacobian
        blocks = []
        for node_set, block in zip(self.node_sets.values(), self.layout.blocks.values()):

            def at_node(point: torch.Tensor, x: torch.Tensor, wanted: tuple[str, ...] = node_set.derivatives):
                return self._node_jet({**self._fixed, **self.unflatten(point)}, x, wanted)

            chunk = max(1, jacobian_chunk_numbers(self.device) // (block.width * self.num_parameters))
            rows = vmap(jacrev(at_node), in_dims=(None, 0), chunk_size=chunk)(theta, node_set.points)
            blocks.append(rows.reshape(-1, self.num_parameters))  # (N_s c_s, p), node by node as the layout
        return torch.cat(blocks).unsqueeze(1)

    @serialized
    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        r""":math:`D^2\phi[\xi, \eta]`, shape ``(K, 1)``; for :math:`\xi = \eta` with the layer-wise jets by Taylor arithmetic through the layers.

        (:func:`~mms_manifolds.meshfree.layerwise.layerwise_second_derivative`; the JVP of a JVP otherwise.)
        """
        if self._layers is None or not (first is second or torch.equal(first, second)):
            return super().second_derivative(theta, first, second)
        parameters = {**self._fixed, **self.unflatten(self.check_point(theta))}
        tangents = {name: torch.zeros_like(tensor) for name, tensor in self._fixed.items()}
        tangents.update(self.unflatten(first))
        blocks = [
            layerwise_second_derivative(self._layers, parameters, tangents, node_set.points, node_set.derivatives)
            for node_set in self.node_sets.values()
        ]
        return torch.cat([block.reshape(-1) for block in blocks]).unsqueeze(-1)

    def _layerwise_jacobian(self, theta: torch.Tensor) -> torch.Tensor | None:
        """The layer-wise Jacobian ``(K, 1, p)``, or ``None`` where a trainable parameter is no ``Linear`` weight or bias.

        Each node set's rows are written into their block of one ``(K, p)`` tensor (no concatenated copy).
        """
        parameters = {**self._fixed, **self.unflatten(theta)}
        trainable = list(zip(self._names, self._sizes))
        jacobian = torch.empty(self.ambient_dimension, self.num_parameters, dtype=self.dtype, device=self.device)
        for node_set, block in zip(self.node_sets.values(), self.layout.blocks.values()):
            rows = jacobian[block.offset : block.offset + block.count * block.width].view(block.count, block.width, -1)
            if layerwise_jacobian(self._layers, parameters, trainable, node_set.points, node_set.derivatives, rows) is None:
                return None
        return jacobian.unsqueeze(1)

    @serialized
    def jets(self, theta: torch.Tensor) -> dict[str, Jet]:
        r"""The jets :math:`(u, \nabla u, \Delta u)` of :math:`f_\theta` at every node set, by name."""
        return self.layout.split(self.value(self.check_point(theta)))

    def with_node_sets(self, node_sets: Mapping[str, NodeSet]) -> JetParametrization:
        """The same network (module, Laplacian rule, probes) evaluated at other node sets, e.g. fresh samples."""
        return JetParametrization(self.module, node_sets, self.laplacian_probes, self._seed, self.layerwise)
