r"""Benchmark suite: every figure is a ratio against a baseline measured in the same run.

    python -m benchmarks.run --quick     # a few minutes on 2 CPU cores: p, N <= 1e4
    python -m benchmarks.run             # the full grid (p, N up to 1e5) and the p = N = 1e5 memory cell

Writes ``benchmarks/results/benchmarks.json``, one CSV per table, and the tables into
``docs/performance.md`` between its GENERATED markers. Peak memory is the resident set size of a
fresh process that does only the measured work (``--cell``), minus nothing: it includes Python and
torch (about 0.4 GB), which the report states. Each cell first runs one GN iteration on a tiny problem,
so that the first-call costs of torch.func and LAPACK (seconds) are not timed.

Sections:
1. one Gauss-Newton iteration vs one Adam iteration, time and peak RSS, over p and N;
2. time to accuracy on the regression flow (GN vs Adam vs L-BFGS, to twice the approximation floor);
3. adapter overhead (pymanopt SteepestDescent, geoopt RiemannianSGD vs the same core step);
4. the solve modes on one problem (time, peak RSS, agreement, CG iterations);
5. scaling of the time per MMS step with p and with N (fitted exponents);
6. (recorded, no longer measured here) crossovers: the fastest solve mode over a grid of p and N, for one and
   for ten right-hand sides, each mode in a fresh process; the crossovers are measured by
   :mod:`benchmarks.crossovers` (``python -m benchmarks.floors --sections crossovers``), and the report shows
   the record of this script's last run of them;
7. (full run only) memory of the matrix-free mode at p = N = 1e5;
8. the dense Jacobian by batched JVPs against node by node.

``--only SECTION ...`` re-measures some sections and merges them into the existing JSON (the report
says which and when); ``--report-only`` rewrites docs/performance.md from the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from mms_manifolds import LBFGS, Adam, GaussNewton, problems
from mms_manifolds.linalg import ConjugateGradientSolve, DenseSolve, WoodburySolve

from . import RESULTS
from .flows import CG_CAP, MEMORY_CG_CAP, pymanopt_fixed_step_descent, regression_subproblem
from .report import markdown, write_report
from .timing import Stopwatch, fresh_process, peak_rss_bytes, use_threads

# ------------------------------------------------------------------------------- single measurements


def cell(kind: str, parameters: int, nodes: int, mode: str) -> dict:
    """One measurement, run in a fresh process by ``--cell`` so that its peak RSS is its own."""
    solve_mode = {
        "auto": "auto",
        "dense": DenseSolve(),
        "woodbury": WoodburySolve(),
        "cg": ConjugateGradientSolve(max_iterations=CG_CAP),
        "cg-memory": ConjugateGradientSolve(max_iterations=MEMORY_CG_CAP),
        "cg-jacobi": ConjugateGradientSolve(max_iterations=500, tolerance=1e-10, preconditioner="jacobi"),
        "cg-none": ConjugateGradientSolve(max_iterations=500, tolerance=1e-10),
    }[mode]
    # the solve-mode comparison and the memory cell fix the damping (damping="auto" estimates
    # tr(J^T M J) by 16 Hutchinson products in CG mode); so does Adam, whose process must not form J
    damping = 1e-4 if kind in ("solve", "memory", "adam") else "auto"
    if kind != "adam":  # first calls into torch.func and LAPACK cost seconds: pay them on a tiny problem
        _, small, small_theta = regression_subproblem(30, 20, solve_mode, damping=damping)
        GaussNewton(max_iterations=1).solve(small, small_theta)
    network, subproblem, theta = regression_subproblem(parameters, nodes, solve_mode, damping=damping)
    manifold = subproblem.manifold
    out = {"p": subproblem.manifold.dim, "N": nodes, "mode": manifold.solve_mode_name()}
    if kind in ("gn", "memory"):
        if kind == "memory":  # one Jacobian-vector pair (JVP + VJP), the unit of matrix-free work
            with Stopwatch() as clock:
                manifold.gram_operator(theta).matvec(torch.ones_like(theta))
            out["pair_seconds"] = clock.wall
        with Stopwatch() as clock:
            GaussNewton(max_iterations=1).solve(subproblem, theta)
        out["seconds"] = clock.wall
    elif kind == "adam":
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        x = subproblem.manifold.parametrization.nodes
        anchor, target = subproblem.anchor, subproblem.energy.target
        weights = subproblem.manifold.metric.weights.unsqueeze(-1)

        def iteration():
            optimizer.zero_grad()
            u = network(x)
            loss = 0.5 * (weights * (u - target) ** 2).sum() + (weights * (u - anchor) ** 2).sum() / (2 * 0.2)
            loss.backward()
            optimizer.step()

        iteration()
        repeats = 5
        with Stopwatch() as clock:
            for _ in range(repeats):
                iteration()
        out["seconds"] = clock.wall / repeats
    elif kind == "solve":
        egrad = subproblem.euclidean_gradient(theta)
        columns = torch.randn(9, egrad.numel(), dtype=egrad.dtype, generator=torch.Generator().manual_seed(1))
        with Stopwatch() as clock:
            factorization = manifold.metric_factorization(theta)
            solution = factorization.solve(egrad, manifold.damping)
            out["seconds"] = clock.elapsed()
            for column in columns:
                factorization.solve(column, manifold.damping)
        out["seconds_ten"] = clock.wall  # one factorisation, ten right-hand sides
        out["cg_iterations"] = solution.iterations
        out["solution"] = solution.value.tolist()
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def run_cell(kind: str, parameters: int, nodes: int, mode: str = "auto", timeout: float = 900) -> dict:
    """:func:`cell` in a fresh process (its peak RSS its own); ``{"skipped": why}`` if it fails or runs over ``timeout`` s."""
    try:
        return fresh_process("run", ["--cell", json.dumps([kind, parameters, nodes, mode])], timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    except subprocess.CalledProcessError as error:
        return {"skipped": error.stderr.strip().splitlines()[-1][:200]}


# ------------------------------------------------------------------------------------------ sections


def iteration_costs(sizes: list[int], skip: dict[tuple[int, int], str]) -> list[dict]:
    rows = []
    for parameters in sizes:
        for nodes in sizes:
            if (parameters, nodes) in skip:
                rows.append({"p_target": parameters, "N": nodes, "skipped": skip[parameters, nodes]})
                continue
            gn, adam = run_cell("gn", parameters, nodes), run_cell("adam", parameters, nodes)
            row = {"p_target": parameters, "N": nodes, "gn": gn, "adam": adam}
            if "seconds" in gn and "seconds" in adam:
                row["time_ratio"] = gn["seconds"] / adam["seconds"]
                row["memory_ratio"] = gn["peak_rss_bytes"] / adam["peak_rss_bytes"]
            rows.append(row)
            print("iteration cost", parameters, nodes, row.get("time_ratio"), file=sys.stderr)
    return rows


def max_error_run(solver, steps: int = 12) -> tuple[float, float]:
    flow = problems.regression_flow()
    with Stopwatch() as clock:
        result = flow.run(flow.parametrization.initial_point(), steps=steps, solver=solver)
    return float(np.max(result.trajectory_error[1:])), clock.wall


#: The time-to-accuracy targets, baseline wall time over Gauss–Newton's at twice the approximation floor.
RATIO_GOALS = {"adam": 10.0, "lbfgs": 3.0}
MAX_EXTENDED_BUDGET = 16000


def time_to_accuracy(budgets: list[int], adam_rates: list[float]) -> dict:
    """Wall time of each solver's smallest budget (iterations per step) whose max error is within twice the floor.

    A baseline that has not reached the target by the last budget is run on at doubled budgets while its
    runs take less than its goal (``RATIO_GOALS``) times Gauss–Newton's time: if it still has not reached
    the target, its last run bounds the ratio from below by at least the goal.
    """
    floor, _ = max_error_run(GaussNewton(max_iterations=50))
    target = 2 * floor
    solvers = {
        "gauss-newton": lambda n: [GaussNewton(max_iterations=n)],
        "adam": lambda n: [Adam(lr=rate, max_iterations=n, check_every=n) for rate in adam_rates],
        "lbfgs": lambda n: [LBFGS(max_iterations=n)],
    }
    report = {"floor": floor, "target": target, "budgets": budgets, "adam_rates": adam_rates, "solvers": {}}
    for name, make in solvers.items():
        curve, reached, tried = [], None, list(budgets)
        gn = report["solvers"].get("gauss-newton", {}).get("reached")
        while tried:
            budget = tried.pop(0)
            best = min((max_error_run(solver) + (repr(solver),) for solver in make(budget)), key=lambda r: r[0])
            curve.append({"iterations": budget, "max_error": best[0], "seconds": best[1], "solver": best[2]})
            print("time to accuracy", name, budget, best[0], best[1], file=sys.stderr)
            if best[0] <= target:
                reached = curve[-1]
                break
            if not tried and gn and best[1] < RATIO_GOALS.get(name, 0) * gn["seconds"] and budget < MAX_EXTENDED_BUDGET:
                tried.append(2 * budget)
        report["solvers"][name] = {"curve": curve, "reached": reached}
    gn = report["solvers"]["gauss-newton"]["reached"]
    for name in RATIO_GOALS:
        other = report["solvers"][name]["reached"]
        report[f"{name}_over_gn"] = None if gn is None or other is None else other["seconds"] / gn["seconds"]
        longest = report["solvers"][name]["curve"][-1]["seconds"]
        report[f"{name}_over_gn_at_least"] = None if gn is None or other is not None else longest / gn["seconds"]
    return report


def adapter_overhead(iterations: int = 20) -> dict:
    import geoopt

    from mms_manifolds.adapters.geoopt import GeooptIncrementManifold
    from mms_manifolds.adapters.pymanopt import PymanoptIncrementManifold, make_problem

    _, subproblem, theta = regression_subproblem(200, 128, "dense")
    step = 0.2 / 1.2  # tau/(1 + tau): the Riemannian gradient step that equals the GN step here

    def core():
        point = theta
        for _ in range(iterations):
            point = point - step * subproblem.riemannian_gradient(point)
        return point

    def pymanopt_run():
        # the chart retraction theta + xi: the core's iterates, so that the difference is the adapter's overhead
        problem = make_problem(subproblem, PymanoptIncrementManifold(subproblem.manifold, retraction="chart"))
        optimizer = pymanopt_fixed_step_descent(step, iterations)
        return torch.as_tensor(optimizer.run(problem, initial_point=theta.numpy()).point)

    def geoopt_run():
        parameter = geoopt.ManifoldParameter(theta.clone(), manifold=GeooptIncrementManifold(subproblem.manifold))
        optimizer = geoopt.optim.RiemannianSGD([parameter], lr=step)
        for _ in range(iterations):
            optimizer.zero_grad()
            subproblem.cost_tensor(parameter).backward()
            optimizer.step()
        return parameter.detach()

    timings, points = {}, {}
    for name, run in [("core", core), ("pymanopt", pymanopt_run), ("geoopt", geoopt_run)]:
        run()
        with Stopwatch() as clock:
            points[name] = run()
        timings[name] = clock.wall / iterations
    return {
        "iterations": iterations,
        "seconds_per_iteration": timings,
        "pymanopt_over_core": timings["pymanopt"] / timings["core"],
        "geoopt_over_core": timings["geoopt"] / timings["core"],
        "max_difference_pymanopt": float((points["pymanopt"] - points["core"]).abs().max()),
        "max_difference_geoopt": float((points["geoopt"] - points["core"]).abs().max()),
    }


def solve_modes(parameters: int, nodes: int) -> list[dict]:
    rows = [
        dict(run_cell("solve", parameters, nodes, mode), requested=mode)
        for mode in ("dense", "woodbury", "cg-jacobi", "cg-none")
    ]
    reference = torch.tensor(rows[0]["solution"])
    for row in rows:
        if "solution" in row:
            row["relative_difference"] = float(
                (torch.tensor(row.pop("solution")) - reference).norm() / reference.norm()
            )
    return rows


def scaling(parameter_sizes: list[int], node_sizes: list[int], fixed_p: int, fixed_n: int) -> dict:
    def fit(xs, ys):
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    by_p = [run_cell("gn", p, fixed_n, "cg") for p in parameter_sizes]
    by_n = [run_cell("gn", fixed_p, n, "cg") for n in node_sizes]
    return {
        "mode": f"cg (at most {CG_CAP} iterations per solve)",
        "by_p": [{"p": row["p"], "seconds": row["seconds"]} for row in by_p],
        "by_n": [{"N": row["N"], "seconds": row["seconds"]} for row in by_n],
        "exponent_p": fit([row["p"] for row in by_p], [row["seconds"] for row in by_p]),
        "exponent_n": fit([row["N"] for row in by_n], [row["seconds"] for row in by_n]),
        "fixed_n": fixed_n,
        "fixed_p": fixed_p,
    }


def jacobian_paths(sizes: list[tuple[int, int]]) -> list[dict]:
    """Seconds to form the dense Jacobian by p batched JVPs (generic) and node by node (per-node jacrev)."""
    from mms_manifolds.parametrizations import FunctionParametrization

    _, small, small_theta = regression_subproblem(30, 20, "dense", damping=1e-4)
    small.manifold.parametrization.jacobian(small_theta)
    FunctionParametrization.jacobian(small.manifold.parametrization, small_theta)
    rows = []
    for parameters, nodes in sizes:
        _, subproblem, theta = regression_subproblem(parameters, nodes, "dense", damping=1e-4)
        parametrization = subproblem.manifold.parametrization
        with Stopwatch() as generic_clock:
            generic = FunctionParametrization.jacobian(parametrization, theta)
        with Stopwatch() as node_wise_clock:
            node_wise = parametrization.jacobian(theta)
        rows.append(
            {
                "p": parametrization.num_parameters,
                "N": nodes,
                "generic_seconds": generic_clock.wall,
                "node_wise_seconds": node_wise_clock.wall,
                "max_difference": float((generic - node_wise).abs().max()),
            }
        )
        print("jacobian", rows[-1], file=sys.stderr)
    return rows


SECTIONS = (
    "iteration_costs",
    "time_to_accuracy",
    "adapter_overhead",
    "solve_modes",
    "scaling",
    "jacobian_paths",
    "memory_cell",
)


def sections_to_run(quick: bool) -> dict:
    """Each section's measurement at the quick or the full size, as a thunk."""
    sizes = [1000, 10000, 100000]
    if quick:
        skip = {(p, n): "left out of --quick" for p in sizes for n in sizes if max(p, n) == 100000}
    else:
        skip = {
            (100000, 100000): f"one GN iteration with CG capped at {CG_CAP} is about 170 JVP + VJP pairs of several "
            "seconds each here (over 20 min); memory measured in section 7"
        }
    scaling_sizes = [300, 1000, 3000, 10000] if quick else [1000, 3000, 10000, 30000, 100000]
    return {
        "iteration_costs": lambda: iteration_costs(sizes, skip),
        "time_to_accuracy": lambda: time_to_accuracy(
            [1, 2, 3, 5, 10, 20, 50, 100] if quick else [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000],
            [3e-3, 1e-2, 3e-2],
        ),
        "adapter_overhead": adapter_overhead,
        "solve_modes": lambda: {"p": 1000, "N": 1000, "rows": solve_modes(1000, 1000)},
        "scaling": lambda: scaling(scaling_sizes, scaling_sizes, 1000, 1000),
        "jacobian_paths": lambda: jacobian_paths(
            [(300, 1000), (1000, 3000)] if quick else [(300, 1000), (1000, 3000), (1000, 10000), (3000, 3000)]
        ),
        "memory_cell": lambda: run_cell("memory", 100000, 100000, "cg-memory", timeout=1800),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller grid (about 5 minutes on 2 cores)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite docs/performance.md from benchmarks/results/benchmarks.json"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run only these sections (at the size --quick selects) and merge them into benchmarks.json",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's own choice)")
    arguments = parser.parse_args()
    use_threads(arguments.threads)
    if arguments.cell:
        kind, parameters, nodes, mode = json.loads(arguments.cell)
        print(json.dumps(cell(kind, parameters, nodes, mode)))
        return
    if arguments.report_only:
        write_report(json.loads((RESULTS / "benchmarks.json").read_text()))
        return
    quick = arguments.quick
    sections = sections_to_run(quick)
    if arguments.only:
        report = json.loads((RESULTS / "benchmarks.json").read_text())
        command = "python -m benchmarks.run" + (" --quick" if quick else "") + " --only " + " ".join(arguments.only)
        update = {"command": command, "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
        report.setdefault("updates", []).append(update)
        names = arguments.only
    else:
        report = {
            "command": "python -m benchmarks.run" + (" --quick" if quick else ""),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"),
        }
        names = [name for name in SECTIONS if not (quick and name == "memory_cell")]
    for name in names:
        report[name] = sections[name]()
    write_report(report)
    print(markdown(report))


if __name__ == "__main__":
    main()
