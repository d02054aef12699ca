r"""Parametrisation of a pure torch function :math:`\theta \mapsto \phi(\theta)`, differentiated by ``torch.func``."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.func import jacrev, jvp, vjp, vmap

from .._checks import check_finite, check_real_tensor
from .base import Parametrization

__all__ = ["EVALUATION_LOCK", "JACOBIAN_CHUNK_NUMBERS", "FunctionParametrization", "jacobian_chunk_numbers", "serialized"]

EVALUATION_LOCK = threading.RLock()
"""Held by every evaluation of a parametrization (values, JVPs, VJPs, Jacobians, second derivatives).

Two reasons make such evaluations unsafe in parallel threads: ``torch.func``'s transform levels are
process-global (two threads' JVPs fail with "forward AD level with an invalid index"), and
``functional_call`` swaps a module's tensors in place for the call, so two threads on one module (or on two
modules sharing a submodule) read each other's parameters and can leave the module holding a run's tensors.
One lock for the process, re-entrant, serializes them; threads still run the rest of their work in parallel.
"""

_Method = TypeVar("_Method", bound=Callable)


def serialized(method: _Method) -> _Method:
    """``method`` run under :data:`EVALUATION_LOCK`."""

    @functools.wraps(method)
    def locked(*args, **kwargs):
        with EVALUATION_LOCK:
            return method(*args, **kwargs)

    return locked  # type: ignore[return-value]


JACOBIAN_CHUNK_NUMBERS = {"cpu": 2**19, "cuda": 2**27}
"""Directions times outputs per batched JVP/VJP when forming a dense Jacobian, by device type.

It bounds the working memory (a batched JVP holds every intermediate of the network per direction);
on CUDA the bound is 256 times larger because every chunk costs a round of kernel launches: with the
CPU's chunks, forming a 16384 x 4353 Jacobian on an H200 took 137 chunks and about 0.3 s, against 2 ms
in one (``docs/performance.md``)."""


def jacobian_chunk_numbers(device: torch.device) -> int:
    """:data:`JACOBIAN_CHUNK_NUMBERS` for ``device`` (the CPU's value for other device types)."""
    return JACOBIAN_CHUNK_NUMBERS.get(torch.device(device).type, JACOBIAN_CHUNK_NUMBERS["cpu"])


def _global_random_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state and, on CUDA, the device's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore_global_random_state(device: torch.device, state: tuple[torch.Tensor, torch.Tensor | None]) -> bool:
    """Put back ``state``; whether it had moved."""
    cpu, cuda = state
    moved = not torch.equal(torch.get_rng_state(), cpu)
    torch.set_rng_state(cpu)
    if cuda is not None:
        moved = moved or not torch.equal(torch.cuda.get_rng_state(device), cuda)
        torch.cuda.set_rng_state(cuda, device)
    return moved


def _same_values(first: torch.Tensor, second: object) -> bool:
    r"""Whether two evaluations agree to rounding: :math:`\max|a - b| \le 10^3\varepsilon\max|a|` (so bitwise on a CPU)."""
    if not isinstance(second, torch.Tensor) or second.shape != first.shape:
        return False
    if not first.is_floating_point() or first.numel() == 0:
        return True
    scale = float(first.abs().max())
    return float((first - second).abs().max()) <= 1e3 * torch.finfo(first.dtype).eps * scale


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

    Evaluations hold :data:`EVALUATION_LOCK`: one parametrization (and one module) may be used from
    several threads, whose evaluations take turns.

    Raises:
        ValueError: ``initial_point`` is not a finite 1-D floating tensor, or ``function`` does not
            return a finite tensor of shape ``(N,)`` or ``(N, m)`` in the same dtype, or reads the global
            random state (it moves the generator, or two evaluations differ).

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
        random_state = _global_random_state(self.device)
        try:
            with torch.no_grad(), EVALUATION_LOCK:
                output, again = function(self._initial_point), function(self._initial_point)
        except RuntimeError as error:
            raise ValueError(f"function(initial_point) could not be evaluated: {error}") from error
        finally:
            moved = _restore_global_random_state(self.device, random_state)
        if moved or (isinstance(output, torch.Tensor) and not _same_values(output, again)):
            raise ValueError(
                "the map reads the global random state (two evaluations at the same parameters "
                f"{'moved the random generator' if moved else 'differ'}): it is no function of its parameters, so "
                "no geometry or bound holds; draw random features once, outside it (the random state was restored)"
            )
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

    @serialized
    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self._phi(theta)

    @serialized
    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return jvp(self._phi, (theta,), (tangent,))[1]

    @serialized
    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        _, pullback = vjp(self._phi, theta)
        return pullback(cotangent)[0]

    def _directional_jacobian(self, tangent: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda point: jvp(self._phi, (point,), (tangent,))[1]

    @serialized
    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return jvp(self._directional_jacobian(first), (theta,), (second,))[1]

    @serialized
    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        _, pullback = vjp(self._directional_jacobian(tangent), theta)
        return pullback(cotangent)[0]

    @serialized
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

    @serialized
    def jacobian_columns(self, theta: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        r"""The columns :math:`J_S` of the parameters ``indices`` (shape ``(s,)``), shape ``(N, m, s)``: batched JVPs.

        The unit directions :math:`e_i`, :math:`i \in S`, go through ``vmap`` in chunks of at most
        :func:`jacobian_chunk_numbers` ``// (Nm)`` (as in :meth:`jacobian`), so the largest tensors are a
        chunk's ``(chunk, p)`` directions and ``(chunk, N, m)`` columns, never ``(N, m, p)``.
        """
        chunk = max(1, jacobian_chunk_numbers(self.device) // self.ambient_dimension)
        columns = []
        for block in indices.split(chunk):
            directions = torch.zeros(block.numel(), self.num_parameters, dtype=self.dtype, device=self.device)
            directions[torch.arange(block.numel(), device=self.device), block] = 1.0
            columns.append(vmap(lambda tangent: jvp(self._phi, (theta,), (tangent,))[1])(directions))
        return torch.cat(columns).movedim(0, -1)
