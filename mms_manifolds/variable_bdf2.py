r"""The tracking bound of variable-step BDF2 against the exact variable-step BDF2 iterates (``docs/theory.md``, §7).

With :math:`\omega = \tau_{k+1}/\tau_k` the errors :math:`e_k = u_k - v_k` of the computed against the exact
iterates (same steps) satisfy, tested with :math:`e_{k+1}` and multiplied by :math:`\tau_{k+1}`,

.. math:: \langle \alpha e_{k+1} - \beta e_k + \gamma e_{k-1}, e_{k+1}\rangle_M + \tau_{k+1}\lambda\|e_{k+1}\|_M^2
    \le \tau_{k+1}\rho_k\|e_{k+1}\|_M,\qquad \alpha = \frac{1 + 2\omega}{1 + \omega},\ \beta = 1 + \omega,\
    \gamma = \frac{\omega^2}{1 + \omega}

(:func:`difference_coefficients`). A **step-dependent G-matrix** replaces Dahlquist's: with the 2 x 2 form
:math:`G_k` of the previous step and any :math:`\kappa > 0`, the form

.. math:: G_{k+1} = \begin{pmatrix} \alpha - \gamma^2/(4\kappa g_{22}) & -\beta/2 - \gamma g_{12}/(2g_{22}) \\
    -\beta/2 - \gamma g_{12}/(2g_{22}) & \kappa\,(g_{11} - g_{12}^2/g_{22}) \end{pmatrix}

(:func:`riccati_form`, the minimum over :math:`e_{k-1}` of :math:`\langle\alpha a - \beta b + \gamma c, a\rangle +
\kappa G_k(b, c)`) gives, for all vectors :math:`a, b, c`,

.. math:: \langle \alpha a - \beta b + \gamma c, a\rangle \ge G_{k+1}(a, b) - \kappa\,G_k(b, c),

so :math:`g_k^2 = G_k(e_k, e_{k-1})` obeys :math:`g_{k+1}^2 + \tau_{k+1}\lambda\|e_{k+1}\|^2 \le \kappa g_k^2 + \tau_{k+1}
\rho_k\|e_{k+1}\|`, and :math:`\|e_{k+1}\| \le C_{k+1} g_{k+1}`, :math:`C_{k+1}^{-2} = g_{11} - g_{12}^2/g_{22}` of
:math:`G_{k+1}` (:func:`norm_constant`). At :math:`\omega = 1`, :math:`\kappa = 1` Dahlquist's matrix is the fixed
point. :math:`\kappa` is free (the bound holds for every :math:`\kappa`); :func:`growth_factor` chooses the one
minimising :math:`\kappa/\nu`, :math:`\nu` the smallest eigenvalue of :math:`G_{k+1}` relative to Dahlquist's, so
the form stays comparable to it while the bound grows least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .ledger import BDF2Ledger, BoundParts, TrackingLedger
from .metrics.base import Metric
from .schemes import BDF2, BDF2_G_MATRIX, ZERO_STABLE_RATIO
from .step_constants import StepConstants
from .subproblem import Residual

__all__ = [
    "DAHLQUIST_FORM",
    "ResolventBall",
    "constant_step_ball",
    "VariableBDF2Ledger",
    "VariableStep",
    "difference_coefficients",
    "growth_factor",
    "next_form",
    "norm_constant",
    "riccati_form",
]

Form = tuple[float, float, float]
r"""A symmetric 2 x 2 form :math:`(g_{11}, g_{12}, g_{22})`, :math:`G(a, b) = g_{11}\|a\|^2 + 2g_{12}\langle a, b\rangle + g_{22}\|b\|^2`."""

DAHLQUIST_FORM: Form = (BDF2_G_MATRIX[0][0], BDF2_G_MATRIX[0][1], BDF2_G_MATRIX[1][1])
r"""Dahlquist's G-matrix of constant-step BDF2, :math:`(5/4, -1/2, 1/4)`, the form of every constant-step run."""

