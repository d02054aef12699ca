r"""Dense solve: singular value decomposition of the whitened Jacobian :math:`B = C^\top J` (``(Nm, p)``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .operator import GramOperator
from .solution import Factorization, LinearSolution

__all__ = ["DenseSolve", "EigenFactorization"]


class _DenseFactorization(Factorization):
    mode = "dense"

    def __init__(self, singular_values: torch.Tensor, right_vectors: torch.Tensor, cutoff: float):
        self.singular_values = singular_values
        self.right_vectors = right_vectors  # (p, r)
        self.cutoff = cutoff

    def solve(self, rhs: torch.Tensor, damping: float) -> LinearSolution:
        squares = self.singular_values.square()
        if damping == 0.0:
            keep = self.singular_values > self.cutoff
            inverse = torch.where(keep, 1.0 / squares.where(keep, torch.ones_like(squares)), torch.zeros_like(squares))
        else:
            inverse = 1.0 / (squares + damping)
        coefficients = self.right_vectors.T @ rhs
        value = self.right_vectors @ (inverse * coefficients)
        if damping > 0.0 and self.right_vectors.shape[1] < self.right_vectors.shape[0]:
            value = value + (rhs - self.right_vectors @ coefficients) / damping
        return LinearSolution(value=value, mode=self.mode)


class EigenFactorization(Factorization):
    r"""Solve :math:`(A + \lambda I)x = b` from the eigendecomposition :math:`A = Q\Lambda Q^\top` of an explicit SPD ``(p, p)`` matrix.

    .. math:: x = Q(\Lambda + \lambda I)^{-1}Q^\top b

    Used where :math:`A = J^\top W J` is assembled directly (the Gauss–Newton model with an energy
    Hessian that has no cheap factor). Needs :math:`\lambda > 0` unless :math:`A` is definite.
    """

    mode = "dense"

    def __init__(self, matrix: torch.Tensor):
        eigenvalues, self.eigenvectors = torch.linalg.eigh(matrix)
        self.eigenvalues = eigenvalues.clamp_min(0.0)

    def solve(self, rhs: torch.Tensor, damping: float) -> LinearSolution:
        value = self.eigenvectors @ ((self.eigenvectors.T @ rhs) / (self.eigenvalues + damping))
        return LinearSolution(value=value, mode=self.mode)


@dataclass(frozen=True)
class DenseSolve:
    r"""Materialise :math:`B = C^\top J` and take its thin SVD :math:`B = U\Sigma V^\top`.

    .. math:: (B^\top B + \lambda I)^{-1} b = V(\Sigma^2 + \lambda I)^{-1}V^\top b
              + \tfrac{1}{\lambda}(I - VV^\top)\, b

    (the last term exists when :math:`p > Nm`). Cost :math:`O(Nm\,p\,\min(Nm, p))` once per point, then
    :math:`O(p \min(Nm, p))` per right-hand side and per damping value, so Levenberg–Marquardt retries
    reuse it. With :math:`\lambda = 0` it is the truncated pseudo-inverse: singular values at or below
    ``pseudo_inverse_rtol`` times the largest are dropped (the default :math:`\sqrt{\varepsilon}` keeps
    coordinates :math:`\xi` within a factor :math:`\varepsilon^{-1/2}` of the data, so that
    :math:`J\xi` recomputed by a JVP stays accurate to about :math:`\sqrt{\varepsilon}`). Working with :math:`\Sigma` rather than the
    eigenvalues of :math:`B^\top B` keeps small singular directions accurate.

    Args:
        pseudo_inverse_rtol: relative singular-value cutoff used when ``damping == 0``; ``None`` means
            :math:`\sqrt{\varepsilon}` of the dtype.
    """

    pseudo_inverse_rtol: float | None = None
    name: str = "dense"

    def factorize(self, operator: GramOperator) -> Factorization:
        _, singular_values, right_transposed = operator.whitened_svd()
        rtol = self.pseudo_inverse_rtol
        if rtol is None:
            rtol = torch.finfo(singular_values.dtype).eps ** 0.5
        return _DenseFactorization(singular_values, right_transposed.T, rtol * float(singular_values.max()))
