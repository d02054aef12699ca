r"""Time schemes of the minimizing movement: which step problem comes next, and its exact solution.

Every scheme here turns the history of states into one proximal problem

.. math:: u_{k+1} = \arg\min_u\; E(u) + \frac{1}{2\tau'}\|u - \tilde u_k\|_M^2 = \operatorname{prox}_{\tau'E}(\tilde u_k),

so the same step problem (and every inner solver) serves all of them; only the anchor
:math:`\tilde u_k` and the effective step :math:`\tau'` change (``docs/theory.md``, section 7):

- :class:`ImplicitEuler`: :math:`\tilde u_k = u_k`, :math:`\tau' = \tau_{k+1}`.
- :class:`BDF2` with the step ratio :math:`\omega = \tau_{k+1}/\tau_k`:
  :math:`\tilde u_k = \big((1 + \omega)^2 u_k - \omega^2 u_{k-1}\big)/(1 + 2\omega)`,
  :math:`\tau' = \tau_{k+1}(1 + \omega)/(1 + 2\omega)`; for a constant step :math:`\tilde u_k = (4u_k - u_{k-1})/3`,
  :math:`\tau' = 2\tau/3`.

Each scheme also estimates its local time error from the states it has (Milne's device with the
extrapolation of the previous states, an *estimate*), and :class:`StepController` chooses the next step
from that estimate and a ``time_tolerance``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._checks import check_integer, check_positive_float
from .energies import Energy
from .metrics.base import Metric

__all__ = [
    "BDF2",
    "BDF2_G_MATRIX",
    "ImplicitEuler",
    "StepController",
    "StepPlan",
    "TimeScheme",
    "adaptive_exact_trajectory",
    "extrapolation_weights",
    "richardson_start",
]

BDF2_G_MATRIX = ((1.25, -0.5), (-0.5, 0.25))
r"""Dahlquist's G-matrix of BDF2 on :math:`(e_{k+1}, e_k)`: :math:`\|E\|_G^2 = \tfrac14(\|e_{k+1}\|^2 + \|2e_{k+1} - e_k\|^2)`.

