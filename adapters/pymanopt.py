r"""The increment manifold as a pymanopt ``Manifold``, a ``Problem`` builder, and an MMS inner solver.

pymanopt sees the chart: points and tangent vectors are flat float64 numpy vectors of length
:math:`p`, the tangent space at every point is :math:`\mathbb{R}^p` (so ``projection`` and
``to_tangent_space`` are the identity), and the Riemannian metric is
:math:`G(\theta) = J^\top M J + \lambda_d I`. Every geometric operation is delegated to
:class:`mms_manifolds.IncrementManifold`; nothing is computed here but conversions.
"""

from __future__ import annotations

import math

import numpy as np
import pymanopt
import torch
from autograd.extend import defvjp, primitive
from pymanopt.manifolds.manifold import Manifold

from mms_manifolds._checks import check_choice, check_instance, check_integer, check_positive_float
from mms_manifolds.manifold import IncrementManifold, check_transport_kind
from mms_manifolds.parametrizations import AutogradParametrization
from mms_manifolds.solvers.base import InnerResult, InnerSolver, StopReason
from mms_manifolds.solvers.state import NoState
from mms_manifolds.subproblem import MMSSubproblem

from . import _pymanopt_diagnostics

__all__ = ["EXP_MAPS", "RETRACTIONS", "PymanoptIncrementManifold", "PymanoptSolver", "make_problem"]

EXP_MAPS = ("second-order", "geodesic")
"""What :meth:`PymanoptIncrementManifold.exp` computes: the second-order retraction, or the geodesic."""

RETRACTIONS = ("projective", "chart")
"""What :meth:`PymanoptIncrementManifold.retraction` computes: the projective retraction, or :math:`\\theta + \\xi`."""

_pymanopt_diagnostics.install()  # pymanopt 2.2's checks fail on every manifold under numpy 2


