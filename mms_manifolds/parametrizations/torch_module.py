r"""Parametrisation of a ``torch.nn.Module`` evaluated at fixed nodes."""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .._checks import check_finite
from .torch_function import FunctionParametrization

__all__ = ["TorchParametrization"]


class TorchParametrization(FunctionParametrization):
    r"""The node values of a network, :math:`\phi(\theta) = (f_\theta(x_i))_{i=1}^N`, shape ``(N, m)``.

    The module's trainable parameters are flattened, in ``module.named_parameters()`` order, into one
    vector :math:`\theta` of length :math:`p`; buffers stay as they are. The forward pass is
    ``torch.func.functional_call(module, params(theta), (nodes,))``, so every derivative comes from
    ``torch.func`` (see :class:`FunctionParametrization`). The module is never modified except by
    :meth:`write_to_module`.

    Args:
        module: the network; all trainable parameters share one floating dtype and one device,
            which the parametrisation follows.
        nodes: evaluation points, shape ``(N, d)`` or ``(N,)`` (read as ``d = 1`` only if the module
            accepts it), same dtype and device as the parameters.

    Raises:
        ValueError: the module has no trainable parameters, parameters disagree in dtype or device,
            nodes are empty, non-finite, or in another dtype or on another device.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> nodes = torch.linspace(-1, 1, 10, dtype=torch.float64).unsqueeze(-1)
        >>> phi = TorchParametrization(net, nodes)
        >>> phi.num_parameters, phi.output_shape
        (13, (10, 1))
    """

    def __init__(self, module: torch.nn.Module, nodes: torch.Tensor):
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
        if nodes.dtype != dtype or nodes.device != device:
            raise ValueError(
                f"nodes have dtype {nodes.dtype} on {nodes.device}, the module's parameters {dtype} on {device}"
            )
        if nodes.ndim == 0 or nodes.shape[0] == 0:
            raise ValueError(f"nodes must hold at least one node along dimension 0, got shape {tuple(nodes.shape)}")
        check_finite("nodes", nodes)
        self.module = module
        self.nodes = nodes
        self._names = [name for name, _ in named]
        self._shapes = [parameter.shape for _, parameter in named]
        self._sizes = [parameter.numel() for _, parameter in named]
        self._fixed = {
            **dict(module.named_buffers()),
            **{name: p.detach() for name, p in module.named_parameters() if not p.requires_grad},
        }

        def forward(theta: torch.Tensor) -> torch.Tensor:
            return self._forward({**self._fixed, **self.unflatten(theta)})

        try:
            super().__init__(forward, parameters_to_vector([p for _, p in named]).detach())
        except ValueError as error:
            raise ValueError(
                f"the module cannot be evaluated at nodes of shape {tuple(nodes.shape)}: {error}"
            ) from error

    def _forward(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """The module's output at the nodes with the given named tensors; subclasses evaluate other maps."""
        return functional_call(self.module, parameters, (self.nodes,))

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