Its eigenvalues are :math:`(3 \pm 2\sqrt2)/4`; the newest component obeys :math:`\|e_{k+1}\| \le 2\|E\|_G`
(sharp: equality at :math:`e_k = 2e_{k+1}`).
"""

ZERO_STABLE_RATIO = 1 + math.sqrt(2)
r"""Variable-step BDF2 is zero-stable only for step ratios :math:`\omega < 1 + \sqrt2` (Grigorieff 1983)."""


@dataclass(frozen=True)
class StepPlan:
    r"""The next step problem :math:`\min_u E(u) + \|u - \tilde u\|_M^2/(2\tau')`.

    Attributes:
        anchor: :math:`\tilde u`, shape ``(N, m)``.
        tau: the effective step :math:`\tau'` of the proximal problem.
        time_step: :math:`\tau_{k+1} = t_{k+1} - t_k`, the time the step advances.
    """

    anchor: torch.Tensor
    tau: float
    time_step: float


class TimeScheme(ABC):
    r"""A time scheme: from the last states and time steps, the next proximal step problem.

    Attributes:
        order: the scheme's order of accuracy against the continuous flow.
        history: how many past states (the newest included) :meth:`plan` uses once the scheme has started.
        estimate_history: how many past states :meth:`local_error_estimate` needs besides the new one.
        error_constant: :math:`c` of the constant-step local error :math:`c\,\tau^{p+1}\|u^{(p+1)}\|_M` (:meth:`initial_step`).
    """

    order: int
    history: int
    estimate_history: int
    error_constant: float

    @abstractmethod
    def plan(self, states: Sequence[torch.Tensor], time_steps: Sequence[float], tau: float) -> StepPlan:
        r"""The step problem that takes the newest state ``states[-1]`` forward by ``tau``.

        Args:
            states: the states so far, oldest first (only the last :attr:`history` are read).
            time_steps: ``time_steps[j]`` is the step from ``states[j]`` to ``states[j + 1]``
                (``len(states) - 1`` entries).
            tau: :math:`\tau_{k+1} > 0`.
        """

    @abstractmethod
    def local_error_constant(self, time_steps: Sequence[float]) -> float:
        r"""The factor :math:`C` of Milne's estimate :math:`\|\text{local error}\| \approx C\|u_{k+1} - P\|_M` (see :meth:`local_error_estimate`)."""

    @abstractmethod
    def predictor(self, states: Sequence[torch.Tensor], time_steps: Sequence[float]) -> torch.Tensor:
        r"""The polynomial extrapolation :math:`P` of the previous states to the new time (shape ``(N, m)``)."""

    def local_error_estimate(
        self, states: Sequence[torch.Tensor], time_steps: Sequence[float], metric: Metric
    ) -> float:
        r"""An estimate (not a bound) of the last step's local time error, :math:`C\|u_{k+1} - P\|_M`, or ``nan``.

        ``states`` ends with the new state :math:`u_{k+1}`; ``time_steps`` with the step that made it. The
        predictor :math:`P` extrapolates the :attr:`estimate_history` states before it by the polynomial
        of the scheme's order through them; for a smooth solution both :math:`u_{k+1} - u(t_{k+1})` and
        :math:`P - u(t_{k+1})` are multiples of the same derivative :math:`u^{(p+1)}`, whose ratio gives
        :math:`C` (Milne's device). ``nan`` until enough states exist.
        """
        if len(states) < self.estimate_history + 1:
            return math.nan
        needed = self.estimate_history
        predicted = self.predictor(states[-needed - 1 : -1], time_steps[-needed:])
        constant = self.local_error_constant(time_steps[-needed:])
        return constant * float(metric.norm(states[-1] - predicted))

    @abstractmethod
    def step_error_coefficient(self, time_steps: Sequence[float]) -> float:
        r""":math:`\kappa`: the local error of the step that ends ``time_steps`` is :math:`\kappa\|u^{(p+1)}\|_M` to leading order (a model).

        ``time_steps`` holds the steps from the first on (``time_steps[-1]`` the step's own, ``time_steps[-2]`` the one
        before where needed); ``nan`` for a step whose leading error multiplies another derivative (BDF2's Euler start:
        :math:`u''`). Milne's :meth:`local_error_constant` is :math:`C = \kappa/(\kappa + \pi)`, :math:`\pi` the predictor's
        interpolation factor (``docs/theory.md``, section 7).
        """

    def start_estimates(self, time_steps: Sequence[float], estimate: float) -> list[float]:
        r"""Estimates (not bounds) of the first :math:`m` steps' local errors, from the first estimate whose window holds no :math:`u_0`.

        With :math:`m` = :attr:`estimate_history`, Milne's estimate of step :math:`j \le m` reads a window that holds
        :math:`u_0 = \phi(\theta_0)`, or none exists. :math:`u_0` is the start itself, its deviation from the flow
        :math:`g_0 = 0`, while the computed states carry the network's deviation :math:`g_j`, which grows from 0 within the
        first steps (the network cannot follow the fast decay of its own fit error's high modes); the window's
        difference carries that growth (4 to 10 times the truth on the standard heat 2-D network, ``docs/results.md``).
        Step :math:`m + 1`'s window :math:`u_1, \dots, u_{m+1}` is the first of computed states only; its estimate
        :math:`\eta_{m+1} = \kappa_{m+1}\|u^{(p+1)}\|_M` (:meth:`step_error_coefficient`) gives the derivative, and with
        :math:`u^{(p+1)}` taken constant on :math:`[0, t_{m+1}]`

        .. math:: \eta_j = \eta_{m+1}\,\kappa_j/\kappa_{m+1},\qquad j = 1, \dots, m

        (``nan`` where :math:`\kappa_j` is: BDF2's Euler start). They exist once step :math:`m + 1` does, so the controller
        never judges them (it keeps the first steps until its noise estimate exists, :class:`StepController`).

        Args:
            time_steps: :math:`\tau_1, \dots, \tau_{m+1}`.
            estimate: :math:`\eta_{m+1}`, the :meth:`local_error_estimate` of step :math:`m + 1` (or a quantity that scales
                like it, such as its floor :math:`\pi`).

        Returns:
            :math:`\eta_1, \dots, \eta_m`.

        Raises:
            ValueError: ``time_steps`` does not hold :math:`m + 1` steps.
        """
        needed = self.estimate_history + 1
        if len(time_steps) != needed:
            raise ValueError(f"start_estimates needs the first {needed} time steps, got {len(time_steps)}")
        last = self.step_error_coefficient(time_steps)
        return [estimate * self.step_error_coefficient(time_steps[:j]) / last for j in range(1, needed)]

    def initial_step(
        self, energy: Energy, metric: Metric, u0: torch.Tensor, time_tolerance: float, safety: float = 0.9
    ) -> float:
        r"""A first step from the tolerance (an estimate): the step whose local error :math:`c\,\tau^{p+1}\|u^{(p+1)}(0)\|_M` is ``safety`` :math:`^{p+1}` times the tolerance.

        The flow :math:`u' = f(u) = -M^{-1}\nabla E(u)` gives its first two derivatives at :math:`u_0` exactly (shape ``(N, m)``):
        :math:`u'(0) = f(u_0)` and :math:`u''(0) = M^{-1}\nabla^2E(u_0)\,M^{-1}\nabla E(u_0)`. The higher one comes from a
        single-rate model, :math:`u^{(j)} = (-\lambda)^ju` with :math:`\lambda = \|u''\|_M/\|u'\|_M`, so
        :math:`\|u^{(p+1)}\|_M \approx \|u''\|_M^p/\|u'\|_M^{p-1}` (exact on one eigenmode of a linear flow), and

        .. math:: \tau_0 = s\Big(\frac{\text{tol}}{c\,\|u''\|_M^p/\|u'\|_M^{p-1}}\Big)^{1/(p+1)}

        (:math:`c` = :attr:`error_constant`, :math:`p` = :attr:`order`). ``inf`` where :math:`u'(0)` or :math:`u''(0)` vanishes.
        No solve of the step problem is needed: it reads :math:`E`'s gradient and one Hessian product at :math:`u_0`,
        and two solves with :math:`M` (a metric that is only semi-definite has none: the driver then keeps its ``tau``).
        """
        time_tolerance = check_positive_float("time_tolerance", time_tolerance)
        minus_velocity = metric.solve(energy.gradient(u0))  # -u'(0)
        speed = float(metric.norm(minus_velocity))
        curvature = float(metric.norm(metric.solve(energy.hessian_matvec(u0, minus_velocity))))  # ||u''(0)||
        if not (speed > 0 and curvature > 0):
            return math.inf
        derivative = curvature**self.order / speed ** (self.order - 1)
        return safety * (time_tolerance / (self.error_constant * derivative)) ** (1 / (self.order + 1))

    @property
    def noise_history(self) -> int:
        """How many past states :meth:`noise_estimate` needs besides the new one: one more than the estimate."""
        return self.estimate_history + 1

    def noise_estimate(self, states: Sequence[torch.Tensor], time_steps: Sequence[float], metric: Metric) -> float:
        r"""An estimate (not a bound) of the part of :meth:`local_error_estimate` that the states' roughness makes, or ``nan``.

        Model: the states are :math:`s_j = \sigma(t_j) + n_j`, a smooth curve :math:`\sigma` plus deviations
        :math:`n_j` (what the inner solves and the network's approximation leave) that are uncorrelated from
        step to step with one size :math:`\mathbb E\|n_j\|_M^2 = \nu_0^2`. With :math:`m` = :attr:`estimate_history`,
        the estimate reads :math:`D = s_m - \sum_{j<m}\ell_js_j` (:math:`\ell` the weights of the predictor, the
        polynomial of degree :math:`m - 1` through :math:`s_0, \dots, s_{m-1}` at :math:`t_m`), whose deviation part has
        the root mean square :math:`\nu_0\sqrt{1 + \sum_j\ell_j^2}`. One state further back, the polynomial of degree
        :math:`m` through :math:`s_{-1}, \dots, s_{m-1}` (weights :math:`\ell^+`) gives :math:`D^+ = s_m - \sum_j\ell_j^+s_j`,
        whose smooth part is one order higher in the steps, :math:`O(\tau^{m+1})` against :math:`D`'s
        :math:`O(\tau^m)`, and whose deviation part has the root mean square :math:`\nu_0\sqrt{1 + \sum_j(\ell_j^+)^2}`. So

        .. math:: \nu = C\,\|D^+\|_M\sqrt{\frac{1 + \sum_j\ell_j^2}{1 + \sum_j(\ell_j^+)^2}}

        (:math:`C` = :meth:`local_error_constant`) estimates the deviations' share of the estimate :math:`C\|D\|_M`.
        For a constant step the root is :math:`\sqrt{20/70}` for BDF2 (:math:`\ell = (1, -3, 3)`,
        :math:`\ell^+ = (-1, 4, -6, 4)`) and :math:`\sqrt{6/20}` for implicit Euler. Where the states are smooth
        (exact steps) :math:`\nu/\eta = O(\tau)`; it is no bound: correlated deviations, or a smooth part of
        :math:`D^+` that the steps do not resolve (:math:`\tau\lambda \gtrsim 1`), make it off by a factor.

        ``states`` ends with the new state :math:`s_m`; ``nan`` until :attr:`noise_history` states precede it.
        """
        needed = self.noise_history
        if len(states) < needed + 1:
            return math.nan
        steps = [float(tau) for tau in time_steps[-needed:]]
        times = [0.0]
        for tau in steps:
            times.append(times[-1] + tau)
        low = extrapolation_weights(times[1:-1], times[-1])
        high = extrapolation_weights(times[:-1], times[-1])
        higher = states[-1] - sum(weight * state for weight, state in zip(high, states[-needed - 1 : -1]))
        scale = math.sqrt((1 + sum(w * w for w in low)) / (1 + sum(w * w for w in high)))
        return self.local_error_constant(steps[1:]) * float(metric.norm(higher)) * scale

    @abstractmethod
    def anchor_weights(self, time_steps: Sequence[float]) -> tuple[tuple[float, ...], float]:
        r"""``(weights, tau')``: :math:`\tilde u_k = \sum_i w_i u_{k-i}` (newest first) and the effective step of the step
        that ends ``time_steps`` (``time_steps[-1]`` its own step, ``time_steps[-2]`` the one before where needed)."""

    def estimate_floor(self, time_steps: Sequence[float], defects: Sequence[float], convexity: float) -> float:
        r"""A bound :math:`\pi` on the part of :meth:`local_error_estimate` that the inner solves' defects make.

        The estimate reads the states :math:`s_0, \dots, s_m` (:math:`m` = :attr:`estimate_history`, :math:`s_m = u_{k+1}`)
        as :math:`\eta(s) = C\|\sum_j c_js_j\|_M` (:math:`c_m = 1`, :math:`c_j = -\ell_j` the predictor's weights). Let
        :math:`\bar u` be the scheme's **exact** steps from the computed history: :math:`\bar u_0 = s_0`,
        :math:`\bar u_1` the exact step from :math:`s_1`'s own history, :math:`\bar u_j = \operatorname{prox}_{\tau_j'E}(\sum_i w_i\bar u_{j-i})`.
        With :math:`d_j \ge \|s_j - \operatorname{prox}_{\tau_j'E}(\tilde s_j)\|_M` (``defects``, :math:`j = 1 \dots m`) and the
        resolvent's Lipschitz constant :math:`L_j' = 1/(1 + \tau_j'\lambda)` of a :math:`\lambda`-convex energy,
        :math:`\Delta_j = \|s_j - \bar u_j\|_M \le d_j + L_j'\sum_{i\ge1}|w_i|\Delta_{j-i}` (:math:`\Delta_0 = 0`), so

        .. math:: |\eta(s) - \eta(\bar u)| \le \pi = C\sum_j |c_j|\Delta_j.

        :math:`\eta(\bar u)` is the estimate of exact scheme steps: where :math:`\eta(s) \gg \pi` the estimate measures the
        time error, where :math:`\eta(s) \lesssim \pi` it cannot be told from the inner solves. Rounding is not counted.

        Args:
            time_steps: the :math:`m` steps that made :math:`s_1, \dots, s_m` (the last ``estimate_history`` steps).
            defects: :math:`d_1, \dots, d_m`.
            convexity: :math:`\lambda` (``nan`` if unknown: then ``nan``).

        Returns:
            :math:`\pi`, or ``nan`` where :math:`1 + \tau_j'\lambda \le 0` or :math:`\lambda` is unknown.
        """
        needed = self.estimate_history
        steps, defects = list(time_steps[-needed:]), list(defects[-needed:])
        if len(steps) != needed or len(defects) != needed:
            raise ValueError(f"estimate_floor needs the last {needed} time steps and defects, got {len(steps)}, {len(defects)}")
        if math.isnan(convexity):
            return math.nan
        unit = torch.eye(needed, dtype=torch.float64)
        predicted = self.predictor(list(unit), steps)  # the predictor's weights on s_0 .. s_{m-1}
        weights = [*(-float(value) for value in predicted), 1.0]
        deviations = [0.0]  # Delta_0
        for j in range(1, needed + 1):
            history = steps[max(0, j - 2) : j]  # s_j's own step (and the one before, for the ratio)
            anchor, effective = self.anchor_weights(history) if j > 1 else ((), steps[0])
            denominator = 1 + effective * convexity
            if not denominator > 0:
                return math.nan
            propagated = sum(abs(w) * deviations[j - 1 - i] for i, w in enumerate(anchor) if j - 1 - i >= 0)
            deviations.append(defects[j - 1] + propagated / denominator)
        return self.local_error_constant(steps) * sum(abs(c) * d for c, d in zip(weights, deviations))

    def exact_step(
        self, energy: Energy, metric: Metric, states: Sequence[torch.Tensor], time_steps: Sequence[float], tau: float
    ) -> torch.Tensor:
        r"""The exact next iterate :math:`\operatorname{prox}_{\tau'E}(\tilde u)` of :meth:`plan`, shape ``(N, m)``."""
        plan = self.plan(states, time_steps, tau)
        return energy.prox(plan.anchor, plan.tau, metric)

    def exact_trajectory(
        self, energy: Energy, metric: Metric, u0: torch.Tensor, time_steps: Sequence[float]
    ) -> torch.Tensor:
        r"""The exact iterates of the scheme from ``u0`` with the given steps, shape ``(K + 1, N, m)``.

        Raises:
            ValueError: the energy has no exact proximal map, or a step is not positive.
        """
        if not energy.has_prox:
            raise ValueError(f"{type(energy).__name__} has no exact proximal map")
        steps = [check_positive_float("time step", tau) for tau in time_steps]
        states = [u0]
        for index, tau in enumerate(steps):
            states.append(self.exact_step(energy, metric, states, steps[:index], tau))
        return torch.stack(states)


