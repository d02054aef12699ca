r"""The increment manifold of a network: pullback geometry in parameter coordinates.

Points are flat parameter vectors :math:`\theta \in \mathbb{R}^p`; tangent vectors are flat vectors
:math:`\xi \in \mathbb{R}^p` whose function-space image is :math:`J(\theta)\xi`. The metric is the
(damped) pullback of the Hilbert metric :math:`M`,

.. math:: G(\theta) = J(\theta)^\top M J(\theta) + \lambda_d I,

so that, with :math:`\lambda_d = 0`, :math:`\theta \mapsto \phi(\theta) - u_k` is an isometric chart of
the increment set :math:`\{f_\theta - u_k\}` wherever :math:`J` has full column rank. The geometry does not
depend on the anchor :math:`u_k` (a translation); the step problem that uses it owns it
(:class:`~mms_manifolds.subproblem.MMSSubproblem`), so one manifold serves every step of a flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_geometry_dtype,
    check_held_tensors,
    check_integer,
    check_positive_float,
    check_shape,
    values_are_checked,
)
from .diagnostics import JacobianDiagnostics
from .linalg import (
    Factorization,
    GramOperator,
    MetricLinearization,
    SolveMode,
    make_solve_mode,
    range_mask,
    resolve_solve_mode,
)
from .linalg.limits import range_threshold
from .metrics.base import Metric
from .ode import integrate_dormand_prince
from .parametrizations.base import Parametrization

__all__ = ["TRANSPORT_KINDS", "Geodesic", "IncrementManifold", "check_transport_kind", "default_relative_damping"]

#: Vector transports :meth:`IncrementManifold.transport` implements.
TRANSPORT_KINDS = ("projection", "identity")

_MAX_DENSE_PD_CHECK = 2000


def default_relative_damping(dtype: torch.dtype) -> float:
    r"""Default :math:`\lambda_d / (\operatorname{tr}(J^\top M J)/p)`: ``1e-3`` in float64, ``1e-2`` in lower precision.

    A smooth network's Jacobian has geometrically decaying singular values (cond :math:`\sim 10^{18}`
    seen on a 1-6-1 tanh net), so an undamped solve is noise. The floor also bounds how far a
    Riemannian step of unit length moves in coordinates: with ``1e-6``, geoopt's momentum SGD and
    Adam (``lr`` 0.1 and 1e-2) raised the cost of a regression step by up to :math:`10^5` times, since
    the chart retraction :math:`\theta + \xi` left the region where it approximates the geodesic;
    with ``1e-3`` the same runs decreased it, and geodesics were 4 times cheaper to integrate.
    The MMS error bounds do not depend on it (they use the exact residual), and the Gauss–Newton
    solver uses its own Levenberg–Marquardt damping.
    """
    return 1e-3 if dtype == torch.float64 else 1e-2


def check_transport_kind(kind: str) -> str:
    """Return ``kind`` if it names a transport in :data:`TRANSPORT_KINDS`, else raise ``ValueError``."""
    return check_choice("transport_kind", kind, TRANSPORT_KINDS)


def _finite_result(method: str, value: torch.Tensor) -> torch.Tensor:
    """Return ``value``, raising ``ValueError`` if finite inputs overflowed to non-finite results (not inside a solver)."""
    if values_are_checked() and not bool(torch.isfinite(value).all()):
        raise ValueError(
            f"IncrementManifold.{method} overflowed: finite inputs (theta, tangent or ambient vectors) gave "
            "non-finite values; rescale them"
        )
    return value


@dataclass(frozen=True)
class Geodesic:
    r"""End state of a geodesic :math:`\gamma(t)` with :math:`\gamma(0) = \theta`, :math:`\gamma'(0) = \xi`.

    Attributes:
        point: :math:`\gamma(t)`, shape ``(p,)``.
        velocity: :math:`\gamma'(t)`, shape ``(p,)``.
        time: :math:`t`.
        error_estimate: accumulated local error estimate of the integration (max-norm).
        accepted_steps: accepted Dormand–Prince steps.
        rejected_steps: rejected steps.
        evaluations: Christoffel products :math:`\Gamma_\gamma(\gamma', \gamma')` the integration took (each a
            second directional derivative and a solve with :math:`G` at a new point).
    """

    point: torch.Tensor
    velocity: torch.Tensor
    time: float
    error_estimate: float
    accepted_steps: int
    rejected_steps: int
    evaluations: int


class IncrementManifold:
    r"""The set of increments :math:`\{\phi(\theta) - u_k\}` a network reaches, as a Riemannian manifold in the chart :math:`\theta`.

    Geometry (docs/geometry.md), with :math:`J = J(\theta)` and :math:`G = J^\top M J + \lambda_d I`:

    - inner product :math:`g_\theta(\xi, \eta) = \langle J\xi, J\eta\rangle_M + \lambda_d\,\xi\cdot\eta`;
    - Riemannian gradient :math:`G^{-1}\nabla_\theta f`;
    - projection of an ambient :math:`v \in H_N`: :math:`G^{-1}J^\top M v` (:math:`M`-least squares);
    - Christoffel map :math:`\Gamma_\theta(\xi, \eta) = G^{-1}J^\top M\, D^2\phi[\xi, \eta]`;
    - Riemannian Hessian :math:`G^{-1}(H_\theta\xi - c)`, :math:`c_i = \langle D^2\phi[\xi, e_i], MJ\,\mathrm{grad} f\rangle`;
    - exponential map by integrating :math:`\theta'' = -\Gamma_\theta(\theta', \theta')`.
    - retractions: the chart :math:`\theta + \xi` (first order), :math:`\theta + \xi - \tfrac12\Gamma_\theta(\xi, \xi)`
      (second order), and the projective one (Gauss–Newton iterations toward :math:`\phi(\theta) + J\xi`).

    Solves with :math:`G` use one of four modes (dense, kernel, Woodbury, matrix-free CG), chosen by size,
    memory and a cost model (:class:`~mms_manifolds.linalg.AutoSolve`) unless ``solve_mode`` names one. The factorisation of the last point is cached (one entry, keyed
    by the exact parameter values), so a sequence of calls at one point forms :math:`J` once.

    Args:
        parametrization: :math:`\phi`, shape ``(p,) -> (N, m)``.
        metric: :math:`M`, SPD on :math:`H_N`.
        damping: :math:`\lambda_d \ge 0`, or ``"auto"``: :func:`default_relative_damping` times
            :math:`\operatorname{tr}(J^\top M J)/p` at ``parametrization.initial_point()``, fixed at
            construction (a constant :math:`\lambda_d` leaves the Christoffel symbols unchanged).
        solve_mode: ``"auto"``, ``"dense"``, ``"woodbury"``, ``"cg"`` or a mode instance from
            :mod:`mms_manifolds.linalg`.

    Raises:
        ValueError: ``damping`` is negative or not finite; ``metric`` is not positive definite or numerically
            singular (checked densely when :math:`Nm \le 2000`); the network's increments leave the subspace a
            :class:`~mms_manifolds.metrics.SubspaceMetric` is defined on.

    Examples:
        >>> import torch
        >>> from mms_manifolds import IncrementManifold, L2Metric, TorchParametrization
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        >>> nodes = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(-1)
        >>> manifold = IncrementManifold(TorchParametrization(net, nodes), L2Metric(torch.full((32,), 2 / 32).double()))
        >>> manifold.dim
        25
    """

    def __init__(
        self,
        parametrization: Parametrization,
        metric: Metric,
        damping: float | str = "auto",
        solve_mode: object = "auto",
    ):
        if not isinstance(parametrization, Parametrization):
            raise TypeError(f"parametrization must be a Parametrization, got {type(parametrization).__name__}")
        if not isinstance(metric, Metric):
            raise TypeError(f"metric must be a Metric, got {type(metric).__name__}")
        check_geometry_dtype(parametrization.dtype)
        check_held_tensors("metric", metric, dtype=parametrization.dtype, device=parametrization.device, into=(Metric,))
        metric.check_fits(parametrization.output_shape, dtype=parametrization.dtype, device=parametrization.device)
        self.parametrization = parametrization
        self.metric = metric
        self.solve_mode = make_solve_mode(solve_mode)
        self.solve_choice = resolve_solve_mode(
            self.solve_mode,
            self.dim,
            parametrization.ambient_dimension,
            parametrization.dtype,
            parametrization.device,
            parametrization.jacobian_kernel_flops(),
        )
        """The solve mode in use and why (:class:`~mms_manifolds.linalg.SolveChoice`), resolved once here."""
        self._check_metric()
        metric.check_increments(parametrization)
        self._linearization = MetricLinearization(parametrization, metric, self.solve_choice.mode)
        if isinstance(damping, str) and damping == "auto":
            trace = self._trace_estimate()
            if not trace > 0:
                raise ValueError("damping='auto' needs a nonzero Jacobian at the initial point; pass damping > 0")
            self.damping = default_relative_damping(parametrization.dtype) * trace / self.dim
        elif isinstance(damping, str):
            raise ValueError(f"damping must be a number >= 0 or 'auto', got {damping!r}")
        else:
            self.damping = check_positive_float("damping", damping, allow_zero=True)

    # ----------------------------------------------------------------------------------- set-up

    def _check_metric(self) -> None:
        options = {"dtype": self.parametrization.dtype, "device": self.parametrization.device}
        shape = self.parametrization.output_shape
        if not self.metric.positive_definite:
            return  # declared semi-definite (mesh-free jets): the damped pullback metric is what must be SPD
        if self.parametrization.ambient_dimension <= _MAX_DENSE_PD_CHECK:
            self.metric.assert_positive_definite(shape, **options)
            return
        generator = torch.Generator(device=options["device"]).manual_seed(0)
        probe = torch.randn(shape, generator=generator, **options)
        if not float(self.metric.inner(probe, probe)) > 0:
            raise ValueError(f"{type(self.metric).__name__} is not positive definite: <v, Mv> <= 0 for a random v")

    def _trace_estimate(self) -> float:
        r""":math:`\operatorname{tr}(J^\top M J)` at the initial point: exact if :math:`J` may be formed, else Hutchinson.

        The operator is the linearisation's cached one, so a flow that starts at the initial point reuses the
        Jacobian formed here in its first step (at :math:`p = 20601`, :math:`N = 4900` that is 4-7 s of set-up).
        """
        operator = self.gram_operator(self.parametrization.initial_point())
        return operator.trace(exact=self.selected_solve_mode().forms_jacobian)

    def selected_solve_mode(self) -> SolveMode:
        """The solve mode in use: the automatic choice for this size (made once, at construction), or the one given."""
        return self.solve_choice.mode

    def solve_mode_name(self) -> str:
        """Name of the solve mode in use (after the automatic choice)."""
        return self.selected_solve_mode().name

    # ------------------------------------------------------------------------------ internals

    def check_point(self, theta: object, name: str = "theta") -> torch.Tensor:
        """Validate a point: shape ``(p,)``, the model's dtype and device, finite values."""
        return self.parametrization.check_point(theta, name)

    def check_tangent(self, xi: object, name: str = "xi") -> torch.Tensor:
        """Validate a tangent vector in coordinates: shape ``(p,)``, dtype, device, finite."""
        return self.parametrization.check_point(xi, name)

    def _check_ambient(self, v: object, name: str) -> torch.Tensor:
        tensor = as_tensor(name, v, dtype=self.parametrization.dtype, device=self.parametrization.device)
        check_shape(name, tensor, self.parametrization.output_shape)
        return check_finite(name, tensor)

    def gram_operator(self, theta: torch.Tensor) -> GramOperator:
        r"""The cached Gram operator :math:`J^\top M J` at ``theta`` (its Jacobian is formed at most once per point)."""
        return self._linearization.at(self.check_point(theta))[0]

    def metric_factorization(self, theta: torch.Tensor) -> Factorization:
        r"""The cached factorisation of :math:`J^\top M J` at ``theta``; ``solve(g, damping)`` works for any damping."""
        return self._linearization.at(self.check_point(theta))[1]

    def _solve(self, theta: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return self._linearization.solve(theta, rhs, self.damping)

    # ----------------------------------------------------------------------------- the geometry

    @property
    def dim(self) -> int:
        """:math:`p`, the dimension of the chart (the manifold's dimension where :math:`J` has full rank)."""
        return self.parametrization.num_parameters

    def to_ambient(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Function-space image :math:`J(\theta)\xi`, shape ``(N, m)``."""
        return _finite_result("to_ambient", self.parametrization.jvp(self.check_point(theta), self.check_tangent(xi)))

    def pull_back(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r""":math:`J(\theta)^\top w` for a dual function-space vector ``w`` of shape ``(N, m)``, shape ``(p,)``.

        A product with the Jacobian cached at ``theta`` where it is formed, else a VJP.
        """
        theta, w = self.check_point(theta), self._check_ambient(w, "w")
        return _finite_result("pull_back", self._linearization.vjp(theta, w))

    def inner(self, theta: torch.Tensor, xi: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        r""":math:`g_\theta(\xi, \eta) = \langle J\xi, J\eta\rangle_M + \lambda_d\,\xi\cdot\eta` (scalar tensor)."""
        theta, xi, eta = self.check_point(theta), self.check_tangent(xi), self.check_tangent(eta, "eta")
        jacobian_xi = self._linearization.jvp(theta, xi)
        jacobian_eta = jacobian_xi if eta is xi else self._linearization.jvp(theta, eta)
        return _finite_result("inner", self.metric.inner(jacobian_xi, jacobian_eta) + self.damping * (xi @ eta))

    def norm(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r""":math:`\sqrt{g_\theta(\xi, \xi)}`."""
        return self.inner(theta, xi, xi).clamp_min(0.0).sqrt()

    def metric_matvec(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r""":math:`G(\theta)\xi = J^\top M J\xi + \lambda_d\xi`, shape ``(p,)``."""
        theta, xi = self.check_point(theta), self.check_tangent(xi)
        operator, _ = self._linearization.at(theta)
        return _finite_result("metric_matvec", operator.matvec(xi) + self.damping * xi)

    def egrad2rgrad(self, theta: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
        r"""Riemannian gradient :math:`G^{-1}\nabla_\theta f` from the Euclidean gradient ``egrad`` (shape ``(p,)``): the solve with :math:`G`.

        For any dual vector ``egrad`` it is :math:`G(\theta)^{-1}` ``egrad`` (the truncated pseudo-inverse in dense mode
        when :math:`\lambda_d = 0`); pymanopt's name for it is kept.
        """
        return _finite_result("egrad2rgrad", self._solve(self.check_point(theta), self.check_tangent(egrad, "egrad")))

    def christoffel(self, theta: torch.Tensor, xi: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        r""":math:`\Gamma_\theta(\xi, \eta) = G^{-1}J^\top M\,D^2\phi[\xi, \eta]`, shape ``(p,)``."""
        theta, xi, eta = self.check_point(theta), self.check_tangent(xi), self.check_tangent(eta, "eta")
        return _finite_result("christoffel", self._christoffel(theta, xi, eta))

    def _christoffel(self, theta: torch.Tensor, xi: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        acceleration = self.parametrization.second_derivative(theta, xi, eta)
        return self._solve(theta, self._linearization.vjp(theta, self.metric.apply(acceleration)))

    def rhess(self, theta: torch.Tensor, egrad: torch.Tensor, ehess_xi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Riemannian Hessian-vector product of the Levi-Civita connection of :math:`G`.

        .. math:: \operatorname{Hess} f(\theta)[\xi] = G^{-1}\left(H_\theta\xi - c\right),\qquad
                  c_i = \langle D^2\phi[\xi, e_i],\; M J\,\operatorname{grad} f\rangle_{\mathbb{R}^{Nm}}

        equal to :math:`D(\operatorname{grad} f)[\xi] + \Gamma_\theta(\xi, \operatorname{grad} f)`; a constant
        damping :math:`\lambda_d I` does not change it.

        Args:
            theta: point, shape ``(p,)``.
            egrad: Euclidean gradient :math:`\nabla_\theta f`, shape ``(p,)``.
            ehess_xi: Euclidean Hessian-vector product :math:`H_\theta\xi`, shape ``(p,)``.
            xi: direction :math:`\xi`, shape ``(p,)``.
        """
        theta, xi = self.check_point(theta), self.check_tangent(xi)
        egrad, ehess_xi = self.check_tangent(egrad, "egrad"), self.check_tangent(ehess_xi, "ehess_xi")
        rgrad = self._solve(theta, egrad)
        weighted_image = self.metric.apply(self._linearization.jvp(theta, rgrad))
        curvature = self.parametrization.second_derivative_adjoint(theta, xi, weighted_image)
        return _finite_result("rhess", self._solve(theta, ehess_xi - curvature))

    def project(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r"""Tangent coordinates of an ambient vector: :math:`G^{-1}J^\top M v`, ``(N, m) -> (p,)``.

        With :math:`\lambda_d = 0` it is :math:`\arg\min_\xi \|J\xi - v\|_M`, and :math:`J\xi` is the
        :math:`M`-orthogonal projection of :math:`v` onto :math:`\operatorname{range} J`.
        """
        theta, v = self.check_point(theta), self._check_ambient(v, "v")
        self._linearization.at(theta)
        return _finite_result("project", self._solve(theta, self._linearization.vjp(theta, self.metric.apply(v))))

    def split_norms(self, theta: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
        r""":math:`M`-orthogonal split of :math:`v`: ``(||P_T v||_M, ||v - P_T v||_M)``, :math:`P_T` onto :math:`\operatorname{range} J`.

        Exact in the dense, kernel and Woodbury modes: :math:`P_T` projects onto the left singular vectors of
        :math:`M^{1/2}J` whose squared singular values exceed :math:`\min(p, Nm)\,\varepsilon\,\sigma_{\max}^2`, the
        directions the network reaches at bounded parameter cost (the same cutoff as the undamped
        dense pseudo-inverse, so the split agrees with :meth:`project` at ``damping=0``). In the
        matrix-free mode :math:`P_T` is replaced by :math:`J G^{-1}J^\top M` (damped), whose normal part
        is an upper bound on the exact one. (:meth:`~mms_manifolds.linalg.Factorization.range_split_norms`.)
        """
        theta, v = self.check_point(theta), self._check_ambient(v, "v")
        return self._linearization.at(theta)[1].range_split_norms(v, self.damping)

    def dual_tangential_norm(self, theta: torch.Tensor, g: torch.Tensor) -> float:
        r""":math:`\|P_T M^{-1}g\|_M` for a dual vector :math:`g` (shape ``(N, m)``), computed without :math:`M^{-1}`.

        With the whitened SVD :math:`M^{1/2}J = U\Sigma V^\top` and :math:`J^\top g = V\Sigma U^\top M^{-1/2}g`,
        the tangential norm is :math:`\|\Sigma_k^{-1}V_k^\top J^\top g\|` over the singular values kept by
        :meth:`split_norms` (the same number it returns for :math:`v = M^{-1}g`). It stays defined when
        :math:`M` is only semi-definite (mesh-free jets), where :math:`M^{-1}g` is not. In the matrix-free
        mode it is the damped :math:`\|JG^{-1}J^\top g\|_M`.
        """
        theta, g = self.check_point(theta), self._check_ambient(g, "g")
        factorization = self._linearization.at(theta)[1]
        return factorization.dual_tangential_norm(self._linearization.vjp(theta, g), self.damping)

    def retract(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Chart retraction :math:`R_\theta(\xi) = \theta + \xi` (first order)."""
        return _finite_result("retract", self.check_point(theta) + self.check_tangent(xi))

    def retract_second_order(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Second-order retraction :math:`\theta + \xi - \tfrac12\Gamma_\theta(\xi, \xi)`: agrees with :math:`\exp` to :math:`O(|\xi|^3)`."""
        theta, xi = self.check_point(theta), self.check_tangent(xi)
        return _finite_result("retract_second_order", theta + xi - 0.5 * self._christoffel(theta, xi, xi))

    def retract_projective(self, theta: torch.Tensor, xi: torch.Tensor, iterations: int = 2) -> torch.Tensor:
        r"""Projective retraction: Gauss–Newton iterations from :math:`\theta + \xi` toward the tangent line's image.

        .. math:: \theta_0 = \theta + \xi,\qquad
                  \theta_{j+1} = \theta_j + G(\theta_j)^{-1}J(\theta_j)^\top M\big(\phi(\theta) + J(\theta)\xi - \phi(\theta_j)\big),

        returning :math:`\theta_n`, ``n = iterations``: damped Gauss–Newton steps for
        :math:`\min_{\theta'}\|\phi(\theta') - \phi(\theta) - J\xi\|_M`, which pull the function back toward the
        point the tangent vector reaches in function space. A retraction (:math:`R_\theta(0) = \theta`, the
        correction is :math:`O(|\xi|^2)`); the first iteration is
        :math:`\theta + \xi - \tfrac12\Gamma_\theta(\xi, \xi) + O(|\xi|^3)`, the second-order retraction, and each
        further one adds :math:`\tfrac12\lambda_dG^{-1}\Gamma_\theta(\xi, \xi) + O(|\xi|^3)` (it removes the damping's
        share of the correction), so the curve is second order exactly for ``iterations=1`` or
        :math:`\lambda_d = 0`. Unlike :meth:`retract_second_order`, whose correction grows as :math:`|\xi|^2`,
        the iterations use :math:`\phi` itself, so they stay close to the geodesic for steps whose coordinate
        length is large: along weakly represented directions, where :math:`|\xi| \gg \|\xi\|_G`
        (docs/adapters.md, trust regions). Each iteration forms :math:`J` at a new point and solves with
        :math:`G` there.

        Args:
            theta: point, shape ``(p,)``.
            xi: tangent vector, shape ``(p,)``.
            iterations: Gauss–Newton iterations, at least 1. Default ``2``.
        """
        theta, xi = self.check_point(theta), self.check_tangent(xi)
        iterations = check_integer("iterations", iterations, minimum=1)
        target = self.parametrization.value(theta) + self._linearization.jvp(theta, xi)
        point = theta + xi
        for _ in range(iterations):
            self._linearization.at(point)  # J(point) is formed once and serves the VJP and the solve
            residual = target - self.parametrization.value(point)
            point = point + self._solve(point, self._linearization.vjp(point, self.metric.apply(residual)))
        return _finite_result("retract_projective", point)

    def geodesic(
        self, theta: torch.Tensor, xi: torch.Tensor, time: float = 1.0, *, rtol: float = 1e-10, atol: float = 1e-12
    ) -> Geodesic:
        r"""Integrate :math:`\gamma'' = -\Gamma_\gamma(\gamma', \gamma')`, :math:`\gamma(0) = \theta`, :math:`\gamma'(0) = \xi`, to ``time``.

        Adaptive Dormand–Prince 5(4) (:func:`mms_manifolds.ode.integrate_dormand_prince`); the result
        reports the error estimate and step counts. Each derivative evaluation solves with :math:`G`
        at a new point.
        """
        theta, xi = self.check_point(theta), self.check_tangent(xi)
        time = check_positive_float("time", time, allow_zero=True)
        rtol, atol = check_positive_float("rtol", rtol), check_positive_float("atol", atol)
        size = self.dim

        def rhs(state: torch.Tensor) -> torch.Tensor:
            point, velocity = state[:size], state[size:]
            return torch.cat([velocity, -self._christoffel(point, velocity, velocity)])

        result = integrate_dormand_prince(rhs, torch.cat([theta, xi]), time, rtol=rtol, atol=atol)
        return Geodesic(
            point=result.state[:size],
            velocity=result.state[size:],
            time=time,
            error_estimate=result.error_estimate,
            accepted_steps=result.accepted_steps,
            rejected_steps=result.rejected_steps,
            evaluations=result.evaluations,
        )

    def exp(self, theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        r"""Exponential map :math:`\exp_\theta(\xi) = \gamma(1)`; see :meth:`geodesic` for the error report."""
        return self.geodesic(theta, xi).point

    def transport(
        self, theta1: torch.Tensor, theta2: torch.Tensor, xi: torch.Tensor, kind: str = "projection"
    ) -> torch.Tensor:
        r"""Vector transport of :math:`\xi \in T_{\theta_1}` to :math:`T_{\theta_2}`.

        - ``"projection"``: :math:`G(\theta_2)^{-1}J(\theta_2)^\top M J(\theta_1)\xi`, the embedded-submanifold
          transport (project the ambient image onto the new tangent space);
        - ``"identity"``: :math:`\xi` unchanged, the differential of the chart retraction.
        """
        theta1, theta2, xi = (
            self.check_point(theta1, "theta1"),
            self.check_point(theta2, "theta2"),
            self.check_tangent(xi),
        )
        if check_transport_kind(kind) == "identity":
            return xi.clone()
        image = self._linearization.jvp(theta1, xi)
        self._linearization.at(theta2)  # J(theta2) is formed once and serves the VJP and the solve
        return _finite_result(
            "transport", self._solve(theta2, self._linearization.vjp(theta2, self.metric.apply(image)))
        )

    def dist(self, theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
        r"""Function-space chordal distance :math:`\|\phi(\theta_1) - \phi(\theta_2)\|_M`.

        A lower bound on the geodesic distance of the undamped metric (the chord is never longer
        than a curve on the manifold); it is not the Riemannian distance.
        """
        theta1, theta2 = self.check_point(theta1, "theta1"), self.check_point(theta2, "theta2")
        return _finite_result(
            "dist", self.metric.norm(self.parametrization.value(theta1) - self.parametrization.value(theta2))
        )

    def random_point(self, generator: torch.Generator | None = None, scale: float = 0.1) -> torch.Tensor:
        r"""``initial_point + scale * z``, :math:`z \sim N(0, I_p)` drawn from ``generator``."""
        theta = self.parametrization.initial_point()
        noise = torch.randn(self.dim, generator=generator, dtype=theta.dtype, device=theta.device)
        return theta + scale * noise

    def random_tangent(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""A Gaussian direction normalised to unit Riemannian norm :math:`g_\theta(\xi, \xi) = 1`."""
        theta = self.check_point(theta)
        xi = torch.randn(self.dim, generator=generator, dtype=theta.dtype, device=theta.device)
        return xi / self.norm(theta, xi)

    def zero_vector(self, theta: torch.Tensor) -> torch.Tensor:
        """The zero tangent vector at ``theta``, shape ``(p,)``."""
        return torch.zeros_like(self.check_point(theta))

    def diagnostics(self, theta: torch.Tensor) -> JacobianDiagnostics:
        r"""Singular values of :math:`M^{1/2}J(\theta)`, rank, conditioning and the damping in use.

        Forms the whitened Jacobian (``(Nm, p)``); in the matrix-free mode that is the one call that
        does, so keep it off hot paths at large sizes.
        """
        theta = self.check_point(theta)
        operator, _ = self._linearization.at(theta)
        singular = operator.whitened_svd()[1]
        sigma_max = float(singular.max())
        tolerance = range_threshold(singular, self.dim, self.parametrization.ambient_dimension)
        rank = int(range_mask(singular, self.dim, self.parametrization.ambient_dimension).sum())
        sigma_min = float(singular.min()) if self.dim <= self.parametrization.ambient_dimension else 0.0
        return JacobianDiagnostics(
            num_parameters=self.dim,
            ambient_dimension=self.parametrization.ambient_dimension,
            sigma_max=sigma_max,
            sigma_min=sigma_min,
            condition_number=sigma_max / sigma_min if sigma_min > 0 else float("inf"),
            numerical_rank=rank,
            rank_tolerance=tolerance,
            damping=self.damping,
            damped_condition_number=(
                (sigma_max**2 + self.damping) / (sigma_min**2 + self.damping)
                if sigma_min > 0 or self.damping > 0
                else float("inf")
            ),
        )
