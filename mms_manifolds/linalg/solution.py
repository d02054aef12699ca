"""The record every metric factorisation returns, and the factorisation interface."""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .operator import GramOperator

__all__ = [
    "Factorization",
    "LinearSolution",
    "UnconvergedSolveCount",
    "UnconvergedSolveError",
    "UnconvergedSolveWarning",
    "available_memory_bytes",
    "check_fits_in_memory",
    "pseudo_inverse_rtol",
]


class UnconvergedSolveError(RuntimeError):
    """An iterative solve stopped at its iteration cap above its tolerance, and its settings ask to raise."""


class UnconvergedSolveWarning(RuntimeWarning):
    """An iterative solve stopped at its iteration cap above its tolerance (settings ``on_unconverged="warn"``)."""


class UnconvergedSolveCount:
    """Counts the :class:`UnconvergedSolveWarning` raised inside a ``with`` block; ``count`` after it.

    The counted warnings are replaced by one summary warning (the first message and the count), so a
    step with 200 unconverged solves does not print 200 lines; other warnings pass through unchanged.
    """

    def __init__(self, what: str):
        self.what = what
        self.count = 0

    def __enter__(self) -> UnconvergedSolveCount:
        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always", UnconvergedSolveWarning)
        return self

    def __exit__(self, *exception: object) -> None:
        self._catcher.__exit__(*exception)
        counted = [record for record in self._records if issubclass(record.category, UnconvergedSolveWarning)]
        for record in self._records:
            if record not in counted:
                warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
        self.count = len(counted)
        if counted:
            warnings.warn(
                f"{self.what}: {self.count} iterative solve(s) stopped unconverged; the first: {counted[0].message}",
                UnconvergedSolveWarning,
                stacklevel=2,
            )


def available_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on CUDA, available physical memory on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # platforms without sysconf: assume enough
        return 2**62


def check_fits_in_memory(required_bytes: int, device: torch.device | str, what: str) -> None:
    """Raise ``MemoryError`` naming ``what`` before allocating ``required_bytes`` that ``device`` does not have free.

    A forced solve mode that cannot fit (a Woodbury kernel of :math:`N \times N` at :math:`N = 10^5` is
    74.5 GiB) then fails with a message, not an out-of-memory crash inside the factorisation.
    """
    available = available_memory_bytes(device)
    if required_bytes > available:
        raise MemoryError(
            f"{what} needs about {required_bytes / 2**30:.1f} GiB on {device}, {available / 2**30:.1f} GiB are free: "
            "use solve_mode='dense' (factors the smaller Gram side) or 'cg' (matrix-free)"
        )


def pseudo_inverse_rtol(size: int, dtype: torch.dtype) -> float:
    r"""Relative eigenvalue cutoff of a truncated pseudo-inverse of a ``(size, size)`` Gram matrix: ``size * eps``.

    Eigenvalues :math:`\lambda_i \le` ``size`` :math:`\cdot\,\varepsilon\,\lambda_{\max}` are dropped: the rule of
    LAPACK's and numpy's least-squares drivers (``rcond=None``), applied to the Gram matrix. Rounding in
    forming and factoring it perturbs eigenvalues by about :math:`\varepsilon\lambda_{\max}`, so the directions kept are
    resolved; a Gauss–Newton step along the dropped ones would be noise (a cutoff of :math:`10^{-16}` failed on
    the 2-D Poisson benchmark, ``docs/performance.md``). Every pseudo-inverse and residual split in the library
    uses this one rule.
    """
    return size * torch.finfo(dtype).eps


@dataclass(frozen=True)
class LinearSolution:
    r"""Result of solving :math:`(A + \lambda I)x = b`.

    Attributes:
        value: :math:`x`, shape of the right-hand side.
        mode: name of the solve mode that produced it (``"dense"``, ``"woodbury"``, ``"cg"``).
        iterations: CG iterations (``0`` for direct modes).
        relative_residual: :math:`\|(A + \lambda I)x - b\| / \|b\|` where it was computed, else ``nan``.
        converged: ``False`` when an iterative solve stopped at its iteration cap above its tolerance
            (its ``value`` is then inexact); direct solves are exact up to rounding and report ``True``.
    """

    value: torch.Tensor
    mode: str
    iterations: int = 0
    relative_residual: float = field(default=float("nan"))
    converged: bool = True


class Factorization(ABC):
    r"""Per-point state of a solve mode: solves :math:`(J^\top W J + \lambda I)x = b` for any :math:`\lambda`.

    The factorisations of the manifold's metric (``operator`` set, :math:`W = M`) also split function-space
    vectors into their parts in and across :math:`\operatorname{range} J`: exactly from the whitened SVD
    of the operator (:meth:`range_split`, :meth:`dual_tangential_norm`); the matrix-free factorisation
    overrides both with damped solves.
    """

    mode: str
    pseudo_inverts: bool = True
    """Whether ``solve(rhs, 0.0)`` gives the truncated pseudo-inverse (direct modes); matrix-free CG needs a damping."""

    operator: GramOperator | None = None

    linear_iterations: int = 0
    """CG iterations this factorisation's solves have taken so far (``0`` for direct modes); progress reports read it."""

    def range_split(self, v: torch.Tensor, damping: float) -> tuple[float, float]:
        r""":math:`(\|P_T v\|_M, \|v - P_T v\|_M)` for ``v`` of shape ``(N, m)``, :math:`P_T` the :math:`M`-orthogonal projection onto :math:`\operatorname{range} J`.

        :math:`P_T` projects onto the left singular vectors of :math:`M^{1/2}J` kept by
        :meth:`GramOperator.range_mask` (``damping`` is not used: the split is of the exact geometry).
        """
        left, singular, _ = self.operator.whitened_svd()
        keep = self.operator.range_mask(singular)
        target = self.operator.weight.whiten(v)
        tangential = left[:, keep] @ (left[:, keep].T @ target)
        return float(torch.linalg.vector_norm(tangential)), float(torch.linalg.vector_norm(target - tangential))

    def dual_tangential_norm(self, egrad: torch.Tensor, damping: float) -> float:
        r""":math:`\|P_T M^{-1}g\|_M` from :math:`J^\top g` (``egrad``, shape ``(p,)``): :math:`\|\Sigma_k^{-1}V_k^\top J^\top g\|` over the kept singular values.

        It needs no :math:`M^{-1}`, so it stays defined for a semi-definite :math:`M` (mesh-free jets).
        """
        _, singular, right = self.operator.whitened_svd()
        keep = self.operator.range_mask(singular)
        return float(torch.linalg.vector_norm((right[keep] @ egrad) / singular[keep]))

    @abstractmethod
    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        r"""Solve :math:`(J^\top W J + \lambda I)x = b`; ``rhs`` shape ``(p,)``, :math:`\lambda` = ``damping``.

        ``rtol`` (:math:`\lambda = 0` in the direct modes only): the relative eigenvalue cutoff of this
        pseudo-inverse, if larger than the factorisation's own; ``None`` for the factorisation's own.
        """
