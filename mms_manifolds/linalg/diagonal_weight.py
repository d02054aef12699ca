r"""Kernel-side factorisation of :math:`A = J^\top WJ` for a diagonal weight :math:`W = \operatorname{diag}(d)`, :math:`d \ge 0`.

The Gauss–Newton model of a PINN-type energy weighs the Jacobian by the step's Hessian
:math:`W = \nabla^2E(u) + M/\tau`. For the mesh-free jet energies :math:`\nabla^2E(u)` is diagonal (each is a
sum of functions of single jet entries) and so is the jet metric, so :math:`W = \operatorname{diag}(d)` has the
whitening :math:`C = \operatorname{diag}(\sqrt d)`, :math:`W = CC^\top`. With :math:`B = C^\top J` (``(Nm, p)``,
:math:`B^\top B = A`) and :math:`Nm < p` the model is solved on the kernel side, from the :math:`Nm \times Nm`
kernel :math:`K = BB^\top` (:class:`DiagonalWeightFactorization`):

.. math:: (A + \lambda I)^{-1}b = \tfrac1\lambda\big(b - B^\top(K + \lambda I)^{-1}Bb\big), \qquad
          A^+_k b = B^\top Q_k\Lambda_k^{-2}Q_k^\top Bb,

:math:`K = Q\Lambda Q^\top`, eigenvalues at or below the cutoff dropped; with the right-hand side in range form
(:meth:`DiagonalWeightFactorization.range_solve`) this is the solve of Woodbury-ENGD
(Guzmán-Cordero, Dangel, Goldshlager, Zeinhofer 2025). Cost per point :math:`(Nm)^2p` flops for :math:`K` and
:math:`O((Nm)^3)` for its factorisation, against :math:`Nm\,p^2 + O(p^3)` for the assembled :math:`p \times p`
matrix: at :math:`p = 9873`, :math:`Nm = 1020` (KFAC's 2-D Poisson) about 1e10 flops instead of 4e11
(``docs/performance.md``). A weight whose diagonal is unknown or has a negative entry (a non-convex energy) keeps
the assembled matrix.

:math:`B` is never formed: :math:`K = \operatorname{diag}(\sqrt d)\,JJ^\top\operatorname{diag}(\sqrt d)` scales the
rows and columns of :math:`JJ^\top`, and :math:`Bx = \sqrt d\odot Jx`, :math:`B^\top y = J^\top(\sqrt d\odot y)` are
products with the operator's :math:`J` (:class:`ScaledRows`): one pass over an ``(Nm, p)`` array and its copy fewer per
point than whitening :math:`J` first (0.05 of 0.56 CPU seconds per iteration at :math:`p = 9873`).
"""

from __future__ import annotations

import torch

from ..parametrizations.base import Parametrization
from .composite import diagonal_of
from .dense import GramFactorization
from .kernel import kernel_gram_matrix
from .limits import check_fits_in_memory, truncated_reciprocal
from .operator import GramOperator, SymmetricOperator

__all__ = [
    "DiagonalWeightFactorization",
    "ScaledRows",
    "diagonal_weight_factorization",
    "kernel_side_root",
    "whitened_kernel",
]

#: Rows of :math:`J` per block product when forming :math:`JJ^\top` (:func:`~mms_manifolds.linalg.kernel.kernel_gram_matrix`):
#: 128 computes 5.8e9 multiply-adds at :math:`Nm = 1020`, :math:`p = 9873` against 6.5e9 at 256 (0.29 against 0.31 CPU s).
BLOCK_ROWS = 128


