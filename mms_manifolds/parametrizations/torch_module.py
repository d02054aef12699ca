r"""Parametrisation of a ``torch.nn.Module`` evaluated at fixed nodes."""

from __future__ import annotations

import warnings

import torch
from torch.func import functional_call, jacrev, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .._checks import check_finite, check_flag
from .layer_kernel import LinearLayerFactors, linear_layer_columns, linear_layer_factors
from .layer_kernel import _trainable_layers as trainable_linear_layers
from .torch_function import FunctionParametrization, jacobian_chunk_numbers, serialized

__all__ = ["TorchParametrization"]


_MODE_DEPENDENT_LAYERS = (
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
)
"""Layers whose output in training mode is random (dropout) or updates buffers (running statistics)."""


def _check_deterministic(module: torch.nn.Module) -> None:
    """Refuse a module in training mode whose layers make its output random or mutate its buffers."""
    offending = [
        f"{name or type(module).__name__} ({type(layer).__name__})"
        for name, layer in module.named_modules()
        if layer.training and isinstance(layer, _MODE_DEPENDENT_LAYERS)
    ]
    if offending:
        raise ValueError(
            f"the module is in training mode with {', '.join(offending)}: its output would be random or would "
            "update running statistics at every evaluation, so it is no function of its parameters and the "
            "geometry and bounds would be wrong; call module.eval() first (the library never changes your module)"
        )


