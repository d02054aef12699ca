r"""Gauss–Newton at the sizes people run: the 2-D regression step at p = 20,601, N = 4,900, and the memory cell.

    python benchmarks/scale.py                      # set-up, GN / Adam / L-BFGS on one step, one thread
    python benchmarks/scale.py --only memory        # peak RSS at p = 1e5, N = 1e4 in the matrix-free mode
    python benchmarks/scale.py --device cuda        # the same on a GPU

The step: an MLP 2-100-100-100-1 (tanh, p = 20,601) on a 70 x 70 grid of [-1, 1]^2 (N = 4,900, weights
4/N), :math:`E(u) = \tfrac12\|u - g\|_M^2` with :math:`g = |x_1| + |x_2| + 0.3\sin(5x_1)`, :math:`\tau = 0.2`,
from the network's initial point; its exact step :math:`(u_0 + \tau g)/(1 + \tau)` is known, so every
iterate has an error :math:`\|u_\theta - u^*\|_M`, reported relative to the initial one. Each solver's
iterates come from the progress records (:mod:`mms_manifolds.progress`); the time spent computing
errors is subtracted from the solver's clock. Reported per solver: the best relative error, the time to
twice its best, and the time to twice Gauss–Newton's best (``inf`` where it never gets there), with the
ratios over Gauss–Newton's in the same run.

The memory cell runs in a fresh process (``--cell memory``) so that its peak resident set size is its
own: one Gauss–Newton iteration with an MLP 2-222-222-222-1 (p = 99,901) on N = 10,000 nodes, CG mode.
Results go to ``benchmarks/results/scale-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from mms_manifolds import LBFGS, Adam, GaussNewton, L2Metric, L2Regression, MinimizingMovement, TorchParametrization
from mms_manifolds.linalg import ConjugateGradientSolve
from mms_manifolds.progress import LOGGER

RESULTS = Path(__file__).resolve().parent / "results"
TAU = 0.2


def regression_step_flow(
    hidden: tuple[int, ...], side: int, device: str, solve_mode: object = "auto"
) -> tuple[MinimizingMovement, float]:
    """The 2-D regression flow of the module docstring and the seconds its construction took."""
    torch.manual_seed(0)
    options = {"dtype": torch.float64, "device": device}
    grid = torch.linspace(-1.0, 1.0, side, **options)
    nodes = torch.cartesian_prod(grid, grid)
    widths = (2, *hidden, 1)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Tanh()]
    network = torch.nn.Sequential(*layers[:-1]).to(**options)
    metric = L2Metric(torch.full((side * side,), 4.0 / (side * side), **options))
    target = nodes.abs().sum(-1, keepdim=True) + 0.3 * torch.sin(5 * nodes[:, :1])
    start = time.perf_counter()
    flow = MinimizingMovement(
        TorchParametrization(network, nodes), L2Regression(target, metric), metric, TAU, solve_mode=solve_mode
    )
    return flow, time.perf_counter() - start


class ErrorCurve(logging.Handler):
    """Turns each progress record into ``(solver seconds, relative error)``, the error's own time left out."""

    def __init__(self, flow: MinimizingMovement, exact: torch.Tensor, initial_error: float):
        super().__init__(level=logging.INFO)
        self.flow, self.exact, self.initial_error = flow, exact, initial_error
        self.points: list[dict] = []
        self.overhead = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, "progress", None)
        if progress is None:
            return
        start = time.perf_counter()
        with torch.no_grad():
            values = self.flow.parametrization.value(progress.point)
            error = float(self.flow.metric.norm(values - self.exact)) / self.initial_error
        self.points.append(
            {
                "iteration": progress.iteration,
                "seconds": progress.seconds - self.overhead,
                "relative_error": error,
                "cg_iterations": progress.linear_iterations,
            }
        )
        self.overhead += time.perf_counter() - start