class ImplicitEuler(TimeScheme):
    r"""Implicit Euler, the minimizing movement scheme: :math:`\tilde u_k = u_k`, :math:`\tau' = \tau` (first order).

    Local error estimate: with :math:`P = u_k + \frac{\tau_{k+1}}{\tau_k}(u_k - u_{k-1})`, the linear
    extrapolation, :math:`u_{k+1} - u(t_{k+1}) \approx \frac{\tau_{k+1}^2}{2}u''` and
    :math:`u(t_{k+1}) - P \approx \frac{\tau_{k+1}(\tau_{k+1} + \tau_k)}{2}u''`, so the estimate is
    :math:`\frac{\tau_{k+1}}{2\tau_{k+1} + \tau_k}\|u_{k+1} - P\|_M` (:math:`1/3` of it for a constant step).
    """

    order = 1
    history = 1
    estimate_history = 2
    error_constant = 0.5  # u_1 - u(tau) = -tau^2 u''/2 + O(tau^3)

    def plan(self, states: Sequence[torch.Tensor], time_steps: Sequence[float], tau: float) -> StepPlan:
        tau = check_positive_float("tau", tau)
        return StepPlan(states[-1], tau, tau)

    def predictor(self, states: Sequence[torch.Tensor], time_steps: Sequence[float]) -> torch.Tensor:
        previous, newest = states[-2], states[-1]
        ratio = time_steps[-1] / time_steps[-2]
        return newest + ratio * (newest - previous)

    def local_error_constant(self, time_steps: Sequence[float]) -> float:
        new, old = time_steps[-1], time_steps[-2]
        return new / (2 * new + old)

    def step_error_coefficient(self, time_steps: Sequence[float]) -> float:
        r""":math:`\kappa = \tau^2/2`: implicit Euler's local error :math:`(\tau^2/2)u''`."""
        return time_steps[-1] ** 2 / 2

    def anchor_weights(self, time_steps: Sequence[float]) -> tuple[tuple[float, ...], float]:
        return (1.0,), float(time_steps[-1])

    def __repr__(self) -> str:
        return "ImplicitEuler()"


