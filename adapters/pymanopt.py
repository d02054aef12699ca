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

from mms_manifolds.manifold import IncrementManifold, check_transport_kind
from mms_manifolds.parametrizations import AutogradParametrization
from mms_manifolds.solvers.base import InnerResult, InnerSolver, StopReason
from mms_manifolds.subproblem import MMSSubproblem

__all__ = ["PymanoptIncrementManifold", "PymanoptSolver", "make_problem"]


class PymanoptIncrementManifold(Manifold):
    r"""An :class:`~mms_manifolds.IncrementManifold` for pymanopt's optimisers and tools.

    Implements every method pymanopt calls: ``inner_product``, ``norm``, ``projection`` and
    ``to_tangent_space`` (identity: tangent spaces are :math:`\mathbb{R}^p`), ``embedding`` (identity),
    ``euclidean_to_riemannian_gradient`` (:math:`G^{-1}g`), ``euclidean_to_riemannian_hessian`` (with the
    curvature term of the point-dependent metric), ``retraction`` (:math:`\theta + \xi`), ``exp``
    (geodesic integration), ``log`` (the inverse of the chart retraction, :math:`\theta_b - \theta_a`,
    not the Riemannian logarithm), ``transport``, ``dist`` (the function-space chord), ``pair_mean``
    (chart midpoint), ``typical_dist``, ``random_point``, ``random_tangent_vector``, ``zero_vector``.

    Args:
        manifold: the core manifold.
        transport_kind: ``"identity"`` (the differentiated chart retraction, free) or
            ``"projection"`` (:math:`G(\theta_b)^{-1}J_b^\top M J_a\xi`, one solve). Default ``"identity"``.
        typical_dist: scale of distances for TrustRegions' radius; default
            :math:`\max(1, \|\phi(\theta_0)\|_M)`, the size of the initial function.
        seed: seed of the generator behind ``random_point`` and ``random_tangent_vector``.

    Raises:
        ValueError: a point or vector is not a finite float64 vector of length :math:`p`.
    """

    def __init__(
        self,
        manifold: IncrementManifold,
        transport_kind: str = "identity",
        typical_dist: float | None = None,
        seed: int = 0,
    ):
        if not isinstance(manifold, IncrementManifold):
            raise TypeError(f"manifold must be an IncrementManifold, got {type(manifold).__name__}")
        self.core = manifold
        self.transport_kind = check_transport_kind(transport_kind)
        if typical_dist is None:
            initial = manifold.parametrization.value(manifold.parametrization.initial_point())
            typical_dist = max(1.0, float(manifold.metric.norm(initial)))
        self._typical_dist = float(typical_dist)
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
        return self.to_numpy(self.core.retract(self.to_torch(point), self.to_torch(tangent_vector, "tangent_vector")))

    def exp(self, point, tangent_vector):
        return self.to_numpy(self.core.exp(self.to_torch(point), self.to_torch(tangent_vector, "tangent_vector")))

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


class PymanoptSolver(InnerSolver):
    r"""An MMS inner solver that runs any pymanopt optimiser on :func:`make_problem`.

    The optimiser's own ``max_iterations`` is the iteration budget; a tolerance from the driver
    becomes its ``min_gradient_norm`` for that call. pymanopt stops on
    :math:`\|\operatorname{grad} f\|_G`, which the damping makes smaller than the tangential residual the
    built-in solvers stop on; the recorded history is pymanopt's where it logs one.

    Args:
        optimizer: a pymanopt optimiser instance, e.g. ``TrustRegions(max_iterations=5, verbosity=0)``.
        transport_kind: passed to :class:`PymanoptIncrementManifold`.
    """

    name = "pymanopt"

    def __init__(self, optimizer: pymanopt.optimizers.optimizer.Optimizer, transport_kind: str = "identity"):
        if not isinstance(optimizer, pymanopt.optimizers.optimizer.Optimizer):
            raise TypeError(f"optimizer must be a pymanopt optimizer, got {type(optimizer).__name__}")
        # pymanopt keeps its stopping criteria in private attributes and has no setters.
        super().__init__(max_iterations=int(optimizer._max_iterations), tolerance=float(optimizer._min_gradient_norm))
        self.optimizer = optimizer
        self.transport_kind = transport_kind
        self.name = f"pymanopt-{type(optimizer).__name__}"

    def __repr__(self) -> str:
        optimizer = self.optimizer
        return (
            f"PymanoptSolver({type(optimizer).__name__}, max_iterations={self.max_iterations}, "
            f"min_gradient_norm={self.tolerance}, min_step_size={optimizer._min_step_size}, "
            f"transport_kind={self.transport_kind!r})"
        )

    def _stop_reason(self, outcome: pymanopt.optimizers.optimizer.OptimizerResult, tolerance: float) -> StopReason:
        """pymanopt's stop, from the numbers it returns, in the order its own check uses (its message is prose).

        The iteration budget first, then the gradient norm against ``tolerance`` (``CONVERGED``), then the
        step size against the optimiser's ``min_step_size`` (``STALLED``); the time and cost-evaluation
        budgets count as a used-up budget (``MAX_ITERATIONS``).
        """
        if outcome.iterations >= self.optimizer._max_iterations:
            return StopReason.MAX_ITERATIONS
        if outcome.gradient_norm is not None and outcome.gradient_norm < tolerance:
            return StopReason.CONVERGED
        if outcome.step_size is not None and outcome.step_size < self.optimizer._min_step_size:
            return StopReason.STALLED
        return StopReason.MAX_ITERATIONS

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: dict[str, float]
    ) -> InnerResult:
        manifold = PymanoptIncrementManifold(subproblem.manifold, transport_kind=self.transport_kind)
        problem = make_problem(subproblem, manifold)
        saved = (self.optimizer._min_gradient_norm, self.optimizer._log_verbosity)
        self.optimizer._min_gradient_norm, self.optimizer._log_verbosity = tolerance, max(saved[1], 1)
        start_cost = subproblem.cost(theta0)
        start_residual = subproblem.tangential_residual(theta0)
        try:
            outcome = self.optimizer.run(problem, initial_point=manifold.to_numpy(theta0))
        finally:
            self.optimizer._min_gradient_norm, self.optimizer._log_verbosity = saved
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
            residuals = [start_residual] + ([subproblem.tangential_residual(point)] if finite else [])
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
