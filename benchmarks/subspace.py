r"""Subspace Gauss–Newton against full Gauss–Newton and Adam on the 2-D regression step, one run, one thread.

    python benchmarks/subspace.py                                   # p = 5,301, N = 1,600 (the default below)
    python benchmarks/subspace.py --hidden 60 60 --side 40 --blocks 256 1024

The step is :mod:`benchmarks.scale`'s (an MLP 2-h-...-h-1, tanh, on a side x side grid of [-1, 1]^2,
:math:`E(u) = \tfrac12\|u - g\|_M^2`, :math:`\tau = 0.2`, its exact step known), at a size that fits a
shared two-core machine. Every solver starts from the network's initial point; each curve is
``(iteration, seconds, relative error)`` from the progress records, the errors' own time subtracted
(``scale.run_solver``). Reported per solver: the best relative error, the time and iterations to reach
twice full Gauss–Newton's best and to each of ``--levels``, and the ratio of the times to twice full
Gauss–Newton's best over full Gauss–Newton's, all in this run.
Results go to ``benchmarks/results/subspace-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from mms_manifolds import Adam, GaussNewton, SubspaceGaussNewton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import RESULTS, TAU, regression_step_flow, run_solver, time_to  # noqa: E402


def comparison(args: argparse.Namespace) -> dict:
    """Full GN, subspace GN per block size and Adam on one regression step, with ratios over full GN."""
    flow, setup_seconds = regression_step_flow(tuple(args.hidden), args.side, args.device)
    theta = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta).detach()
    exact = (anchor + TAU * flow.energy.target) / (1 + TAU)
    initial = float(flow.metric.norm(anchor - exact))
    solvers = {"gauss-newton": GaussNewton(max_iterations=args.gn_iterations)}
    for block, iterations in zip(args.blocks, args.block_iterations):
        solvers[f"subspace s={block}"] = SubspaceGaussNewton(block, seed=0, max_iterations=iterations)
    solvers[f"adam lr={args.adam_lr:g}"] = Adam(lr=args.adam_lr, max_iterations=args.adam_iterations)
    runs = {}
    for name, solver in solvers.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runs[name] = run_solver(flow, solver, theta, exact, initial)
        print(f"  {name}: best {runs[name]['best_relative_error']:.3e} in {runs[name]['total_seconds']:.1f} s", file=sys.stderr)
    full = runs["gauss-newton"]
    level = 2 * full["best_relative_error"]
    full_time = time_to(full["curve"], level)
    for run in runs.values():
        run["seconds_to_twice_gn_best"] = time_to(run["curve"], level)
        run["iterations_to_twice_gn_best"] = time_to(run["curve"], level, "iteration")
        run["ratio_over_gn"] = run["seconds_to_twice_gn_best"] / full_time
        run["to_levels"] = {
            f"{target:g}": {"seconds": time_to(run["curve"], target), "iterations": time_to(run["curve"], target, "iteration")}
            for target in args.levels
        }
        run["seconds_per_iteration"] = run["curve"][-1]["seconds"] / run["curve"][-1]["iteration"] if run["curve"] else float("nan")
    return {
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": args.side**2,
        "setup_seconds": setup_seconds,
        "solve_mode": flow.manifold.solve_choice.mode.name,
        "initial_error": initial,
        "level": level,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[50, 50, 50])
    parser.add_argument("--side", type=int, default=40, help="grid side: N = side^2 nodes")
    parser.add_argument("--gn-iterations", type=int, default=8)
    parser.add_argument("--blocks", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--block-iterations", type=int, nargs="+", default=[200, 60])
    parser.add_argument("--adam-iterations", type=int, default=2000)
    parser.add_argument("--adam-lr", type=float, default=1e-3)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.1, 0.05], help="relative errors to time")
    args = parser.parse_args()
    if len(args.block_iterations) != len(args.blocks):
        parser.error("--block-iterations needs one count per --blocks entry")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "step": comparison(args),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"subspace-{torch.device(args.device).type}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    step = report["step"]
    print(f"p = {step['num_parameters']}, N = {step['nodes']}, full GN mode {step['solve_mode']}, level {step['level']:.3e}")
    for name, run in step["runs"].items():
        print(
            f"{name:>16}: best {run['best_relative_error']:.3e} after {run['iterations']} it, "
            f"{run['seconds_per_iteration']:.3f} s/it, to 2x GN best {run['seconds_to_twice_gn_best']:.1f} s / "
            f"{run['iterations_to_twice_gn_best']} it (ratio {run['ratio_over_gn']:.2f}), total {run['total_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