class PymanoptIncrementManifold(Manifold):
    r"""An :class:`~mms_manifolds.IncrementManifold` for pymanopt's optimisers and tools.

    Implements every method pymanopt calls: ``inner_product``, ``norm``, ``projection`` and
    ``to_tangent_space`` (identity: tangent spaces are :math:`\mathbb{R}^p`), ``embedding`` (identity),
    ``euclidean_to_riemannian_gradient`` (:math:`G^{-1}g`), ``euclidean_to_riemannian_hessian`` (with the
    curvature term of the point-dependent metric), ``retraction`` (projective by default, see below), ``exp``
    (geodesic integration), ``log`` (the inverse of the chart retraction, :math:`\theta_b - \theta_a`,
    not the Riemannian logarithm), ``transport``, ``dist`` (the function-space chord), ``pair_mean``
    (chart midpoint), ``typical_dist``, ``random_point``, ``random_tangent_vector``, ``zero_vector``.

    pymanopt's optimisers move by ``retraction``. By default it is
    :meth:`~mms_manifolds.IncrementManifold.retract_projective` (``projection_iterations`` Gauss–Newton
    iterations from :math:`\theta + \xi` toward :math:`\phi(\theta) + J\xi`): pymanopt's ``TrustRegions``
    takes steps that are short in the metric but long in coordinates (weakly represented directions), along
    which the chart line :math:`\theta + \xi` leaves the geodesic and the trust-region model, so that with
    ``retraction="chart"`` most of its steps were rejected (docs/adapters.md). ``exp`` serves pymanopt's
    diagnostics, which prefer it to the retraction. By default ``exp`` is the second-order retraction
    :math:`\theta + \xi - \tfrac12\Gamma_\theta(\xi, \xi)` (one Christoffel solve, agrees with the
    exponential map to :math:`O(|\xi|^3)`): then ``check_gradient`` shows slope 2, ``check_hessian``
    slope 3 (the quadratic model needs a curve with zero initial acceleration) and ``check_retraction``
    slope 2 (the chart retraction is first order in this metric), all in seconds. ``exp_map="geodesic"``
    integrates the geodesic ODE instead (:meth:`~mms_manifolds.IncrementManifold.geodesic`, adaptive,
    about a hundred solves per unit step on a small MLP): the same slopes, at 10-1000x the cost.
    ``check_retraction`` shows slope 2 for the default retraction (two iterations: a second-order defect
    :math:`\tfrac12\lambda_dG^{-1}\Gamma_\theta(\xi, \xi)`), 3 with ``projection_iterations=1``, 2 for the chart.

    Args:
        manifold: the core manifold.
        transport_kind: ``"identity"`` (the differentiated chart retraction, free) or
            ``"projection"`` (:math:`G(\theta_b)^{-1}J_b^\top M J_a\xi`, one solve). Default ``"identity"``.
        typical_dist: scale of distances for TrustRegions' radius; default
            :math:`\max(1, \|\phi(\theta_0)\|_M)`, the size of the initial function.
        seed: seed of the generator behind ``random_point`` and ``random_tangent_vector``.
        exp_map: ``"second-order"`` (default) or ``"geodesic"``, see above.
        retraction: ``"projective"`` (default) or ``"chart"`` (:math:`\theta + \xi`), see above.
        projection_iterations: Gauss–Newton iterations of the projective retraction, at least 1. Default ``2``.

    Raises:
        ValueError: a point or vector is not a finite float64 vector of length :math:`p`, or
            ``exp_map``/``transport_kind``/``retraction`` names no option.
    """

    def __init__(
        self,
        manifold: IncrementManifold,
        transport_kind: str = "identity",
        typical_dist: float | None = None,
        seed: int = 0,
        exp_map: str = "second-order",
        retraction: str = "projective",
        projection_iterations: int = 2,
    ):
        if not isinstance(manifold, IncrementManifold):
            raise TypeError(f"manifold must be an IncrementManifold, got {type(manifold).__name__}")
        check_choice("exp_map", exp_map, EXP_MAPS)
        self.core = manifold
        self.exp_map = exp_map
        self.retraction_kind = check_choice("retraction", retraction, RETRACTIONS)
        self.projection_iterations = check_integer("projection_iterations", projection_iterations, minimum=1)
        self.transport_kind = check_transport_kind(transport_kind)
        if typical_dist is None:
            initial = manifold.parametrization.value(manifold.parametrization.initial_point())
            typical_dist = max(1.0, float(manifold.metric.norm(initial)))
        self._typical_dist = check_positive_float("typical_dist", typical_dist)
        seed = check_integer("seed", seed, minimum=0)
        self._generator = torch.Generator(device=manifold.parametrization.device).manual_seed(seed)
        super().__init__(f"Increment manifold of dimension {manifold.dim}", manifold.dim)

    # ----------------------------------------------------------------------------- conversions

    def to_torch(self, vector: object, name: str = "point") -> torch.Tensor:
        """A flat float64 numpy vector as a tensor in the core's dtype and device, with clear errors."""
        if isinstance(vector, torch.Tensor):
            vector = vector.detach().cpu().numpy()
        array = np.asarray(vector)
        if array.dtype != np.float64:
            raise ValueError(f"{name} has dtype {array.dtype}; pymanopt points and vectors must be float64")
        if array.shape != (self.core.dim,):
            raise ValueError(f"{name} has shape {array.shape}, expected ({self.core.dim},)")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        options = {"dtype": self.core.parametrization.dtype, "device": self.core.parametrization.device}
        return torch.as_tensor(array, **options)

    @staticmethod
    def to_numpy(tensor: torch.Tensor) -> np.ndarray:
        """A tensor as a float64 numpy vector."""
        return tensor.detach().cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------------------- geometry

    @property
    def typical_dist(self) -> float:
        return self._typical_dist

    def inner_product(self, point, tangent_vector_a, tangent_vector_b) -> float:
        theta = self.to_torch(point)
        return float(
            self.core.inner(
                theta,
                self.to_torch(tangent_vector_a, "tangent_vector_a"),
                self.to_torch(tangent_vector_b, "tangent_vector_b"),
            )
        )

    def norm(self, point, tangent_vector) -> float:
        return float(self.core.norm(self.to_torch(point), self.to_torch(tangent_vector, "tangent_vector")))

    def projection(self, point, vector):
        return np.array(self.to_torch(vector, "vector").cpu().numpy(), dtype=np.float64)

    to_tangent_space = projection

    def embedding(self, point, tangent_vector):
        return tangent_vector

    def euclidean_to_riemannian_gradient(self, point, euclidean_gradient):
        theta = self.to_torch(point)
        return self.to_numpy(self.core.egrad2rgrad(theta, self.to_torch(euclidean_gradient, "euclidean_gradient")))

    def euclidean_to_riemannian_hessian(self, point, euclidean_gradient, euclidean_hessian, tangent_vector):
        theta = self.to_torch(point)
        return self.to_numpy(
            self.core.rhess(
                theta,
                self.to_torch(euclidean_gradient, "euclidean_gradient"),
                self.to_torch(euclidean_hessian, "euclidean_hessian"),
                self.to_torch(tangent_vector, "tangent_vector"),
            )
        )

    def retraction(self, point, tangent_vector):
        """The projective retraction (default) or the chart retraction :math:`\\theta + \\xi`, as ``retraction`` chose."""
        theta, xi = self.to_torch(point), self.to_torch(tangent_vector, "tangent_vector")
        if self.retraction_kind == "chart":
            return self.to_numpy(self.core.retract(theta, xi))
        return self.to_numpy(self.core.retract_projective(theta, xi, self.projection_iterations))

    def exp(self, point, tangent_vector):
        """The second-order retraction (default) or the geodesic, as ``exp_map`` chose."""
        theta, xi = self.to_torch(point), self.to_torch(tangent_vector, "tangent_vector")
        if self.exp_map == "geodesic":
            return self.to_numpy(self.core.exp(theta, xi))
        return self.to_numpy(self.core.retract_second_order(theta, xi))

    def log(self, point_a, point_b):
        """The inverse of the chart retraction, :math:`\\theta_b - \\theta_a` (not the Riemannian logarithm)."""
        return self.to_numpy(self.to_torch(point_b, "point_b") - self.to_torch(point_a, "point_a"))

    def transport(self, point_a, point_b, tangent_vector_a):
        return self.to_numpy(
            self.core.transport(
                self.to_torch(point_a, "point_a"),
                self.to_torch(point_b, "point_b"),
                self.to_torch(tangent_vector_a, "tangent_vector_a"),
                kind=self.transport_kind,
            )
        )

    def dist(self, point_a, point_b) -> float:
        return float(self.core.dist(self.to_torch(point_a, "point_a"), self.to_torch(point_b, "point_b")))

    def pair_mean(self, point_a, point_b):
        """The chart midpoint :math:`(\\theta_a + \\theta_b)/2`."""
        return self.to_numpy(0.5 * (self.to_torch(point_a, "point_a") + self.to_torch(point_b, "point_b")))

    def random_point(self):
        return self.to_numpy(self.core.random_point(self._generator))

    def random_tangent_vector(self, point):
        return self.to_numpy(self.core.random_tangent(self.to_torch(point), self._generator))

    def zero_vector(self, point):
        return np.zeros(self.core.dim)

    # ------------------------------------------------------------- values for user-written costs

    def function_values(self, theta):
        r"""Node values :math:`\phi(\theta)`, shape ``(N, m)``, inside pymanopt's autodiff backends.

        - ``@pymanopt.function.pytorch``: ``theta`` is a float64 tensor; the result is a float64
          tensor differentiable by torch (the model's dtype is handled inside).
        - ``@pymanopt.function.autograd``: ``theta`` is an autograd box; the result is an autograd
          array whose first and second derivatives come from the core's JVP/VJP primitives.
        - a plain numpy vector gives a numpy array.
        """
        parametrization = self.core.parametrization
        if isinstance(theta, torch.Tensor):
            model_theta = theta.to(dtype=parametrization.dtype, device=parametrization.device)
            return parametrization.value(model_theta).to(theta.dtype)
        if isinstance(parametrization, AutogradParametrization):
            return parametrization._phi(theta)
        return _values_primitive(self)(theta)


