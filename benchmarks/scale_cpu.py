r"""The regression step at p = 20,601, N = 4,900 on CPU time: Gauss–Newton, subspace Gauss–Newton, Adam, L-BFGS in one run.

    python -m benchmarks.scale_cpu                  # one torch thread, the defaults below
    python -m benchmarks.scale_cpu --gn-iterations 15 --adam-iterations 1500
    python -m benchmarks.scale_cpu --device cuda    # on a GPU: wall seconds, synchronised (scale-cuda-time.json)

The step is :mod:`benchmarks.scale`'s (:func:`benchmarks.flows.regression_step_flow`: an MLP 2-100-100-100-1,
tanh, on a 70 x 70 grid, tau = 0.2, errors against the exact step relative to the initial one). Times are **CPU seconds of this process**
(``time.process_time``), not wall-clock: the machine is shared, and CPU time is what a solver spends of it
whatever else runs. Each progress record (:mod:`mms_manifolds.progress`) is one point of a solver's curve;
the CPU time spent computing the errors is subtracted. Reported per solver: the best relative error, the
CPU time to twice its best, to twice Gauss–Newton's best, and to ``--levels``; the ratios over
Gauss–Newton's time to twice its best; at each run's twice its best, every run's time there over its own
(where a run never gets there, the time of its last record over it: a lower bound); the whole solve including its
final residual split. Results go to
``benchmarks/results/scale-cpu-time.json``.

With ``--device cuda`` the step is built on the GPU and every time is **wall seconds** instead (CPU seconds do not
count a GPU's work), each solve synchronised at both ends (:class:`benchmarks.timing.Stopwatch`); the record's
``clock`` says which, and the default output is ``benchmarks/results/scale-cuda-time.json``. The keys keep their
``cpu_seconds`` names on either clock, so that one comparison reads both.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from mms_manifolds import LBFGS, Adam, GaussNewton, MinimizingMovement, SubspaceGaussNewton

from . import RESULTS
from .curves import ErrorCurve, recording, time_to
from .flows import STEP_TAU as TAU
from .flows import regression_step_flow
from .timing import Stopwatch, clock_name, use_threads


def run_solver(flow: MinimizingMovement, solver, theta: torch.Tensor, exact: torch.Tensor, initial: float) -> dict:
    """One inner solve of the first MMS step on :func:`~benchmarks.timing.clock_name` of ``theta``'s device, with its error curve; the final residual split is timed apart."""
    subproblem = flow.step_problem(flow.parametrization.value(theta))
    clock = clock_name(theta.device)
    curve = ErrorCurve(flow, exact, initial, clock=clock)
    with recording(curve), Stopwatch(theta.device) as solve:
        curve.start()
        result = solver.solve(subproblem, theta)
    with Stopwatch(theta.device) as ledger:
        residual = subproblem.residual(result.point)  # cached where the solver measured it at its end (Gauss–Newton); a whole split after Adam and L-BFGS, which measure none without a tolerance
    errors = [point["relative_error"] for point in curve.points] or [1.0]
    return {
        "solver": repr(solver),
        "cpu_seconds": (solve.cpu if clock == "cpu" else solve.wall) - curve.overhead,
        "ledger_residual_cpu_seconds_after_solve": ledger.cpu if clock == "cpu" else ledger.wall,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason.name.lower(),
        "best_relative_error": min(errors),
        "final_residual": {"total": residual.total, "tangential": residual.tangential, "normal": residual.normal},
        "curve": curve.points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100, 100])
    parser.add_argument("--side", type=int, default=70)
    parser.add_argument("--gn-iterations", type=int, default=12)
    parser.add_argument("--blocks", type=int, nargs="*", default=[1024])
    parser.add_argument("--block-iterations", type=int, default=40)
    parser.add_argument("--adam-iterations", type=int, default=1000)
    parser.add_argument("--lbfgs-iterations", type=int, default=150)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.1, 0.03, 0.01])
    parser.add_argument("--only", nargs="*", choices=["gauss-newton", "subspace", "adam", "lbfgs"], help="solvers to run")
    parser.add_argument("--combine", nargs="*", help="merge these result files of processes run side by side")
    parser.add_argument("--output", help="the result file (default benchmarks/results/scale-<device>-time.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.output = args.output or str(RESULTS / f"scale-{device.type}-time.json")
    if args.combine:
        combine(args.combine, args.output, args.levels)
        return
    use_threads(args.threads)
    with Stopwatch(device) as building:
        flow, _ = regression_step_flow(tuple(args.hidden), args.side, args.device)
    setup = building.cpu if clock_name(device) == "cpu" else building.wall
    theta = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta).detach()
    exact = (anchor + TAU * flow.energy.target) / (1 + TAU)
    initial = float(flow.metric.norm(anchor - exact))
    solvers = {"gauss-newton": GaussNewton(max_iterations=args.gn_iterations)}
    for block in args.blocks:
        solvers[f"subspace s={block}"] = SubspaceGaussNewton(block, seed=0, max_iterations=args.block_iterations)
    solvers["adam lr=1e-3"] = Adam(lr=1e-3, max_iterations=args.adam_iterations)
    solvers["lbfgs"] = LBFGS(max_iterations=args.lbfgs_iterations)
    if args.only:
        solvers = {name: solver for name, solver in solvers.items() if name.split()[0] in args.only}
    runs = {}
    for name, solver in solvers.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runs[name] = run_solver(flow, solver, theta, exact, initial)
        print(f"  {name}: best {runs[name]['best_relative_error']:.3e} in {runs[name]['cpu_seconds']:.1f} CPU s", file=sys.stderr)
    mode = flow.manifold.solve_choice
    report = {
        "clock": "time.process_time (CPU seconds of this process)" if clock_name(device) == "cpu" else "wall seconds, synchronised",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": args.side**2,
        "setup_cpu_seconds": setup,
        "solve_mode": mode.mode.name,
        "solve_mode_reason": mode.reason,
        "initial_error": initial,
        "runs": runs,
    }
    if "gauss-newton" in runs:
        compare(report, args.levels)
    Path(args.output).parent.mkdir(exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))