class ScaledRows:
    r""":math:`B = \operatorname{diag}(r)J` (``(n, p)``) as products with ``matrix`` :math:`J` (``(n, p)``) and ``scale`` :math:`r` (``(n,)``), never formed.

    ``B @ x`` is :math:`r \odot (Jx)` and ``B.T @ y`` is :math:`J^\top(r \odot y)`, for vectors (``(p,)``, ``(n,)``) or
    matrices of columns (``(p, k)``, ``(n, k)``); :meth:`dense` forms :math:`B`.
    """

    def __init__(self, scale: torch.Tensor, matrix: torch.Tensor, transposed: bool = False):
        self.scale, self.matrix, self.transposed = scale, matrix, transposed

    @property
    def T(self) -> ScaledRows:
        r""":math:`B^\top` as products."""
        return ScaledRows(self.scale, self.matrix, not self.transposed)

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.matrix.shape
        return (columns, rows) if self.transposed else (rows, columns)

    def _scaled(self, values: torch.Tensor) -> torch.Tensor:
        return self.scale.reshape(-1, *([1] * (values.ndim - 1))) * values

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return self.matrix.T @ self._scaled(other)
        return self._scaled(self.matrix @ other)

    def dense(self) -> torch.Tensor:
        r""":math:`B` (or :math:`B^\top`) formed, shape :attr:`shape`."""
        formed = self.scale.unsqueeze(-1) * self.matrix
        return formed.T if self.transposed else formed


class DiagonalWeightFactorization(GramFactorization):
    r"""The kernel side of :math:`A = B^\top B`, :math:`B = \operatorname{diag}(\sqrt d)J` (``(Nm, p)``), with solves in range form.

    Besides :class:`GramFactorization`'s solves of :math:`(A + \lambda I)x = b` for any :math:`b`, it solves for
    right-hand sides given as :math:`b = B^\top s` (:meth:`range_solve`) by the push-through identity

    .. math:: (B^\top B + \lambda I)^{-1}B^\top s = B^\top(K + \lambda I)^{-1}s, \qquad
              (B^\top B)^+_k B^\top s = B^\top Q_k\Lambda_k^{-1}Q_k^\top s,

    the Woodbury-ENGD step. The general kernel solve :math:`\tfrac1\lambda(b - B^\top(K + \lambda I)^{-1}Bb)`
    cancels to about :math:`\varepsilon\lambda_{\max}/\lambda` relative error when :math:`\lambda` is small (at a
    Levenberg–Marquardt damping of :math:`10^{-9}` of the mean eigenvalue, :math:`10^{-7}` or worse), and its
    pseudo-inverse applies :math:`\Lambda^{-2}` to :math:`Bb = Ks`; the range form does neither. Every Gauss–Newton
    right-hand side has this form: :math:`g = J^\top\nabla F = B^\top(\nabla F/\sqrt d)` where :math:`\nabla F`
    vanishes with :math:`d` (:meth:`range_form`), and the geodesic acceleration's :math:`J^\top Wc = B^\top(\sqrt d\,c)`.

    Args:
        gram: :math:`K = BB^\top`, ``(Nm, Nm)``.
        whitened: :math:`B`, ``(Nm, p)``, formed or as :class:`ScaledRows` products.
        root: :math:`\sqrt d`, ``(Nm,)``.
        rtol: relative eigenvalue cutoff of the pseudo-inverse; ``None`` for ``Nm * eps``.
    """

    def __init__(
        self, gram: torch.Tensor, whitened: torch.Tensor | ScaledRows, root: torch.Tensor, rtol: float | None = None
    ):
        super().__init__(gram, factor=whitened, rtol=rtol, mode="kernel")
        self.root = root

    def range_form(self, covector: torch.Tensor) -> torch.Tensor | None:
        r""":math:`s = v/\sqrt d` (``(Nm,)``) with :math:`B^\top s = J^\top v` for ``covector`` :math:`v` (``(N, m)``); ``None`` where :math:`v \ne 0` at some :math:`d = 0`."""
        flat = covector.reshape(-1)
        positive = self.root > 0
        if not bool((flat[~positive] == 0).all()):
            return None
        return torch.where(positive, flat / self.root.where(positive, torch.ones_like(self.root)), 0.0)

    def whiten(self, vector: torch.Tensor) -> torch.Tensor:
        r""":math:`s = \sqrt d\,c` (``(Nm,)``) with :math:`B^\top s = J^\top Wc` for ``vector`` :math:`c` (``(N, m)``)."""
        return self.root * vector.reshape(-1)

    def range_solve(self, whitened_rhs: torch.Tensor, damping: float, rtol: float | None = None) -> torch.Tensor:
        r""":math:`(A + \lambda I)^{-1}B^\top s`, or :math:`A^+_kB^\top s` for :math:`\lambda = 0` (eigenvalues at or below ``rtol`` of the largest dropped), shape ``(p,)``."""
        rtol = self.rtol if rtol is None else max(rtol, self.rtol)
        if damping > 0.0:
            lower = self._shifted_cholesky(damping)
            if lower is not None:
                return self.factor.T @ torch.cholesky_solve(whitened_rhs.unsqueeze(-1), lower).squeeze(-1)
            eigenvalues, eigenvectors = self.eigendecomposition()
            return self.factor.T @ (eigenvectors @ ((eigenvectors.T @ whitened_rhs) / (eigenvalues + damping)))
        eigenvalues, eigenvectors = self.eigendecomposition()
        inverse = truncated_reciprocal(eigenvalues, eigenvalues > rtol * eigenvalues[-1])
        return self.factor.T @ (eigenvectors @ (inverse * (eigenvectors.T @ whitened_rhs)))


