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

Each problem is one MMS step with a long time step (:math:`\tau = 10^{12}`, or each of ``--taus``), so the step is the
minimisation of the energy; ``GaussNewton()`` then chooses its line-search globalization by itself
(the proximal share of the model is about :math:`10^{-14}`). The step's minimiser lies about
:math:`\|u^* - u_0\|/(\tau\lambda_{\min})` from the energy's (:math:`\lambda_{\min}` the energy's
smallest curvature, about 1.5 for the nonlinear Ritz energy): with the earlier :math:`\tau = 10^6` that
put a floor of about :math:`4\cdot10^{-7}` under the nonlinear Ritz error. Reported per seed: iterations to the L2
targets, the final error, and the seconds per Gauss–Newton iteration (one torch thread unless
``--threads`` says otherwise). The errors are read after every iteration of one long solve, from the
point each iteration reports to :mod:`mms_manifolds.progress` (the solve itself measures the tangential
residual only at its end); the seconds per iteration are that solve's, less the error evaluations.

    python -m benchmarks.peers                  # both problems, 10 seeds, results in benchmarks/results/
    python -m benchmarks.peers --problems poisson --seeds 3
    python -m benchmarks.peers --problems poisson --first-seed 20 --taus 1e6,1e9,1e12 --iterations 150
    python -m benchmarks.peers --problems poisson --first-seed 40 --taus 1e6,1e9,1e12 --iterations 150 \
        --budgets 60,150 --line-search logarithmic-grid --step-cutoff 1e-30 --no-geodesic-acceleration  # ENGD's rules

``--starts K`` spends ``--iterations`` on ``K`` networks (seeds ``seed + 1000 j``) and keeps the final point of least
cost (:func:`run_starts`); a target then counts as reached where that point is at or below it.

