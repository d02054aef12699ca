r"""Inexact-Newton forcing terms for the CG model solves of Gauss–Newton (Eisenstat and Walker 1996).

A Gauss–Newton iteration :math:`k` solves :math:`(A_k + \mu_k I)x = g_k` (:math:`g_k = \nabla f(\theta_k)`, the
step :math:`\delta_k = -x`). An inexact-Newton method stops the linear solve at the forcing term

.. math:: \|g_k - (A_k + \mu_k I)x\| \le \eta_k\,\|g_k\|,

loose far from the solution and tightening as :math:`\|g_k\|` falls, so that the outer iteration keeps its
convergence rate without paying for linear accuracy it cannot use. Eisenstat and Walker's two choices, with
their safeguards, :math:`\eta_0` given:

- choice 1: :math:`\eta_k = \big|\,\|g_k\| - \|g_{k-1} - (A_{k-1} + \mu_{k-1} I)x_{k-1}\|\,\big| / \|g_{k-1}\|`
  (how well the last linear model predicted the new gradient), safeguarded by
  :math:`\eta_k \leftarrow \max(\eta_k, \eta_{k-1}^{(1+\sqrt5)/2})` where :math:`\eta_{k-1}^{(1+\sqrt5)/2} > 0.1`;
- choice 2: :math:`\eta_k = \gamma(\|g_k\|/\|g_{k-1}\|)^\alpha`, safeguarded by
  :math:`\eta_k \leftarrow \max(\eta_k, \gamma\eta_{k-1}^\alpha)` where :math:`\gamma\eta_{k-1}^\alpha > 0.1`;

both then clipped to :math:`[\eta_{\min}, \eta_{\max}]`. The safeguards keep :math:`\eta_k` from falling
faster than the outer convergence can justify (an accidental good prediction would otherwise force an
over-accurate solve).

A forcing term alone says nothing about how much of the exact damped step's model decrease an early stop
keeps. :class:`EisenstatWalker` therefore also asks each stop to be *certified* to reach ``fraction`` of
it (:func:`~mms_manifolds.linalg.certified_decrease_fraction`: CG's iterates satisfy the Galerkin condition,
so the decrease is :math:`\tfrac12 g\cdot x` and what is left is at most :math:`\|r\|^2/(2\mu)`). A CG
solve stops at the first iterate meeting both, or at the solve mode's own tolerance. The Gauss–Newton step
then decreases its damped model by at least ``fraction`` of what the dense step with the same damping
would; where a solve reaches its cap first, the iteration's record says it is not certified.

References:
    S. C. Eisenstat, H. F. Walker, "Choosing the forcing terms in an inexact Newton method",
    SIAM J. Sci. Comput. 17(1), 16-32, 1996. C. T. Kelley, "Iterative Methods for Linear and Nonlinear
    Equations", SIAM 1995, §6.3 (the safeguards as stated here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import check_positive_float

__all__ = ["EisenstatWalker", "ForcingSequence"]

#: :math:`(1 + \sqrt5)/2`, the exponent of choice 1's safeguard (and the default :math:`\alpha` of choice 2).
GOLDEN_RATIO = (1 + math.sqrt(5)) / 2
#: The safeguards apply where the previous term, raised as in each choice, exceeds this.
SAFEGUARD_THRESHOLD = 0.1


@dataclass(frozen=True)
class EisenstatWalker:
    r"""Eisenstat–Walker forcing terms for Gauss–Newton's CG model solves, with a certified decrease share.

    ``GaussNewton(forcing=EisenstatWalker())`` stops the step's CG solve of iteration :math:`k` at the first
    iterate with relative residual at most :math:`\eta_k` (module docstring) whose damped model decrease is
    certified to be at least ``fraction`` of the exact one, or at the solve mode's own tolerance. Direct solve
    modes are exact and ignore it.

    Args:
        choice: ``1`` or ``2`` (module docstring). Default ``2``.
        initial: :math:`\eta_0`. Default ``0.5`` (Eisenstat and Walker's experiments).
        maximum: :math:`\eta_{\max} < 1`. Default ``0.9``.
        minimum: :math:`\eta_{\min}`, the floor (below it the solve mode's tolerance decides). Default ``1e-10``.
        gamma: :math:`\gamma \in (0, 1]` of choice 2. Default ``0.9``.
        alpha: :math:`\alpha \in (1, 2]` of choice 2. Default ``2``.
        fraction: :math:`\vartheta \in (0, 1)`, the certified share of the exact damped model decrease each
            stop must reach. Default ``0.9``.
    """

    choice: int = 2
    initial: float = 0.5
    maximum: float = 0.9
    minimum: float = 1e-10
    gamma: float = 0.9
    alpha: float = 2.0
    fraction: float = 0.9

    def __post_init__(self) -> None:
        if self.choice not in (1, 2) or isinstance(self.choice, bool):
            raise ValueError(f"the Eisenstat–Walker choice must be 1 or 2, got {self.choice!r}")
        for name in ("initial", "maximum", "minimum", "gamma", "alpha", "fraction"):
            check_positive_float(name, getattr(self, name))
        if not self.maximum < 1:
            raise ValueError(f"maximum (eta_max) must be in (0, 1), got {self.maximum}")
        if not self.minimum <= self.initial <= self.maximum:
            raise ValueError(
                f"need minimum <= initial <= maximum, got {self.minimum}, {self.initial}, {self.maximum}"
            )
        if not self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 1 < self.alpha <= 2:
            raise ValueError(f"alpha must be in (1, 2], got {self.alpha}")
        if not self.fraction < 1:
            raise ValueError(f"the certified decrease fraction must be in (0, 1), got {self.fraction}")

    def sequence(self) -> ForcingSequence:
        """A fresh sequence of forcing terms for one inner solve."""
        return ForcingSequence(self)


class ForcingSequence:
    r"""The forcing terms :math:`\eta_0, \eta_1, \dots` of one Gauss–Newton solve (:class:`EisenstatWalker`).

    Call :meth:`term` with :math:`\|g_k\|` at the start of each iteration, and :meth:`record_step` with the
    linear residual norm :math:`\|g_k - (A_k + \mu_k I)x_k\|` of the step the iteration accepted (choice 1 reads it).
    """

    def __init__(self, rule: EisenstatWalker):
        self.rule = rule
        self._previous_term: float | None = None
        self._previous_gradient: float | None = None
        self._previous_linear_residual: float | None = None

    def term(self, gradient_norm: float) -> float:
        r""":math:`\eta_k` for an iteration whose gradient has norm ``gradient_norm``."""
        rule = self.rule
        previous, previous_gradient = self._previous_term, self._previous_gradient
        if previous is None or previous_gradient is None or not previous_gradient > 0:
            eta = rule.initial
        elif rule.choice == 1:
            predicted = self._previous_linear_residual
            predicted = 0.0 if predicted is None else predicted
            eta = abs(gradient_norm - predicted) / previous_gradient
            floor = previous**GOLDEN_RATIO
            if floor > SAFEGUARD_THRESHOLD:
                eta = max(eta, floor)
        else:
            eta = rule.gamma * (gradient_norm / previous_gradient) ** rule.alpha
            floor = rule.gamma * previous**rule.alpha
            if floor > SAFEGUARD_THRESHOLD:
                eta = max(eta, floor)
        eta = min(max(eta, rule.minimum), rule.maximum) if math.isfinite(eta) else rule.maximum
        self._previous_term, self._previous_gradient = eta, gradient_norm
        self._previous_linear_residual = None
        return eta

    def record_step(self, linear_residual_norm: float) -> None:
        r"""The linear residual norm of the accepted step's solve (for choice 1's next term)."""
        self._previous_linear_residual = linear_residual_norm
