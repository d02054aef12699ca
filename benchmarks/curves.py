r"""Error against solver time of inner solves on a step whose exact solution is known (``scale.py``, ``subspace.py``).

Each solver runs one inner solve of the first MMS step of a flow from :func:`benchmarks.flows.regression_step_flow`
(exact step :math:`u^* = (u_0 + \tau g)/(1 + \tau)`), from the network's initial point. Its iterates come from the
progress records (:mod:`mms_manifolds.progress`); each becomes a point ``(iteration, solver seconds, relative
error)``, the relative error :math:`\|u_\theta - u^*\|_M/\|u_0 - u^*\|_M`, and the time spent computing the
errors is subtracted from the solver's clock. :func:`solver_runs` reads every curve at twice the best error of
the run named ``"gauss-newton"``, so ratios over Gauss–Newton come from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator

import torch

from mms_manifolds import MinimizingMovement
from mms_manifolds.progress import LOGGER
from mms_manifolds.solvers import InnerSolver

from .flows import STEP_TAU
from .timing import Stopwatch

__all__ = ["ErrorCurve", "add_step_arguments", "run_solver", "solver_runs", "time_to"]


def add_step_arguments(parser: argparse.ArgumentParser, hidden: list[int], side: int, gn_iterations: int) -> None:
    """The options every comparison on the 2-D regression step takes: device, threads, network, grid, GN iterations."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--hidden", type=int, nargs="+", default=hidden)
    parser.add_argument("--side", type=int, default=side, help="grid side: N = side^2 nodes")
    parser.add_argument("--gn-iterations", type=int, default=gn_iterations)


class ErrorCurve(logging.Handler):
    """Turns each progress record into ``(solver seconds, relative error)``, the error's own time left out.

    ``clock="wall"``: the solver's own wall seconds (the progress record's); ``clock="cpu"``: the process's CPU
    seconds since :meth:`start` (or construction), for a shared machine.
    """

    def __init__(self, flow: MinimizingMovement, exact: torch.Tensor, initial_error: float, clock: str = "wall"):
        super().__init__(level=logging.INFO)
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
        self.flow, self.exact, self.initial_error, self.clock = flow, exact, initial_error, clock
        self.points: list[dict] = []
        self.overhead = 0.0
        self.start()

    def start(self) -> None:
        """Start the CPU clock (``clock="cpu"``) now."""
        self.started = time.process_time()

    def elapsed(self, progress) -> float:
        """Solver seconds at ``progress`` on this curve's clock, the errors' own time left out."""
        seconds = progress.seconds if self.clock == "wall" else time.process_time() - self.started
        return seconds - self.overhead

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, "progress", None)
        if progress is None:
            return
        seconds = self.elapsed(progress)
        with Stopwatch(self.exact.device) as clock:
            with torch.no_grad():
                values = self.flow.parametrization.value(progress.point)
                error = float(self.flow.metric.norm(values - self.exact)) / self.initial_error
            self.points.append(
                {
                    "iteration": progress.iteration,
                    "seconds": seconds,
                    "relative_error": error,
                    "cg_iterations": progress.linear_iterations,
                }
            )
        self.overhead += clock.wall if self.clock == "wall" else clock.cpu


@contextlib.contextmanager
def recording(handler: logging.Handler) -> Iterator[logging.Handler]:
    """While inside, ``handler`` hears every inner iteration (the progress logger at ``INFO``); the level is restored after."""
    level = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)


def run_solver(flow: MinimizingMovement, solver, theta: torch.Tensor, exact: torch.Tensor, initial: float) -> dict:
    """One inner solve of the first MMS step with an error curve; the cost of computing the errors is not timed."""
    anchor = flow.parametrization.value(theta)
    subproblem = flow.step_problem(anchor)
    curve = ErrorCurve(flow, exact, initial)
    with recording(curve), Stopwatch(theta.device) as clock:  # synchronised on CUDA at both ends
        result = solver.solve(subproblem, theta)
    errors = [point["relative_error"] for point in curve.points] or [1.0]
    return {
        "solver": repr(solver),
        "total_seconds": clock.wall - curve.overhead,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason.name.lower(),
        "best_relative_error": min(errors),
        "curve": curve.points,
    }


def time_to(curve: list[dict], level: float, clock: str = "seconds") -> float:
    """Solver seconds (or, with ``clock="iteration"``, the iteration) at which the relative error first falls to ``level``; ``inf`` if never."""
    for point in curve:
        if point["relative_error"] <= level:
            return point[clock]
    return float("inf")


def solver_runs(flow: MinimizingMovement, solvers: dict[str, InnerSolver]) -> dict:
    """Each solver's run (:func:`run_solver`) from the initial point, read at twice the best error of ``solvers["gauss-newton"]``.

    Returns ``{"initial_error", "level", "runs"}``: ``level`` is twice Gauss–Newton's best relative error, and
    each run gains ``seconds_to_twice_gn_best`` and ``ratio_over_gn`` (that time over Gauss–Newton's).
    """
    theta = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta).detach()
    exact = (anchor + STEP_TAU * flow.energy.target) / (1 + STEP_TAU)
    initial = float(flow.metric.norm(anchor - exact))
    runs = {}
    for name, solver in solvers.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runs[name] = run_solver(flow, solver, theta, exact, initial)
        print(
            f"  {name}: best {runs[name]['best_relative_error']:.3e} in {runs[name]['total_seconds']:.1f} s",
            file=sys.stderr,
        )
    level = 2 * runs["gauss-newton"]["best_relative_error"]
    gn_time = time_to(runs["gauss-newton"]["curve"], level)
    for run in runs.values():
        run["seconds_to_twice_gn_best"] = time_to(run["curve"], level)
        run["ratio_over_gn"] = run["seconds_to_twice_gn_best"] / gn_time
    return {"initial_error": initial, "level": level, "runs": runs}
