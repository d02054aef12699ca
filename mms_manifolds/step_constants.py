r"""The constants of one MMS step :math:`\min_u E(u) + \|u - a\|_M^2/(2\tau)` for a :math:`\lambda`-convex energy.

.. math:: L = \frac{1}{1 + \tau\lambda},\qquad \mu = \frac1\tau + \lambda,

:math:`L` the Lipschitz constant of :math:`\operatorname{prox}_{\tau E}` and :math:`\mu` the strong convexity of the
step in the :math:`M`-norm. Written here once; the driver, the step problem, the ledger and the budget read
them from a :class:`StepConstants`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import check_positive_float

__all__ = ["StepConstants", "lipschitz_constant"]


def lipschitz_constant(convexity: float, tau: float) -> float:
    r""":math:`L = 1/(1 + \tau\lambda)`, the Lipschitz constant of :math:`\operatorname{prox}_{\tau E}` for :math:`\lambda`-convex :math:`E`.

    The one place where :math:`1 + \tau\lambda > 0` is checked: the MMS step (:class:`StepConstants`) and the
    exact Ginzburg–Landau step ask this function.

    Raises:
        ValueError: :math:`1 + \tau\lambda \le 0` (the step is not strongly convex).
    """
    if 1 + tau * convexity <= 0:
        raise ValueError(
            f"tau = {tau} is too large for this {convexity:.6g}-convex energy: 1 + tau * lambda = "
            f"{1 + tau * convexity:.6g} <= 0, so the MMS step is not strongly convex; need tau < 1/|lambda| = "
            f"{-1 / convexity:.6g}"
        )
    return 1 / (1 + tau * convexity)


@dataclass(frozen=True)
class StepConstants:
    r""":math:`\tau`, :math:`\lambda` and the two constants derived from them (module docstring).

    Build it with :meth:`of`, which checks them. Where :math:`\lambda` is unknown (``None``), so are
    :math:`L` and :math:`\mu`, and no bound is certified.

    Attributes:
        tau: :math:`\tau > 0`.
        convexity: :math:`\lambda` (finite), or ``None``.
        lipschitz: :math:`L`, or ``None``.
        strong_convexity: :math:`\mu`, or ``None``.
    """

    tau: float
    convexity: float | None
    lipschitz: float | None
    strong_convexity: float | None

    @classmethod
    def of(cls, tau: float, convexity: float | None, source: str = "the energy's convexity") -> StepConstants:
        r"""The constants of a step of size ``tau`` for a ``convexity``-convex energy; ``source`` names where :math:`\lambda` came from.

        Raises:
            ValueError: ``tau`` not positive and finite, ``convexity`` not finite, or :math:`1 + \tau\lambda \le 0`.
        """
        tau = check_positive_float("tau", tau)
        if convexity is None:
            return cls(tau, None, None, None)
        convexity = float(convexity)
        if not math.isfinite(convexity):
            raise ValueError(
                f"{source} returned {convexity}: a convexity modulus must be finite (or None when unknown); a "
                "non-finite one would certify bounds of 0 or nan"
            )
        return cls(tau, convexity, lipschitz_constant(convexity, tau), 1 / tau + convexity)

    @property
    def known(self) -> bool:
        r"""Whether :math:`\lambda` (and so :math:`L`, :math:`\mu`) is known."""
        return self.convexity is not None