def compare(report: dict, levels: list[float]) -> None:
    """Add to each run its CPU time to twice its best, to twice Gauss–Newton's best and to ``levels``, and the ratio over Gauss–Newton's."""
    runs = report["runs"]
    gauss_newton = runs["gauss-newton"]
    level = 2 * gauss_newton["best_relative_error"]
    gn_time = time_to(gauss_newton["curve"], level)
    for run in runs.values():
        run["cpu_seconds_to_twice_own_best"] = time_to(run["curve"], 2 * run["best_relative_error"])
        run["cpu_seconds_to_twice_gn_best"] = time_to(run["curve"], level)
        run["ratio_over_gn"] = run["cpu_seconds_to_twice_gn_best"] / gn_time
        run["cpu_seconds_to_level"] = {f"{value:g}": time_to(run["curve"], value) for value in levels}
        run["iterations_to_level"] = {f"{value:g}": time_to(run["curve"], value, "iteration") for value in levels}
    for run in runs.values():
        level_own = 2 * run["best_relative_error"]
        run["others_at_twice_own_best"] = others_at_level(runs, level_own, run["cpu_seconds_to_twice_own_best"])
    print(f"p = {report['num_parameters']}, N = {report['nodes']}, {report['solve_mode']}; set-up {report['setup_cpu_seconds']:.1f} CPU s")
    for name, run in runs.items():
        shown = ", ".join(f"{key}: {value:.1f}" for key, value in run["cpu_seconds_to_level"].items())
        print(
            f"{name:>16}: best {run['best_relative_error']:.3e}, to 2x GN best {run['cpu_seconds_to_twice_gn_best']:.1f} s "
            f"(ratio {run['ratio_over_gn']:.2f}), levels {shown}, solve {run['cpu_seconds']:.1f} s "
            f"+ residual {run['ledger_residual_cpu_seconds_after_solve']:.2f} s"
        )


def others_at_level(runs: dict, level: float, own_seconds: float) -> dict:
    """Each run's CPU time to ``level`` over ``own_seconds``; where a run never gets there, the time of its last record over them, a lower bound (``"ratio_at_least"``)."""
    others = {}
    for name, run in runs.items():
        seconds = time_to(run["curve"], level)
        reached = seconds != float("inf")
        last = run["curve"][-1]["seconds"] if run["curve"] else 0.0
        others[name] = {
            "cpu_seconds": seconds if reached else None,
            "last_record_cpu_seconds": last,
            "best_relative_error": run["best_relative_error"],
            "ratio" if reached else "ratio_at_least": (seconds if reached else last) / own_seconds,
        }
    return others


def combine(paths: list[str], output: str, levels: list[float]) -> None:
    """Merge the runs of several processes of this script (run side by side, one thread each) and compare them."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    report = {key: value for key, value in reports[0].items() if key != "runs"}
    report["processes"] = [{"runs": sorted(part["runs"]), "setup_cpu_seconds": part["setup_cpu_seconds"]} for part in reports]
    report["runs"] = {name: run for part in reports for name, run in part["runs"].items()}
    compare(report, levels)
    Path(output).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
