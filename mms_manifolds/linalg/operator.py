r"""The Gram operator :math:`J^\top W J` of a parametrisation at a point, weighted by an SPD operator :math:`W`."""

from __future__ import annotations

import torch

from ..metrics.base import Metric
from ..parametrizations.base import Parametrization

__all__ = ["GramOperator"]


class GramOperator:
    r"""The undamped Gram operator :math:`A(\theta) = J(\theta)^\top W J(\theta)`, shape ``(p, p)``.

    With :math:`W = M` it is the pullback metric; the Gauss–Newton solver uses
    :math:`W = \nabla^2 E + M/\tau`. Solvers add the damping :math:`\lambda I` themselves, so that
    one factorisation serves every damping value (Levenberg–Marquardt retries reuse it).

    The matrix-free product costs one JVP and one VJP; the whitened Jacobian :math:`C^\top J`
    (:math:`W = CC^\top`) is formed at most once and cached, so one point never forms :math:`J` twice.

    Args:
        parametrization: :math:`\phi`.
        weight: :math:`W`, an SPD :class:`~mms_manifolds.metrics.Metric` on :math:`H_N`.
        theta: the point, shape ``(p,)``.
        jacobian: :math:`J(\theta)`, shape ``(N, m, p)``, if another operator at the same point has
            formed it already (shared, not copied).
    """

    def __init__(
        self,
        parametrization: Parametrization,
        weight: Metric,
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
        r"""Thin SVD :math:`B = U\Sigma V^\top` of the whitened Jacobian, ``(U, S, Vh)``; computed once.

        The dense solve, the residual split and the diagnostics all read it.
        """
        if self._svd is None:
            self._svd = torch.linalg.svd(self.whitened_jacobian(), full_matrices=False)
        return self._svd

    def gram_matrix(self) -> torch.Tensor:
        r""":math:`J^\top W J` as a dense ``(p, p)`` matrix, from :math:`W` applied to the columns of :math:`J` (no factor of :math:`W` needed)."""
        columns = self.jacobian().movedim(-1, 0)  # (p, N, m)
        flat = columns.reshape(columns.shape[0], -1)
        gram = flat @ self.weight.apply(columns).reshape(columns.shape[0], -1).T
        return 0.5 * (gram + gram.T)

    def trace(self, exact: bool = True, probes: int = 16) -> float:
        r""":math:`\operatorname{tr}(J^\top W J)`.

        Exact, :math:`\|B\|_F^2`, from the whitened Jacobian; or, with ``exact=False``, Hutchinson's
        estimate :math:`\frac1s\sum_j z_j\cdot J^\top W J z_j` over ``probes`` Rademacher vectors drawn from
        a generator seeded with 0 (deterministic), which never forms :math:`J`.
        """
        if exact:
            return float(self.whitened_jacobian().square().sum())
        device, dtype = self.theta.device, self.theta.dtype
        generator = torch.Generator(device=device).manual_seed(0)
        signs = torch.randint(0, 2, (probes, self.size), generator=generator, device=device)
        signs = (2 * signs - 1).to(dtype)
        return float(sum(probe @ self.matvec(probe) for probe in signs)) / probes
