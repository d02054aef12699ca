r"""Randomized Nyström preconditioning for conjugate gradients on a damped PSD operator :math:`A + \mu I`.

A rank-:math:`\ell` Nyström approximation :math:`\hat A = U\hat\Lambda U^\top \approx A` (``U`` of shape
``(n, l)``, orthonormal columns) comes from :math:`\ell` products :math:`A\Omega` with a Gaussian test matrix
:math:`\Omega` (Frangella, Tropp, Udell 2023, Algorithm 2.1, the numerically stable variant):

1. :math:`\Omega` = orthonormalised Gaussian ``(n, l)``; :math:`Y = A\Omega`;
2. shift :math:`\nu = \sqrt n\,\varepsilon\,\|Y\|_2`, :math:`Y_\nu = Y + \nu\Omega`;
3. :math:`C = \operatorname{chol}(\Omega^\top Y_\nu)` (lower), :math:`F = Y_\nu C^{-\top}`;
4. thin SVD :math:`F = U\Sigma V^\top`, :math:`\hat\Lambda = \max(0, \Sigma^2 - \nu)`.

The preconditioner of :math:`A + \mu I` is

.. math:: P^{-1} = (\hat\lambda_\ell + \mu)\,U(\hat\Lambda + \mu I)^{-1}U^\top + (I - UU^\top),

with :math:`\hat\lambda_\ell` the smallest kept eigenvalue: it maps the top :math:`\ell` eigendirections of
:math:`A + \mu I` to eigenvalues near :math:`\hat\lambda_\ell + \mu` and leaves the rest, so the preconditioned
condition number is about :math:`(\lambda_{\ell+1} + \mu)/\mu` instead of :math:`(\lambda_1 + \mu)/\mu`. Where
:math:`\ell` exceeds the effective dimension :math:`\sum_i \lambda_i/(\lambda_i + \mu)` (a smooth network's
Gram spectrum: a few large eigenvalues, then a fast decay) CG converges in a handful of iterations. One
sketch serves every damping :math:`\mu`, so Levenberg–Marquardt retries reuse it. It works on either side:
the parameter side :math:`J^\top WJ` (``(p, p)``) or the kernel :math:`C^\top JJ^\top C` (``(Nm, Nm)``); only
the matrix-vector product is asked for.

References:
    Z. Frangella, J. A. Tropp, M. Udell, "Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
    44(2), 718-752, 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._random import gaussian_probes
from .limits import first_factorable_shift

__all__ = ["NystromApproximation", "NystromPreconditioning", "nystrom_approximation"]

#: Where rounding makes the core :math:`\Omega^\top Y_\nu` indefinite, the stabilising shift :math:`\nu` is multiplied by
#: ``CORE_SHIFT_GROWTH`` up to ``CORE_SHIFT_TRIES - 1`` times (:func:`~mms_manifolds.linalg.limits.first_factorable_shift`).
CORE_SHIFT_GROWTH, CORE_SHIFT_TRIES = 10.0, 11


@dataclass(frozen=True)
class NystromPreconditioning:
    r"""Settings of CG's Nyström preconditioner (``ConjugateGradientSolve(preconditioner=...)``).

    Args:
        rank: :math:`\ell`, the sketch's rank and its number of operator products per point (capped at the
            operator's size). Default ``64``: above the effective dimension of the smooth networks measured, and
            a ``(p, 64)`` basis.
    """

    rank: int = 64

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ValueError(f"the Nyström rank must be >= 1, got {self.rank}")


@dataclass(frozen=True)
class NystromApproximation:
    r"""A rank-:math:`\ell` Nyström approximation :math:`U\hat\Lambda U^\top` of a PSD operator, and its preconditioner.

    Attributes:
        basis: :math:`U`, shape ``(n, l)``, orthonormal columns.
        eigenvalues: :math:`\hat\Lambda`, shape ``(l,)``, descending, :math:`\ge 0`.
        matvecs: products with the operator the sketch took (:math:`\ell`).
    """

    basis: torch.Tensor
    eigenvalues: torch.Tensor
    matvecs: int

    def preconditioner(self, damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
        r""":math:`x \mapsto P^{-1}x` for :math:`A + \mu I`, ``damping`` :math:`= \mu > 0` (module docstring); ``(n,) -> (n,)``."""
        if not damping > 0:
            raise ValueError(f"the Nyström preconditioner needs a damping mu > 0, got {damping}")
        basis, eigenvalues = self.basis, self.eigenvalues
        smallest = float(eigenvalues[-1])
        scale = (smallest + damping) / (eigenvalues + damping)

        def apply(x: torch.Tensor) -> torch.Tensor:
            coefficients = basis.T @ x
            return x + basis @ ((scale - 1.0) * coefficients)

        return apply


def nystrom_approximation(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    rank: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    seed: int = 0,
) -> NystromApproximation:
    r"""The stable randomized Nyström approximation of the PSD operator ``matvec`` (``(n,) -> (n,)``) of rank ``rank``.

    ``rank`` products with the operator (the columns of :math:`\Omega`, drawn from a generator seeded with
    ``seed``: deterministic), one QR of ``(n, l)``, one ``(l, l)`` Cholesky and one thin SVD of ``(n, l)``.

    Raises:
        ValueError: ``rank`` not in ``[1, size]``; the operator is not PSD (the shifted core has no Cholesky
            factor even after the shift grew by :math:`10^{10}`).
    """
    if not 1 <= int(rank) <= int(size):
        raise ValueError(f"the sketch rank must be in [1, {size}], got {rank}")
    omega, _ = torch.linalg.qr(gaussian_probes(rank, size, dtype=dtype, device=torch.device(device), seed=seed))
    sketch = torch.stack([matvec(omega[:, column]) for column in range(rank)], dim=1)
    shift = size**0.5 * torch.finfo(dtype).eps * float(torch.linalg.matrix_norm(sketch, ord=2))
    shift = max(shift, torch.finfo(dtype).tiny)

    def core_cholesky(nu: float) -> torch.Tensor | None:
        core = omega.T @ (sketch + nu * omega)
        lower, info = torch.linalg.cholesky_ex(0.5 * (core + core.T))
        return lower if int(info) == 0 else None

    found = first_factorable_shift(core_cholesky, shift, CORE_SHIFT_GROWTH, CORE_SHIFT_TRIES)
    if found is None:
        raise ValueError("the Nyström sketch is not positive semi-definite: is the operator PSD?")
    shift, lower = found
    shifted = sketch + shift * omega
    factor = torch.linalg.solve_triangular(lower, shifted.T, upper=False).T  # Y_nu C^{-T}
    basis, singular, _ = torch.linalg.svd(factor, full_matrices=False)
    eigenvalues = (singular.square() - shift).clamp_min(0.0)
    return NystromApproximation(basis=basis, eigenvalues=eigenvalues, matvecs=rank)
