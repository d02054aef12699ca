r"""The energy natural gradient (ENGD) benchmark problems, solved by the library's Gauss–Newton, over seeds.

Two problems from Müller & Zeinhofer, "Achieving high accuracy with PINNs via energy natural gradient
descent" (ICML 2023), set up in :mod:`benchmarks.flows` from the paper's description (no code of theirs is used):

- ``poisson``: :math:`-\Delta u = 2\pi^2\sin(\pi x)\sin(\pi y)` on :math:`(0, 1)^2`, :math:`u = 0` on the
  boundary, least squares (PINN) energy, a [2, 32, 1] tanh network, a 28 x 28 interior grid and 29 nodes
  per boundary side; L2 error on a 200 x 200 interior grid. Published: L2 error 6.1e-7 after 51 ENGD
  iterations (one seed).
- ``nonlinear``: the Ritz energy :math:`\int_{-1}^1 \tfrac12|u'|^2 + \tfrac14u^4 - fu` with
  :math:`f = \pi^2\cos(\pi x) + \cos^3(\pi x)`, minimiser :math:`\cos(\pi x)` (natural boundary
  conditions), a [1, 32, 1] tanh network, 2000 Gauss–Legendre nodes (with 20000 midpoint nodes the
  discrete minimiser itself is about 1e-7 from :math:`\cos(\pi x)`, and every run stopped there); L2
  error on 20001 points.
  Published: L2 error about 1e-8 after 60 ENGD iterations.

Each problem is one MMS step with a long time step (:math:`\tau = 10^{12}`), so the step is the
minimisation of the energy; ``GaussNewton()`` then chooses its line-search globalization by itself
(the proximal share of the model is about :math:`10^{-14}`). The step's minimiser lies about
:math:`\|u^* - u_0\|/(\tau\lambda_{\min})` from the energy's (:math:`\lambda_{\min}` the energy's
smallest curvature, about 1.5 for the nonlinear Ritz energy): with the earlier :math:`\tau = 10^6` that
put a floor of about :math:`4\cdot10^{-7}` under the nonlinear Ritz error. Reported per seed: iterations to the L2
targets, the final error, and the seconds per Gauss–Newton iteration (one torch thread unless
``--threads`` says otherwise).

    python -m benchmarks.peers                  # both problems, 10 seeds, results in benchmarks/results/
    python -m benchmarks.peers --problems poisson --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mms_manifolds import GaussNewton
from mms_manifolds.solvers.gauss_newton import DEFAULT_STEP_CUTOFF

from . import RESULTS
from .flows import nonlinear, poisson
from .timing import Stopwatch, use_threads

PROBLEMS = {"poisson": (poisson, (1e-6, 1e-7)), "nonlinear": (nonlinear, (1e-6, 1e-7, 1e-8))}


def run_seed(
    problem: str, seed: int, iterations: int, line_search: str, step_cutoff: float = DEFAULT_STEP_CUTOFF
) -> dict:
    """Gauss–Newton iterations on one MMS step, the L2 error after each; then the seconds per iteration of one long solve."""
    build, targets = PROBLEMS[problem]
    flow, network, l2_error = build(seed)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    one_iteration = GaussNewton(max_iterations=1, line_search=line_search, step_cutoff=step_cutoff)
    errors, state = [], None
    for _ in range(iterations):
        result = one_iteration.solve(subproblem, theta, state=state)  # = one long solve, warm state carried
        theta, state = result.point, result.state
        flow.parametrization.write_to_module(theta)
        with torch.no_grad():
            errors.append(l2_error())
        if result.stop_reason.name == "STALLED":
            break
    timing_iterations = min(20, iterations)  # seconds per iteration of one long solve (residuals only at its ends)
    long = GaussNewton(max_iterations=timing_iterations, line_search=line_search, step_cutoff=step_cutoff)
    with Stopwatch() as clock:
        long_result = long.solve(subproblem, flow.parametrization.initial_point())
    per_iteration = clock.wall / max(long_result.iterations, 1)
    reached = {f"{target:.0e}": next((k + 1 for k, e in enumerate(errors) if e <= target), None) for target in targets}
    return {
        "problem": problem,
        "seed": seed,
        "iterations_to": reached,
        "final_error": errors[-1],
        "best_error": min(errors),
        "iterations_run": len(errors),
        "seconds_per_iteration": per_iteration,
        "errors": errors,
    }


def summarise(rows: list[dict], problem: str, budget: int) -> dict:
    """Counts of seeds reaching each target within ``budget`` iterations, and the median iteration count."""
    chosen = [row for row in rows if row["problem"] == problem]
    summary = {"seeds": len(chosen), "budget": budget}
    for target in chosen[0]["iterations_to"]:
        counts = [row["iterations_to"][target] for row in chosen]
        within = sorted(count for count in counts if count is not None and count <= budget)
        summary[target] = {
            "reached_within_budget": len(within),
            "median_iterations": statistics.median(within) if within else None,
            "range": [within[0], within[-1]] if within else None,
        }
    summary["stalled_above_1e-5"] = sum(row["best_error"] > 1e-5 for row in chosen)
    summary["median_seconds_per_iteration"] = statistics.median(row["seconds_per_iteration"] for row in chosen)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="poisson,nonlinear")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, ..., first-seed + seeds - 1")
    parser.add_argument("--iterations", type=int, default=100, help="Gauss-Newton iterations per seed")
    parser.add_argument("--budget", type=int, default=60, help="iterations within which a target counts as reached")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; timings name it)")
    parser.add_argument("--line-search", choices=("armijo", "grid"), default="armijo")
    parser.add_argument(
        "--step-cutoff",
        type=float,
        default=DEFAULT_STEP_CUTOFF,
        help="GaussNewton(step_cutoff=...); 1e-30 takes the full pseudo-inverse at every iteration",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "peers.json")
    arguments = parser.parse_args()
    threads = use_threads(arguments.threads)
    rows = []
    for problem in arguments.problems.split(","):
        for seed in range(arguments.first_seed, arguments.first_seed + arguments.seeds):
            row = run_seed(problem, seed, arguments.iterations, arguments.line_search, arguments.step_cutoff)
            rows.append(row)
            print(
                f"{problem} seed {seed}: to {row['iterations_to']}, final {row['final_error']:.2e}, "
                f"{row['seconds_per_iteration'] * 1e3:.1f} ms/iteration",
                flush=True,
            )
    summaries = {problem: summarise(rows, problem, arguments.budget) for problem in arguments.problems.split(",")}
    for problem, summary in summaries.items():
        print(problem, json.dumps(summary))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    solver = repr(GaussNewton(line_search=arguments.line_search, step_cutoff=arguments.step_cutoff))
    record = {"threads": threads, "solver": solver, "summaries": summaries, "runs": rows}
    arguments.output.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
