r"""Kernel-side factorisation of :math:`A = J^\top WJ` for a diagonal weight :math:`W = \operatorname{diag}(d)`, :math:`d \ge 0`.

The Gauss–Newton model of a PINN-type energy weighs the Jacobian by the step's Hessian
:math:`W = \nabla^2E(u) + M/\tau`. For the mesh-free jet energies :math:`\nabla^2E(u)` is diagonal (each is a
sum of functions of single jet entries) and so is the jet metric, so :math:`W = \operatorname{diag}(d)` has the
whitening :math:`C = \operatorname{diag}(\sqrt d)`, :math:`W = CC^\top`. With :math:`B = C^\top J` (``(Nm, p)``,
:math:`B^\top B = A`) and :math:`Nm < p` the model is solved on the kernel side, from the :math:`Nm \times Nm`
kernel :math:`K = BB^\top` (:class:`~mms_manifolds.linalg.GramFactorization` with ``factor`` :math:`B`):

.. math:: (A + \lambda I)^{-1}b = \tfrac1\lambda\big(b - B^\top(K + \lambda I)^{-1}Bb\big), \qquad
          A^+_k b = B^\top Q_k\Lambda_k^{-2}Q_k^\top Bb,

:math:`K = Q\Lambda Q^\top`, eigenvalues at or below the cutoff dropped. This is the solve of Woodbury-ENGD
(Guzmán-Cordero, Dangel, Goldshlager, Zeinhofer 2025). Cost per point :math:`(Nm)^2p` flops for :math:`K` and
:math:`O((Nm)^3)` for its factorisation, against :math:`Nm\,p^2 + O(p^3)` for the assembled :math:`p \times p`
matrix: at :math:`p = 9873`, :math:`Nm = 1020` (KFAC's 2-D Poisson) about 1e10 flops instead of 4e11
(``docs/performance.md``). A weight whose diagonal is unknown or has a negative entry (a non-convex energy) keeps
the assembled matrix.
"""

from __future__ import annotations

import torch

from .composite import diagonal_of
from .dense import GramFactorization
from .kernel import kernel_gram_matrix
from .limits import check_fits_in_memory
from .operator import GramOperator

__all__ = ["diagonal_weight_factorization"]

#: Rows of :math:`B` per block product when forming :math:`K` (as :class:`~mms_manifolds.linalg.KernelSolve`).
BLOCK_ROWS = 256


def diagonal_weight_factorization(operator: GramOperator, rtol: float | None = None) -> GramFactorization | None:
    r"""The kernel-side :class:`GramFactorization` of :math:`J^\top WJ` (module docstring), or ``None`` where it does not apply.

    It applies where :math:`Nm < p`, the weight's diagonal is known (:func:`~mms_manifolds.linalg.composite.diagonal_of`) and every entry is :math:`\ge 0`;
    :math:`J` is the operator's (formed once, shared). Peak memory: :math:`J`, :math:`B` and :math:`K`.

    Args:
        operator: :math:`J^\top WJ` at the point, ``W`` the step's Hessian.
        rtol: relative eigenvalue cutoff of the pseudo-inverse; ``None`` for
            :func:`~mms_manifolds.linalg.pseudo_inverse_rtol` of :math:`Nm`.
    """
    parametrization = operator.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    if rows >= columns:
        return None
    diagonal = diagonal_of(operator.weight)
    if diagonal is None or not bool((diagonal >= 0).all()):
        return None
    check_fits_in_memory(
        (2 * rows * columns + 2 * rows * rows) * parametrization.dtype.itemsize,
        parametrization.device,
        f"the kernel-side Gauss-Newton model (J and its weighted copy, {rows} x {columns}, and a {rows} x {rows} kernel)",
    )
    whitened = diagonal.reshape(-1, 1).sqrt() * operator.jacobian().reshape(rows, columns)
    return GramFactorization(kernel_gram_matrix(whitened, BLOCK_ROWS), factor=whitened, rtol=rtol, mode="kernel")
