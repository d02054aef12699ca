r"""One MMS step as an optimisation problem over the increment manifold.

.. math:: f(\theta) = F_k(\phi(\theta)),\qquad F_k(u) = E(u) + \frac{1}{2\tau}\|u - u_k\|_M^2

with the anchor :math:`u_k` the step owns. The function-space residual
:math:`r = M^{-1}\nabla F_k(u)` bounds the distance to the exact step,
:math:`\|u - \operatorname{prox}_{\tau E}(u_k)\|_M \le \|r\|_M/\mu` with :math:`\mu = 1/\tau + \lambda`, and
splits :math:`M`-orthogonally into a tangential part (what more inner iterations remove) and a normal part
(what the network cannot represent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import as_tensor, check_choice, check_finite, check_instance, check_shape
from .energies import Energy
from .linalg import (
    AutoSolve,
    DiagonalWeightFactorization,
    Factorization,
    GramOperator,
    LinearSolution,
    OperatorSum,
    ScaledOperator,
    diagonal_weight_factorization,
    make_solve_mode,
)
from .manifold import IncrementManifold
from .metrics.base import Metric
from .parametrizations.base import Parametrization
from .step_constants import StepConstants

__all__ = ["RESIDUAL_PARTS", "EnergyHessian", "GaussNewtonModel", "MMSSubproblem", "Residual"]


RESIDUAL_PARTS = ("split", "total")
r"""What a step books of its residual: ``"split"`` (:math:`\|r\|_M` and its tangential and normal parts) or
``"total"`` (:math:`\|r\|_M` alone, one solve with :math:`M`; :meth:`MMSSubproblem.residual`)."""


@dataclass(frozen=True)
class Residual:
    r"""The function-space residual :math:`r = M^{-1}\nabla F_k(u)` of a candidate step, in :math:`M`-norms.

    Attributes:
        total: :math:`\|r\|_M`.
        tangential: :math:`\|P_T r\|_M`, the inner-solver inexactness (``nan`` where not computed).
        normal: :math:`\|r - P_T r\|_M`, the neural approximation error (``nan`` where not computed).
        split: whether the tangential and normal parts were asked for (``False``: the total alone,
            ``parts="total"``; both parts are then ``nan``, never an estimate).
    """

    total: float
    tangential: float
    normal: float
    split: bool = True

    @classmethod
    def not_computed(cls) -> Residual:
        """Every part ``nan``: no residual was computed (``MinimizingMovement.run(certify=False)``), or the gradient was not finite."""
        return cls(math.nan, math.nan, math.nan)

    @classmethod
    def total_only(cls, total: float) -> Residual:
        r""":math:`\|r\|_M` alone; the tangential and normal parts ``nan`` (not computed)."""
        return cls(total, math.nan, math.nan, split=False)

    def booked(self) -> tuple[float, ...]:
        """The parts computed: ``(total, tangential, normal)``, or ``(total,)`` for :meth:`total_only`."""
        return (self.total, self.tangential, self.normal) if self.split else (self.total,)


@dataclass(frozen=True)
class GaussNewtonModel:
    r"""The Gauss–Newton model of the step at one point: :math:`m(\delta) = f + g\cdot\delta + \tfrac12\delta\cdot A\delta`.

    .. math:: A = J^\top\big(\nabla^2E(u) + M/\tau\big)J \quad (p \times p),\qquad g = \nabla_\theta f = J^\top\nabla F_k(u),

    the generalized Gauss–Newton matrix of :math:`f = F_k\circ\phi` (the second-derivative term of
    :math:`\phi` left out). ``factorization`` solves with :math:`A/s` for any damping, so one model serves
    every step length and damping an iteration tries.

    Attributes:
        cost: :math:`f(\theta)`.
        gradient: :math:`g`, shape ``(p,)``.
        factorization: of :math:`A/s`.
        scale: :math:`s` (:math:`c + 1/\tau` where :math:`\nabla^2E = cM` and the metric's factorisation is
            reused, else 1).
        mean_eigenvalue: :math:`\operatorname{tr}(A)/p` (exact where :math:`J` is formed, else Hutchinson).
        proximal_share: :math:`\operatorname{tr}(J^\top MJ)/(\tau\operatorname{tr}(A))`, the part of the model's
            curvature that the proximal term :math:`\|u - u_k\|_M^2/(2\tau)` contributes: near 1 for a short
            time step, near 0 where the step is a long minimisation of :math:`E`.
        range_gradient: :math:`s` with :math:`g = B^\top s` where ``factorization`` is a
            :class:`~mms_manifolds.linalg.DiagonalWeightFactorization` (then :meth:`step` solves in range form,
            without the kernel solve's cancellation at small damping), else ``None``.
        forcing: ``(eta, fraction)``: damped solves stop at relative residual ``eta`` once ``fraction`` of the
            exact damped decrease is certified (an inexact-Newton forcing term, set by
            ``GaussNewton(forcing=...)`` per iteration); ``None``: the solve mode's own tolerance.
    """

    cost: float
    gradient: torch.Tensor
    factorization: Factorization
    scale: float
    mean_eigenvalue: float
    proximal_share: float
    range_gradient: torch.Tensor | None = None
    forcing: tuple[float, float] | None = None

    def step(self, damping: float = 0.0, cutoff: float | None = None) -> torch.Tensor:
        r""":math:`\delta = -(A + \mu I)^{-1}g`, shape ``(p,)``; :math:`\mu = 0` gives :math:`-A^+g`, the truncated pseudo-inverse step.

        See :meth:`solve` for the eigenvalues the pseudo-inverse drops. With ``range_gradient`` the step is
        :math:`-B^\top(K + \mu I)^{-1}s` (or :math:`-B^\top Q_k\Lambda_k^{-1}Q_k^\top s`), the same step in exact arithmetic.
        """
        if self.range_gradient is not None:
            return -self.factorization.range_solve(self.range_gradient, damping / self.scale, cutoff) / self.scale
        return -self.solve(self.gradient, damping, cutoff)

    def inexact_step(self, damping: float) -> tuple[torch.Tensor, LinearSolution]:
        r"""``(step, solution)``: :math:`\delta = -x`, :math:`x \approx (A + \mu I)^{-1}g` stopped by ``forcing`` (``damping`` :math:`\mu > 0`).

        With ``forcing`` :math:`(\eta, \vartheta)` the solve stops at relative residual :math:`\eta` once
        :math:`\vartheta` of the exact damped model decrease is certified
        (:meth:`~mms_manifolds.linalg.Factorization.solve_inexact`), so that :meth:`predicted_decrease` of the
        step is at least ``solution.certified_fraction`` times that of the exact step. Direct factorisations,
        and the model without ``forcing``, give :meth:`step` itself.
        """
        if self.range_gradient is not None or self.forcing is None:
            step = self.step(damping)
            return step, LinearSolution(value=-step, mode=self.factorization.mode)
        solution = self.factorization.solve_inexact(self.gradient, damping / self.scale, *self.forcing)
        return -solution.value / self.scale, solution

    def solve(self, rhs: torch.Tensor, damping: float = 0.0, cutoff: float | None = None) -> torch.Tensor:
        r""":math:`(A + \mu I)^{-1}b` for ``rhs`` :math:`b` of shape ``(p,)``, or the truncated pseudo-inverse :math:`A^+b` for :math:`\mu = 0`.

        The pseudo-inverse drops the eigenvalues of :math:`A` at or below ``cutoff`` times the largest,
        where ``cutoff`` is larger than the factorisation's own cutoff
        (:func:`~mms_manifolds.linalg.pseudo_inverse_rtol`, or the solve mode's), else at or below that
        one. In the matrix-free mode :math:`\mu = 0` is not available. With ``forcing``, a damped solve stops
        early by it (:meth:`inexact_step`).
        """
        if self.forcing is not None and damping > 0.0:
            return self.factorization.solve_inexact(rhs, damping / self.scale, *self.forcing).value / self.scale
        return self.factorization.solve(rhs, damping / self.scale, cutoff).value / self.scale

    def predicted_decrease(self, step: torch.Tensor, damping: float = 0.0) -> float:
        r""":math:`m(0) - m(\delta) = \tfrac12(-g\cdot\delta + \mu\,\delta\cdot\delta)` for the step :meth:`step` returned with damping :math:`\mu`."""
        return 0.5 * float(-(self.gradient @ step) + damping * (step @ step))


class EnergyHessian:
    r""":math:`\nabla^2E(u)` at node values ``u`` (shape ``(N, m)``) as an operator, knowing whether it is :math:`cM`.

    An energy states :math:`\nabla^2E = cM` through the optional :meth:`Energy.hessian_metric_multiple`,
    whose default ``None`` (unknown) makes every sum with it a sum applied term by term.
    """

    def __init__(self, energy: Energy, u: torch.Tensor):
        self.energy, self.u = energy, u

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2E(u)v` for ``v`` of shape ``(..., N, m)`` (a batch through ``vmap``)."""
        if v.ndim == 2:
            return self.energy.hessian_matvec(self.u, v)
        flat = v.reshape(-1, *v.shape[-2:])
        return torch.vmap(lambda column: self.energy.hessian_matvec(self.u, column))(flat).reshape(v.shape)

    def multiple_of(self, metric: Metric) -> float | None:
        r""":math:`c` with :math:`\nabla^2E = c\,` ``metric``, or ``None``."""
        return self.energy.hessian_metric_multiple(metric)

    def diagonal(self) -> torch.Tensor | None:
        r"""The diagonal of :math:`\nabla^2E(u)` where the energy knows it is diagonal (:meth:`Energy.hessian_diagonal`), else ``None``."""
        return self.energy.hessian_diagonal(self.u)


def _check_anchor(parametrization: Parametrization, anchor: object) -> torch.Tensor:
    """``anchor`` if it is a finite tensor of node values of ``parametrization`` (shape, dtype, device), else raise."""
    anchor = as_tensor("anchor", anchor, dtype=parametrization.dtype, device=parametrization.device)
    check_shape("anchor", anchor, parametrization.output_shape)
    return check_finite("anchor", anchor)


class MMSSubproblem:
    r"""The MMS step :math:`\min_\theta F_k(\phi(\theta))` on an :class:`IncrementManifold`, anchored at :math:`u_k`.

    Values and gradients come from one cached forward per point: :math:`u = \phi(\theta)`,
    :math:`\nabla F_k(u) = \nabla E(u) + M(u - u_k)/\tau`, and :math:`\nabla_\theta f = J^\top\nabla F_k(u)`.
    The Euclidean Hessian-vector product is assembled from the same primitives,

    .. math:: \nabla^2_\theta f\,\xi = J^\top\big(\nabla^2E(u) + M/\tau\big)J\xi + c(\xi),\qquad
              c_i = \langle D^2\phi[\xi, e_i], \nabla F_k(u)\rangle .

    The step owns its anchor; the manifold is geometry only, so one manifold serves every step of a flow
    (its cache of :math:`J` and its factorisation included). :meth:`MinimizingMovement.subproblem
    <mms_manifolds.MinimizingMovement.subproblem>` builds the step of a flow from :math:`\theta_k`,
    :meth:`~mms_manifolds.MinimizingMovement.step_problem` from any anchor and step size.

    Args:
        manifold: the increment manifold (:math:`\phi` and :math:`M`).
        energy: :math:`E`.
        tau: time step :math:`\tau > 0`.
        anchor: :math:`u_k`, node values of shape ``(N, m)`` in the model's dtype and device; any state, not
            necessarily a network output (a multistep scheme anchors at a combination of past states).
        convexity: :math:`\lambda` of ``energy`` in the manifold's metric if the caller knows it already
            (the MMS driver computes it once per flow: for Dirichlet, Ginzburg–Landau and quartic energies it
            is a dense Cholesky and an eigenvalue problem); omitted, it is asked of ``energy``.

    Raises:
        TypeError: ``manifold`` is no :class:`IncrementManifold`, ``energy`` no :class:`~mms_manifolds.energies.Energy`, or ``anchor`` is not a tensor of the model's dtype.
        ValueError: ``tau <= 0`` or not finite; ``anchor`` has the wrong shape, another device or non-finite
            values; :math:`1 + \tau\lambda \le 0` for a semi-convex energy.
    """

    _ASK_THE_ENERGY = object()  # the default of `convexity`: no modulus given, so ask `energy`

    def __init__(
        self,
        manifold: IncrementManifold,
        energy: Energy,
        tau: float,
        anchor: torch.Tensor,
        convexity: object = _ASK_THE_ENERGY,
    ):
        self.manifold = check_instance("manifold", manifold, IncrementManifold)
        self.energy = check_instance("energy", energy, Energy)
        convexity = energy.convexity(manifold.metric) if convexity is self._ASK_THE_ENERGY else convexity
        self.constants = StepConstants.of(tau, convexity)
        r""":math:`\tau`, :math:`\lambda`, :math:`L` and :math:`\mu` of the step."""
        self.anchor = _check_anchor(manifold.parametrization, anchor)
        """:math:`u_k`, shape ``(N, m)``."""
        self.booked_parts = "split"
        """What the MMS driver books of the residual where a solve of this problem ends (one of
        :data:`RESIDUAL_PARTS`; ``run(residual=...)`` sets it): a solver that measures its final tangential residual
        only for the driver's ledger (``GaussNewton(final_residual=True)``) measures it only for ``"split"``."""
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._residuals: list[tuple[torch.Tensor, Residual]] = []  # the last two points asked, newest first

    @property
    def tau(self) -> float:
        """:math:`\tau`."""
        return self.constants.tau

    @property
    def convexity(self) -> float | None:
        r""":math:`\lambda` of the energy in the manifold's metric, or ``None`` if unknown."""
        return self.constants.convexity

    @property
    def strong_convexity(self) -> float | None:
        r""":math:`\mu = 1/\tau + \lambda`, the strong convexity of :math:`F_k` in the :math:`M`-norm (``None`` if :math:`\lambda` unknown)."""
        return self.constants.strong_convexity

    def objective(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`F_k(u)` for node values ``u`` of shape ``(N, m)``; a scalar tensor."""
        difference = u - self.anchor
        return self.energy.value(u) + self.manifold.metric.inner(difference, difference) / (2 * self.tau)

    def function_gradient(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla F_k(u) = \nabla E(u) + M(u - u_k)/\tau`, shape ``(N, m)`` (Euclidean, i.e. dual)."""
        return self.energy.gradient(u) + self.manifold.metric.apply(u - self.anchor) / self.tau

    def _evaluate(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or not torch.equal(self._cache[0], theta):
            u = self.manifold.parametrization.value(theta)
            self._cache = (theta.detach().clone(), u, self.function_gradient(u))
        return self._cache[1], self._cache[2]

    def node_values(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`u = \phi(\theta)`, shape ``(N, m)``, from the one-entry cache."""
        return self._evaluate(self.manifold.check_point(theta))[0]

    def cost(self, theta: torch.Tensor) -> float:
        r""":math:`f(\theta) = F_k(\phi(\theta))`."""
        theta = self.manifold.check_point(theta)
        return float(self.objective(self._evaluate(theta)[0]))

    def cost_tensor(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`f(\theta)` as a differentiable scalar tensor (for autograd-based optimisers)."""
        return self.objective(self.manifold.parametrization.value(theta))

    def euclidean_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla_\theta f = J^\top\nabla F_k(\phi(\theta))`, shape ``(p,)``."""
        theta = self.manifold.check_point(theta)
        return self.manifold.parametrization.vjp(theta, self._evaluate(theta)[1])

    def step_hessian(self, u: torch.Tensor) -> OperatorSum:
        r"""The step's function-space Hessian :math:`W = \nabla^2E(u) + M/\tau` at node values ``u``, shape ``(N, m)``.

        ``step_hessian(u).multiple_of(M)`` is :math:`c + 1/\tau` where :math:`\nabla^2E = cM`, else ``None``.
        """
        return OperatorSum(EnergyHessian(self.energy, u), ScaledOperator(self.manifold.metric, divisor=self.tau))

    def riemannian_step_size(self, theta: torch.Tensor) -> float:
        r"""The rate :math:`\eta = 1/(c + 1/\tau)` at which a Riemannian gradient step is the Gauss–Newton step.

        The manifold's metric is the pullback of :math:`M` alone, while the step's function-space Hessian is
        :math:`\nabla^2E + M/\tau`. Where :math:`\nabla^2E = cM` (regression: :math:`c = 1`) and the damping
        is negligible, :math:`\theta - \eta\,\operatorname{grad} f` with :math:`\eta = 1/(c + 1/\tau)`
        is exactly the Gauss–Newton step; a unit rate overshoots by the factor :math:`c\tau + 1`. Where
        :math:`\nabla^2E` is not a multiple of :math:`M`, :math:`c` is its curvature along the image of the
        Riemannian gradient, :math:`c = \langle\nabla^2E(u)v, v\rangle/\langle Mv, v\rangle`,
        :math:`v = J\operatorname{grad} f(\theta)`, clipped at 0 so that :math:`\eta \le \tau`. The
        length of that step, :math:`\eta\|\operatorname{grad} f\|_G`, is the natural first trust radius
        or line-search trial.
        """
        theta = self.manifold.check_point(theta)
        return self._step_size(theta, self.manifold.egrad2rgrad(theta, self.euclidean_gradient(theta)))

    def riemannian_step_length(self, theta: torch.Tensor) -> float:
        r""":math:`\ell = \eta\|\operatorname{grad} f(\theta)\|_G`, the length of the step :meth:`riemannian_step_size` takes.

        The scale adapters set their first trust radius, line-search trial or normalised step from.
        """
        theta = self.manifold.check_point(theta)
        gradient = self.manifold.egrad2rgrad(theta, self.euclidean_gradient(theta))
        return self._step_size(theta, gradient) * float(self.manifold.norm(theta, gradient))

    def _step_size(self, theta: torch.Tensor, gradient: torch.Tensor) -> float:
        """:meth:`riemannian_step_size` from the Riemannian gradient at ``theta``, computed once by the caller."""
        u = self._evaluate(theta)[0]
        multiple = self.energy.hessian_metric_multiple(self.manifold.metric)
        if multiple is None:
            image = self.manifold.parametrization.jvp(theta, gradient)
            size = float(self.manifold.metric.inner(image, image))
            curvature = float((self.energy.hessian_matvec(u, image) * image).sum())
            multiple = curvature / size if size > 0 and math.isfinite(curvature) else 0.0
        return 1.0 / (max(multiple, 0.0) + 1.0 / self.tau)

    def hessian_vector_product(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Euclidean Hessian-vector product :math:`\nabla^2_\theta f\,\xi`, shape ``(p,)``."""
        theta, xi = self.manifold.check_point(theta), self.manifold.check_tangent(xi)
        u, function_gradient = self._evaluate(theta)
        parametrization = self.manifold.parametrization
        image = parametrization.jvp(theta, xi)
        weighted = self.energy.hessian_matvec(u, image) + self.manifold.metric.apply(image) / self.tau
        return parametrization.vjp(theta, weighted) + parametrization.second_derivative_adjoint(
            theta, xi, function_gradient
        )

    def gauss_newton_model(self, theta: torch.Tensor, solve_mode: object = "auto") -> GaussNewtonModel:
        r"""The :class:`GaussNewtonModel` at ``theta``; the Jacobian is formed at most once per point.

        - :math:`\nabla^2E = cM` (regression): :math:`A = (c + 1/\tau)J^\top MJ`, and the manifold's own
          cached factorisation of :math:`J^\top MJ` is reused (scale :math:`c + 1/\tau`).
        - Where :math:`J` is formed, :math:`Nm < p` and :math:`W = \operatorname{diag}(d)`, :math:`d \ge 0` (jet
          energies with a jet metric): the kernel side :math:`K = BB^\top`, :math:`B = \operatorname{diag}(\sqrt d)J`
          (:func:`~mms_manifolds.linalg.diagonal_weight_factorization`).
        - Otherwise, where :math:`J` is formed: :math:`A` assembled as a ``(p, p)`` matrix from :math:`W`
          applied to the columns of :math:`J` (:class:`~mms_manifolds.linalg.GramFactorization`).
        - Matrix-free mode: the operator :math:`J^\top WJ` solved by CG.

        With :math:`J` formed, :math:`g = J^\top\nabla F_k(u)` is a matrix-vector product (no backward pass).

        Args:
            theta: the point, shape ``(p,)``.
            solve_mode: ``"auto"`` (or an :class:`~mms_manifolds.linalg.AutoSolve`) for the manifold's mode, else a
                mode for the model solve (``"dense"``, ``"cg"`` or an instance); where :math:`W = sM` the
                manifold's factorisation is always reused.
        """
        theta = self.manifold.check_point(theta)
        manifold = self.manifold
        u, function_gradient = self._evaluate(theta)
        cost = float(self.objective(u))
        weight = self.step_hessian(u)
        multiple = weight.multiple_of(manifold.metric)
        mode = make_solve_mode(solve_mode)
        if multiple is not None or isinstance(mode, AutoSolve):
            mode = manifold.selected_solve_mode()
        metric_operator = manifold.gram_operator(theta)
        if mode.forms_jacobian:
            jacobian = metric_operator.jacobian()
            gradient = jacobian.reshape(-1, manifold.dim).T @ function_gradient.reshape(-1)
        else:
            gradient = manifold.parametrization.vjp(theta, function_gradient)
        metric_factorization = manifold.metric_factorization(theta) if multiple is not None else None
        metric_trace = None if metric_factorization is None else metric_factorization.known_trace()
        if metric_trace is None:
            metric_trace = metric_operator.trace(exact=mode.forms_jacobian)
        if metric_factorization is not None:  # W = sM: the metric's own factorisation, scaled
            factorization = metric_factorization
            return GaussNewtonModel(
                cost,
                gradient,
                factorization,
                multiple,
                multiple * metric_trace / manifold.dim,
                1 / (self.tau * multiple),
            )
        if mode.forms_jacobian:
            operator = GramOperator(manifold.parametrization, weight, theta, jacobian=jacobian)
            factorization = diagonal_weight_factorization(operator)
            if factorization is not None:
                trace = float(torch.trace(factorization.gram))
                share = metric_trace / (self.tau * trace) if trace > 0 else 1.0
                return GaussNewtonModel(
                    cost,
                    gradient,
                    factorization,
                    1.0,
                    trace / manifold.dim,
                    share,
                    factorization.range_form(function_gradient),
                )
            factorization = mode.factorize_weighted(operator)
            trace = float(torch.trace(factorization.gram))
        else:
            operator = GramOperator(manifold.parametrization, weight, theta)
            factorization, trace = mode.factorize_weighted(operator), operator.trace(exact=False)
        share = metric_trace / (self.tau * trace) if trace > 0 else 1.0
        return GaussNewtonModel(cost, gradient, factorization, 1.0, trace / manifold.dim, share)

    def geodesic_acceleration(
        self,
        theta: torch.Tensor,
        model: GaussNewtonModel,
        step: torch.Tensor,
        damping: float,
        cutoff: float | None = None,
    ) -> torch.Tensor:
        r"""The second-order correction :math:`a = -(A + \mu I)^{-1}J^\top W\,D^2\phi[\delta, \delta]` of a model step, shape ``(p,)``.

        The model step :math:`\delta` linearises :math:`\phi`; along the curve
        :math:`t \mapsto \theta + t\delta + \tfrac{t^2}2 a` the function changes by
        :math:`J\delta + \tfrac12(D^2\phi[\delta, \delta] + Ja) + O(|\delta|^3)`, and :math:`a` is the
        :math:`W`-least-squares choice that cancels the second-order term (:math:`W = \nabla^2E(u) + M/\tau`):
        the geodesic acceleration of Levenberg–Marquardt. One second directional derivative (a JVP of a
        JVP), one product with :math:`J^\top` (the cached Jacobian where it is formed, else a VJP), and one
        solve with the model's factorisation (:meth:`GaussNewtonModel.solve`: for :math:`\mu = 0` the
        pseudo-inverse with ``cutoff``, the one the step was taken with).

        References:
            M. K. Transtrum, J. P. Sethna, "Improvements to the Levenberg–Marquardt algorithm for nonlinear
            least-squares minimization", arXiv:1201.5885, 2012.
        """
        parametrization = self.manifold.parametrization
        u, _ = self._evaluate(theta)
        curvature = parametrization.second_derivative(theta, step, step)
        if isinstance(model.factorization, DiagonalWeightFactorization):  # J^T W c = B^T (sqrt(d) c): range form
            return -model.factorization.range_solve(model.factorization.whiten(curvature), damping, cutoff)
        weighted = self.step_hessian(u).apply(curvature)
        return -model.solve(self.manifold.pull_back(theta, weighted), damping, cutoff)

    def riemannian_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`G^{-1}\nabla_\theta f`, shape ``(p,)``."""
        return self.manifold.egrad2rgrad(theta, self.euclidean_gradient(theta))

    def tangential_residual(self, theta: torch.Tensor) -> float:
        r""":math:`\|P_T r\|_M`, the part of the residual more inner iterations can remove; solvers stop on it.

        Exact in the dense, kernel and Woodbury modes; in the matrix-free mode it is the damped estimate of
        :meth:`IncrementManifold.split_norms`. (The Riemannian gradient norm
        :math:`\|\operatorname{grad} f\|_G` equals it only without damping; with damping it is smaller.)
        """
        return self.residual(theta).tangential

    def residual(self, theta: torch.Tensor, parts: str = "split") -> Residual:
        r"""The residual :math:`r = M^{-1}\nabla F_k(u)` at :math:`u = \phi(\theta)` and its :math:`M`-orthogonal split (or its norm alone).

        All three are ``nan`` where :math:`\nabla F_k(u)` is not finite (a diverged state). Where the metric
        is only semi-definite (mesh-free jets), :math:`r` does not exist: the tangential part is then
        :meth:`IncrementManifold.dual_tangential_norm` of :math:`\nabla F_k(u)` and the other two are ``nan``.

        The residuals of the last two points are kept: a solver that compares a candidate with the current
        point, and a driver that books the point the solver ended at, never form a Jacobian twice for one
        point (the manifold's factorisation is cached for one point only), whatever the order of the calls: in
        the matrix-free mode one CG solve per point, in the kernel mode one Cholesky or eigendecomposition.

        Args:
            theta: the point, shape ``(p,)``.
            parts: ``"split"`` (default) for the three norms; ``"total"`` for :math:`\|r\|_M` alone
                (:meth:`Residual.total_only`): one solve with :math:`M` (elementwise for a diagonal metric), no
                Jacobian, no linearisation, no solve with :math:`G`. A split already kept for ``theta`` gives its
                total (the same arithmetic); a total alone is not kept (the driver asks for it once per point).
                ``nan`` where the metric is only semi-definite (:math:`M^{-1}` does not exist).

        Raises:
            ValueError: ``parts`` is not one of :data:`RESIDUAL_PARTS`.
        """
        check_choice("parts", parts, RESIDUAL_PARTS)
        theta = self.manifold.check_point(theta)
        for point, known in self._residuals:
            if torch.equal(point, theta):
                return known if parts == "split" else Residual.total_only(known.total)
        if parts == "total":
            return Residual.total_only(self._total_residual(theta))
        residual = self._residual(theta)
        self._residuals = [(theta.detach().clone(), residual), *self._residuals[:1]]
        return residual

    def _total_residual(self, theta: torch.Tensor) -> float:
        r""":math:`\|M^{-1}\nabla F_k(u)\|_M` (``nan`` for a non-finite gradient or a semi-definite metric), as :meth:`_residual` computes it."""
        _, function_gradient = self._evaluate(theta)
        if not self.manifold.metric.positive_definite or not bool(torch.isfinite(function_gradient).all()):
            return math.nan
        return float(self.manifold.metric.norm(self.manifold.metric.solve(function_gradient)))

    def _residual(self, theta: torch.Tensor) -> Residual:
        _, function_gradient = self._evaluate(theta)
        if not bool(torch.isfinite(function_gradient).all()):
            return Residual.not_computed()
        if not self.manifold.metric.positive_definite:
            tangential = self.manifold.dual_tangential_norm(theta, function_gradient)
            return Residual(total=math.nan, tangential=tangential, normal=math.nan)
        ambient = self.manifold.metric.solve(function_gradient)
        total = float(self.manifold.metric.norm(ambient))  # as _total_residual: a split's total is that one
        tangential, normal = self.manifold.split_norms(theta, ambient)
        return Residual(total=total, tangential=tangential, normal=normal)