ROUNDING_SLACK = 1e-12
r""":math:`G_{k+1}` is booked as :math:`(1 - 10^{-12})` times the computed :func:`riccati_form`: the exact inequality is
tight (singular in :math:`e_{k-1}`), and the slack :math:`10^{-12} G_{k+1}` covers the rounding of its entries."""

_SEARCH_ITERATIONS = 100
_SEARCH_WIDTH = 12.0


def difference_coefficients(ratio: float) -> tuple[float, float, float]:
    r""":math:`(\alpha, \beta, \gamma)` of :math:`\tau_{k+1}` times the variable-step BDF2 difference, :math:`\omega` = ``ratio``.

    :math:`\alpha u_{k+1} - \beta u_k + \gamma u_{k-1} = (u_{k+1} - \tilde u_k)\,\tau_{k+1}/\tau'` with
    :math:`\alpha = (1 + 2\omega)/(1 + \omega)`, :math:`\beta = 1 + \omega`, :math:`\gamma = \omega^2/(1 + \omega)`
    (:math:`\alpha - \beta + \gamma = 0`); at :math:`\omega = 1` the constant-step :math:`(3/2, 2, 1/2)`.
    """
    anchor_newest, anchor_older, share = BDF2.coefficients(ratio)
    alpha = 1 / share
    return alpha, alpha * anchor_newest, -alpha * anchor_older


def schur_complement(form: Form) -> float:
    r""":math:`g_{11} - g_{12}^2/g_{22} = \min_b G(a, b)/\|a\|^2` (``-inf`` unless :math:`g_{22} > 0`)."""
    g11, g12, g22 = form
    return g11 - g12 * g12 / g22 if g22 > 0 else -math.inf


def norm_constant(form: Form) -> float:
    r""":math:`C = \sup_{a, b} \|a\|/\sqrt{G(a, b)} = (g_{11} - g_{12}^2/g_{22})^{-1/2}` (2 for Dahlquist's form)."""
    return 1 / math.sqrt(schur_complement(form))


def riccati_form(form: Form, ratio: float, growth: float) -> Form:
    r""":math:`\min_c\,\langle\alpha a - \beta b + \gamma c, a\rangle + \kappa G_k(b, c)` as a form in :math:`(a, b)` (module docstring).

    ``form`` is :math:`G_k`, ``growth`` :math:`\kappa > 0`; the minimiser is :math:`c = -(\gamma a + 2\kappa g_{12} b)/(2\kappa g_{22})`.
    """
    alpha, beta, gamma = difference_coefficients(ratio)
    g11, g12, g22 = form
    cross = -beta / 2 - gamma * g12 / (2 * g22)
    return alpha - gamma * gamma / (4 * growth * g22), cross, growth * (g11 - g12 * g12 / g22)