def _values_primitive(adapter: PymanoptIncrementManifold):
    r"""HIPS-autograd primitives for :math:`\phi`: value, VJP :math:`J^\top g`, and the VJP's own derivatives.

    Reverse-over-reverse Hessians need the derivative of :math:`(\theta, g) \mapsto J(\theta)^\top g`:
    with cotangent :math:`w`, it is :math:`c(\theta; w, g)` in :math:`\theta` (the core's
    ``second_derivative_adjoint``) and :math:`J w` in :math:`g`.
    """
    core = adapter.core.parametrization
    as_tensor, as_array = adapter.to_torch, adapter.to_numpy

    @primitive
    def values(theta):
        return core.value(as_tensor(np.asarray(theta, dtype=np.float64))).detach().cpu().numpy()

    @primitive
    def pullback(theta, cotangent):
        return as_array(core.vjp(as_tensor(theta), torch.as_tensor(cotangent, dtype=core.dtype, device=core.device)))

    def cotangent_tensor(array):
        return torch.as_tensor(np.asarray(array), dtype=core.dtype, device=core.device)

    defvjp(values, lambda answer, theta: lambda g: pullback(theta, g))
    defvjp(
        pullback,
        lambda answer, theta, g: (
            lambda w: as_array(
                core.second_derivative_adjoint(as_tensor(theta), cotangent_tensor(w), cotangent_tensor(g))
            )
        ),
        lambda answer, theta, g: lambda w: core.jvp(as_tensor(theta), cotangent_tensor(w)).detach().cpu().numpy(),
    )
    return values