class BDF2(TimeScheme):
    r"""The two-step backward differentiation formula as a minimizing movement, variable steps included.

    With :math:`\omega = \tau_{k+1}/\tau_k` the variable-step BDF2 equation
    :math:`\frac{1 + 2\omega}{1 + \omega}u_{k+1} - (1 + \omega)u_k + \frac{\omega^2}{1 + \omega}u_{k-1} = -\tau_{k+1}M^{-1}\nabla E(u_{k+1})`
    is the proximal step :math:`u_{k+1} = \operatorname{prox}_{\tau'E}(\tilde u_k)` with

    .. math:: \tilde u_k = \frac{(1 + \omega)^2u_k - \omega^2u_{k-1}}{1 + 2\omega},\qquad \tau' = \tau_{k+1}\frac{1 + \omega}{1 + 2\omega}.

    The first step has no :math:`u_{k-1}`; ``start`` says how it is taken: ``"richardson"`` (default)
    :math:`u_1 = 2\,P_{\tau/2}(P_{\tau/2}(u_0)) - P_\tau(u_0)` with :math:`P_s = \operatorname{prox}_{sE}`
    (local error :math:`O(\tau^3)`, :func:`richardson_start`), or ``"euler"``, one implicit Euler step (local
    error :math:`O(\tau^2)`: the order survives, but its error constant dominates for hundreds of steps on
    TENG's heat benchmark, ``docs/theory.md``).

    Local error estimate (Milne): with :math:`P` the quadratic through :math:`u_{k-2}, u_{k-1}, u_k`
    extrapolated to :math:`t_{k+1}`, :math:`u_{k+1} - u(t_{k+1}) \approx \frac{\tau'}{6}\tau_{k+1}(\tau_{k+1} + \tau_k)u'''`
    and :math:`u(t_{k+1}) - P \approx \frac16\tau_{k+1}(\tau_{k+1} + \tau_k)(\tau_{k+1} + \tau_k + \tau_{k-1})u'''`, so
    the estimate is :math:`\frac{\tau'}{\tau' + \tau_{k+1} + \tau_k + \tau_{k-1}}\|u_{k+1} - P\|_M` (:math:`2/11` of it
    for a constant step).

    Args:
        start: ``"richardson"`` or ``"euler"``.
        max_ratio: the largest step ratio :math:`\omega` accepted, below :math:`1 + \sqrt2` (zero stability).

    Raises:
        ValueError: an unknown start, or ``max_ratio`` not in :math:`(0, 1 + \sqrt2)`.
    """

    order = 2
    history = 2
    estimate_history = 3
    error_constant = 2 / 9  # constant steps: tau'/6 * tau * 2 tau with tau' = 2 tau / 3

    def __init__(self, start: str = "richardson", max_ratio: float = 2.0):
        if start not in ("richardson", "euler"):
            raise ValueError(f"start must be 'richardson' or 'euler', got {start!r}")
        self.start = start
        self.max_ratio = check_positive_float("max_ratio", max_ratio)
        if self.max_ratio >= ZERO_STABLE_RATIO:
            raise ValueError(
                f"max_ratio = {self.max_ratio} must be below 1 + sqrt(2) = {ZERO_STABLE_RATIO:.6f}: variable-step "
                "BDF2 is not zero-stable beyond it"
            )

    @staticmethod
    def coefficients(ratio: float) -> tuple[float, float, float]:
        r"""``(a, b, s)`` with :math:`\tilde u_k = a\,u_k + b\,u_{k-1}` and :math:`\tau' = s\,\tau_{k+1}` for :math:`\omega` = ``ratio``.

        :math:`a = (1 + \omega)^2/(1 + 2\omega)`, :math:`b = -\omega^2/(1 + 2\omega)` (:math:`a + b = 1`),
        :math:`s = (1 + \omega)/(1 + 2\omega)`.
        """
        denominator = 1 + 2 * ratio
        return (1 + ratio) ** 2 / denominator, -(ratio**2) / denominator, (1 + ratio) / denominator

    def check_ratio(self, ratio: float) -> float:
        """``ratio`` if it is at most :attr:`max_ratio`, else ``ValueError``."""
        if not ratio <= self.max_ratio * (1 + 1e-12):
            raise ValueError(
                f"step ratio tau_k+1 / tau_k = {ratio:.6g} exceeds max_ratio = {self.max_ratio}: variable-step BDF2 "
                f"is zero-stable only below 1 + sqrt(2)"
            )
        return ratio

    def plan(self, states: Sequence[torch.Tensor], time_steps: Sequence[float], tau: float) -> StepPlan:
        """The BDF2 step; with one state the start's implicit Euler step (``start="euler"``).

        Raises:
            ValueError: one state with ``start="richardson"`` (the start is not a single step problem: use
                :func:`richardson_start`), or a step ratio above :attr:`max_ratio`.
        """
        tau = check_positive_float("tau", tau)
        if len(states) < 2:
            if self.start == "euler":
                return StepPlan(states[-1], tau, tau)
            raise ValueError("BDF2's Richardson start is three implicit Euler steps, not one plan: use richardson_start")
        ratio = self.check_ratio(tau / time_steps[-1])
        newest, previous = self.coefficients(ratio)[:2]
        return StepPlan(newest * states[-1] + previous * states[-2], self.coefficients(ratio)[2] * tau, tau)

    def exact_step(
        self, energy: Energy, metric: Metric, states: Sequence[torch.Tensor], time_steps: Sequence[float], tau: float
    ) -> torch.Tensor:
        r"""The exact BDF2 step; from a single state the start (:func:`richardson_start` of exact proximal steps)."""
        if len(states) == 1 and self.start == "richardson":
            return richardson_start(lambda anchor, step: energy.prox(anchor, step, metric), states[0], tau)
        return super().exact_step(energy, metric, states, time_steps, tau)

    def predictor(self, states: Sequence[torch.Tensor], time_steps: Sequence[float]) -> torch.Tensor:
        r"""The quadratic through :math:`(t_{k-2}, u_{k-2}), (t_{k-1}, u_{k-1}), (t_k, u_k)` at :math:`t_{k+1}` (Lagrange form)."""
        times = [0.0, time_steps[0], time_steps[0] + time_steps[1]]
        weights = extrapolation_weights(times, times[2] + time_steps[2])
        return sum(weight * state for weight, state in zip(weights, states))

    def anchor_weights(self, time_steps: Sequence[float]) -> tuple[tuple[float, ...], float]:
        """BDF2's :meth:`coefficients` at the ratio of the last two steps: ``((a, b), s * tau)``."""
        newest, previous, share = self.coefficients(time_steps[-1] / time_steps[-2])
        return (newest, previous), share * time_steps[-1]

    def local_error_constant(self, time_steps: Sequence[float]) -> float:
        oldest, old, new = time_steps[-3], time_steps[-2], time_steps[-1]
        effective = self.coefficients(new / old)[2] * new
        return effective / (effective + new + old + oldest)

    def step_error_coefficient(self, time_steps: Sequence[float]) -> float:
        r""":math:`\kappa = \tau'\tau_{k+1}(\tau_{k+1} + \tau_k)/6` (:math:`2\tau^3/9` at a constant step); the Richardson start's :math:`\tau^3/6`.

        The start :math:`2S_{\tau/2}^2u_0 - S_\tau u_0` of implicit Euler steps :math:`S_s = (I + sA)^{-1}` on a linear flow
        :math:`u' = -Au` errs by :math:`(\tau A)^3u_0/6 = -\tau^3u^{(3)}/6` (for a nonlinear flow its :math:`\tau^3` term has
        elementary differentials other than :math:`u^{(3)}`: there it is a model). The Euler start's error
        :math:`(\tau^2/2)u''` multiplies another derivative: ``nan``.
        """
        if len(time_steps) == 1:
            return time_steps[0] ** 3 / 6 if self.start == "richardson" else math.nan
        new, old = time_steps[-1], time_steps[-2]
        return self.coefficients(new / old)[2] * new * new * (new + old) / 6

    def __repr__(self) -> str:
        return f"BDF2(start={self.start!r}, max_ratio={self.max_ratio})"


