r"""Gauss–Newton at the sizes people run: the 2-D regression step at p = 20,601, N = 4,900, and the memory cell.

    python -m benchmarks.scale                      # set-up, GN / Adam / L-BFGS on one step, one thread
    python -m benchmarks.scale --only memory        # peak RSS at p = 1e5, N = 1e4: matrix-free and layer-kernel modes
    python -m benchmarks.scale --device cuda        # the same on a GPU

The step (:func:`benchmarks.flows.regression_step_flow`): an MLP 2-100-100-100-1 (tanh, p = 20,601) on a
70 x 70 grid of [-1, 1]^2 (N = 4,900, weights 4/N), :math:`E(u) = \tfrac12\|u - g\|_M^2` with
:math:`g = |x_1| + |x_2| + 0.3\sin(5x_1)`, :math:`\tau = 0.2`, from the network's initial point; its exact step
:math:`(u_0 + \tau g)/(1 + \tau)` is known, so every iterate has an error :math:`\|u_\theta - u^*\|_M`,
reported relative to the initial one (:mod:`benchmarks.curves`: the iterates come from the progress records,
and the time spent computing errors is subtracted from the solver's clock). Reported per solver: the best relative error, the time to
twice its best, and the time to twice Gauss–Newton's best (``inf`` where it never gets there), with the
ratios over Gauss–Newton's in the same run.

The memory cells run each in a fresh process (``--cell memory``) so that its peak resident set size is its
own: one Gauss–Newton iteration with an MLP 2-222-222-222-1 (p = 99,901) on N = 10,000 nodes, in the CG mode
(CG capped at ``--memory-cg-cap``) and in the layer-kernel mode (:class:`~mms_manifolds.linalg.LayerKernelSolve`:
the 10,000 x 10,000 kernel from the layers, no Jacobian), ``--memory-modes`` choosing; each also reports its
CPU seconds. Results go to ``benchmarks/results/scale-<device>.json``.
"""

from __future__ import annotations

import argparse
import json

import torch

from mms_manifolds import LBFGS, Adam, GaussNewton
from mms_manifolds.linalg import ConjugateGradientSolve, LayerKernelSolve

from . import RESULTS
from .curves import add_step_arguments, solver_runs, time_to
from .flows import regression_step_flow
from .timing import Stopwatch, conditions, fresh_process, peak_rss_bytes, use_threads


def step_comparison(args: argparse.Namespace) -> dict:
    """Set-up and the GN / Adam / L-BFGS solves of the regression step (module docstring)."""
    flow, setup_seconds = regression_step_flow(tuple(args.hidden), args.side, args.device)
    mode, reason = flow.manifold.solve_choice.mode, flow.manifold.solve_choice.reason
    solvers = {"gauss-newton": GaussNewton(max_iterations=args.gn_iterations)}
    for rate in args.adam_lr:
        solvers[f"adam lr={rate:g}"] = Adam(lr=rate, max_iterations=args.adam_iterations)
    solvers["lbfgs"] = LBFGS(max_iterations=args.lbfgs_iterations)
    compared = solver_runs(flow, solvers)
    runs = compared["runs"]
    for run in runs.values():
        run["seconds_to_twice_own_best"] = time_to(run["curve"], 2 * run["best_relative_error"])
    return {
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": args.side**2,
        "setup_seconds": setup_seconds,
        "solve_mode": mode.name,
        "solve_mode_reason": reason,
        "initial_error": compared["initial_error"],
        "runs": runs,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def memory_cell(args: argparse.Namespace) -> dict:
    """Peak RSS of one GN iteration at p ~ 1e5, N = 1e4 in ``--memory-modes``' first mode, in this process.

    ``cg``: CG capped at ``--memory-cg-cap``; ``layer-kernel``: :class:`~mms_manifolds.linalg.LayerKernelSolve`.
    """
    name = args.memory_modes[0]
    if name == "cg":
        mode = ConjugateGradientSolve(max_iterations=args.memory_cg_cap, on_unconverged="ignore")
    else:
        mode = LayerKernelSolve()
    flow, setup_seconds = regression_step_flow((222, 222, 222), 100, args.device, solve_mode=mode)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    with Stopwatch(args.device) as clock:
        result = GaussNewton(max_iterations=1).solve(subproblem, theta)
    factorization = flow.manifold.metric_factorization(result.point)
    return {
        "mode": name,
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": 100 * 100,
        "setup_seconds": setup_seconds,
        "iteration_seconds": clock.wall,
        "iteration_cpu_seconds": clock.cpu,
        "cg_cap": args.memory_cg_cap if name == "cg" else None,
        "kernel_source": getattr(factorization, "kernel_source", None),
        "cost_decrease": result.cost_history[0] - result.cost_history[-1],
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if torch.device(args.device).type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(parser, hidden=[100, 100, 100], side=70, gn_iterations=6)
    parser.add_argument("--adam-iterations", type=int, default=300)
    parser.add_argument("--adam-lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--lbfgs-iterations", type=int, default=50)
    parser.add_argument("--memory-cg-cap", type=int, default=5)
    parser.add_argument("--memory-modes", choices=["cg", "layer-kernel"], nargs="+", default=["cg", "layer-kernel"])
    parser.add_argument("--only", choices=["step", "memory"], nargs="+", default=["step", "memory"])
    parser.add_argument("--cell", choices=["memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_threads(args.threads)
    if args.cell == "memory":
        print(json.dumps(memory_cell(args)))
        return
    report = conditions(args.device)
    if "step" in args.only:
        report["step"] = step_comparison(args)
    if "memory" in args.only:
        cell = ["--cell", "memory", "--device", args.device, "--threads", str(args.threads)]
        cell += ["--memory-cg-cap", str(args.memory_cg_cap)]
        report["memory"] = {
            name: fresh_process("scale", [*cell, "--memory-modes", name]) for name in args.memory_modes
        }
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
