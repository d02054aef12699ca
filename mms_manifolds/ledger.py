r"""The tracking bound of the neural MMS and the checks that keep it honest.

With :math:`\lambda` the energy's convexity modulus in the metric :math:`M`, :math:`\mu = 1/\tau + \lambda` the
strong convexity of each step and :math:`L = 1/(1 + \tau\lambda)` the Lipschitz constant of the exact
step, the distance of the computed iterates :math:`u_k` to the exact MMS iterates :math:`v_k` obeys

.. math:: \|u_{k+1} - v_{k+1}\|_M \le B_{k+1} = L B_k + \rho_k/\mu + \delta_k,\qquad B_0 = \|u_0 - v_0\|_M,

where :math:`\rho_k = \|M^{-1}\nabla F_k(u_{k+1})\|_M` is the a-posteriori residual of the step
(``docs/driver.md``). :math:`\rho_k` splits orthogonally into the tangential (inner-solver) and normal
(approximation) parts, and :math:`B_k` into their propagated sums. The recursion reads :math:`\rho_k` alone:
a residual booked as its total (:meth:`~mms_manifolds.subproblem.Residual.total_only`,
``run(residual="total")``) gives the same :math:`B_k` and rounding part, and ``nan`` inexactness and
approximation parts (``docs/theory.md``, section 5). :math:`\delta_k` is the floating-point allowance

.. math:: \delta_k = c\,\big(\kappa\,\varepsilon\,(\|u_{k+1}\|_M + \|u_k\|_M) + 2\sqrt{Nm\,t}\big),\qquad c = 16 + \sqrt{Nm},

with :math:`\varepsilon` the dtype's machine epsilon: the rounding of :math:`u_{k+1} - u_k` (divided by
:math:`\tau` inside :math:`\rho_k`, multiplied by :math:`1/\mu \le \tau` again), of the exact reference, and of
the norms, each a few :math:`\varepsilon` times the states' size, summed over :math:`Nm` entries. It makes the
bound hold as computed where :math:`\tau` is so small that :math:`\rho_k/\mu` sinks below rounding (float64 at
:math:`\tau = 10^{-12}`, float32 at :math:`10^{-4}`; ``docs/reliability.md``). :math:`\kappa` is the condition
number of the solve with :math:`M` (:meth:`~mms_manifolds.metrics.Metric.solve_condition`: 1 for diagonal metrics,
:math:`\lambda_{\max}/\lambda_{\min}` for a factored matrix, whose solve can amplify rounding that much; an
ill-conditioned ``MatrixMetric`` once gave :math:`e_k > B_k` in the 11th digit). :math:`t` is the dtype's smallest
normal number: a norm :math:`\sqrt{\sum_i v_iM_{ii}v_i}` of values near :math:`10^{-160}` sums squares that underflow,
each with an absolute error up to :math:`t`, so the norm is off by up to :math:`\sqrt{Nm\,t}`.

Two checks run every step. The declared modulus is tested against the curvature the step shows,
:math:`\langle\nabla E(u_{k+1}) - \nabla E(u_k), u_{k+1} - u_k\rangle \ge \lambda\|u_{k+1} - u_k\|_M^2`, which every
:math:`\lambda`-convex energy satisfies (up to rounding): a modulus declared larger than the truth fails it
sooner or later. A non-finite residual or state is caught. Either withdraws certification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .energies import Energy
from .metrics.base import Metric
from .step_constants import StepConstants
from .subproblem import Residual

__all__ = ["BDF2Ledger", "BoundParts", "TrackingLedger"]

_CURVATURE_ROUNDING = 64
"""Rounding slack of the curvature check, in units of epsilon times the sum of absolute products."""


@dataclass(frozen=True)
class BoundParts:
    r""":math:`B_k` and its parts: propagated tangential residuals, normal residuals, and rounding allowances."""

    tracking_bound: float
    inexactness: float
    approximation: float
    rounding: float

    @classmethod
    def undefined(cls) -> BoundParts:
        """Every part ``nan``: no certified bound."""
        return cls(math.nan, math.nan, math.nan, math.nan)

    @classmethod
    def start(cls, initial_error: float) -> BoundParts:
        r""":math:`B_0 = \|u_0 - v_0\|_M` (0 when no :math:`v_0` is known: the flow starts at :math:`u_0`), no parts yet."""
        return cls(0.0 if math.isnan(initial_error) else initial_error, 0.0, 0.0, 0.0)


class TrackingLedger:
    r"""The recursion :math:`B_{k+1} = L B_k + \rho_k/\mu + \delta_k` and its two checks (module docstring).

    Args:
        constants: the step's :math:`\tau`, :math:`\lambda`, :math:`L`, :math:`\mu`; :math:`\lambda` known.
        metric: :math:`M`, for the norms of the allowance and the curvature check.
        dtype: the states' dtype, for :math:`\varepsilon`.
        size: :math:`Nm`, the number of entries of a state.
    """

    def __init__(self, constants: StepConstants, metric: Metric, dtype: torch.dtype, size: int):
        if not constants.known:
            raise ValueError("the tracking bound needs the energy's convexity modulus; it is unknown (None)")
        self.constants, self.metric = constants, metric
        self.convexity = constants.convexity
        self.epsilon = torch.finfo(dtype).eps
        self.rounding_constant = 16 + math.sqrt(size)
        self.underflow = math.sqrt(size * torch.finfo(dtype).smallest_normal)

    def rounding_allowance(self, u_new: torch.Tensor, u_old: torch.Tensor) -> float:
        r""":math:`\delta_k = c\,(\kappa\varepsilon\,(\|u_{k+1}\|_M + \|u_k\|_M) + 2\sqrt{Nm\,t})` (module docstring)."""
        size = float(self.metric.norm(u_new)) + float(self.metric.norm(u_old))
        condition = self.metric.solve_condition(tuple(u_new.shape[-2:]), dtype=u_new.dtype, device=u_new.device)
        return self.rounding_constant * (condition * self.epsilon * size + 2 * self.underflow)

    def step(self, previous: BoundParts, residual: Residual, u_new: torch.Tensor, u_old: torch.Tensor) -> BoundParts:
        r"""The parts of :math:`B_{k+1}` from those of :math:`B_k` and the step's residual (its split parts ``nan`` where not computed)."""
        lipschitz, mu = self.constants.lipschitz, self.constants.strong_convexity
        allowance = self.rounding_allowance(u_new, u_old)
        return BoundParts(
            tracking_bound=lipschitz * previous.tracking_bound + residual.total / mu + allowance,
            inexactness=lipschitz * previous.inexactness + residual.tangential / mu,
            approximation=lipschitz * previous.approximation + residual.normal / mu,
            rounding=lipschitz * previous.rounding + allowance,
        )

    def curvature_violation(self, energy: Energy, u_new: torch.Tensor, u_old: torch.Tensor) -> str | None:
        r"""``None`` if :math:`\langle\nabla E(u_{k+1}) - \nabla E(u_k), \Delta u\rangle \ge \lambda\|\Delta u\|_M^2` up to rounding, else why not.

        The slack is ``64`` :math:`\varepsilon` times the sums of absolute products the two sides are made of,
        so a step too short to resolve the curvature never fails the check.
        """
        step = u_new - u_old
        gradient_new, gradient_old = energy.gradient(u_new), energy.gradient(u_old)
        seen = float(((gradient_new - gradient_old) * step).sum())
        weighted = self.metric.apply(step)
        length_squared = float((weighted * step).sum())
        declared = self.convexity * length_squared
        magnitude = float(((gradient_new.abs() + gradient_old.abs()) * step.abs()).sum())
        magnitude += abs(self.convexity) * float((weighted * step).abs().sum())
        if not math.isfinite(seen):
            return f"the energy's gradient is not finite along the step ({seen})"
        if seen >= declared - _CURVATURE_ROUNDING * self.epsilon * magnitude:
            return None
        return (
            f"the declared convexity modulus {self.convexity:.6g} exceeds the curvature seen along the step, "
            f"{seen / length_squared:.6g} (<grad E(u_k+1) - grad E(u_k), u_k+1 - u_k> < lambda ||u_k+1 - u_k||_M^2)"
        )


