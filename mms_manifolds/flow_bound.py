r"""A certified bound for implicit Euler against the continuous (space-discrete) gradient flow.

For a convex :math:`C^1` energy on :math:`(H_N, M)` (:math:`\lambda \ge 0`), let :math:`u(t)` solve
:math:`u' = -M^{-1}\nabla E(u)` and let :math:`u_0, u_1, \dots` be *any* states at times :math:`t_n`, with
steps :math:`\tau_n = t_n - t_{n-1}` and implicit Euler residuals

.. math:: r_n = M^{-1}\nabla E(u_n) + (u_n - u_{n-1})/\tau_n,\qquad \rho_n = \|r_n\|_M

(the step residual the driver already books; 0 for exact implicit Euler iterates). In the manner of
Nochetto, Savaré & Verdi (2000), with the estimator

.. math:: \mathcal E_n = E(u_{n-1}) - E(u_n) - \nabla E(u_n)\cdot(u_{n-1} - u_n) \;\ge 0

(the Bregman divergence of :math:`E`, non-negative by convexity), the distance
:math:`e_n = \|u(t_n) - u_n\|_M` obeys

.. math:: e_n \le \sqrt{e_{n-1}^2 + \tau_n\mathcal E_n} + \tau_n\rho_n .

The derivation (``docs/theory.md``, section 8) compares :math:`u` with the piecewise linear interpolant
of the states; it uses convexity twice and nothing else (no smoothness in time, no step restriction).
For exact implicit Euler iterates (:math:`\rho_n = 0`) it is the estimate of Nochetto, Savaré & Verdi,
:math:`e_N^2 \le e_0^2 + \sum_n \tau_n\mathcal E_n`, of order :math:`\tau^{1/2}` per unit time in the worst
case and :math:`\tau` for smooth flows (:math:`\mathcal E_n = O(\tau_n^2)`).
"""

from __future__ import annotations

import math

import torch

from .energies import Energy

__all__ = ["EulerFlowBound", "bregman_estimator"]

_ROUNDING = 64
"""Rounding slack of the estimator, in units of epsilon times the magnitudes it is made of."""


def bregman_estimator(energy: Energy, u_old: torch.Tensor, u_new: torch.Tensor) -> tuple[float, float]:
    r"""``(estimator, slack)``: :math:`\mathcal E_n = E(u_{n-1}) - E(u_n) - \nabla E(u_n)\cdot(u_{n-1} - u_n)` and its rounding slack.

    The slack is ``64`` :math:`\varepsilon(|E(u_{n-1})| + |E(u_n)| + |\nabla E(u_n)|\cdot|u_{n-1} - u_n|)`.
    """
    old, new = float(energy.value(u_old)), float(energy.value(u_new))
    gradient = energy.gradient(u_new)
    difference = u_old - u_new
    pairing = float((gradient * difference).sum())
    magnitude = abs(old) + abs(new) + float((gradient.abs() * difference.abs()).sum())
    return old - new - pairing, _ROUNDING * torch.finfo(u_new.dtype).eps * magnitude


class EulerFlowBound:
    r"""The recursion :math:`e_n \le \sqrt{e_{n-1}^2 + \tau_n\mathcal E_n} + \tau_n\rho_n` (module docstring), checked.

    Args:
        convexity: the energy's declared modulus :math:`\lambda`; the bound needs :math:`\lambda \ge 0`.

    Raises:
        ValueError: :math:`\lambda < 0` or unknown (``None``): the estimate is derived for convex energies only.
    """

    def __init__(self, convexity: float | None):
        if convexity is None or not math.isfinite(convexity) or convexity < 0:
            raise ValueError(
                f"the continuous-flow bound needs a convex energy (lambda >= 0), got lambda = {convexity}: with "
                "lambda < 0 the interpolant comparison leaves a growing term that is not derived here"
            )
        self.convexity = float(convexity)

    def step(
        self, previous: float, energy: Energy, u_old: torch.Tensor, u_new: torch.Tensor, tau: float, residual: float
    ) -> tuple[float, str | None]:
        r"""``(e_n bound, problem)``: the bound after a step of length ``tau`` with residual :math:`\rho_n` = ``residual``.

        ``problem`` is ``None``, or why the bound cannot be certified: the estimator is negative beyond
        rounding (the energy is not convex along the step, contradicting the declared modulus), or a
        quantity is not finite.
        """
        estimator, slack = bregman_estimator(energy, u_old, u_new)
        if not (math.isfinite(estimator) and math.isfinite(residual) and math.isfinite(previous)):
            return math.nan, f"a quantity of the continuous-flow bound is not finite ({estimator}, {residual})"
        if estimator < -slack:
            return math.nan, (
                f"the Bregman estimator E(u_n-1) - E(u_n) - <grad E(u_n), u_n-1 - u_n> = {estimator:.3g} is negative: "
                "the energy is not convex along the step"
            )
        return math.sqrt(previous**2 + tau * (max(estimator, 0.0) + slack)) + tau * residual, None
