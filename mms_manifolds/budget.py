r"""The trajectory error budget: from a tolerance on the whole trajectory to per-step stopping tolerances.

With :math:`L = 1/(1 + \tau\lambda)` the Lipschitz constant of :math:`\operatorname{prox}_{\tau E}` and
:math:`\mu = 1/\tau + \lambda` the strong convexity of each step, the tracking bound obeys
:math:`B_{k+1} = L B_k + \rho_k/\mu`. If every step's residual satisfies :math:`\rho_k/\mu \le \eta`, then
after :math:`K` steps

.. math:: B_K \le L^K B_0 + \eta\sum_{j<K} L^j,

so :math:`\eta = \varepsilon / \sum_{j<K} L^j` keeps the propagated inexactness below :math:`\varepsilon`
(for :math:`L < 1` and :math:`K \to \infty`, :math:`\eta \to (1 - L)\varepsilon`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import check_positive_float

__all__ = ["TrajectoryBudget"]


@dataclass(frozen=True)
class TrajectoryBudget:
    r"""A tolerance :math:`\varepsilon` on the inexactness part of the tracking bound over a whole run.

    Args:
        tolerance: :math:`\varepsilon > 0`.
    """

    tolerance: float

    def __post_init__(self) -> None:
        check_positive_float("tolerance", self.tolerance)

    def per_step_allowance(self, lipschitz: float, steps: int) -> float:
        r""":math:`\eta = \varepsilon / \sum_{j=0}^{K-1} L^j`, the allowed :math:`\rho_k/\mu` per step over ``steps`` = :math:`K`."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        geometric_sum = steps if lipschitz == 1.0 else (1 - lipschitz**steps) / (1 - lipschitz)
        return self.tolerance / geometric_sum

    def step_tolerance(self, lipschitz: float, strong_convexity: float, steps: int) -> float:
        r"""Stopping tolerance on the tangential residual of each step: :math:`\mu\eta`."""
        return strong_convexity * self.per_step_allowance(lipschitz, steps)

    @staticmethod
    def predicted_inner_iterations(initial_residual: float, target_residual: float, contraction: float) -> int:
        r"""Iterations for a solver contracting the residual by :math:`q` per iteration: :math:`\lceil\log(\rho_{\text{target}}/\rho_0)/\log q\rceil`.

        Returns ``0`` when :math:`\rho_0` already meets the target.

        Raises:
            ValueError: :math:`q \notin (0, 1)` or a residual is not positive.
        """
        if not 0 < contraction < 1:
            raise ValueError(f"contraction must be in (0, 1), got {contraction}")
        if initial_residual <= 0 or target_residual <= 0:
            raise ValueError("residuals must be positive")
        if initial_residual <= target_residual:
            return 0
        return math.ceil(math.log(target_residual / initial_residual) / math.log(contraction))
