r"""Subspace Gauss–Newton against full Gauss–Newton and Adam on the 2-D regression step, one run, one thread.

    python -m benchmarks.subspace                                   # p = 5,301, N = 1,600 (the default below)
    python -m benchmarks.subspace --hidden 60 60 --side 40 --blocks 256 1024
    python -m benchmarks.subspace --device cuda                    # on a GPU (wall seconds, synchronised)

The step is :mod:`benchmarks.scale`'s (:func:`benchmarks.flows.regression_step_flow`: an MLP 2-h-...-h-1, tanh, on a side x side grid of [-1, 1]^2,
:math:`E(u) = \tfrac12\|u - g\|_M^2`, :math:`\tau = 0.2`, its exact step known), at a size that fits a
shared two-core machine. Every solver starts from the network's initial point; each curve is
``(iteration, seconds, relative error)`` from the progress records, the errors' own time subtracted
(:mod:`benchmarks.curves`). Reported per solver: the best relative error, the time and iterations to reach
twice full Gauss–Newton's best and to each of ``--levels``, and the ratio of the times to twice full
Gauss–Newton's best over full Gauss–Newton's, all in this run.
Results go to ``benchmarks/results/subspace-<device>.json``.
"""

from __future__ import annotations

import argparse
import json

import torch

from mms_manifolds import Adam, GaussNewton, SubspaceGaussNewton

from . import RESULTS
from .curves import add_step_arguments, solver_runs, time_to
from .flows import regression_step_flow
from .timing import conditions, use_threads


def comparison(args: argparse.Namespace) -> dict:
    """Full GN, subspace GN per block size and Adam on one regression step, with ratios over full GN."""
    flow, setup_seconds = regression_step_flow(tuple(args.hidden), args.side, args.device)
    solvers = {"gauss-newton": GaussNewton(max_iterations=args.gn_iterations)}
    for block, iterations in zip(args.blocks, args.block_iterations):
        solvers[f"subspace s={block}"] = SubspaceGaussNewton(block, seed=0, max_iterations=iterations)
    solvers[f"adam lr={args.adam_lr:g}"] = Adam(lr=args.adam_lr, max_iterations=args.adam_iterations)
    compared = solver_runs(flow, solvers)
    runs, level = compared["runs"], compared["level"]
    for run in runs.values():
        run["iterations_to_twice_gn_best"] = time_to(run["curve"], level, "iteration")
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
        "initial_error": compared["initial_error"],
        "level": level,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(parser, hidden=[50, 50, 50], side=40, gn_iterations=8)
    parser.add_argument("--blocks", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--block-iterations", type=int, nargs="+", default=[200, 60])
    parser.add_argument("--adam-iterations", type=int, default=2000)
    parser.add_argument("--adam-lr", type=float, default=1e-3)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.1, 0.05], help="relative errors to time")
    args = parser.parse_args()
    if len(args.block_iterations) != len(args.blocks):
        parser.error("--block-iterations needs one count per --blocks entry")
    use_threads(args.threads)
    report = {**conditions(args.device), "step": comparison(args)}
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
