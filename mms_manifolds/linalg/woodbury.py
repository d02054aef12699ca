r"""Kernel (Woodbury) solve: factor the :math:`Nm \times Nm` Gram matrix :math:`BB^\top`, for :math:`Nm \ll p`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .dense import GramFactorization, WhitenedGramFactorization
from .operator import GramOperator
from .solution import Factorization

__all__ = ["WoodburySolve"]


@dataclass(frozen=True)
class WoodburySolve:
    r"""Solve through the kernel Gram matrix :math:`BB^\top` (``(Nm, Nm)``), :math:`B = C^\top J`.

    .. math:: (B^\top B + \lambda I)^{-1} b = \frac{1}{\lambda}
              \left(b - B^\top (BB^\top + \lambda I)^{-1} B b\right)

    Cost :math:`O((Nm)^2 p + (Nm)^3/3)` once per point and damping (a Cholesky factorisation): the mode
    of choice when :math:`Nm \ll p`. With :math:`\lambda = 0` it gives the minimum-norm truncated
    pseudo-inverse from the SVD of :math:`B` (:class:`~mms_manifolds.linalg.dense.WhitenedGramFactorization`).
    ``DenseSolve`` factors this side by itself whenever :math:`Nm < p`; this mode forces it.
    """

    name: str = "woodbury"
    forms_jacobian: ClassVar[bool] = True

    def factorize(self, operator: GramOperator) -> Factorization:
        return WhitenedGramFactorization(operator, None, kernel_side=True, mode=self.name)

    def factorize_weighted(self, operator: GramOperator) -> GramFactorization:
        r""":math:`J^\top WJ` for a weight without a whitening (the step's Hessian): assembled, ``(p, p)``, default cutoff."""
        return GramFactorization(operator.gram_matrix())
