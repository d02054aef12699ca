r"""Kernel (Woodbury) solve: eigendecomposition of the :math:`Nm \times Nm` Gram matrix, for :math:`Nm \ll p`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .operator import GramOperator
from .solution import Factorization, LinearSolution

__all__ = ["WoodburySolve"]


class _WoodburyFactorization(Factorization):
    mode = "woodbury"

    def __init__(self, whitened: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor):
        self.whitened = whitened
        self.eigenvalues = eigenvalues.clamp_min(0.0)
        self.eigenvectors = eigenvectors

    def solve(self, rhs: torch.Tensor, damping: float) -> LinearSolution:
        if damping <= 0.0:
            raise ValueError("the Woodbury solve needs damping > 0; use solve_mode='dense' for a pseudo-inverse")
        projected = self.eigenvectors.T @ (self.whitened @ rhs)
        kernel_solve = self.eigenvectors @ (projected / (self.eigenvalues + damping))
        value = (rhs - self.whitened.T @ kernel_solve) / damping
        return LinearSolution(value=value, mode=self.mode)


@dataclass(frozen=True)
class WoodburySolve:
    r"""Solve through the kernel Gram matrix :math:`BB^\top = U\Sigma U^\top` (``(Nm, Nm)``), :math:`B = C^\top J`.

    .. math:: (B^\top B + \lambda I)^{-1} b = \frac{1}{\lambda}
              \left(b - B^\top U(\Sigma + \lambda I)^{-1}U^\top B b\right)

    Cost :math:`O((Nm)^2 p + (Nm)^3)` once per point: the mode of choice when :math:`Nm \ll p`.
    Needs :math:`\lambda > 0`.
    """

    name: str = "woodbury"

    def factorize(self, operator: GramOperator) -> Factorization:
        whitened = operator.whitened_jacobian()
        eigenvalues, eigenvectors = torch.linalg.eigh(whitened @ whitened.T)
        return _WoodburyFactorization(whitened, eigenvalues, eigenvectors)
