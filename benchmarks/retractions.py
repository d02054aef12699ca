r"""Gauss–Newton against Riemannian gradient descent with the exponential map, per iteration: what the move along the step buys.

On the paper's flows at 1 and 3 inner iterations per MMS step, Riemannian gradient descent along
geodesics (``rgd-exp`` in the reproduce roster) ends closer to the exact flow than the library's
Gauss–Newton on some flows, at several times its wall time. This script keeps the Gauss–Newton
*direction* (the Levenberg–Marquardt step :math:`\delta = -(A + \mu I)^{-1}g` with Nielsen's damping,
as ``GaussNewton(globalization="levenberg-marquardt")`` takes it on these flows) and changes only how
the iterate moves along it:

- ``chart``: :math:`\theta + \delta + \tfrac12 a`, :math:`a` the geodesic acceleration where
  :math:`2|a| \le 0.75|\delta|` (the library's rule; checked here to reproduce ``GaussNewton`` exactly);
- ``frozen-rk4``: one classical Runge–Kutta step of the model's geodesic equation
  :math:`\theta'' = -(A + \mu I)^{-1}J^\top W\,D^2\phi(\theta)[\theta', \theta']`, :math:`\theta'(0) = \delta`,
  with :math:`J`, :math:`W` and the factorisation of :math:`A` frozen at the iterate (four second
  directional derivatives, no new Jacobian; the geodesic acceleration is its Taylor term);
- ``geodesic-rk4``: one classical Runge–Kutta step of the manifold's geodesic equation
  :math:`\theta'' = -\Gamma_\theta(\theta', \theta')` (a Jacobian and a metric solve at every stage);
- ``geodesic``: the manifold's adaptive exponential map (Dormand–Prince, relative tolerance ``1e-2``),

each from the library's initial relative damping ``1e-3`` and from ``1e-6``. ``rgd-exp`` is the
roster's solver (exponential map to relative tolerance ``1e-4``). Reported per flow and budget: the
largest trajectory error (as ``docs/results.md``), the wall time, and the curve evaluations per MMS
step (Christoffel products :math:`\Gamma_\theta(\xi, \xi)` for the geodesics, second directional
derivatives for ``frozen-rk4``). One torch thread.

    python benchmarks/retractions.py            # quick-mode flows, results in benchmarks/results/retractions.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy
import torch

from mms_manifolds import GaussNewton, IncrementManifold, MMSSubproblem, RiemannianGradientDescent
from mms_manifolds.reproduce import build
from mms_manifolds.solvers import InnerResult, InnerSolver, StopReason
from mms_manifolds.solvers.gauss_newton import ACCELERATION_RATIO
from mms_manifolds.subproblem import GaussNewtonModel

RESULTS = Path(__file__).resolve().parent / "results"
FLOWS = ("regression", "latent_diffusion", "heat_1d", "heat_2d", "allen_cahn")
GEODESIC_RTOL = 1e-2

Move = Callable[[MMSSubproblem, GaussNewtonModel, torch.Tensor, torch.Tensor, float], torch.Tensor]


class EvaluationCount:
    """Counts the curve evaluations of one run: Christoffel products and frozen second derivatives."""

    active: EvaluationCount | None = None
    """The count of the run in progress."""

    def __init__(self):
        self.count = 0
        self._christoffel = IncrementManifold._christoffel

    def __enter__(self) -> EvaluationCount:
        original, counter = self._christoffel, self
        EvaluationCount.active = self

        def counted(manifold, theta, xi, eta):
            counter.count += 1
            return original(manifold, theta, xi, eta)

        IncrementManifold._christoffel = counted  # instrumentation of this script only
        return self

    def __exit__(self, *exc) -> None:
        IncrementManifold._christoffel = self._christoffel
        EvaluationCount.active = None


def _runge_kutta_4(acceleration: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], theta, velocity):
    r"""One classical RK4 step of :math:`\theta'' = F(\theta, \theta')` from :math:`t = 0` to :math:`1`; returns :math:`\theta(1)`."""

    def rate(state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return state[1], acceleration(*state)

    def shifted(state, slope, h):
        return state[0] + h * slope[0], state[1] + h * slope[1]

    start = (theta, velocity)
    k1 = rate(start)
    k2 = rate(shifted(start, k1, 0.5))
    k3 = rate(shifted(start, k2, 0.5))
    k4 = rate(shifted(start, k3, 1.0))
    return theta + (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]) / 6


def chart(subproblem, model, theta, step, damping):
    r"""``GaussNewton``'s move: :math:`\theta + \delta + a/2` where :math:`2|a| \le 0.75|\delta|`, else :math:`\theta + \delta`."""
    acceleration = subproblem.geodesic_acceleration(theta, model, step, damping)
    if 2 * float(acceleration.norm()) <= ACCELERATION_RATIO * float(step.norm()):
        step = step + 0.5 * acceleration
    return theta + step


def frozen_rk4(subproblem, model, theta, step, damping):
    r"""One RK4 step of the model's geodesic equation, :math:`J`, :math:`W` and the factorisation frozen at ``theta``."""
    manifold = subproblem.manifold
    weight = subproblem.step_hessian(subproblem.node_values(theta))

    def acceleration(point, velocity):
        EvaluationCount.active.count += 1
        curvature = manifold.parametrization.second_derivative(point, velocity, velocity)
        return -model.inverse(manifold.pull_back(theta, weight.apply(curvature)), damping)

    return _runge_kutta_4(acceleration, theta, step)