``--line-search logarithmic-grid --step-cutoff 1e-30 --no-geodesic-acceleration`` is the published ENGD
iteration inside the library: the full pseudo-inverse step, no acceleration, the best of the lengths
:math:`2^{1-k}`, :math:`k = 0..30` (:mod:`mms_manifolds.solvers.line_search`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from mms_manifolds import GaussNewton
from mms_manifolds.solvers.gauss_newton import DEFAULT_STEP_CUTOFF, LINE_SEARCHES, SEARCH_STARTS, STEP_FILTERS

from . import RESULTS
from .curves import recording
from .flows import ENGD_TAU, nonlinear, poisson
from .timing import Stopwatch, use_threads

PROBLEMS = {"poisson": (poisson, (1e-6, 1e-7, 1e-8)), "nonlinear": (nonlinear, (1e-6, 1e-7, 1e-8))}


class ErrorRecorder(logging.Handler):
    """The L2 error and the cost after each Gauss–Newton iteration, at the point it reports (:mod:`mms_manifolds.progress`)."""

    def __init__(self, parametrization, l2_error: Callable[[], float]):
        super().__init__(logging.INFO)
        self.parametrization, self.l2_error = parametrization, l2_error
        self.errors: list[float] = []
        self.costs: list[float] = []  # the cost each iteration reports
        self.seconds = 0.0  # spent here, not in the solver

    def emit(self, record: logging.LogRecord) -> None:
        with Stopwatch() as clock:
            self.parametrization.write_to_module(record.progress.point)
            with torch.no_grad():
                self.errors.append(self.l2_error())
        self.costs.append(record.progress.cost)
        self.seconds += clock.wall


def run_seed(
    problem: str,
    seed: int,
    iterations: int,
    line_search: str,
    step_cutoff: float = DEFAULT_STEP_CUTOFF,
    tau: float = ENGD_TAU,
    geodesic_acceleration: bool = True,
    step_filter: str = "truncate",
    search_start: str = "doubled",
) -> dict:
    """One Gauss–Newton solve of ``iterations`` on the MMS step of length ``tau``, the L2 error after each iteration."""
    build, targets = PROBLEMS[problem]
    flow, network, l2_error = build(seed, tau=tau)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    solver = GaussNewton(
        max_iterations=iterations,
        line_search=line_search,
        step_cutoff=step_cutoff,
        geodesic_acceleration=geodesic_acceleration,
        step_filter=step_filter,
        search_start=search_start,
    )
    with recording(ErrorRecorder(flow.parametrization, l2_error)) as recorder, Stopwatch() as clock:
        result = solver.solve(subproblem, theta)
    errors = recorder.errors
    reached = {f"{target:.0e}": next((k + 1 for k, e in enumerate(errors) if e <= target), None) for target in targets}
    return {
        "problem": problem,
        "tau": tau,
        "seed": seed,
        "iterations_to": reached,
        "final_error": errors[-1],
        "best_error": min(errors),
        "iterations_run": len(errors),
        "stop_reason": result.stop_reason.name,
        "seconds_per_iteration": (clock.wall - recorder.seconds) / max(result.iterations, 1),
        "errors": errors,
        "start_cost": subproblem.cost(theta),
        "costs": recorder.costs,
    }


#: Start ``j`` of a seed's several starts (``--starts``) is the network of seed ``seed + START_SEED_STRIDE * j``.
START_SEED_STRIDE = 1000


def run_starts(problem: str, seed: int, starts: int, iterations: int, **options) -> dict:
    """``starts`` solves from different networks sharing ``iterations`` Gauss–Newton iterations, the least final cost kept.

    Start ``j`` (network seed ``seed + START_SEED_STRIDE * j``) gets the iterations left over its share
    ``left // (starts - j)``, so a start that ends early (``STALLED`` at the cost's rounding level) passes its
    unused iterations on. The point returned is the final point of the start of least final cost: chosen by the
    cost, never by the L2 error. A target counts as reached if that point's error is at or below it, after all
    ``iterations_run``, every start's iterations counted. Its ``best_error`` is that point's final error (the run
    keeps one point, so its best is its last), ``start_best_errors`` each start's best along its path.
    """
    _, targets = PROBLEMS[problem]
    runs, left = [], iterations
    for start in range(starts):
        share = left // (starts - start)
        runs.append(run_seed(problem, seed + START_SEED_STRIDE * start, share, **options))
        left -= runs[-1]["iterations_run"]
    chosen = min(runs, key=lambda run: (run["costs"] or [run["start_cost"]])[-1])  # a start with no iteration: its start
    used = iterations - left
    return {
        "problem": problem,
        "tau": chosen["tau"],
        "seed": seed,
        "starts": starts,
        "chosen_start": runs.index(chosen),
        "iterations_to": {f"{t:.0e}": used if chosen["final_error"] <= t else None for t in targets},
        "final_error": chosen["final_error"],
        "best_error": chosen["final_error"],
        "iterations_run": used,
        "stop_reason": chosen["stop_reason"],
        "seconds_per_iteration": statistics.fmean(run["seconds_per_iteration"] for run in runs),
        "start_final_costs": [(run["costs"] or [run["start_cost"]])[-1] for run in runs],
        "start_final_errors": [run["final_error"] for run in runs],
        "start_best_errors": [run["best_error"] for run in runs],
        "start_iterations": [run["iterations_run"] for run in runs],
    }


def summarise(rows: list[dict], budgets: tuple[int, ...]) -> dict:
    """Per target: the seeds reaching it within each of ``budgets`` iterations, the median and range of their counts within the largest."""
    summary = {"seeds": len(rows), "budgets": list(budgets)}
    for target in rows[0]["iterations_to"]:
        counts = [row["iterations_to"][target] for row in rows]
        within = sorted(count for count in counts if count is not None and count <= max(budgets))
        summary[target] = {
            **{f"within_{budget}": sum(count <= budget for count in within) for budget in budgets},
            "median_iterations": statistics.median(within) if within else None,
            "range": [within[0], within[-1]] if within else None,
        }
    best = sorted(row["best_error"] for row in rows)
    summary["best_errors"] = {"min": best[0], "median": statistics.median(best), "max": best[-1]}
    summary["stalled_above_1e-5"] = sum(row["best_error"] > 1e-5 for row in rows)
    summary["median_seconds_per_iteration"] = statistics.median(row["seconds_per_iteration"] for row in rows)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="poisson,nonlinear")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, ..., first-seed + seeds - 1")
    parser.add_argument("--taus", default=f"{ENGD_TAU:g}", help="comma-separated MMS time steps, each on every seed")
    parser.add_argument("--iterations", type=int, default=100, help="Gauss-Newton iterations per seed")
    parser.add_argument(
        "--budgets", default="60", help="comma-separated iteration counts within which a target counts as reached"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; timings name it)")
    parser.add_argument("--line-search", choices=LINE_SEARCHES, default="armijo")
    parser.add_argument(
        "--no-geodesic-acceleration",
        dest="geodesic_acceleration",
        action="store_false",
        help="GaussNewton(geodesic_acceleration=False), as ENGD",
    )
    parser.add_argument("--step-filter", choices=STEP_FILTERS, default="truncate", help="GaussNewton(step_filter=...)")
    parser.add_argument(
        "--step-cutoff",
        type=float,
        default=DEFAULT_STEP_CUTOFF,
        help="GaussNewton(step_cutoff=...); 1e-30 takes the full pseudo-inverse at every iteration",
    )
    parser.add_argument(
        "--search-start", choices=SEARCH_STARTS, default="doubled", help="GaussNewton(search_start=...)"
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=1,
        help="starts sharing --iterations, the least final cost kept (run_starts); targets then read that point",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "peers.json")
    arguments = parser.parse_args()
    if arguments.starts < 1:
        parser.error(f"--starts must be at least 1, got {arguments.starts}")
    if arguments.starts > arguments.iterations:
        parser.error(f"--starts {arguments.starts} cannot share {arguments.iterations} iterations (one each at least)")
    threads = use_threads(arguments.threads)
    budgets = tuple(int(budget) for budget in arguments.budgets.split(","))
    taus = [float(tau) for tau in arguments.taus.split(",")]
    solver = repr(
        GaussNewton(
            line_search=arguments.line_search,
            step_cutoff=arguments.step_cutoff,
            geodesic_acceleration=arguments.geodesic_acceleration,
            step_filter=arguments.step_filter,
            search_start=arguments.search_start,
        )
    )
    record = {
        "threads": threads,
        "solver": solver,
        "iterations": arguments.iterations,
        "starts": arguments.starts,
        "summaries": {},
        "runs": [],
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    for problem in arguments.problems.split(","):
        for tau in taus:
            for seed in range(arguments.first_seed, arguments.first_seed + arguments.seeds):
                options = {
                    "line_search": arguments.line_search,
                    "step_cutoff": arguments.step_cutoff,
                    "tau": tau,
                    "geodesic_acceleration": arguments.geodesic_acceleration,
                    "step_filter": arguments.step_filter,
                    "search_start": arguments.search_start,
                }
                if arguments.starts > 1:
                    row = run_starts(problem, seed, arguments.starts, arguments.iterations, **options)
                else:
                    row = run_seed(problem, seed, arguments.iterations, **options)
                record["runs"].append(row)
                print(
                    f"{problem} tau {tau:g} seed {seed}: to {row['iterations_to']}, best {row['best_error']:.2e}, "
                    f"final {row['final_error']:.2e} ({row['stop_reason']}), "
                    f"{row['seconds_per_iteration'] * 1e3:.1f} ms/iteration",
                    flush=True,
                )
                chosen = [row for row in record["runs"] if row["problem"] == problem and row["tau"] == tau]
                record["summaries"][f"{problem} tau {tau:g}"] = summarise(chosen, budgets)
                arguments.output.write_text(json.dumps(record, indent=1))  # after every seed: nothing lost if stopped
            print(problem, f"tau {tau:g}", json.dumps(record["summaries"][f"{problem} tau {tau:g}"]), flush=True)


if __name__ == "__main__":
    main()