def run_solver(flow: MinimizingMovement, solver, theta: torch.Tensor, exact: torch.Tensor, initial: float) -> dict:
    """One inner solve of the first MMS step with an error curve; the cost of computing the errors is not timed."""
    anchor = flow.parametrization.value(theta)
    subproblem = flow.step_problem(anchor)
    curve = ErrorCurve(flow, exact, initial)
    LOGGER.addHandler(curve)
    previous = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        result = solver.solve(subproblem, theta)
    finally:
        LOGGER.removeHandler(curve)
        LOGGER.setLevel(previous)
    total = time.perf_counter() - start - curve.overhead
    errors = [point["relative_error"] for point in curve.points] or [1.0]
    return {
        "solver": repr(solver),
        "total_seconds": total,
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


def step_comparison(args: argparse.Namespace) -> dict:
    """Set-up and the GN / Adam / L-BFGS solves of the regression step (module docstring)."""
    flow, setup_seconds = regression_step_flow(tuple(args.hidden), args.side, args.device)
    mode, reason = flow.manifold.solve_choice.mode, flow.manifold.solve_choice.reason
    theta = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta).detach()
    exact = (anchor + TAU * flow.energy.target) / (1 + TAU)
    initial = float(flow.metric.norm(anchor - exact))
    solvers = {"gauss-newton": GaussNewton(max_iterations=args.gn_iterations)}
    for rate in args.adam_lr:
        solvers[f"adam lr={rate:g}"] = Adam(lr=rate, max_iterations=args.adam_iterations)
    solvers["lbfgs"] = LBFGS(max_iterations=args.lbfgs_iterations)
    runs = {}
    for name, solver in solvers.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runs[name] = run_solver(flow, solver, theta, exact, initial)
        print(f"  {name}: best {runs[name]['best_relative_error']:.3e} in {runs[name]['total_seconds']:.1f} s", file=sys.stderr)
    gauss_newton = runs["gauss-newton"]
    level = 2 * gauss_newton["best_relative_error"]
    gn_time = time_to(gauss_newton["curve"], level)
    for run in runs.values():
        run["seconds_to_twice_own_best"] = time_to(run["curve"], 2 * run["best_relative_error"])
        run["seconds_to_twice_gn_best"] = time_to(run["curve"], level)
        run["ratio_over_gn"] = run["seconds_to_twice_gn_best"] / gn_time
    return {
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": args.side**2,
        "setup_seconds": setup_seconds,
        "solve_mode": mode.name,
        "solve_mode_reason": reason,
        "initial_error": initial,
        "runs": runs,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def memory_cell(args: argparse.Namespace) -> dict:
    """Peak RSS of one GN iteration in CG mode (CG capped at ``--memory-cg-cap``) at p ~ 1e5, N = 1e4, in this process."""
    mode = ConjugateGradientSolve(max_iterations=args.memory_cg_cap, on_unconverged="ignore")
    flow, setup_seconds = regression_step_flow((222, 222, 222), 100, args.device, solve_mode=mode)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    start = time.perf_counter()
    GaussNewton(max_iterations=1).solve(subproblem, theta)
    return {
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": 100 * 100,
        "setup_seconds": setup_seconds,
        "iteration_seconds": time.perf_counter() - start,
        "cg_cap": args.memory_cg_cap,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100, 100])
    parser.add_argument("--side", type=int, default=70, help="grid side: N = side^2 nodes")
    parser.add_argument("--gn-iterations", type=int, default=6)
    parser.add_argument("--adam-iterations", type=int, default=300)
    parser.add_argument("--adam-lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--lbfgs-iterations", type=int, default=50)
    parser.add_argument("--memory-cg-cap", type=int, default=5)
    parser.add_argument("--only", choices=["step", "memory"], nargs="+", default=["step", "memory"])
    parser.add_argument("--cell", choices=["memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.cell == "memory":
        print(json.dumps(memory_cell(args)))
        return
    report = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    if "step" in args.only:
        report["step"] = step_comparison(args)
    if "memory" in args.only:
        command = [sys.executable, __file__, "--cell", "memory", "--device", args.device, "--threads", str(args.threads)]
        command += ["--memory-cg-cap", str(args.memory_cg_cap)]
        report["memory"] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale-{torch.device(args.device).type}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps({key: value for key, value in report.items() if key != "step"}, indent=2, default=float))
    if "step" in report:
        step = report["step"]
        print(f"p = {step['num_parameters']}, N = {step['nodes']}: set-up {step['setup_seconds']:.1f} s, {step['solve_mode']}")
        for name, run in step["runs"].items():
            print(
                f"{name:>16}: best {run['best_relative_error']:.3e}, to 2x own best {run['seconds_to_twice_own_best']:.1f} s, "
                f"to 2x GN best {run['seconds_to_twice_gn_best']:.1f} s (ratio {run['ratio_over_gn']:.2f}), "
                f"total {run['total_seconds']:.1f} s"
            )


if __name__ == "__main__":
    main()