def geodesic_rk4(subproblem, model, theta, step, damping):
    r"""One RK4 step of the manifold's geodesic equation :math:`\theta'' = -\Gamma_\theta(\theta', \theta')`."""
    manifold = subproblem.manifold
    return _runge_kutta_4(lambda point, velocity: -manifold.christoffel(point, velocity, velocity), theta, step)


def geodesic(subproblem, model, theta, step, damping):
    """The manifold's adaptive exponential map at relative tolerance ``GEODESIC_RTOL``."""
    return subproblem.manifold.geodesic(theta, step, rtol=GEODESIC_RTOL, atol=GEODESIC_RTOL * 1e-2).point


MOVES: dict[str, Move] = {
    "chart": chart,
    "frozen-rk4": frozen_rk4,
    "geodesic-rk4": geodesic_rk4,
    "geodesic": geodesic,
}


class MovedLevenbergMarquardt(InnerSolver):
    """Levenberg–Marquardt with Nielsen's damping (as ``GaussNewton``'s) whose trial point is ``move`` along the step."""

    name = "lm-moved"

    def __init__(self, move: str, max_iterations: int, initial_damping: float = 1e-3, max_retries: int = 30):
        super().__init__(max_iterations)
        self.move, self.initial_damping, self.max_retries = MOVES[move], initial_damping, max_retries

    def initial_state(self) -> dict[str, float]:
        return {"relative_damping": self.initial_damping}

    def _trial_cost(self, subproblem, model, theta, step, damping) -> tuple[torch.Tensor, float]:
        try:
            candidate = self.move(subproblem, model, theta, step, damping)
        except (RuntimeError, ValueError):  # a geodesic that blows up
            return theta, math.nan
        return candidate, subproblem.cost(candidate) if bool(torch.isfinite(candidate).all()) else math.nan

    def _solve(self, subproblem, theta0, tolerance, state) -> InnerResult:
        theta, cost = theta0, subproblem.cost(theta0)
        costs, stop, iterations = [cost], StopReason.MAX_ITERATIONS, 0
        relative_damping, nu = state["relative_damping"], 2.0
        for _ in range(self.max_iterations):
            model = subproblem.gauss_newton_model(theta)
            iterations += 1
            for _ in range(self.max_retries):
                damping = relative_damping * model.mean_eigenvalue
                step = model.step(damping)
                predicted = model.predicted_decrease(step, damping)
                if not predicted > 8 * torch.finfo(step.dtype).eps * max(abs(cost), 1.0):
                    stop = StopReason.STALLED
                    break
                candidate, candidate_cost = self._trial_cost(subproblem, model, theta, step, damping)
                ratio = (cost - candidate_cost) / predicted if math.isfinite(candidate_cost) else -math.inf
                if ratio > 0:
                    theta, cost = candidate, candidate_cost
                    relative_damping *= max(1 / 3, 1 - (2 * ratio - 1) ** 3)
                    nu = 2.0
                    break
                relative_damping *= nu
                nu *= 2
            else:
                stop = StopReason.NO_PROGRESS
            costs.append(cost)
            if stop is not StopReason.MAX_ITERATIONS:
                break
        residual = subproblem.tangential_residual(theta)
        return InnerResult(
            theta, iterations, costs, [residual], [iterations], 0.0, stop, state={"relative_damping": relative_damping}
        )


def variants(budget: int) -> dict[str, InnerSolver]:
    """The solvers compared at ``budget`` iterations per step, by row name."""
    rows: dict[str, InnerSolver] = {
        "gauss-newton": GaussNewton(max_iterations=budget),
        "chart": MovedLevenbergMarquardt("chart", budget),
    }
    for move in ("frozen-rk4", "geodesic-rk4", "geodesic"):
        for damping in (1e-3, 1e-6):
            rows[f"{move} (damping {damping:g})"] = MovedLevenbergMarquardt(move, budget, initial_damping=damping)
    rows["rgd-exp"] = RiemannianGradientDescent(max_iterations=budget, use_exp=True, exp_rtol=1e-4)
    return rows


def run(flow_name: str, solver: InnerSolver) -> dict[str, float]:
    experiment = build(flow_name, "quick")
    with EvaluationCount() as counter:
        start = time.perf_counter()
        result = experiment.flow.run(experiment.theta0, experiment.steps, solver, reference=experiment.reference)
        wall = time.perf_counter() - start
    errors = numpy.asarray(result.trajectory_error)
    return {
        "max_error": float(numpy.max(errors[1:])),
        "wall_time": wall,
        "curve_evaluations_per_step": counter.count / experiment.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", default=",".join(FLOWS))
    parser.add_argument("--budgets", default="1,3")
    parser.add_argument("--output", type=Path, default=RESULTS / "retractions.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    for flow_name in args.flows.split(","):
        for budget in (int(b) for b in args.budgets.split(",")):
            for row, solver in variants(budget).items():
                record = {"flow": flow_name, "budget": budget, "solver": row, **run(flow_name, solver)}
                records.append(record)
                print(
                    f"{flow_name:17s} {budget:2d} {row:28s} {record['max_error']:10.3g} "
                    f"{record['wall_time']:7.2f} s {record['curve_evaluations_per_step']:6.1f} evals/step",
                    flush=True,
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": 1, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    args.output.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