def make_problem(subproblem: MMSSubproblem, manifold: PymanoptIncrementManifold | None = None) -> pymanopt.Problem:
    r"""A ``pymanopt.Problem`` for one MMS step with cost, Euclidean gradient and Hessian-vector product from the core.

    Cost and gradient share one cached forward per point (:class:`~mms_manifolds.MMSSubproblem`
    caches :math:`\phi(\theta)` and :math:`\nabla F_k`); the Hessian-vector product is assembled from
    JVP/VJP primitives rather than nested autodiff of the whole cost.

    Args:
        subproblem: the MMS step.
        manifold: the pymanopt manifold; built from ``subproblem.manifold`` when omitted.
    """
    manifold = manifold or PymanoptIncrementManifold(subproblem.manifold)

    @pymanopt.function.numpy(manifold)
    def cost(point):
        return subproblem.cost(manifold.to_torch(point))

    @pymanopt.function.numpy(manifold)
    def euclidean_gradient(point):
        return manifold.to_numpy(subproblem.euclidean_gradient(manifold.to_torch(point)))

    @pymanopt.function.numpy(manifold)
    def euclidean_hessian(point, tangent_vector):
        theta, xi = manifold.to_torch(point), manifold.to_torch(tangent_vector, "tangent_vector")
        return manifold.to_numpy(subproblem.hessian_vector_product(theta, xi))

    return pymanopt.Problem(manifold, cost, euclidean_gradient=euclidean_gradient, euclidean_hessian=euclidean_hessian)


def _describe(value: object) -> str:
    """``repr(value)``, or for an object with the default ``repr`` (an address) its class and settings."""
    if type(value).__repr__ is object.__repr__:
        settings = ", ".join(f"{key.lstrip('_')}={item!r}" for key, item in sorted(vars(value).items()))
        return f"{type(value).__name__}({settings})"
    return repr(value)