def _relative_size(form: Form) -> float:
    r"""The smallest :math:`\nu` with :math:`\det(G - \nu G_D) = 0`, :math:`G_D` Dahlquist's form (``-inf`` unless :math:`G` is definite)."""
    if not (form[2] > 0 and schur_complement(form) > 0):
        return -math.inf
    d11, d12, d22 = DAHLQUIST_FORM
    g11, g12, g22 = form
    a = d11 * d22 - d12 * d12
    b = -(g11 * d22 + g22 * d11 - 2 * g12 * d12)
    c = g11 * g22 - g12 * g12
    return (-b - math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def growth_factor(form: Form, ratio: float) -> float:
    r"""The :math:`\kappa` minimising :math:`\kappa/\nu(\kappa)`, :math:`\nu` the smallest eigenvalue of :func:`riccati_form` relative to :data:`DAHLQUIST_FORM`.

    :math:`G_{k+1}` is definite exactly for :math:`\kappa > \kappa_0 = (p_{12}^2 + \gamma^2 s/(4g_{22}))/(\alpha s)`,
    :math:`s = g_{11} - g_{12}^2/g_{22}`; the search is a golden-section one in :math:`\log\kappa` over
    :math:`(\log\kappa_0, \log\kappa_0 + 12]`. Any :math:`\kappa > \kappa_0` gives a valid bound; this one only keeps it tight.
    """
    alpha, _, gamma = difference_coefficients(ratio)
    g11, g12, g22 = form
    schur = schur_complement(form)
    cross = riccati_form(form, ratio, 1.0)[1]
    lowest = math.log((cross * cross + gamma * gamma * schur / (4 * g22)) / (alpha * schur))

    def cost(log_growth: float) -> float:
        growth = math.exp(log_growth)
        size = _relative_size(riccati_form(form, ratio, growth))
        return growth / size if size > 0 else math.inf

    golden = (math.sqrt(5) - 1) / 2
    low, high = lowest, lowest + _SEARCH_WIDTH
    left, right = high - golden * (high - low), low + golden * (high - low)
    cost_left, cost_right = cost(left), cost(right)
    for _ in range(_SEARCH_ITERATIONS):
        if cost_left <= cost_right:
            high, right, cost_right = right, left, cost_left
            left = high - golden * (high - low)
            cost_left = cost(left)
        else:
            low, left, cost_left = left, right, cost_right
            right = low + golden * (high - low)
            cost_right = cost(right)
    return math.exp(left if cost_left <= cost_right else right)


def next_form(form: Form, ratio: float) -> tuple[float, Form]:
    r""":math:`(\kappa, G_{k+1})`: :func:`growth_factor` and :math:`(1 - 10^{-12})` times :func:`riccati_form` (:data:`ROUNDING_SLACK`)."""
    growth = growth_factor(form, ratio)
    return growth, tuple((1 - ROUNDING_SLACK) * entry for entry in riccati_form(form, ratio, growth))


@dataclass(frozen=True)
class ResolventBall:
    r"""Where the exact step puts :math:`e_{k+1}`: :math:`e_{k+1} = h + q + \tfrac{L'}{2}d`, :math:`d = a\,e_k + b\,e_{k-1}`.

    With :math:`h = u_{k+1} - \operatorname{prox}_{\tau'E}(\tilde u_k)`, :math:`w = \operatorname{prox}(\tilde u_k) -
    \operatorname{prox}(\tilde v_k)` and :math:`q = w - L'd/2`, :math:`\lambda`-convexity gives
    :math:`\langle d - w, w\rangle \ge \tau'\lambda\|w\|^2`, i.e. :math:`\|q\| \le L'\|d\|/2`, :math:`L' = 1/(1 + \tau'\lambda)`.

    Attributes:
        distance: :math:`\eta_k \ge \|h\|_M` (:math:`\rho_k/\mu' + \delta_k`).
        lipschitz: :math:`L'`.
        anchor: :math:`D_k \ge \|d\|_M`.
        newest_weight: :math:`a` (the anchor's weight of :math:`u_k`).
        older_weight: :math:`b` (of :math:`u_{k-1}`).
        newest_bound: :math:`B_k \ge \|e_k\|_M`.
        older_bound: :math:`B_{k-1} \ge \|e_{k-1}\|_M`.
    """

    distance: float
    lipschitz: float
    anchor: float
    newest_weight: float
    older_weight: float
    newest_bound: float
    older_bound: float

    def combination_bound(self, alpha: float, beta: float) -> float:
        r"""A bound on :math:`\|\alpha e_{k+1} - \beta e_k\|_M` from the ball (not yet capped by :math:`|\alpha|B_{k+1} + |\beta|B_k`).

        .. math:: |\alpha|\eta_k + \frac{|\alpha|L'}{2}D_k + \min\Big(\big|\tfrac{\alpha L'a}{2} - \beta\big|B_k
            + \big|\tfrac{\alpha L'b}{2}\big|B_{k-1},\ \frac{|\alpha|L'}{2}D_k + |\beta|B_k\Big),

        since :math:`\alpha e_{k+1} - \beta e_k = \alpha h + \alpha q + (\tfrac{\alpha L'a}{2} - \beta)e_k + \tfrac{\alpha L'b}{2}e_{k-1}`.
        """
        share = alpha * self.lipschitz / 2
        tail = min(
            abs(share * self.newest_weight - beta) * self.newest_bound
            + abs(share * self.older_weight) * self.older_bound,
            abs(share) * self.anchor + abs(beta) * self.newest_bound,
        )
        return abs(alpha) * self.distance + abs(share) * self.anchor + tail

    def as_list(self) -> list[float]:
        """The record's JSON form: the seven attributes in order."""
        return [
            self.distance,
            self.lipschitz,
            self.anchor,
            self.newest_weight,
            self.older_weight,
            self.newest_bound,
            self.older_bound,
        ]


@dataclass(frozen=True)
class VariableStep:
    r"""One variable-step BDF2 step booked: G-norm parts, bound parts, :math:`W_{k+1} \ge \|4e_{k+1} - e_k\|_M`, :math:`G_{k+1}`, the ball.

    Attributes:
        g_norm: :math:`g_{k+1}` per part.
        bound: :math:`B_{k+1}` per part.
        anchor_bound: :math:`W_{k+1}`.
        form: :math:`G_{k+1}`.
        ball: the step's :class:`ResolventBall`.
        growth: the :math:`\kappa` used.
    """

    g_norm: BoundParts
    bound: BoundParts
    anchor_bound: float
    form: Form
    ball: ResolventBall
    growth: float


class VariableBDF2Ledger:
    r"""The step-dependent G-norm bound of variable-step BDF2 (module docstring; ``docs/theory.md``, section 7).

    Per step, with :math:`\kappa, G_{k+1}` from :func:`next_form`, :math:`C = C_{k+1}` (:func:`norm_constant`),
    :math:`c = 1/(1 - \tau_{k+1}\lambda_-C^2)` and :math:`\sigma_k = \tau_{k+1}\rho_k + \delta_k`:

    .. math:: g_{k+1} = \tfrac{c\sigma_kC}{2} + \sqrt{\big(\tfrac{c\sigma_kC}{2}\big)^2 + c\kappa g_k^2},\qquad
        B_{k+1} = \min\big(C g_{k+1},\ x^*_k,\ \eta_k + L'D_k\big),

    :math:`x^*_k` the largest root of the G-norm inequality with :math:`\|e_k\| \le B_k` (:meth:`g_norm_bound`),
    :math:`\eta_k + L'D_k` the direct bound through the exact step's Lipschitz constant. At :math:`\omega = 1` with
    Dahlquist's form this is :class:`~mms_manifolds.ledger.BDF2Ledger`'s bound but for :math:`\kappa` (the driver books
    constant-step runs with that ledger).

    Args:
        convexity: :math:`\lambda`, finite.
        metric: :math:`M`, as for :class:`~mms_manifolds.ledger.TrackingLedger`.
        dtype: the states' dtype, for :math:`\varepsilon`.
        size: :math:`Nm`, the number of entries of a state.
    """

    def __init__(self, convexity: float, metric: Metric, dtype: torch.dtype, size: int):
        if not math.isfinite(convexity):
            raise ValueError(f"the convexity modulus must be finite, got {convexity}")
        self.convexity, self.metric = float(convexity), metric
        self.allowance = TrackingLedger(StepConstants.of(1.0, 0.0), metric, dtype, size)

    def constants(self, tau: float, ratio: float, form: Form) -> tuple[float, Form, float, float, float]:
        r""":math:`(\kappa, G_{k+1}, C_{k+1}, c, L')` of a step of ``tau`` at ``ratio`` after the form ``form``.

        Raises:
            ValueError: the ratio is not below :math:`1 + \sqrt2` (zero stability), the new form is not definite,
                :math:`\tau_{k+1}\lambda_-C_{k+1}^2 \ge 1` or :math:`1 + \tau'\lambda \le 0` (no bound derived there);
                each message names the reason.
        """
        if not (0 < ratio < ZERO_STABLE_RATIO):
            raise ValueError(
                f"variable-step BDF2 bound: step ratio tau_k+1 / tau_k = {ratio:.6g} is not below 1 + sqrt(2) = "
                f"{ZERO_STABLE_RATIO:.6f}, where the scheme is not zero-stable"
            )
        growth, new_form = next_form(form, ratio)
        schur = schur_complement(new_form)
        if not (math.isfinite(growth) and new_form[2] > 0 and schur > 0):
            raise ValueError(f"variable-step BDF2 bound: the step's G-matrix {new_form} is not definite")
        constant = norm_constant(new_form)
        negative_part = max(-self.convexity, 0.0)
        if 1 - tau * negative_part * constant**2 <= 0:
            raise ValueError(
                f"the variable-step BDF2 G-norm bound needs tau lambda_- C^2 < 1; tau = {tau}, lambda = "
                f"{self.convexity:.6g}, C = {constant:.6g}: tau must be below {1 / (negative_part * constant**2):.6g}"
            )
        effective = BDF2.coefficients(ratio)[2] * tau
        if 1 + effective * self.convexity <= 0:
            raise ValueError(
                f"the variable-step BDF2 bound needs 1 + tau' lambda > 0 (tau' = {effective:.6g}, lambda = "
                f"{self.convexity:.6g}): the exact step is not a contraction's resolvent there"
            )
        growth_negative = 1 / (1 - tau * negative_part * constant**2)
        return growth, new_form, constant, growth_negative, 1 / (1 + effective * self.convexity)

    def g_norm_bound(
        self, form: Form, growth: float, tau: float, previous_g: float, previous_bound: float, sigma: float
    ) -> float:
        r"""The largest :math:`x \ge 0` with :math:`\varphi(x) + \tau\lambda x^2 - \sigma x - \kappa g_k^2 \le 0`: a bound on :math:`\|e_{k+1}\|`.

        :math:`\varphi(x) = s x^2 + g_{22}\big(|g_{12}|x/g_{22} - B_k\big)_+^2 \le G_{k+1}(e_{k+1}, e_k)` for
        :math:`x = \|e_{k+1}\|`, :math:`\|e_k\| \le B_k` (:math:`s` the Schur complement: the minimum of
        :math:`2g_{12}\langle a, b\rangle + g_{22}\|b\|^2` over :math:`\|b\| \le B_k`). Both pieces are convex parabolas
        (:math:`s + \tau\lambda > 0`) meeting with one slope at :math:`x = g_{22}B_k/|g_{12}|`, and the value at 0 is
        :math:`\le 0`, so the set is an interval :math:`[0, x^*]`. With Dahlquist's form it is
        :meth:`~mms_manifolds.ledger.BDF2Ledger.g_norm_bound`.
        """
        g11, g12, g22 = form
        schur, curvature = schur_complement(form), tau * self.convexity
        kink = math.inf if g12 == 0 else g22 * previous_bound / abs(g12)
        left = (schur + curvature, sigma, -growth * previous_g**2)
        right = (
            g11 + curvature,
            2 * abs(g12) * previous_bound + sigma,
            g22 * previous_bound**2 - growth * previous_g**2,
        )
        a, b, c = left
        if math.isfinite(kink) and a * kink * kink - b * kink + c <= 0:  # the root lies on the right piece
            a, b, c = right
        return (b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)

    def step(
        self,
        tau: float,
        ratio: float,
        form: Form,
        previous: BoundParts,
        residual: Residual,
        u_new: torch.Tensor,
        u_old: torch.Tensor,
        bounds: tuple[float, float, float],
        ball: ResolventBall | None,
    ) -> VariableStep:
        r"""Book the step of ``tau`` at ``ratio`` from :math:`G_k` (``form``), :math:`g_k` (``previous``) and ``bounds`` :math:`= (B_k, B_{k-1}, W_k)`.

        ``ball`` is the previous step's :class:`ResolventBall` (``None`` after the start), which bounds the anchor's
        error :math:`D_k \ge \|a e_k + b e_{k-1}\|` besides :math:`aB_k + |b|B_{k-1}` and
        :math:`\tfrac a4 W_k + |\tfrac a4 + b|B_{k-1}`. The G-norm total is the minimum of the recursion,
        :math:`\sqrt{\kappa g_k^2 + \max_{0 \le x \le B_{k+1}}(\sigma_k x - \tau\lambda x^2)}` and
        :math:`\sqrt{sB_{k+1}^2 + g_{22}S_{k+1}^2}`, :math:`S_{k+1} \ge \|e_k - t e_{k+1}\|`, :math:`t = -g_{12}/g_{22}`
        (:math:`G(a, b) = s\|a\|^2 + g_{22}\|b - ta\|^2`). The parts keep the pure recursion (Minkowski: their sum
        bounds the total).

        Raises:
            ValueError: from :meth:`constants`.
        """
        growth, new_form, constant, c, lipschitz = self.constants(tau, ratio, form)
        newest, older, anchor = bounds
        weight_newest, weight_older, share = BDF2.coefficients(ratio)
        effective = share * tau
        delta = self.allowance.rounding_allowance(u_new, u_old)
        sigma = tau * residual.total + delta

        def advance(g: float, s: float) -> float:
            half = c * s * constant / 2
            return half + math.sqrt(half * half + c * growth * g * g)

        g_norms = BoundParts(
            advance(previous.tracking_bound, sigma),
            advance(previous.inexactness, tau * residual.tangential),
            advance(previous.approximation, tau * residual.normal),
            advance(previous.rounding, delta),
        )
        parts = BoundParts(*(constant * part for part in _parts(g_norms)))
        anchor_error = min(
            weight_newest * newest + abs(weight_older) * older,
            weight_newest / 4 * anchor + abs(weight_newest / 4 + weight_older) * older,
        )
        if ball is not None:
            anchor_error = min(anchor_error, ball.combination_bound(weight_newest, -weight_older))
        distance = residual.total / (1 / effective + self.convexity) + delta
        total = min(
            parts.tracking_bound,
            self.g_norm_bound(new_form, growth, tau, previous.tracking_bound, newest, sigma),
            distance + lipschitz * anchor_error,
        )
        here = ResolventBall(distance, lipschitz, anchor_error, weight_newest, weight_older, newest, older)
        g12, g22 = new_form[1], new_form[2]
        slope = -g12 / g22
        tail = min(here.combination_bound(slope, 1.0), abs(slope) * total + newest)
        curvature = tau * self.convexity
        x = min(total, sigma / (2 * curvature)) if curvature > 0 else total
        g_total = min(
            g_norms.tracking_bound,
            math.sqrt(growth * previous.tracking_bound**2 + max(sigma * x - curvature * x * x, 0.0)),
            math.sqrt(schur_complement(new_form) * total**2 + g22 * tail**2),
        )
        quadrupled = min(here.combination_bound(4.0, 1.0), 4 * total + newest)
        return VariableStep(
            BoundParts(g_total, g_norms.inexactness, g_norms.approximation, g_norms.rounding),
            BoundParts(total, parts.inexactness, parts.approximation, parts.rounding),
            quadrupled,
            new_form,
            here,
            growth,
        )


def constant_step_ball(
    ledger: BDF2Ledger, residual: Residual, u_new: torch.Tensor, u_old: torch.Tensor, bounds: tuple[float, float, float]
) -> ResolventBall:
    r"""The :class:`ResolventBall` of a constant-step step booked by ``ledger`` with ``bounds`` :math:`= (B_k, B_{k-1}, W_k)`.

    :math:`a = 4/3`, :math:`b = -1/3`, :math:`D_k = \min(W_k, 4B_k + B_{k-1})/3`, :math:`\eta_k = \rho_k/\mu' + \delta_k`:
    the quantities :meth:`~mms_manifolds.ledger.BDF2Ledger.step` used, kept so that a variable step after it can bound
    its own anchor's error.
    """
    newest, older, anchor = bounds
    lipschitz, mu = ledger.step_constants()
    distance = residual.total / mu + ledger.allowance.rounding_allowance(u_new, u_old)
    weight_newest, weight_older, _ = BDF2.coefficients(1.0)
    return ResolventBall(
        distance, lipschitz, min(anchor, 4 * newest + older) / 3, weight_newest, weight_older, newest, older
    )


def _parts(bound: BoundParts) -> tuple[float, float, float, float]:
    return (bound.tracking_bound, bound.inexactness, bound.approximation, bound.rounding)