def extrapolation_weights(times: Sequence[float], target: float) -> list[float]:
    r"""The Lagrange weights :math:`\ell_i = \prod_{j\ne i}(t - t_j)/(t_i - t_j)` of the polynomial through ``times`` at ``target``.

    :math:`\sum_i\ell_iu(t_i)` is that polynomial's value at :math:`t` = ``target`` (exact for polynomials of degree
    below ``len(times)``).
    """
    weights = []
    for i, t_i in enumerate(times):
        weight = 1.0
        for j, t_j in enumerate(times):
            if j != i:
                weight *= (target - t_j) / (t_i - t_j)
        weights.append(weight)
    return weights


def richardson_start(step: Callable[[torch.Tensor, float], torch.Tensor], u0: torch.Tensor, tau: float) -> torch.Tensor:
    r"""BDF2's second-order start :math:`u_1 = 2\,S_{\tau/2}(S_{\tau/2}(u_0)) - S_\tau(u_0)`, ``step(anchor, s)`` :math:`= S_s(\text{anchor})`.

    With :math:`S_s` the implicit Euler step (local error :math:`\tfrac{s^2}{2}u'' + O(s^3)`), two half steps
    err by :math:`\tfrac{\tau^2}{4}u''` and one full step by :math:`\tfrac{\tau^2}{2}u''`, so the combination
    cancels the :math:`\tau^2` term: local error :math:`O(\tau^3)`, the order of a BDF2 step.
    """
    tau = check_positive_float("tau", tau)
    half = step(step(u0, tau / 2), tau / 2)
    return 2 * half - step(u0, tau)


