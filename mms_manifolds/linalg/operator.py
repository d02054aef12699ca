r"""The Gram operator :math:`J^\top W J` of a parametrisation at a point, weighted by an SPD operator :math:`W`."""

from __future__ import annotations

from typing import Protocol

import torch

from .._random import rademacher_probes
from ..parametrizations.base import Parametrization
from .composite import diagonal_of
from .limits import range_mask, truncated_reciprocal

__all__ = ["GramOperator", "SymmetricOperator", "thin_svd"]


class SymmetricOperator(Protocol):
    r"""A symmetric positive (semi-)definite operator :math:`W` on :math:`H_N`: all a Gram operator needs of its weight.

    Every :class:`~mms_manifolds.metrics.Metric` is one; so is the MMS step's Hessian
    :math:`\nabla^2E(u) + M/\tau`. The whitened Jacobian (dense and kernel solves, the residual split) also
    needs ``whiten``, which only metrics provide.
    """

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Wv` for ``v`` of shape ``(..., N, m)``."""


def _svd_from_gram(whitened: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(U, S, Vh)`` of ``whitened`` (``(n, p)``) from ``eigh`` of its smaller Gram side, singular values descending."""
    kernel_side = whitened.shape[0] < whitened.shape[1]
    gram = whitened @ whitened.T if kernel_side else whitened.T @ whitened
    eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (gram + gram.T))
    singular = eigenvalues.clamp_min(0.0).sqrt().flip(0)
    eigenvectors = eigenvectors.flip(1)
    inverse = truncated_reciprocal(singular, singular > 0)
    if kernel_side:
        return eigenvectors, singular, ((whitened.T @ eigenvectors) * inverse).T
    return (whitened @ eigenvectors) * inverse, singular, eigenvectors.T


def thin_svd(whitened: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Thin SVD ``(U, S, Vh)`` of ``whitened`` (``(n, q)``), singular values descending: LAPACK's on the CPU, ``eigh`` of the smaller Gram side on CUDA.

    The choice and its accuracy: :meth:`GramOperator.whitened_svd`.
    """
    if whitened.device.type == "cuda":
        return _svd_from_gram(whitened)
    return torch.linalg.svd(whitened, full_matrices=False)


class GramOperator:
    r"""The undamped Gram operator :math:`A(\theta) = J(\theta)^\top W J(\theta)`, shape ``(p, p)``.

    With :math:`W = M` it is the pullback metric; the Gauss–Newton solver uses
    :math:`W = \nabla^2 E + M/\tau`. Solvers add the damping :math:`\lambda I` themselves, so that
    one factorisation serves every damping value (Levenberg–Marquardt retries reuse it).

    The matrix-free product costs one JVP and one VJP; the whitened Jacobian :math:`C^\top J`
    (:math:`W = CC^\top`) is formed at most once and cached, so one point never forms :math:`J` twice.

    Args:
        parametrization: :math:`\phi`.
        weight: :math:`W`, a :class:`SymmetricOperator` on :math:`H_N` (a metric, or the step's Hessian).
        theta: the point, shape ``(p,)``.
        jacobian: :math:`J(\theta)`, shape ``(N, m, p)``, if another operator at the same point has
            formed it already (shared, not copied).
    """

    def __init__(
        self,
        parametrization: Parametrization,
        weight: SymmetricOperator,
        theta: torch.Tensor,
        jacobian: torch.Tensor | None = None,
    ):
        self.parametrization = parametrization
        self.weight = weight
        self.theta = theta
        self._jacobian = jacobian
        self._whitened_jacobian: torch.Tensor | None = None
        self._svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.jacobian_evaluations = 0

    @property
    def size(self) -> int:
        """:math:`p`."""
        return self.parametrization.num_parameters

    def matvec(self, xi: torch.Tensor) -> torch.Tensor:
        r""":math:`J^\top W J \xi`, ``(p,) -> (p,)``; uses the cached Jacobian when it exists."""
        if self._whitened_jacobian is not None:
            return self._whitened_jacobian.T @ (self._whitened_jacobian @ xi)
        image = self.parametrization.jvp(self.theta, xi)
        return self.parametrization.vjp(self.theta, self.weight.apply(image))

    @property
    def has_jacobian(self) -> bool:
        """Whether :math:`J(\theta)` has been formed (reading it then costs nothing)."""
        return self._jacobian is not None

    def jacobian(self) -> torch.Tensor:
        r""":math:`J(\theta)`, shape ``(N, m, p)``; formed once."""
        if self._jacobian is None:
            self._jacobian = self.parametrization.jacobian(self.theta)
            self.jacobian_evaluations += 1
        return self._jacobian

    def whitened_jacobian(self) -> torch.Tensor:
        r""":math:`B = C^\top J`, shape ``(Nm, p)``, with :math:`B^\top B = J^\top W J`; formed once."""
        if self._whitened_jacobian is None:
            self._whitened_jacobian = self.weight.whiten(self.jacobian().movedim(-1, 0)).T.contiguous()
        return self._whitened_jacobian

    def whitened_svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Thin SVD :math:`B = U\Sigma V^\top` of the whitened Jacobian, ``(U, S, Vh)``, singular values descending; computed once.

        The residual split, the diagnostics and the SVD dense solve all read it. On the CPU it is
        LAPACK's SVD. On CUDA, where a thin SVD is 50-500 times slower than an eigendecomposition of the
        smaller Gram side (7.9 s against 0.14 s at :math:`Nm = 16384`, :math:`p = 4353` on an H200), it
        comes from ``eigh`` of :math:`B^\top B = V\Sigma^2V^\top` (then :math:`U = BV\Sigma^{-1}`) or of
        :math:`BB^\top = U\Sigma^2U^\top` (then :math:`V = B^\top U\Sigma^{-1}`): singular values below about
        :math:`\sqrt{\varepsilon}\,\sigma_{\max}` are then rounding noise (their vectors are set to zero where
        :math:`\sigma = 0`), which the library's cutoff (:func:`~mms_manifolds.linalg.pseudo_inverse_rtol`)
        drops anyway.
        """
        if self._svd is None:
            self._svd = thin_svd(self.whitened_jacobian())
        return self._svd

    def range_mask(self, singular: torch.Tensor) -> torch.Tensor:
        r"""Mask of the singular values of :math:`B` that span :math:`\operatorname{range} J` (:func:`~mms_manifolds.linalg.limits.range_mask`, the one rank rule)."""
        return range_mask(singular, self.size, self.parametrization.ambient_dimension)

    def range_split_norms(self, v: torch.Tensor) -> tuple[float, float]:
        r""":math:`(\|P_T v\|_M, \|v - P_T v\|_M)` for ``v`` of shape ``(N, m)``, exactly: :math:`P_T` projects onto the left singular vectors of :math:`B` kept by :meth:`range_mask`."""
        left, singular, _ = self.whitened_svd()
        keep = self.range_mask(singular)
        target = self.weight.whiten(v)
        tangential = left[:, keep] @ (left[:, keep].T @ target)
        return float(torch.linalg.vector_norm(tangential)), float(torch.linalg.vector_norm(target - tangential))

    def dual_tangential_norm(self, egrad: torch.Tensor) -> float:
        r""":math:`\|P_T M^{-1}g\|_M` from :math:`J^\top g` (``egrad``, shape ``(p,)``): :math:`\|\Sigma_k^{-1}V_k^\top J^\top g\|` over the kept singular values.

        It needs no :math:`M^{-1}`, so it stays defined for a semi-definite :math:`M` (mesh-free jets).
        """
        _, singular, right = self.whitened_svd()
        keep = self.range_mask(singular)
        return float(torch.linalg.vector_norm((right[keep] @ egrad) / singular[keep]))

    def gram_matrix(self) -> torch.Tensor:
        r""":math:`J^\top W J` as a dense ``(p, p)`` matrix, from :math:`W` applied to the columns of :math:`J` (no factor of :math:`W` needed)."""
        columns = self.jacobian().movedim(-1, 0)  # (p, N, m)
        flat = columns.reshape(columns.shape[0], -1)
        gram = flat @ self.weight.apply(columns).reshape(columns.shape[0], -1).T
        return 0.5 * (gram + gram.T)

    def trace(self, exact: bool = True, probes: int = 16) -> float:
        r""":math:`\operatorname{tr}(J^\top W J)`.

        Exact, :math:`\|B\|_F^2`, from the whitened Jacobian; for a diagonal :math:`W = \operatorname{diag}(d)`
        (:func:`~mms_manifolds.linalg.composite.diagonal_of`) whose whitened Jacobian is not formed yet,
        :math:`\sum_r d_r\|J_r\|^2` from the rows of :math:`J`, without forming that copy; or, with
        ``exact=False``, Hutchinson's estimate :math:`\frac1s\sum_j z_j\cdot J^\top W J z_j` over ``probes``
        Rademacher vectors drawn from a generator seeded with 0 (deterministic), which never forms :math:`J`.
        """
        if exact:
            diagonal = diagonal_of(self.weight) if self._whitened_jacobian is None else None
            if diagonal is not None:
                rows = self.jacobian().reshape(diagonal.numel(), -1)
                return float(diagonal.reshape(-1) @ torch.linalg.vector_norm(rows, dim=1).square())
            return float(self.whitened_jacobian().square().sum())
        signs = rademacher_probes(probes, self.size, dtype=self.theta.dtype, device=self.theta.device)
        return float(sum(probe @ self.matvec(probe) for probe in signs)) / probes
