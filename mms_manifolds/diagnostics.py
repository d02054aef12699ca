r"""Diagnostics of the Jacobian at a point: the paper's "locally non-degenerate Jacobian", made visible."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JacobianDiagnostics"]


@dataclass(frozen=True)
class JacobianDiagnostics:
    r"""Singular values of :math:`M^{1/2}J(\theta)` and what they imply for the geometry.

    Attributes:
        num_parameters: :math:`p`.
        ambient_dimension: :math:`Nm`.
        sigma_max: largest singular value of :math:`M^{1/2}J`.
        sigma_min: smallest of its :math:`\min(p, Nm)` singular values (``0`` when :math:`p > Nm`
            counts as rank deficiency too: the Jacobian cannot have full column rank).
        condition_number: :math:`\sigma_{\max}/\sigma_{\min}` (``inf`` when :math:`\sigma_{\min} = 0`).
        numerical_rank: number of singular values above ``rank_tolerance``: the rank the residual split uses
            (:func:`~mms_manifolds.linalg.range_mask`, :math:`\sigma^2 > \min(p, Nm)\,\varepsilon\,\sigma_{\max}^2`).
        rank_tolerance: :math:`\sqrt{\min(p, Nm)\,\varepsilon}\,\sigma_{\max}`, :math:`\varepsilon` the dtype's epsilon.
        damping: :math:`\lambda_d` in :math:`G = J^\top M J + \lambda_d I`.
        damped_condition_number: condition number of :math:`G`,
            :math:`(\sigma_{\max}^2 + \lambda_d)/(\sigma_{\min,p}^2 + \lambda_d)` with
            :math:`\sigma_{\min,p} = 0` when :math:`p > Nm`.
    """

    num_parameters: int
    ambient_dimension: int
    sigma_max: float
    sigma_min: float
    condition_number: float
    numerical_rank: int
    rank_tolerance: float
    damping: float
    damped_condition_number: float

    @property
    def full_column_rank(self) -> bool:
        r"""Whether :math:`J` has numerically full column rank (rank :math:`= p`): the embedded-submanifold condition."""
        return self.numerical_rank == self.num_parameters

    def __str__(self) -> str:
        return (
            f"p = {self.num_parameters}, Nm = {self.ambient_dimension}, sigma in [{self.sigma_min:.3e}, "
            f"{self.sigma_max:.3e}], cond = {self.condition_number:.3e}, rank = {self.numerical_rank}"
            f"{'' if self.full_column_rank else ' (rank deficient)'}, damping = {self.damping:.3e}, "
            f"cond(G) = {self.damped_condition_number:.3e}"
        )