class BDF2Ledger:
    r"""The G-norm tracking bound of constant-step BDF2 against the exact BDF2 iterates (``docs/theory.md``, section 7).

    With :math:`e_k = u_k - v_k`, :math:`g_k \ge \|(e_k, e_{k-1})\|_G` (Dahlquist's G-norm,
    :data:`~mms_manifolds.schemes.BDF2_G_MATRIX`), :math:`\rho_k` the step's residual and
    :math:`c = 1/(1 - 4\tau\lambda_-)`, :math:`\lambda_- = \max(-\lambda, 0)`:

    .. math:: g_{k+1} = c\,\sigma_k + \sqrt{c^2\sigma_k^2 + c\,g_k^2},\qquad \sigma_k = \tau\rho_k + \delta_k,\qquad
        \|u_{k+1} - v_{k+1}\|_M \le B_{k+1} = \min\big(2\,g_{k+1},\ x^*_k,\ L'W_k/3 + \rho_k/\mu' + \delta_k\big),

    with :math:`x^*_k` the G-norm bound that also uses :math:`B_k` (:meth:`g_norm_bound`) and
    :math:`W_k \ge \|4e_k - e_{k-1}\|_M` carried from step to step (:meth:`combination_bound`; :meth:`step`),
    started from :math:`g_1 = \tfrac12\sqrt{B_1^2 + (2B_1 + B_0)^2}` with :math:`B_0, B_1` bounds on the first two
    errors. The factor 2 is the norm-equivalence constant :math:`\|e_{k+1}\| \le 2\|(e_{k+1}, e_k)\|_G`. Each part
    (inexactness, approximation, rounding) runs the same recursion with its own residual; by Minkowski's
    inequality the parts' sum bounds the total. :math:`\delta_k` is :class:`TrackingLedger`'s allowance.

    Args:
        convexity: :math:`\lambda`, finite, with :math:`4\tau\lambda_- < 1`.
        tau: the (constant) time step :math:`\tau` (not the effective :math:`2\tau/3`).
        metric: :math:`M`, as for :class:`TrackingLedger`.
        dtype: the states' dtype, for :math:`\varepsilon`.
        size: :math:`Nm`, the number of entries of a state.

    Raises:
        ValueError: :math:`1 - 4\tau\lambda_- \le 0` (no bound derived there).
    """

    NORM_CONSTANT = 2.0
    r""":math:`\sup \|a\| / \|(a, b)\|_G = 2`, the constant between the G-norm and the newest error."""

    def __init__(self, convexity: float, tau: float, metric: Metric, dtype: torch.dtype, size: int):
        if not math.isfinite(convexity):
            raise ValueError(f"the convexity modulus must be finite, got {convexity}")
        self.convexity, self.tau, self.metric = float(convexity), float(tau), metric
        negative_part = max(-self.convexity, 0.0)
        if 1 - 4 * self.tau * negative_part <= 0:
            raise ValueError(
                f"the BDF2 G-norm bound needs 4 tau lambda_- < 1; tau = {self.tau}, lambda = {self.convexity:.6g}: "
                f"tau must be below {1 / (4 * negative_part):.6g}"
            )
        self.growth = 1 / (1 - 4 * self.tau * negative_part)
        self.allowance = TrackingLedger(StepConstants.of(self.tau, 0.0), metric, dtype, size)

    def start(self, first: BoundParts, initial: BoundParts) -> BoundParts:
        r""":math:`g_1 = \tfrac12\sqrt{B_1^2 + (2B_1 + B_0)^2}` for each part, from the bounds :math:`B_1` (``first``) and :math:`B_0`."""

        def g_norm(newest: float, older: float) -> float:
            return 0.5 * math.hypot(newest, 2 * newest + older)

        return BoundParts(*(g_norm(a, b) for a, b in zip(_parts(first), _parts(initial))))

    def _advance(self, previous: float, sigma: float) -> float:
        c = self.growth
        return c * sigma + math.sqrt((c * sigma) ** 2 + c * previous**2)

    def step_constants(self) -> tuple[float, float]:
        r""":math:`(L', \mu')`: the exact BDF2 step's Lipschitz constant :math:`1/(1 + \tau'\lambda)` and strong convexity :math:`1/\tau' + \lambda`, :math:`\tau' = 2\tau/3`."""
        effective = 2 * self.tau / 3
        return 1 / (1 + effective * self.convexity), 1 / effective + self.convexity

    def direct_bound(self, residual: float, anchor: float, allowance: float) -> float:
        r""":math:`L'W_k/3 + \rho_k/\mu' + \delta_k`, :math:`W_k \ge \|4e_k - e_{k-1}\|_M` (:meth:`combination_bound`; at worst :math:`4B_k + B_{k-1}`).

        It holds because :math:`\|u_{k+1} - \operatorname{prox}_{\tau'E}(\tilde u_k)\| \le \rho_k/\mu'` and the prox is
        :math:`L'`-Lipschitz in the anchor, :math:`\|\tilde u_k - \tilde v_k\| = \|4e_k - e_{k-1}\|/3`.
        """
        lipschitz, mu = self.step_constants()
        return lipschitz * anchor / 3 + residual / mu + allowance

    def combination_bound(
        self, weight: float, residual: float, allowance: float, bounds: tuple[float, float], anchor: float
    ) -> float:
        r"""A bound on :math:`\|\alpha e_{k+1} - e_k\|_M` (:math:`\alpha` = ``weight``, 2 or 4) from the resolvent's ball.

        With :math:`d = \tilde u_k - \tilde v_k = (4e_k - e_{k-1})/3` and :math:`w = \operatorname{prox}(\tilde u_k) - \operatorname{prox}(\tilde v_k)`,
        :math:`\lambda`-convexity gives :math:`\langle d - w, w\rangle \ge \tau'\lambda\|w\|^2`, i.e.
        :math:`\|w - L'd/2\| \le L'\|d\|/2`, so (``docs/theory.md``, section 7)

        .. math:: \|\alpha e_{k+1} - e_k\| \le \alpha\eta_k + \frac{\alpha L'}{6}W_k
            + \min\Big(\big|\tfrac{2\alpha L'}{3} - 1\big|B_k + \tfrac{\alpha L'}{6}B_{k-1},\ \tfrac{\alpha L'}{6}W_k + B_k\Big),
            \qquad \eta_k = \rho_k/\mu' + \delta_k,

        since :math:`\alpha e_{k+1} - e_k = \alpha(u_{k+1} - \operatorname{prox}(\tilde u_k)) + \alpha(w - L'd/2)
        + (\tfrac{2\alpha L'}{3} - 1)e_k - \tfrac{\alpha L'}{6}e_{k-1}`.
        """
        lipschitz, mu = self.step_constants()
        newest, older = bounds
        share = weight * lipschitz / 6
        tail = min(abs(4 * share - 1) * newest + share * older, share * anchor + newest)
        return weight * (residual / mu + allowance) + share * anchor + tail

    def g_norm_bound(self, previous_g: float, previous_bound: float, sigma: float) -> float:
        r"""The largest :math:`x \ge 0` with :math:`q(x) \le 0`: a bound on :math:`\|e_{k+1}\|` from :math:`g_k`, :math:`B_k` and :math:`\sigma_k`.

        .. math:: q(x) = \frac{x^2 + (2x - B_k)_+^2}{C^2} + \tau\lambda x^2 - \sigma_k x - g_k^2,\qquad C = 2

        (:attr:`NORM_CONSTANT`). The error :math:`x = \|e_{k+1}\|` satisfies it: the energy identity gives
        :math:`g_{k+1}^2 + \tau\lambda x^2 \le g_k^2 + \sigma_k x`, and :math:`C^2 g_{k+1}^2 = x^2 + \|2e_{k+1} - e_k\|^2 \ge x^2 + (2x - B_k)_+^2`
        (``docs/theory.md``, section 7). For :math:`4\tau\lambda_- < 1` the two pieces of :math:`q` are convex
        parabolas meeting with one slope at :math:`x = B_k/2`, :math:`q(0) \le 0`, so :math:`\{q \le 0\} = [0, x^*]`.
        """
        square = self.NORM_CONSTANT**2
        curvature = self.tau * self.convexity
        kink = previous_bound / 2
        if self._q(kink, previous_g, previous_bound, sigma) <= 0:  # the root lies on the right piece
            a = 5 / square + curvature
            b = 4 * previous_bound / square + sigma
            c = previous_bound**2 / square - previous_g**2
        else:
            a, b, c = 1 / square + curvature, sigma, -(previous_g**2)
        return (b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)

    def _q(self, x: float, previous_g: float, previous_bound: float, sigma: float) -> float:
        excess = max(2 * x - previous_bound, 0.0)
        return (x * x + excess * excess) / self.NORM_CONSTANT**2 + self.tau * self.convexity * x * x - sigma * x - previous_g**2

    def g_norm_growth(self, previous_g: float, sigma: float, newest: float) -> float:
        r""":math:`g_{k+1} \le \sqrt{g_k^2 + \max_{0 \le x \le B_{k+1}}(\sigma_k x - \tau\lambda x^2)}`, the energy identity with :math:`\|e_{k+1}\| \le B_{k+1}`."""
        curvature = self.tau * self.convexity
        x = min(newest, sigma / (2 * curvature)) if curvature > 0 else newest
        return math.sqrt(previous_g**2 + max(sigma * x - curvature * x * x, 0.0))

    def step(
        self,
        previous: BoundParts,
        residual: Residual,
        u_new: torch.Tensor,
        u_old: torch.Tensor,
        bounds: tuple[float, float, float] | None = None,
    ) -> tuple[BoundParts, BoundParts, float]:
        r"""``(g_{k+1}, B_{k+1}, W_{k+1})``: the G-norm parts, the bound parts, and the bound on :math:`\|4e_{k+1} - e_k\|_M`.

        Without ``bounds`` the bound parts are :math:`2g_{k+1}` (the pure G-norm recursion) and :math:`W_{k+1}` is
        ``inf``. With ``bounds`` :math:`= (B_k, B_{k-1}, W_k)` the total is the minimum of :math:`2g_{k+1}`,
        :meth:`g_norm_bound` and :meth:`direct_bound`; its G-norm the minimum of the recursion, :meth:`g_norm_growth`
        and :math:`\tfrac12\sqrt{B_{k+1}^2 + S_{k+1}^2}` with :math:`S_{k+1} \ge \|2e_{k+1} - e_k\|` the smaller of
        :meth:`combination_bound` and :math:`2B_{k+1} + B_k`; :math:`W_{k+1}` the smallest of :meth:`combination_bound`,
        :math:`4B_{k+1} + B_k` and :math:`2B_{k+1} + S_{k+1}`. Each bounds the same quantity, so their minimum does.
        The parts stay pure G-norm recursions, so their sum still bounds the total.
        """
        delta = self.allowance.rounding_allowance(u_new, u_old)
        tau = self.tau
        sigma = tau * residual.total + delta
        g_norms = BoundParts(
            tracking_bound=self._advance(previous.tracking_bound, sigma),
            inexactness=self._advance(previous.inexactness, tau * residual.tangential),
            approximation=self._advance(previous.approximation, tau * residual.normal),
            rounding=self._advance(previous.rounding, delta),
        )
        bound = BoundParts(*(self.NORM_CONSTANT * part for part in _parts(g_norms)))
        if bounds is None:
            return g_norms, bound, math.inf
        newest, older, anchor = bounds
        anchor = min(anchor, 4 * newest + older)
        total = min(
            bound.tracking_bound,
            self.g_norm_bound(previous.tracking_bound, newest, sigma),
            self.direct_bound(residual.total, anchor, delta),
        )
        doubled = min(self.combination_bound(2, residual.total, delta, (newest, older), anchor), 2 * total + newest)
        g_total = min(
            g_norms.tracking_bound,
            self.g_norm_growth(previous.tracking_bound, sigma, total),
            0.5 * math.hypot(total, doubled),
        )
        quadrupled = min(
            self.combination_bound(4, residual.total, delta, (newest, older), anchor),
            4 * total + newest,
            2 * total + doubled,
        )
        return (
            BoundParts(g_total, g_norms.inexactness, g_norms.approximation, g_norms.rounding),
            BoundParts(total, bound.inexactness, bound.approximation, bound.rounding),
            quadrupled,
        )


def _parts(bound: BoundParts) -> tuple[float, float, float, float]:
    return (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding)
