r"""The weighted :math:`L^2` metric of quadrature or Monte Carlo weights."""

from __future__ import annotations

import torch

from .._checks import check_real_tensor
from .base import Metric

__all__ = ["L2Metric"]


class L2Metric(Metric):
    r"""Quadrature :math:`L^2` metric :math:`M = \operatorname{diag}(w) \otimes I_m`.

    .. math:: \langle u, v\rangle_M = \sum_{i=1}^N w_i \, u_i \cdot v_i \approx \int u \cdot v \,dx

    Args:
        weights: :math:`w`, shape ``(N,)``, finite and strictly positive (quadrature weights, or
            ``volume / N`` for Monte Carlo nodes).

    Raises:
        TypeError: ``weights`` is not a real floating tensor.
        ValueError: ``weights`` is not 1-D, is empty, or has a non-finite or non-positive entry.
    """

    def __init__(self, weights: torch.Tensor):
        check_real_tensor("weights", weights, ndim=1)
        if bool((weights <= 0).any()):
            raise ValueError(f"weights must be strictly positive; {int((weights <= 0).sum())} entries are <= 0")
        self.weights = weights

    def _check(self, v: torch.Tensor) -> None:
        if v.ndim < 2 or v.shape[-2] != self.weights.shape[0]:
            raise ValueError(
                f"L2Metric has {self.weights.shape[0]} nodes, the values {v.shape[-2] if v.ndim >= 2 else 'none'} "
                f"(shape {tuple(v.shape)})"
            )

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        return self.weights.unsqueeze(-1) * v

    def solve_condition(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> float:
        """1: the solve divides entry by entry, with a relative rounding of one epsilon per entry whatever the weights."""
        return 1.0

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        return v / self.weights.unsqueeze(-1)

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        return (self.weights.sqrt().unsqueeze(-1) * v).reshape(*v.shape[:-2], -1)

    def diagonal_whitening(
        self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        r""":math:`\sqrt{w}` repeated for each of the :math:`m` components, shape ``(Nm,)``: :meth:`whiten` scales entry by entry."""
        if shape[0] != self.weights.shape[0]:
            raise ValueError(f"L2Metric has {self.weights.shape[0]} nodes, the shape {tuple(shape)}")
        return self.weights.sqrt().to(dtype=dtype, device=device).repeat_interleave(shape[1])