class StepController:
    r"""Step selection from a local error estimate: keep it below ``time_tolerance``.

    After a step with estimate :math:`\eta` the next step is
    :math:`\tau_{\text{new}} = \tau\,\min\big(r_{\max}, \max(r_{\min}, s\,(\text{tol}/\eta)^{1/(p+1)})\big)`
    (:math:`p` the scheme's order, :math:`s` the safety factor); a step with :math:`\eta > \text{tol}` is
    rejected and retried with that smaller step. Without an estimate (``nan``: the first steps) the step
    is accepted and kept.

    **With a noise estimate** :math:`\nu` (:meth:`TimeScheme.noise_estimate`, the share of :math:`\eta` that the
    states' roughness makes; passed as ``noise``) the controller judges the time part
    :math:`\theta = \max(\eta - \nu, 0)` instead: the step is accepted when :math:`\theta \le \text{tol}`, the next
    step is :math:`\tau\,\min\big(r_{\max}, \max(r_{\min}, s\,(\text{tol}/\theta)^{1/(p+1)})\big)`
    (:math:`r_{\max}` for :math:`\theta = 0`), and after an accepted step whose estimate is dominated by the roughness,
    :math:`\nu \ge \eta/2`, the step is not shrunk (the factor is at least 1): a shorter step cuts the time error by
    :math:`(\tau_{\text{new}}/\tau)^{p+1}` but not the roughness, so shrinking on such an estimate buys nothing it can
    measure. A rejected step (:math:`\theta > \text{tol}`) is retried shorter by the factor of :math:`\theta`. Without a noise
    estimate yet (``noise`` is ``nan``: the first steps) the step is accepted and kept, as without an estimate.

    Args:
        time_tolerance: the largest local error estimate accepted (in the metric's norm).
        order: :math:`p`.
        safety: :math:`s \in (0, 1]`.
        min_ratio: :math:`r_{\min} < 1`, the smallest change of the step at once.
        max_ratio: :math:`r_{\max} > 1`, the largest.
    """

    def __init__(
        self, time_tolerance: float, order: int, safety: float = 0.9, min_ratio: float = 0.2, max_ratio: float = 2.0
    ):
        self.time_tolerance = check_positive_float("time_tolerance", time_tolerance)
        self.order = check_integer("order", order, minimum=1)
        self.safety = check_positive_float("safety", safety)
        self.min_ratio = check_positive_float("min_ratio", min_ratio)
        self.max_ratio = check_positive_float("max_ratio", max_ratio)
        if not (self.safety <= 1 and self.min_ratio < 1 < self.max_ratio):
            raise ValueError(
                f"need safety <= 1 and min_ratio < 1 < max_ratio, got {self.safety}, {self.min_ratio}, {self.max_ratio}"
            )

    def accept(self, estimate: float, noise: float | None = None) -> bool:
        """Whether a step with this estimate (and noise estimate, if given) is kept (``nan``: none yet, kept)."""
        if noise is not None and math.isnan(noise):
            return True
        return math.isnan(estimate) or self.time_part(estimate, noise) <= self.time_tolerance

    def next_step(self, tau: float, estimate: float, noise: float | None = None) -> float:
        """The step to take next (or to retry with, after a rejection)."""
        if math.isnan(estimate) or (noise is not None and math.isnan(noise)):
            return tau
        judged = self.time_part(estimate, noise)
        if judged == 0:
            return tau * self.max_ratio
        factor = self.safety * (self.time_tolerance / judged) ** (1 / (self.order + 1))
        factor = min(self.max_ratio, max(self.min_ratio, factor))
        if noise is not None and noise >= estimate / 2 and judged <= self.time_tolerance:
            factor = max(factor, 1.0)  # an accepted step dominated by the roughness: never shrink on it
        return tau * factor

    @staticmethod
    def time_part(estimate: float, noise: float | None) -> float:
        r""":math:`\theta = \max(\eta - \nu, 0)`, or :math:`\eta` itself without a noise estimate (``None``)."""
        return estimate if noise is None else max(estimate - noise, 0.0)


