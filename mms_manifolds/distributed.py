r"""Nodes sharded across processes with ``torch.distributed``: every reduction over nodes is an all-reduce.

Each process holds a shard of the nodes (and their weights); parameters are replicated. A quantity
that sums over nodes is summed over all processes:

- parameter-space products :math:`J^\top w = \sum_{\text{shards}} J_s^\top w_s` (VJPs, so gradients,
  :math:`J^\top MJ\xi` and the Hessian's curvature term) — :class:`ShardedParametrization`;
- inner products and norms of node values, :math:`\langle u, v\rangle_M = \sum_s \langle u_s, v_s\rangle_{M_s}`
  — :class:`ShardedMetric`;
- energies that are sums over nodes — :class:`ShardedEnergy` (an energy that integrates with a
  :class:`ShardedMetric`, such as ``L2Regression(target, sharded_metric)``, is global already).

Node-wise operations (values, JVPs, :math:`M` and :math:`\nabla E` at a node) stay local. So every
parameter-space iterate is identical on all processes and equal to a single-process run up to the
order of floating-point sums. This holds for *node-separable* energies and metrics (diagonal
metrics: L2, mesh-free jets; energies that are sums over nodes); a stiffness matrix that couples
nodes across shards is not supported. The solve must be matrix-free (``solve_mode="cg"``): a dense or
kernel factorisation would need the whole Jacobian on one process. The inner solvers that work from
VJPs (``GaussNewton``, ``RiemannianGradientDescent``) run sharded; the torch-optimizer baselines
(``Adam``, ``SGD``, ``LBFGS``, the geoopt solvers) differentiate the cost with autograd, which sees
only this process's share of the gradient, and are not supported on sharded problems.

Launch with ``torchrun --nproc_per_node=P script.py`` and ``torch.distributed.init_process_group``
(``"gloo"`` on CPU, ``"nccl"`` with one GPU per process); see ``examples/distributed_regression.py``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .energies import Energy
from .metrics.base import Metric
from .parametrizations.base import Parametrization

__all__ = ["ShardedEnergy", "ShardedMetric", "ShardedParametrization", "shard_slice"]


def shard_slice(count: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """The contiguous block of ``range(count)`` that process ``rank`` of ``world_size`` holds (sizes differ by at most 1)."""
    rank = dist.get_rank() if rank is None else rank
    world_size = dist.get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size or count < world_size:
        raise ValueError(f"cannot shard {count} nodes over {world_size} processes (rank {rank})")
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _require_initialized() -> None:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")


class _GlobalSum(torch.autograd.Function):
    """Sum of a scalar over processes; the backward pass is the identity (this process's share of the gradient)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:
        return _summed(value)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def _global_sum(value: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_s v_s` over processes. Autograd through it gives this process's contribution to the gradient."""
    return _GlobalSum.apply(value)


def _summed(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` summed over all processes (not differentiable)."""
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


class ShardedParametrization(Parametrization):
    r"""This process's shard :math:`\phi_s` of a parametrisation; VJPs are summed over processes.

    ``value``, ``jvp`` and ``second_derivative`` are the local ones (shape ``(N_s, m)``);
    ``vjp`` and ``second_derivative_adjoint`` return :math:`\sum_s J_s^\top w_s` (shape ``(p,)``).
    The initial point is broadcast from process 0, so all processes start from the same parameters.

    Args:
        local: the parametrisation on this process's nodes.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialised.
    """

    def __init__(self, local: Parametrization):
        _require_initialized()
        self.local = local
        self.num_parameters = local.num_parameters
        self.output_shape = local.output_shape
        self.dtype, self.device = local.dtype, local.device
        self._initial_point = local.initial_point().clone()
        dist.broadcast(self._initial_point, src=0)

    def initial_point(self) -> torch.Tensor:
        return self._initial_point.clone()

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self.local.value(theta)

    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return self.local.jvp(theta, tangent)

    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        return _summed(self.local.vjp(theta, cotangent))

    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.local.second_derivative(theta, first, second)

    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        return _summed(self.local.second_derivative_adjoint(theta, tangent, cotangent))

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """Not available: the Jacobian's rows live on different processes.

        Raises:
            ValueError: always; use ``solve_mode="cg"`` (matrix-free).
        """
        raise ValueError("a sharded parametrization is matrix-free: build the manifold or flow with solve_mode='cg'")


class ShardedMetric(Metric):
    r"""A node-separable metric on this process's shard; inner products are summed over processes.

    Args:
        local: the metric on the local nodes (diagonal across nodes: :class:`~mms_manifolds.L2Metric`,
            :class:`~mms_manifolds.meshfree.JetMetric`).
    """

    def __init__(self, local: Metric):
        _require_initialized()
        self.local = local
        self.positive_definite = local.positive_definite

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.local.apply(v)

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        return self.local.solve(v)

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        return self.local.whiten(v)

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_s \langle u_s, v_s\rangle_{M_s}`."""
        return _global_sum(self.local.inner(u, v))

    def check_positive_definite(
        self, shape: tuple[int, int], *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> tuple[bool, str | None]:
        """The local metric's check on this process's shard (a node-separable metric is SPD iff every shard is)."""
        return self.local.check_positive_definite(shape, dtype=dtype, device=device)


class ShardedEnergy(Energy):
    r"""An energy that is a sum over nodes, :math:`E(u) = \sum_s E_s(u_s)`, on this process's shard.

    The value is all-reduced; the gradient and Hessian products at local nodes are
    the local energy's. The exact prox is the local energy's and the convexity modulus the smallest
    over shards, which is right for node-separable energies.

    Args:
        local: the energy of the local nodes.
    """

    def __init__(self, local: Energy):
        _require_initialized()
        self.local = local

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return _global_sum(self.local.value(u))

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        return self.local.gradient(u)

    def hessian_matvec(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.local.hessian_matvec(u, v)

    def convexity(self, metric: Metric) -> float | None:
        """The smallest of the shards' moduli (all-reduced), ``None`` if any shard's is unknown."""
        local = self.local.convexity(metric.local if isinstance(metric, ShardedMetric) else metric)
        modulus = torch.tensor([float("nan") if local is None else -local], dtype=torch.float64)
        dist.all_reduce(modulus, op=dist.ReduceOp.MAX)  # max of -lambda; nan (unknown) propagates
        return None if bool(torch.isnan(modulus)) else -float(modulus)

    def hessian_metric_multiple(self, metric: Metric) -> float | None:
        return self.local.hessian_metric_multiple(metric.local if isinstance(metric, ShardedMetric) else metric)

    @property
    def has_prox(self) -> bool:
        return self.local.has_prox

    def prox(self, u: torch.Tensor, tau: float, metric: Metric) -> torch.Tensor:
        return self.local.prox(u, tau, metric.local if isinstance(metric, ShardedMetric) else metric)
