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
    """

    def __init__(self, parametrization: Parametrization, weight: Metric, theta: torch.Tensor):
        self.parametrization = parametrization
        self.weight = weight
        self.theta = theta
        self._whitened_jacobian: torch.Tensor | None = None
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

    def whitened_jacobian(self) -> torch.Tensor:
        r""":math:`B = C^\top J`, shape ``(Nm, p)``, with :math:`B^\top B = J^\top W J`; formed once."""
        if self._whitened_jacobian is None:
            jacobian = self.parametrization.jacobian(self.theta)  # (N, m, p)
            self._whitened_jacobian = self.weight.whiten(jacobian.movedim(-1, 0)).T.contiguous()
            self.jacobian_evaluations += 1
        return self._whitened_jacobian

    def trace(self) -> float:
        r""":math:`\operatorname{tr}(J^\top W J) = \|B\|_F^2`."""
        return float(self.whitened_jacobian().square().sum())