class PymanoptSolver(InnerSolver):
    r"""An MMS inner solver that runs a pymanopt optimiser on :func:`make_problem`, a fresh one per solve.

    Every solve builds ``optimizer_class(max_iterations=..., min_gradient_norm=tolerance, verbosity=0,
    log_verbosity=1, **options)``, so nothing is carried between MMS steps and no optimiser the user holds
    is modified. pymanopt stops on :math:`\|\operatorname{grad} f\|_G`, which the damping makes smaller
    than the tangential residual the built-in solvers stop on; the recorded history is pymanopt's where it
    logs one.

    ``TrustRegions`` gets radii from the step's scale unless ``run_options`` sets them: initial radius
    ``Delta0`` :math:`= \ell`, the Gauss–Newton-equivalent step length
    (:meth:`~mms_manifolds.MMSSubproblem.riemannian_step_length`), and largest radius ``Delta_bar``
    :math:`= \max(\text{typical\_dist}, 8\ell)` (pymanopt's own, ``Delta_bar`` = typical_dist and ``Delta0``
    an eighth of it, ignore the step's scale; ``None`` for both restores them). The line-search optimisers
    keep pymanopt's line searchers: a first trial of length :math:`\ell` measured no better
    (docs/adapters.md).

    Args:
        optimizer_class: a pymanopt optimiser class, e.g. ``TrustRegions``.
        max_iterations: the optimiser's iteration budget. Default ``20``.
        tolerance: the optimiser's ``min_gradient_norm`` when the driver gives none. Default ``0``.
        transport_kind: passed to :class:`PymanoptIncrementManifold`.
        retraction: passed to :class:`PymanoptIncrementManifold`. Default ``"chart"`` (:math:`\theta + \xi`),
            with which the radii rule and ``reproduce`` were measured; ``"projective"`` is the manifold's own
            default (docs/adapters.md).
        run_options: keyword arguments of ``optimizer.run`` (``Delta_bar``, ``Delta0``, ``maxinner``, ...).
        **options: keyword arguments of the optimiser's constructor (``min_step_size``, ``beta_rule``,
            ``line_searcher``, ``miniter``, ...).
    """

    name = "pymanopt"
    _RESERVED = ("max_iterations", "min_gradient_norm", "log_verbosity")

    def __init__(
        self,
        optimizer_class: type[pymanopt.optimizers.optimizer.Optimizer],
        max_iterations: int = 20,
        tolerance: float = 0.0,
        transport_kind: str = "identity",
        run_options: dict[str, object] | None = None,
        retraction: str = "chart",
        **options: object,
    ):
        if not (
            isinstance(optimizer_class, type) and issubclass(optimizer_class, pymanopt.optimizers.optimizer.Optimizer)
        ):
            raise TypeError(f"optimizer_class must be a pymanopt optimizer class, got {optimizer_class!r}")
        reserved = sorted(set(options) & set(self._RESERVED))
        if reserved:
            raise ValueError(
                f"PymanoptSolver sets {reserved} itself: pass max_iterations= and tolerance= to PymanoptSolver"
            )
        super().__init__(max_iterations=max_iterations, tolerance=tolerance)
        self.optimizer_class = optimizer_class
        self.options = {"verbosity": 0, **options}
        self.run_options = dict(check_instance("run_options", {} if run_options is None else run_options, dict))
        self.transport_kind = check_transport_kind(transport_kind)
        self.retraction = check_choice("retraction", retraction, RETRACTIONS)
        self.name = f"pymanopt-{optimizer_class.__name__}"

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={_describe(value)}" for key, value in sorted(self.options.items()))
        return (
            f"PymanoptSolver({self.optimizer_class.__name__}, max_iterations={self.max_iterations}, "
            f"tolerance={self.tolerance!r}, transport_kind={self.transport_kind!r}, retraction={self.retraction!r}, "
            f"run_options={dict(sorted(self.run_options.items()))!r}, {options})"
        )

    def optimizer(self, tolerance: float) -> pymanopt.optimizers.optimizer.Optimizer:
        """A new optimiser for one solve: the user's options with the budget and ``tolerance``."""
        options = {"max_iterations": self.max_iterations, "min_gradient_norm": tolerance, "log_verbosity": 1}
        return self.optimizer_class(**self.options, **options)

    def run_arguments(
        self, manifold: PymanoptIncrementManifold, subproblem: MMSSubproblem, theta0: torch.Tensor
    ) -> dict[str, object]:
        """Keyword arguments of ``run`` besides the initial point: the user's, and TrustRegions' radii from the scale."""
        arguments = dict(self.run_options)
        if issubclass(self.optimizer_class, pymanopt.optimizers.TrustRegions) and not {"Delta0", "Delta_bar"} <= set(
            arguments
        ):
            length = subproblem.riemannian_step_length(theta0)
            length = length if math.isfinite(length) and length > 0 else manifold.typical_dist / 8
            arguments.setdefault("Delta0", length)
            arguments.setdefault("Delta_bar", max(manifold.typical_dist, 8 * length))
        return arguments

    def _stop_reason(self, outcome: pymanopt.optimizers.optimizer.OptimizerResult, tolerance: float) -> StopReason:
        """pymanopt's stop, from the numbers it returns, in the order its own check uses (its message is prose).

        The iteration budget first, then the gradient norm against ``tolerance`` (``CONVERGED``), then the
        step size against the optimiser's ``min_step_size`` (``STALLED``); the time and cost-evaluation
        budgets count as a used-up budget (``MAX_ITERATIONS``).
        """
        if outcome.iterations >= self.max_iterations:
            return StopReason.MAX_ITERATIONS
        if outcome.gradient_norm is not None and outcome.gradient_norm < tolerance:
            return StopReason.CONVERGED
        min_step_size = self.options.get("min_step_size", 1e-10)  # pymanopt's default
        if outcome.step_size is not None and outcome.step_size < min_step_size:
            return StopReason.STALLED
        return StopReason.MAX_ITERATIONS

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: NoState
    ) -> InnerResult:
        manifold = PymanoptIncrementManifold(
            subproblem.manifold, transport_kind=self.transport_kind, retraction=self.retraction
        )
        problem = make_problem(subproblem, manifold)
        start_cost = subproblem.cost(theta0)
        outcome = self.optimizer(tolerance).run(
            problem, initial_point=manifold.to_numpy(theta0), **self.run_arguments(manifold, subproblem, theta0)
        )
        final = np.asarray(outcome.point, dtype=np.float64)
        finite = bool(np.all(np.isfinite(final))) and math.isfinite(float(outcome.cost))
        point = manifold.to_torch(final) if finite else theta0
        log = (outcome.log or {}).get("iterations") or {}
        if log.get("gradient_norm"):  # SteepestDescent, ConjugateGradient log every iteration
            costs = [float(value) for value in log["cost"]]
            residuals = [float(value) for value in log["gradient_norm"]]
            residual_iterations = [int(value) for value in log["iteration"]]
        else:  # TrustRegions and the derivative-free optimisers keep no per-iteration log
            costs = [start_cost] + ([subproblem.cost(point)] if finite else [])
            residuals = []  # measured for the record, so only where the run books the split (nothing reads them else)
            if subproblem.booked_parts == "split" or tolerance > 0:
                residuals = [subproblem.tangential_residual(theta0)] + ([subproblem.tangential_residual(point)] if finite else [])
            residual_iterations = [0, int(outcome.iterations)][: len(residuals)]
        criterion = str(outcome.stopping_criterion)
        stop = self._stop_reason(outcome, tolerance) if finite else StopReason.NON_FINITE
        return InnerResult(
            point=point,
            iterations=int(outcome.iterations),
            cost_history=costs,
            residual_history=residuals,
            residual_iterations=residual_iterations,
            wall_time=0.0,
            stop_reason=stop,
            failed_iteration=int(outcome.iterations) if stop is StopReason.NON_FINITE else None,
            extra={"stopping_criterion": criterion},
        )