def adaptive_exact_trajectory(
    scheme: TimeScheme,
    energy: Energy,
    metric: Metric,
    u0: torch.Tensor,
    final_time: float,
    initial_step: float,
    controller: StepController,
    max_steps: int = 100_000,
) -> tuple[torch.Tensor, list[float], list[float]]:
    r"""The scheme's exact iterates with steps chosen by ``controller`` up to ``final_time``.

    Returns ``(states, time_steps, estimates)``: states of shape ``(K + 1, N, m)``, the accepted steps and
    each accepted step's local error estimate (``nan`` where none exists yet). The last step is shortened
    to land on ``final_time``; a BDF2 step ratio is capped at the scheme's ``max_ratio``.

    Raises:
        RuntimeError: more than ``max_steps`` steps.
    """
    final_time = check_positive_float("final_time", final_time)
    tau = check_positive_float("initial_step", initial_step)
    states, steps, estimates, time = [u0], [], [], 0.0
    while time < final_time * (1 - 1e-13):
        if len(steps) >= max_steps:
            raise RuntimeError(f"adaptive_exact_trajectory: more than {max_steps} steps to reach {final_time}")
        tau = min(tau, final_time - time)
        if isinstance(scheme, BDF2) and steps:
            tau = min(tau, scheme.max_ratio * steps[-1])
        candidate = scheme.exact_step(energy, metric, states, steps, tau)
        estimate = scheme.local_error_estimate([*states, candidate], [*steps, tau], metric)
        if not controller.accept(estimate):
            tau = controller.next_step(tau, estimate)
            continue
        states.append(candidate)
        steps.append(tau)
        estimates.append(estimate)
        time += tau
        tau = controller.next_step(tau, estimate)
    return torch.stack(states), steps, estimates
