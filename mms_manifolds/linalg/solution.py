"""The record every metric factorisation returns, and the factorisation interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from .operator import GramOperator

__all__ = ["Factorization", "LinearSolution"]


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
        certified_fraction: a certified lower bound on the share of the exact solution's decrease of
            :math:`q(x) = \tfrac12 x\cdot(A + \lambda I)x - b\cdot x` that ``value`` achieves
            (:func:`~mms_manifolds.linalg.certified_decrease_fraction`; 0 where :math:`\lambda = 0` leaves
            nothing to certify it with); ``1`` for direct solves.
    """

    value: torch.Tensor
    mode: str
    iterations: int = 0
    relative_residual: float = field(default=float("nan"))
    converged: bool = True
    certified_fraction: float = 1.0


class Factorization(ABC):
    r"""Per-point state of a solve mode: solves :math:`(J^\top W J + \lambda I)x = b` for any :math:`\lambda`.

    The factorisations of the manifold's metric (``operator`` set, :math:`W = M`) also split function-space
    vectors into their parts in and across :math:`\operatorname{range} J`: exactly, by the operator
    (:meth:`GramOperator.range_split_norms`, :meth:`GramOperator.dual_tangential_norm`); the matrix-free
    factorisation overrides both with damped solves.
    """

    mode: str
    pseudo_inverts: bool = True
    """Whether ``solve(rhs, 0.0)`` gives the truncated pseudo-inverse (direct modes); matrix-free CG needs a damping."""

    operator: GramOperator | None = None

    linear_iterations: int = 0
    """CG iterations this factorisation's solves have taken so far (``0`` for direct modes); progress reports read it."""

    def range_split_norms(self, v: torch.Tensor, damping: float) -> tuple[float, float]:
        r""":math:`(\|P_T v\|_M, \|v - P_T v\|_M)` for ``v`` of shape ``(N, m)``: the operator's exact split (``damping`` unused)."""
        return self.operator.range_split_norms(v)

    def dual_tangential_norm(self, egrad: torch.Tensor, damping: float) -> float:
        r""":math:`\|P_T M^{-1}g\|_M` from :math:`J^\top g`: the operator's exact norm (``damping`` unused)."""
        return self.operator.dual_tangential_norm(egrad)

    @abstractmethod
    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        r"""Solve :math:`(J^\top W J + \lambda I)x = b`; ``rhs`` shape ``(p,)``, :math:`\lambda` = ``damping``.

        ``rtol`` (:math:`\lambda = 0` in the direct modes only): the relative eigenvalue cutoff of this
        pseudo-inverse, if larger than the factorisation's own; ``None`` for the factorisation's own.
        """

    def resolved_damping(self, damping: float) -> float:
        r"""The damping a Tikhonov solve of this factorisation should take for a requested :math:`\lambda \ge 0`: :math:`\lambda` itself (this default; the Gram-matrix factorisations raise a :math:`\lambda` below their rounding, :meth:`~mms_manifolds.linalg.GramFactorization.resolved_damping`)."""
        return damping

    def known_trace(self) -> float | None:
        r""":math:`\operatorname{tr}(J^\top WJ)` where the factorisation holds it exactly at no further cost, else ``None`` (this default)."""
        return None

    def solve_inexact(self, rhs: torch.Tensor, damping: float, forcing: float, fraction: float) -> LinearSolution:
        r"""A damped solve (:math:`\lambda > 0`) that may stop at relative residual ``forcing`` once ``fraction`` of the exact decrease is certified.

        An inexact-Newton solve (:mod:`~mms_manifolds.linalg.forcing`). Direct modes solve exactly (this
        default); the matrix-free CG mode stops early.
        """
        del forcing, fraction
        return self.solve(rhs, damping)
