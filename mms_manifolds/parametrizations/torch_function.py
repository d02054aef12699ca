r"""Parametrisation of a pure torch function :math:`\theta \mapsto \phi(\theta)`, differentiated by ``torch.func``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacrev, jvp, vjp, vmap

from .._checks import check_finite, check_real_tensor
from .base import Parametrization

__all__ = ["JACOBIAN_CHUNK_NUMBERS", "FunctionParametrization", "jacobian_chunk_numbers"]

JACOBIAN_CHUNK_NUMBERS = {"cpu": 2**19, "cuda": 2**27}
"""Directions times outputs per batched JVP/VJP when forming a dense Jacobian, by device type.

It bounds the working memory (a batched JVP holds every intermediate of the network per direction);
on CUDA the bound is 256 times larger because every chunk costs a round of kernel launches: with the
CPU's chunks, forming a 16384 x 4353 Jacobian on an H200 took 137 chunks and about 0.3 s, against 2 ms
in one (``docs/performance.md``)."""


def jacobian_chunk_numbers(device: torch.device) -> int:
    """:data:`JACOBIAN_CHUNK_NUMBERS` for ``device`` (the CPU's value for other device types)."""
    return JACOBIAN_CHUNK_NUMBERS.get(torch.device(device).type, JACOBIAN_CHUNK_NUMBERS["cpu"])


class FunctionParametrization(Parametrization):
    r"""A parametrisation given by a pure torch function ``function(theta) -> (N, m)``.

    All derivatives come from ``torch.func``:

    - JVP :math:`J\xi` by forward mode, VJP :math:`J^\top w` by reverse mode;
    - :math:`D^2\phi[\xi, \eta]` as the JVP, in direction :math:`\eta`, of :math:`\theta \mapsto J(\theta)\xi`;
    - the adjoint :math:`c = \nabla_\theta \langle J(\theta)\xi, w\rangle` as the VJP of the same map;
    - the dense Jacobian by chunked batched JVPs when :math:`p \le Nm`, else chunked ``jacrev``.

    Args:
        function: pure function of a flat tensor of shape ``(p,)`` returning ``(N, m)`` (or ``(N,)``,
            read as ``m = 1``). It must be composable with ``torch.func`` (no in-place updates of
            captured tensors, no ``.item()``).
        initial_point: parameters to start from, shape ``(p,)``; fixes ``dtype`` and ``device``.

    Raises:
        ValueError: ``initial_point`` is not a finite 1-D floating tensor, or ``function`` does not
            return a finite tensor of shape ``(N,)`` or ``(N, m)`` in the same dtype.

    Examples:
        >>> import torch
        >>> angle = lambda t: torch.stack([torch.cos(t), torch.sin(t)], dim=-1)
        >>> circle = FunctionParametrization(angle, torch.zeros(1, dtype=torch.float64))
        >>> circle.output_shape
        (1, 2)
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], initial_point: torch.Tensor):
        check_real_tensor("initial_point", initial_point, ndim=1)
        self._function = function
        self._initial_point = initial_point.detach().clone()
        self.num_parameters = initial_point.numel()
        self.dtype = initial_point.dtype
        self.device = initial_point.device
        try:
            with torch.no_grad():
                output = function(self._initial_point)
        except RuntimeError as error:
            raise ValueError(f"function(initial_point) could not be evaluated: {error}") from error
        if not isinstance(output, torch.Tensor) or output.ndim not in (1, 2):
            raise ValueError("function must return a tensor of shape (N,) or (N, m)")
        if output.dtype != self.dtype:
            raise ValueError(f"function returned dtype {output.dtype}, but the parameters have dtype {self.dtype}")
        check_finite("function(initial_point)", output)
        self._squeezed = output.ndim == 1
        self.output_shape = (output.shape[0], 1 if self._squeezed else output.shape[1])

    def _phi(self, theta: torch.Tensor) -> torch.Tensor:
        output = self._function(theta)
        return output.unsqueeze(-1) if self._squeezed else output

    def initial_point(self) -> torch.Tensor:
        return self._initial_point.clone()

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self._phi(theta)

    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return jvp(self._phi, (theta,), (tangent,))[1]

    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        _, pullback = vjp(self._phi, theta)
        return pullback(cotangent)[0]

    def _directional_jacobian(self, tangent: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda point: jvp(self._phi, (point,), (tangent,))[1]

    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return jvp(self._directional_jacobian(first), (theta,), (second,))[1]

    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        _, pullback = vjp(self._directional_jacobian(tangent), theta)
        return pullback(cotangent)[0]

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Dense :math:`J(\theta)`, shape ``(N, m, p)``: batched forward mode when :math:`p \le Nm`, else reverse mode.

        The batch is split into chunks of at most :func:`jacobian_chunk_numbers` ``// (Nm)`` directions, because
        a batched JVP or VJP holds every intermediate of the network for each direction at once
        (:math:`p \cdot N \cdot` width numbers unchunked: 12 GB for a 1-30-30-1 MLP at :math:`p = 1021`,
        :math:`N = 10^4`, whose Jacobian is 80 MB).
        """
        chunk = max(1, jacobian_chunk_numbers(self.device) // self.ambient_dimension)
        if self.num_parameters > self.ambient_dimension:
            return jacrev(self._phi, chunk_size=chunk)(theta)
        directions = torch.eye(self.num_parameters, dtype=self.dtype, device=self.device)
        columns = [
            vmap(lambda tangent: jvp(self._phi, (theta,), (tangent,))[1])(block) for block in directions.split(chunk)
        ]
        return torch.cat(columns).movedim(0, -1)