def kernel_side_root(parametrization: Parametrization, weight: SymmetricOperator) -> torch.Tensor | None:
    r""":math:`\sqrt d` (``(Nm,)``) of the weight :math:`W = \operatorname{diag}(d)` where the kernel side applies, else ``None``.

    It applies where :math:`Nm < p`, the weight's diagonal is known (:func:`~mms_manifolds.linalg.composite.diagonal_of`)
    and every entry is :math:`\ge 0`.
    """
    if parametrization.ambient_dimension >= parametrization.num_parameters:
        return None
    diagonal = diagonal_of(weight)
    if diagonal is None or not bool((diagonal >= 0).all()):
        return None
    return diagonal.reshape(-1).sqrt()


def whitened_kernel(jacobian: torch.Tensor, root: torch.Tensor, kernel_dtype: torch.dtype | None = None) -> torch.Tensor:
    r""":math:`K = \operatorname{diag}(r)JJ^\top\operatorname{diag}(r)`, shape ``(n, n)``, for ``jacobian`` :math:`J` ``(n, p)`` and ``root`` :math:`r` ``(n,)``.

    :math:`JJ^\top` is formed in blocks of ``BLOCK_ROWS`` rows (:func:`~mms_manifolds.linalg.kernel.kernel_gram_matrix`),
    from :math:`J` rounded to ``kernel_dtype`` where one is given (``None``: :math:`J`'s own), returned in :math:`J`'s
    dtype, then scaled in place: no whitened copy :math:`\operatorname{diag}(r)J` is formed.
    """
    gram = kernel_gram_matrix(jacobian.to(kernel_dtype or jacobian.dtype), BLOCK_ROWS).to(jacobian.dtype)
    return gram.mul_(root.unsqueeze(-1)).mul_(root)


def diagonal_weight_factorization(operator: GramOperator, rtol: float | None = None) -> DiagonalWeightFactorization | None:
    r"""The kernel-side :class:`DiagonalWeightFactorization` of :math:`J^\top WJ` (module docstring), or ``None`` where it does not apply.

    It applies where :math:`Nm < p`, the weight's diagonal is known (:func:`~mms_manifolds.linalg.composite.diagonal_of`) and every entry is :math:`\ge 0`;
    :math:`J` is the operator's (formed once, shared; :math:`B` is not formed). Peak memory: :math:`J` and :math:`K` with its copies.

    Args:
        operator: :math:`J^\top WJ` at the point, ``W`` the step's Hessian.
        rtol: relative eigenvalue cutoff of the pseudo-inverse; ``None`` for
            :func:`~mms_manifolds.linalg.pseudo_inverse_rtol` of :math:`Nm`.
    """
    parametrization = operator.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    root = kernel_side_root(parametrization, operator.weight)
    if root is None:
        return None
    check_fits_in_memory(
        (rows * columns + 3 * rows * rows) * parametrization.dtype.itemsize,
        parametrization.device,
        f"the kernel-side Gauss-Newton model (J, {rows} x {columns}, and a {rows} x {rows} kernel with its copies)",
    )
    jacobian = operator.jacobian().reshape(rows, columns)
    return DiagonalWeightFactorization(whitened_kernel(jacobian, root), ScaledRows(root, jacobian), root, rtol)
