"""The record every metric factorisation returns, and the factorisation interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

__all__ = ["Factorization", "LinearSolution"]


@dataclass(frozen=True)
class LinearSolution:
    r"""Result of solving :math:`(A + \lambda I)x = b`.

    Attributes:
        value: :math:`x`, shape of the right-hand side.
        mode: name of the solve mode that produced it (``"dense"``, ``"woodbury"``, ``"cg"``).
        iterations: CG iterations (``0`` for direct modes).
        relative_residual: :math:`\|(A + \lambda I)x - b\| / \|b\|` where it was computed, else ``nan``.
    """

    value: torch.Tensor
    mode: str
    iterations: int = 0
    relative_residual: float = field(default=float("nan"))


class Factorization(ABC):
    r"""Per-point state of a solve mode: solves :math:`(J^\top W J + \lambda I)x = b` for any :math:`\lambda`."""

    mode: str

    @abstractmethod
    def solve(self, rhs: torch.Tensor, damping: float) -> LinearSolution:
        r"""Solve :math:`(J^\top W J + \lambda I)x = b`; ``rhs`` shape ``(p,)``, :math:`\lambda` = ``damping``."""
