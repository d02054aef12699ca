r"""Gauss–Newton against Riemannian gradient descent with the exponential map, per iteration: what the move along the step buys.

On the paper's flows at 1 and 3 inner iterations per MMS step, Riemannian gradient descent along
geodesics (``rgd-exp`` in the reproduce roster) ends closer to the exact flow than the library's
Gauss–Newton on some flows, at several times its wall time. This script keeps the Gauss–Newton
*direction* (the Levenberg–Marquardt step :math:`\delta = -(A + \mu I)^{-1}g` with Nielsen's damping,
as ``GaussNewton(globalization="levenberg-marquardt")`` takes it on these flows) and changes only how
the iterate moves along it (``MovedLevenbergMarquardt`` overrides ``GaussNewton.trial_point``, the
solver's public extension point for the move):

- ``chart``: :math:`\theta + \delta + \tfrac12 a`, :math:`a` the geodesic acceleration where
  :math:`2|a| \le 0.75|\delta|`: ``GaussNewton(globalization="levenberg-marquardt")`` itself, which
  reproduces ``GaussNewton()`` exactly (its automatic rule picks Levenberg–Marquardt on these flows);
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

Each solver counts its own curve evaluations (:class:`CountedGeodesicDescent` through
``RiemannianGradientDescent.move`` and :attr:`~mms_manifolds.manifold.Geodesic.evaluations`), so nothing
in the library is patched.

    python -m benchmarks.retractions            # quick-mode flows, results in benchmarks/results/retractions.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy
import torch

from mms_manifolds import GaussNewton, MMSSubproblem, RiemannianGradientDescent
from mms_manifolds.reproduce import build
from mms_manifolds.solvers import InnerSolver
from mms_manifolds.subproblem import GaussNewtonModel

from . import RESULTS
from .timing import Stopwatch, conditions, use_threads

FLOWS = ("regression", "latent_diffusion", "heat_1d", "heat_2d", "allen_cahn")
GEODESIC_RTOL = 1e-2


class EvaluationCount:
    """The curve evaluations of one run: Christoffel products and frozen second derivatives."""

    def __init__(self):
        self.count = 0


Move = Callable[[MMSSubproblem, GaussNewtonModel, torch.Tensor, torch.Tensor, float, EvaluationCount], torch.Tensor]


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


def frozen_rk4(subproblem, model, theta, step, damping, counter: EvaluationCount):
    r"""One RK4 step of the model's geodesic equation, :math:`J`, :math:`W` and the factorisation frozen at ``theta``."""
    manifold = subproblem.manifold
    weight = subproblem.step_hessian(subproblem.node_values(theta))

    def acceleration(point, velocity):
        counter.count += 1
        curvature = manifold.parametrization.second_derivative(point, velocity, velocity)
        return -model.solve(manifold.pull_back(theta, weight.apply(curvature)), damping)

    return _runge_kutta_4(acceleration, theta, step)


def geodesic_rk4(subproblem, model, theta, step, damping, counter: EvaluationCount):
    r"""One RK4 step of the manifold's geodesic equation :math:`\theta'' = -\Gamma_\theta(\theta', \theta')`."""
    manifold = subproblem.manifold

    def acceleration(point, velocity):
        counter.count += 1
        return -manifold.christoffel(point, velocity, velocity)

    return _runge_kutta_4(acceleration, theta, step)


def counted_geodesic(manifold, theta, xi, rtol: float, counter: EvaluationCount) -> torch.Tensor:
    r""":math:`\exp_\theta(\xi)` by the manifold's adaptive integration at ``rtol`` (``atol = rtol / 100``), its Christoffel products counted.

    An integration that fails (raises) reports no count: its products are not added.
    """
    result = manifold.geodesic(theta, xi, rtol=rtol, atol=rtol * 1e-2)
    counter.count += result.evaluations
    return result.point


def geodesic(subproblem, model, theta, step, damping, counter: EvaluationCount):
    """The manifold's adaptive exponential map at relative tolerance ``GEODESIC_RTOL``."""
    return counted_geodesic(subproblem.manifold, theta, step, GEODESIC_RTOL, counter)


MOVES: dict[str, Move] = {
    "frozen-rk4": frozen_rk4,
    "geodesic-rk4": geodesic_rk4,
    "geodesic": geodesic,
}


class MovedLevenbergMarquardt(GaussNewton):
    """``GaussNewton``'s Levenberg–Marquardt iteration whose trial point is ``move`` along the step instead of the chart."""

    def __init__(self, move: str, max_iterations: int, initial_damping: float = 1e-3):
        super().__init__(max_iterations, globalization="levenberg-marquardt", initial_damping=initial_damping)
        self.move = MOVES[move]
        self.counter = EvaluationCount()

    def trial_point(self, subproblem, model, theta, step, damping) -> torch.Tensor:
        try:
            return self.move(subproblem, model, theta, step, damping, self.counter)
        except (RuntimeError, ValueError):  # a geodesic that blows up: a failed trial
            return torch.full_like(theta, math.nan)


class CountedGeodesicDescent(RiemannianGradientDescent):
    """``RiemannianGradientDescent`` along geodesics (exponential map at ``exp_rtol``) that counts its Christoffel products."""

    def __init__(self, max_iterations: int, exp_rtol: float):
        super().__init__(max_iterations=max_iterations, use_exp=True, exp_rtol=exp_rtol)
        self.counter = EvaluationCount()

    def move(self, subproblem, theta, xi) -> torch.Tensor:
        return counted_geodesic(subproblem.manifold, theta, xi, self.exp_rtol, self.counter)


def variants(budget: int) -> dict[str, InnerSolver]:
    """The solvers compared at ``budget`` iterations per step, by row name."""
    rows: dict[str, InnerSolver] = {
        "gauss-newton": GaussNewton(max_iterations=budget),
        "chart": GaussNewton(max_iterations=budget, globalization="levenberg-marquardt"),
    }
    for move in ("frozen-rk4", "geodesic-rk4", "geodesic"):
        for damping in (1e-3, 1e-6):
            rows[f"{move} (damping {damping:g})"] = MovedLevenbergMarquardt(move, budget, initial_damping=damping)
    rows["rgd-exp"] = CountedGeodesicDescent(budget, exp_rtol=1e-4)
    return rows


def run(flow_name: str, solver: InnerSolver) -> dict[str, float]:
    """The quick flow ``flow_name`` run with ``solver``: largest trajectory error, wall seconds, curve evaluations per step."""
    experiment = build(flow_name, "quick")
    with Stopwatch() as clock:
        result = experiment.flow.run(experiment.theta0, experiment.steps, solver, reference=experiment.reference)
    errors = numpy.asarray(result.trajectory_error)
    counter = getattr(solver, "counter", EvaluationCount())  # the chart rows evaluate no curve
    return {
        "max_error": float(numpy.max(errors[1:])),
        "wall_time": clock.wall,
        "curve_evaluations_per_step": counter.count / experiment.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", default=",".join(FLOWS))
    parser.add_argument("--budgets", default="1,3")
    parser.add_argument("--output", type=Path, default=RESULTS / "retractions.json")
    args = parser.parse_args()
    use_threads(1)
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
    meta = conditions()
    args.output.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