def _module_tensors(module: torch.nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``module`` by name, as ``(kind, tensor)``: the state a run must leave as it is."""
    tensors = {name: ("parameter", parameter) for name, parameter in module.named_parameters()}
    tensors.update({name: ("buffer", buffer) for name, buffer in module.named_buffers()})
    return tensors


def _restore_changed(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``saved`` values back into the module's tensors that differ from them; their kinds and names."""
    changed = []
    with torch.no_grad():
        for name, (kind, tensor) in _module_tensors(module).items():
            if name in saved and not torch.equal(tensor, saved[name]):
                tensor.copy_(saved[name])
                changed.append(f"{kind} {name!r}")
    return changed


def _refuse_changes(module: torch.nn.Module, saved: dict[str, torch.Tensor], cause: Exception | None) -> None:
    """Raise ``ValueError`` naming what evaluating ``module`` changed in it, after restoring ``saved``; else nothing."""
    changed = _restore_changed(module, saved)
    if changed:
        raise ValueError(
            f"evaluating the module changes the module's {', '.join(changed)} (its forward updates them in place): "
            "it is no function of its parameters, and a run would change your module; the values were restored. "
            "Keep state out of forward"
        ) from cause


class TorchParametrization(FunctionParametrization):
    r"""The node values of a network, :math:`\phi(\theta) = (f_\theta(x_i))_{i=1}^N`, shape ``(N, m)``.

    The module's trainable parameters are flattened, in ``module.named_parameters()`` order, into one
    vector :math:`\theta` of length :math:`p`; buffers stay as they are. The forward pass is
    ``torch.func.functional_call(module, params(theta), (nodes,))``, so every derivative comes from
    ``torch.func`` (see :class:`FunctionParametrization`). The module is never modified except by
    :meth:`write_to_module`: a forward that updates the module's parameters or buffers in place (a
    counter, a drifting frozen submodule) is refused at construction, with the values restored.

    The dense Jacobian of a network that maps each node on its own (an MLP: ``f(X)[i]`` depends on
    ``X[i]`` only) is formed node by node, as batched per-node reverse-mode gradients
    (``vmap(jacrev(...))`` over the nodes): :math:`O(Nmp)` work, against :math:`O(Np^2)` for the
    :math:`p` batched JVPs of the generic path (93x faster at :math:`p = 1021`,
    :math:`N = 3000`; see ``docs/performance.md``). Whether the module is node-separable is checked at
    the first Jacobian: :math:`J v` from the node-wise Jacobian must equal a JVP in a fixed random
    direction :math:`v`; a module that couples nodes (batch statistics, attention across nodes) fails
    the check, gets a warning and the generic path from then on.

    Args:
        module: the network; all trainable parameters share one floating dtype and one device,
            which the parametrisation follows.
        nodes: evaluation points, shape ``(N, d)`` or ``(N,)`` (read as ``d = 1`` only if the module
            accepts it), same dtype and device as the parameters.
        node_separable: ``None`` (default) checks at the first Jacobian as above; ``True`` skips the
            check; ``False`` always uses the generic path.

    Raises:
        TypeError: nodes in another dtype than the module's parameters.
        ValueError: the module is in training mode with layers that make it random or stateful (Dropout,
            BatchNorm, InstanceNorm with running statistics): :math:`\phi` must be a function of
            :math:`\theta`, and evaluating such a module would change its running statistics.
        ValueError: the module has no trainable parameters, parameters disagree in dtype or device,
            nodes are empty, non-finite, on another device, or of a shape the module cannot take.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> nodes = torch.linspace(-1, 1, 10, dtype=torch.float64).unsqueeze(-1)
        >>> phi = TorchParametrization(net, nodes)
        >>> phi.num_parameters, phi.output_shape
        (13, (10, 1))
    """

    def __init__(self, module: torch.nn.Module, nodes: torch.Tensor, node_separable: bool | None = None):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if node_separable is not None:
            check_flag("node_separable", node_separable)
        named = [(name, parameter) for name, parameter in module.named_parameters() if parameter.requires_grad]
        if not named:
            raise ValueError("module has no trainable parameters")
        dtypes = {parameter.dtype for _, parameter in named}
        devices = {parameter.device for _, parameter in named}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"module parameters must share one dtype and one device, got {dtypes} and {devices}")
        dtype, device = dtypes.pop(), devices.pop()
        if not dtype.is_floating_point:
            raise ValueError(f"module parameters must be floating point, got {dtype}")
        if not isinstance(nodes, torch.Tensor):
            raise TypeError(f"nodes must be a torch.Tensor, got {type(nodes).__name__}")
        if nodes.dtype != dtype:
            raise TypeError(f"nodes have dtype {nodes.dtype}, the module's parameters {dtype}: cast one to the other")
        if nodes.device != device:
            raise ValueError(f"nodes are on {nodes.device}, the module's parameters on {device}")
        if nodes.ndim == 0 or nodes.shape[0] == 0:
            raise ValueError(f"nodes must hold at least one node along dimension 0, got shape {tuple(nodes.shape)}")
        check_finite("nodes", nodes)
        _check_deterministic(module)
        if node_separable not in (None, True, False):
            raise ValueError(f"node_separable must be None, True or False, got {node_separable!r}")
        self.module = module
        self.nodes = nodes
        self._node_separable_setting = node_separable
        self._node_separable_cache: bool | None = None  # what the check at the first Jacobian found
        self._names = [name for name, _ in named]
        self._shapes = [parameter.shape for _, parameter in named]
        self._sizes = [parameter.numel() for _, parameter in named]
        self._fixed = {
            **dict(module.named_buffers()),
            **{name: p.detach() for name, p in module.named_parameters() if not p.requires_grad},
        }

        def forward(theta: torch.Tensor) -> torch.Tensor:
            return self._forward({**self._fixed, **self.unflatten(theta)})

        saved = {name: tensor.detach().clone() for name, (_, tensor) in _module_tensors(module).items()}
        try:
            super().__init__(forward, parameters_to_vector([p for _, p in named]).detach())
        except ValueError as error:
            _refuse_changes(module, saved, error)
            hint = ""
            if nodes.ndim == 1:
                hint = (
                    f"; nodes of shape ({nodes.shape[0]},) are {nodes.shape[0]} scalars: for points of a 1-D domain "
                    "pass nodes.unsqueeze(-1), shape (N, 1)"
                )
            raise ValueError(
                f"the module cannot be evaluated at nodes of shape {tuple(nodes.shape)}: {error}{hint}"
            ) from error
        _refuse_changes(module, saved, None)

    def _forward(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """The module's output at the nodes with the given named tensors; subclasses evaluate other maps."""
        return functional_call(self.module, parameters, (self.nodes,))

    @property
    def node_separable(self) -> bool | None:
        """The setting given, else what the check at the first Jacobian found (``None`` before it ran)."""
        if self._node_separable_setting is not None:
            return self._node_separable_setting
        return self._node_separable_cache

    @serialized
    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Dense :math:`J(\theta)`, shape ``(N, m, p)``: node by node when the module is node-separable.

        Per-node gradients are batched over chunks of at most ``jacobian_chunk_numbers(device) // (m p)`` nodes,
        each written into the preallocated ``(N, m, p)`` result (peak memory :math:`J` plus one chunk, not twice
        :math:`J` as a concatenation of the chunks would hold).
        """
        jacobian = self._checked_node_wise_jacobian(theta, None)
        return super().jacobian(theta) if jacobian is None else jacobian

    @serialized
    def jacobian_kernel(self, theta: torch.Tensor) -> torch.Tensor | None:
        r""":math:`JJ^\top` (``(Nm, Nm)``) from per-layer factors (:meth:`layer_factors`, their :meth:`~mms_manifolds.parametrizations.layer_kernel.LinearLayerFactors.kernel`), or ``None``.

        Only for a module not found to couple nodes (``node_separable`` ``True``, or ``None`` before any Jacobian:
        the kernel modes check the result by one JVP and one VJP, which a coupling module fails) whose trainable
        parameters all belong to ``torch.nn.Linear`` layers, evaluated by this class's own forward (a subclass
        that evaluates another map, such as jets, gets ``None``).
        """
        factors = self.layer_factors(theta)
        return None if factors is None else factors.kernel()

    @serialized
    def layer_factors(self, theta: torch.Tensor) -> LinearLayerFactors | None:
        r"""The per-layer factors of :math:`J` (:func:`~mms_manifolds.parametrizations.layer_kernel.linear_layer_factors`: one forward, :math:`m` backward passes), or ``None``.

        Under the conditions of :meth:`jacobian_kernel`, which is their :meth:`~mms_manifolds.parametrizations.layer_kernel.LinearLayerFactors.kernel`.
        """
        unfit = self.node_separable is False or type(self)._forward is not TorchParametrization._forward
        if unfit or self.nodes.ndim < 2:
            return None
        return linear_layer_factors(self.module, self._phi, self._names, self.check_point(theta), self.output_shape)

    def jacobian_kernel_flops(self) -> float | None:
        r"""The layer kernel's flops, :math:`\sum_l (Nm)^2 d^l_{out} + N^2 d^l_{in}` (:mod:`~mms_manifolds.parametrizations.layer_kernel`), or ``None``.

        ``None`` where :meth:`jacobian_kernel` cannot apply by the module's structure: a trainable parameter
        outside a ``torch.nn.Linear`` layer, another forward, nodes without a batch axis, or a module found to
        couple nodes. Whether each layer is applied once to an ``(N, d_in)`` batch is seen only when the
        kernel is formed (it then falls back to :math:`BB^\top`); this estimate assumes it is.
        """
        if self.node_separable is False or type(self)._forward is not TorchParametrization._forward:
            return None
        if self.nodes.ndim < 2:
            return None
        layers, others = trainable_linear_layers(self.module, self._names)
        if others or not layers:
            return None
        count, outputs = self.output_shape
        return float(
            sum((count * outputs) ** 2 * layer.out_features + count**2 * layer.in_features for _, layer, _, _ in layers)
        )

    @serialized
    def jacobian_columns(self, theta: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        r"""The columns :math:`J_S` of the parameters ``indices`` (shape ``(s,)``), shape ``(N, m, s)``: node by node when node-separable.

        For a module known to be node-separable (``node_separable=True``, or the check at an earlier Jacobian)
        and evaluated by this class's own forward, from per-layer factors
        (:func:`~mms_manifolds.parametrizations.layer_kernel.linear_layer_columns`: one forward and :math:`m`
        backward passes, then :math:`O(Nms)` products; the parameters of other layers by per-node gradients
        with respect to them only). Otherwise per-node gradients (reverse mode, about the cost of three forward
        passes for all of :math:`J`, where :math:`s` JVPs cost :math:`s` forward passes) over chunks of nodes
        whose ``(chunk, m, p)`` gradients hold no more numbers than :math:`J_S` itself (and at most
        ``jacobian_chunk_numbers(device)``), sliced to :math:`S` and written into the ``(N, m, s)`` result: the
        full Jacobian is never held. Batched JVPs (:meth:`FunctionParametrization.jacobian_columns`) where the
        module couples nodes.
        """
        if self.node_separable and type(self)._forward is TorchParametrization._forward and self.nodes.ndim >= 2:
            columns = linear_layer_columns(
                self.module, self._phi, self._names, self._sizes, self.check_point(theta), self.output_shape,
                indices, lambda names, positions: self._node_wise_columns(theta, names, positions),
            )
            if columns is not None:
                return columns
        columns = self._checked_node_wise_jacobian(theta, indices)
        return super().jacobian_columns(theta, indices) if columns is None else columns

    def _node_wise_columns(self, theta: torch.Tensor, names: list[str], positions: list[torch.Tensor]) -> torch.Tensor:
        r"""Per-node gradients with respect to the parameters ``names`` only (the rest held at ``theta``), their entries ``positions``: ``(N, m, sum k)``.

        ``vmap(jacrev(...))`` over nodes in chunks whose ``(chunk, m, sum of the sizes)`` gradients hold at most
        ``jacobian_chunk_numbers(device)`` numbers.
        """
        parameters = {**self._fixed, **{name: value.detach() for name, value in self.unflatten(theta).items()}}
        chosen = {name: parameters.pop(name) for name in names}

        def at_node(varying: dict[str, torch.Tensor], node: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, {**parameters, **varying}, (node.unsqueeze(0),)).reshape(-1)

        count, outputs = self.output_shape
        width = sum(value.numel() for value in chosen.values())
        chunk = max(1, jacobian_chunk_numbers(self.device) // (outputs * width))
        per_node = vmap(jacrev(at_node), in_dims=(None, 0))
        blocks = []
        for start in range(0, count, chunk):
            gradients = per_node(chosen, self.nodes[start : start + chunk])
            blocks.append(
                torch.cat(
                    [gradients[name].reshape(*gradients[name].shape[:2], -1)[..., where] for name, where in zip(names, positions)],
                    dim=-1,
                )
            )
        return torch.cat(blocks)

    def _checked_node_wise_jacobian(self, theta: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor | None:
        """The node-wise Jacobian (its columns ``indices``, or all), or ``None`` where the module couples nodes.

        Where node separability is not known yet, the node-wise result is checked against a JVP in a fixed
        random direction (supported on ``indices``) and the verdict cached; a coupling module is warned about once.
        """
        if self.node_separable is False or self.nodes.ndim < 2:
            return None
        if self.node_separable:
            return self._node_wise_jacobian(theta, indices)
        try:
            jacobian = self._node_wise_jacobian(theta, indices)
        except (RuntimeError, ValueError) as error:  # e.g. batch statistics of a single node
            problem = f"cannot be evaluated at one node ({error})"
        else:
            columns = jacobian.shape[-1]
            direction = torch.randn(columns, generator=torch.Generator().manual_seed(0), dtype=self.dtype, device="cpu").to(self.device)
            tangent = direction
            if indices is not None:
                tangent = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
                tangent[indices] = direction
            expected = self.jvp(theta, tangent)
            mismatch = float((jacobian @ direction - expected).norm()) / max(float(expected.norm()), 1e-300)
            if mismatch <= 100 * torch.finfo(self.dtype).eps ** 0.5:
                self._node_separable_cache = True
                return jacobian
            problem = f"couples nodes (node-wise J v differs from the JVP by {mismatch:.1e} relative)"
        self._node_separable_cache = False
        warnings.warn(
            f"{type(self.module).__name__} {problem}: the Jacobian is formed by batched JVPs instead", stacklevel=3
        )
        return None

    def _node_wise_jacobian(self, theta: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        def at_node(point: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
            parameters = {**self._fixed, **self.unflatten(point)}
            return functional_call(self.module, parameters, (node.unsqueeze(0),)).reshape(-1)

        count, outputs, size = *self.output_shape, self.num_parameters
        chunk = max(1, jacobian_chunk_numbers(self.device) // (outputs * size))
        columns = size if indices is None else indices.numel()
        if indices is not None:  # a chunk's (chunk, m, p) gradients no larger than J_S, (N, m, s)
            chunk = max(1, min(chunk, count * columns // size))
        per_node = vmap(jacrev(at_node), in_dims=(None, 0))
        jacobian = torch.empty(count, outputs, columns, dtype=theta.dtype, device=theta.device)
        for start in range(0, count, chunk):  # each chunk written in place: the result plus one chunk at peak
            stop = min(start + chunk, count)
            block = per_node(theta, self.nodes[start:stop])
            jacobian[start:stop] = block if indices is None else block[..., indices]
        return jacobian

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector of shape ``(p,)`` into the module's named parameter tensors."""
        pieces = torch.split(theta, self._sizes)
        return {name: piece.view(shape) for name, piece, shape in zip(self._names, pieces, self._shapes)}

    def write_to_module(self, theta: torch.Tensor) -> None:
        """Copy a flat parameter vector, shape ``(p,)``, into the module's parameters (in place)."""
        theta = self.check_point(theta)
        trainable = [parameter for parameter in self.module.parameters() if parameter.requires_grad]
        with torch.no_grad():
            vector_to_parameters(theta.detach().clone(), trainable)
