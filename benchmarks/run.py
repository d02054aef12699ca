r"""Benchmark suite: every figure is a ratio against a baseline measured in the same run.

    python benchmarks/run.py --quick     # a few minutes on 2 CPU cores: p, N <= 1e4
    python benchmarks/run.py             # the full grid (p, N up to 1e5) and the p = N = 1e5 memory cell

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
6. crossovers: the fastest solve mode over a grid of p and N, for one and for ten right-hand sides;
7. (full run only) memory of the matrix-free mode at p = N = 1e5;
8. the dense Jacobian by batched JVPs against node by node.

``--only SECTION ...`` re-measures some sections and merges them into the existing JSON (the report
says which and when); ``--report-only`` rewrites docs/performance.md from the JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mms_manifolds import (
    LBFGS,
    Adam,
    GaussNewton,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.cli import regression_demo_problem
from mms_manifolds.linalg import ConjugateGradientSolve, DenseSolve, WoodburySolve
from mms_manifolds.subproblem import MMSSubproblem

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
REPORT = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
CG_CAP = 50  # CG iterations per solve in the size grid (reported; the default is 500)
MEMORY_CG_CAP = 5  # CG iterations per solve in the p = N = 1e5 memory cell (memory does not grow with it)


# ------------------------------------------------------------------------------------------ problems


def width_for(parameters: int) -> int:
    """Width w of a 1-w-w-1 MLP with about ``parameters`` parameters (p = w^2 + 4w + 1)."""
    return max(2, round(-2 + math.sqrt(3 + parameters)))


def regression_flow(
    parameters: int,
    nodes: int,
    solve_mode: object = "auto",
    seed: int = 0,
    damping: float | str = "auto",
    device: torch.device | str = "cpu",
) -> MinimizingMovement:
    """The regression flow E = |u - g|^2/2 (tau 0.2) on ``nodes`` points of [-1, 1] with a 1-w-w-1 tanh MLP of about ``parameters``."""
    torch.manual_seed(seed)
    width = width_for(parameters)
    options = {"dtype": torch.float64, "device": device}
    network = torch.nn.Sequential(
        torch.nn.Linear(1, width, **options),
        torch.nn.Tanh(),
        torch.nn.Linear(width, width, **options),
        torch.nn.Tanh(),
        torch.nn.Linear(width, 1, **options),
    )
    x = torch.linspace(-1, 1, nodes, **options).unsqueeze(-1)
    metric = L2Metric(torch.full((nodes,), 2 / nodes, **options))
    energy = L2Regression(x.abs() + 0.3 * torch.sin(5 * x), metric)
    return MinimizingMovement(
        TorchParametrization(network, x), energy, metric, tau=0.2, damping=damping, solve_mode=solve_mode
    )


def regression_subproblem(
    parameters: int, nodes: int, solve_mode: object = "auto", seed: int = 0, damping: float | str = "auto"
):
    """The first MMS step of :func:`regression_flow`: ``(network, subproblem, theta)``."""
    flow = regression_flow(parameters, nodes, solve_mode, seed, damping)
    theta = flow.parametrization.initial_point()
    subproblem = MMSSubproblem(flow.manifold.with_anchor(flow.parametrization.value(theta)), flow.energy, flow.tau)
    return flow.parametrization.module, subproblem, theta


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
            start = time.perf_counter()
            manifold.linearization(theta).matvec(torch.ones_like(theta))
            out["pair_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        GaussNewton(max_iterations=1).solve(subproblem, theta)
        out["seconds"] = time.perf_counter() - start
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
        start = time.perf_counter()
        repeats = 5
        for _ in range(repeats):
            iteration()
        out["seconds"] = (time.perf_counter() - start) / repeats
    elif kind == "solve":
        egrad = subproblem.euclidean_gradient(theta)
        start = time.perf_counter()
        factorization = manifold.metric_factorization(theta)
        solution = factorization.solve(egrad, manifold.damping)
        out["seconds"] = time.perf_counter() - start
        for column in torch.randn(9, egrad.numel(), dtype=egrad.dtype, generator=torch.Generator().manual_seed(1)):
            factorization.solve(column, manifold.damping)
        out["seconds_ten"] = time.perf_counter() - start  # one factorisation, ten right-hand sides
        out["cg_iterations"] = solution.iterations
        out["solution"] = solution.value.tolist()
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def run_cell(kind: str, parameters: int, nodes: int, mode: str = "auto", timeout: float = 900) -> dict:
    command = [sys.executable, __file__, "--cell", json.dumps([kind, parameters, nodes, mode])]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    if completed.returncode != 0:
        return {"skipped": completed.stderr.strip().splitlines()[-1][:200]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


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
    flow = regression_demo_problem()
    start = time.perf_counter()
    result = flow.run(flow.parametrization.initial_point(), steps=steps, solver=solver)
    return float(np.max(result.trajectory_error[1:])), time.perf_counter() - start


def time_to_accuracy(budgets: list[int], adam_rates: list[float]) -> dict:
    floor, _ = max_error_run(GaussNewton(max_iterations=50))
    target = 2 * floor
    solvers = {
        "gauss-newton": lambda n: [GaussNewton(max_iterations=n)],
        "adam": lambda n: [Adam(lr=rate, max_iterations=n, check_every=n) for rate in adam_rates],
        "lbfgs": lambda n: [LBFGS(max_iterations=n)],
    }
    report = {"floor": floor, "target": target, "budgets": budgets, "adam_rates": adam_rates, "solvers": {}}
    for name, make in solvers.items():
        curve, reached = [], None
        for budget in budgets:
            best = min((max_error_run(solver) + (repr(solver),) for solver in make(budget)), key=lambda r: r[0])
            curve.append({"iterations": budget, "max_error": best[0], "seconds": best[1], "solver": best[2]})
            print("time to accuracy", name, budget, best[0], best[1], file=sys.stderr)
            if best[0] <= target:
                reached = curve[-1]
                break
        report["solvers"][name] = {"curve": curve, "reached": reached}
    gn = report["solvers"]["gauss-newton"]["reached"]
    for name in ("adam", "lbfgs"):
        other = report["solvers"][name]["reached"]
        report[f"{name}_over_gn"] = None if gn is None or other is None else other["seconds"] / gn["seconds"]
    return report


def adapter_overhead(iterations: int = 20) -> dict:
    import geoopt
    import pymanopt

    from mms_manifolds.adapters.geoopt import GeooptIncrementManifold
    from mms_manifolds.adapters.pymanopt import PymanoptIncrementManifold, make_problem

    _, subproblem, theta = regression_subproblem(200, 128, "dense")
    step = 0.2 / 1.2  # tau/(1 + tau): the Riemannian gradient step that equals the GN step here

    def core():
        point = theta
        for _ in range(iterations):
            point = point - step * subproblem.riemannian_gradient(point)
        return point

    class FixedStep(pymanopt.optimizers.line_search.BackTrackingLineSearcher):
        def search(self, objective, manifold, x, d, f0, df0):
            return step, manifold.retraction(x, step * d)

    def pymanopt_run():
        problem = make_problem(subproblem, PymanoptIncrementManifold(subproblem.manifold))
        optimizer = pymanopt.optimizers.SteepestDescent(
            max_iterations=iterations, min_gradient_norm=0, min_step_size=0, verbosity=0, line_searcher=FixedStep()
        )
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
        start = time.perf_counter()
        points[name] = run()
        timings[name] = (time.perf_counter() - start) / iterations
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
        start = time.perf_counter()
        generic = FunctionParametrization.jacobian(parametrization, theta)
        middle = time.perf_counter()
        node_wise = parametrization.jacobian(theta)
        end = time.perf_counter()
        rows.append(
            {
                "p": parametrization.num_parameters,
                "N": nodes,
                "generic_seconds": middle - start,
                "node_wise_seconds": end - middle,
                "max_difference": float((generic - node_wise).abs().max()),
            }
        )
        print("jacobian", rows[-1], file=sys.stderr)
    return rows


def crossovers(parameter_sizes: list[int], node_sizes: list[int]) -> list[dict]:
    """Dense, Woodbury and plain CG on one solve at each (p, N), each in a fresh process; and what ``auto`` picks."""
    from mms_manifolds.linalg import AutoSolve

    rows = []
    for parameters in parameter_sizes:
        for nodes in node_sizes:
            row = {"p_target": parameters, "N": nodes, "modes": {}}
            for mode in ("dense", "woodbury", "cg-none"):
                if mode == "woodbury" and nodes > parameters:
                    # an Nm x Nm kernel larger than G itself: 200-300 s at N = 1e4 in the first full run
                    row["modes"][mode] = {"skipped": "N > p"}
                    continue
                measured = run_cell("solve", parameters, nodes, mode, timeout=600)
                measured.pop("solution", None)
                row["modes"][mode] = measured
                row["p"] = measured.get("p", row.get("p"))
            timed = {mode: m for mode, m in row["modes"].items() if "seconds" in m}
            row["fastest_one"] = min(timed, key=lambda mode: timed[mode]["seconds"]) if timed else None
            row["fastest_ten"] = min(timed, key=lambda mode: timed[mode]["seconds_ten"]) if timed else None
            row["auto"] = AutoSolve().select(row["p"] or parameters, nodes)[0].name
            rows.append(row)
            print("crossover", parameters, nodes, row["fastest_one"], row["fastest_ten"], file=sys.stderr)
    return rows


# -------------------------------------------------------------------------------------------- report


def time_to_reach(curve: list[dict], level: float) -> tuple[float, bool]:
    """``(seconds, True)`` of the first budget whose max error is at most ``level``, else ``(longest run's seconds, False)``."""
    for point in curve:
        if point["max_error"] <= level:
            return point["seconds"], True
    return max(point["seconds"] for point in curve), False


def accuracy_levels(accuracy: dict) -> list[float]:
    """The target and the errors GN reaches at 3 and 10 iterations per step (looser accuracies)."""
    gn_curve = {point["iterations"]: point["max_error"] for point in accuracy["solvers"]["gauss-newton"]["curve"]}
    return [gn_curve[n] * 1.05 for n in (3, 10) if n in gn_curve] + [accuracy["target"]]


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def _mib(row: dict) -> str:
    return _fmt(row["peak_rss_bytes"] / 2**20, ".0f") if "peak_rss_bytes" in row else "—"


def markdown(report: dict) -> str:
    lines = [f"Generated by `{report['command']}` on {report['machine']} ({report['date']})."]
    for update in report.get("updates", []):
        lines.append(f"Sections re-measured by `{update['command']}` ({update['date']}).")
    lines.append("")
    lines += ["### 1. One Gauss–Newton iteration vs one Adam iteration", ""]
    lines += [
        "Regression MMS step, 1-w-w-1 tanh MLP, float64; GN with the automatic solve mode (CG capped at "
        f"{CG_CAP} iterations per solve) including its two residual checks; Adam is a bare torch loop "
        "(forward, backward, step). Peak RSS of a fresh process, torch included.",
        "",
        "| p | N | GN mode | GN s | Adam s | time GN/Adam | GN MiB | Adam MiB | memory GN/Adam |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["iteration_costs"]:
        if "gn" not in row or "seconds" not in row["gn"] or "seconds" not in row["adam"]:
            reason = row.get("skipped") or row.get("gn", {}).get("skipped") or row.get("adam", {}).get("skipped")
            lines.append(f"| {row['p_target']:.0e} | {row['N']:.0e} | skipped: {reason} | | | | | | |")
            continue
        gn, adam = row["gn"], row["adam"]
        lines.append(
            f"| {gn['p']} | {gn['N']} | {gn['mode']} | {gn['seconds']:.3g} | {adam['seconds']:.3g} | "
            f"{row['time_ratio']:.3g} | {_mib(gn)} | {_mib(adam)} | {row['memory_ratio']:.2f} |"
        )
    accuracy = report["time_to_accuracy"]
    lines += ["", "### 2. Time to accuracy on the regression flow", ""]
    lines += [
        f"The demo's flow (128 nodes, 1-12-12-1, tau 0.2, 12 steps). Floor: max trajectory error with GN "
        f"at 50 iterations per step, {accuracy['floor']:.4g}; target twice that, {accuracy['target']:.4g}. "
        f"Inner iterations per step tried: {accuracy['budgets']}; Adam learning rates {accuracy['adam_rates']} "
        "(best reported).",
        "",
        "| solver | iterations per step to reach the target | max error | wall time s |",
        "| --- | --- | --- | --- |",
    ]
    for name, entry in accuracy["solvers"].items():
        hit = entry["reached"]
        if hit is None:
            last = entry["curve"][-1]
            lines.append(
                f"| {name} | not within {last['iterations']} | {last['max_error']:.4g} | {last['seconds']:.3g} |"
            )
        else:
            lines.append(f"| {name} | {hit['iterations']} | {hit['max_error']:.4g} | {hit['seconds']:.3g} |")
    lines += [
        "",
        f"Adam / GN wall time: **{_fmt(accuracy['adam_over_gn'])}** (target >= 10); "
        f"L-BFGS / GN: **{_fmt(accuracy['lbfgs_over_gn'])}** (target >= 3). A solver that never reaches the "
        "target gives no ratio; its last run's wall time bounds the ratio from below.",
        "",
        "The same curves read at looser accuracies (wall time of the first budget that reaches each; "
        "`>` marks a lower bound, from a solver's longest run, when it never does):",
        "",
        "| max error at most | GN s | Adam s | L-BFGS s | Adam / GN | L-BFGS / GN |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in accuracy_levels(accuracy):
        times = {name: time_to_reach(entry["curve"], level) for name, entry in accuracy["solvers"].items()}
        gn_time, _ = times["gauss-newton"]
        cells = [f"{seconds:.3g}" if reached else f"> {seconds:.3g}" for seconds, reached in times.values()]
        ratios = [
            ("" if reached else "> ") + f"{seconds / gn_time:.3g}"
            for seconds, reached in (times["adam"], times["lbfgs"])
        ]
        lines.append(f"| {level:.3g} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    adapters = report["adapter_overhead"]
    lines += ["", "### 3. Adapter overhead", ""]
    lines += [
        f"{adapters['iterations']} fixed-step Riemannian gradient steps (step tau/(1+tau), the GN step for "
        "regression) on a p = 221, N = 128 regression step, dense mode.",
        "",
        "| runner | s per iteration | ratio to core | max parameter difference to core |",
        "| --- | --- | --- | --- |",
        f"| core (`MMSSubproblem.riemannian_gradient`) | {adapters['seconds_per_iteration']['core']:.3g} | 1 | 0 |",
        f"| pymanopt SteepestDescent | {adapters['seconds_per_iteration']['pymanopt']:.3g} | "
        f"{adapters['pymanopt_over_core']:.3g} | {adapters['max_difference_pymanopt']:.2g} |",
        f"| geoopt RiemannianSGD | {adapters['seconds_per_iteration']['geoopt']:.3g} | "
        f"{adapters['geoopt_over_core']:.3g} | {adapters['max_difference_geoopt']:.2g} |",
    ]
    lines += ["", "### 4. Solve modes on one problem", ""]
    modes = report["solve_modes"]
    lines += [
        f"One solve `(J^T M J + lambda I) x = J^T grad F` at p = {modes['p']}, N = {modes['N']}, lambda = 1e-4 "
        "(factorisation included; peak RSS of a fresh process).",
        "",
        "| mode | s | peak MiB | CG iterations | relative difference to dense |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in modes["rows"]:
        if "seconds" not in row:
            lines.append(f"| {row['requested']} | skipped: {row.get('skipped')} | | | |")
            continue
        lines.append(
            f"| {row['requested']} | {row['seconds']:.3g} | {_mib(row)} | {row.get('cg_iterations') or '—'} | "
            f"{row['relative_difference']:.2g} |"
        )
    scale = report["scaling"]
    lines += ["", "### 5. Scaling of one GN iteration", ""]
    lines += [
        f"Mode {scale['mode']}. Fitted exponents: time ~ p^{scale['exponent_p']:.2f} at N = {scale['fixed_n']}, "
        f"time ~ N^{scale['exponent_n']:.2f} at p = {scale['fixed_p']}.",
        "",
        "| p | s |  | N | s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for by_p, by_n in zip(scale["by_p"], scale["by_n"]):
        lines.append(f"| {by_p['p']} | {by_p['seconds']:.3g} | | {by_n['N']} | {by_n['seconds']:.3g} |")
    lines += ["", "### 6. Crossovers between the solve modes", ""]
    lines += [
        "One solve as in section 4 (lambda = 1e-4, factorisation included), each mode in a fresh process; "
        "seconds for one right-hand side and for ten with one factorisation, plain CG's iterations for the "
        "first, and the mode `AutoSolve` picks.",
        "",
        "| p | N | dense 1 / 10 s | woodbury 1 / 10 s | cg 1 / 10 s (its) | fastest, 1 | fastest, 10 | auto |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pair(measured: dict) -> str:
        if "seconds" not in measured:
            return f"skipped: {measured.get('skipped')}"
        return f"{measured['seconds']:.3g} / {measured['seconds_ten']:.3g}"

    for row in report["crossovers"]:
        modes = row["modes"]
        lines.append(
            f"| {row['p']} | {row['N']} | {pair(modes['dense'])} | {pair(modes['woodbury'])} | "
            f"{pair(modes['cg-none'])} ({modes['cg-none'].get('cg_iterations', '—')}) | {row['fastest_one']} | "
            f"{row['fastest_ten']} | {row['auto']} |"
        )
    if "memory_cell" in report:
        cell_row = report["memory_cell"]
        lines += ["", "### 7. Memory: p = N = 1e5, matrix-free", ""]
        if "peak_rss_bytes" in cell_row:
            lines.append(
                f"One GN iteration in CG mode at p = {cell_row['p']}, N = {cell_row['N']} with CG capped at "
                f"{MEMORY_CG_CAP} iterations per solve and damping fixed at 1e-4 (CG keeps a fixed number of "
                "p-vectors, so the cap changes the time, not the peak): peak RSS "
                f"**{cell_row['peak_rss_bytes'] / 2**30:.2f} GiB** (target < 4 GB), torch included; "
                f"{cell_row['seconds']:.0f} s for the iteration, {cell_row['pair_seconds']:.1f} s per JVP + VJP pair."
            )
        else:
            lines.append(f"skipped: {cell_row.get('skipped')}")
    if "jacobian_paths" in report:
        lines += ["", "### 8. Dense Jacobian: batched JVPs against node by node", ""]
        lines += [
            "`FunctionParametrization.jacobian` (p batched JVPs, O(N p^2) work) against "
            "`TorchParametrization.jacobian` (per-node reverse mode, O(N p)), same process, after a warm-up.",
            "",
            "| p | N | batched JVPs s | node by node s | speed-up | max difference |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in report["jacobian_paths"]:
            lines.append(
                f"| {row['p']} | {row['N']} | {row['generic_seconds']:.3g} | {row['node_wise_seconds']:.3g} | "
                f"{row['generic_seconds'] / row['node_wise_seconds']:.3g} | {row['max_difference']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def write_report(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "benchmarks.json").write_text(json.dumps(report, indent=1))
    with open(RESULTS / "iteration_costs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["p", "N", "gn_mode", "gn_seconds", "adam_seconds", "gn_peak_rss", "adam_peak_rss"])
        for row in report["iteration_costs"]:
            gn, adam = row.get("gn", {}), row.get("adam", {})
            writer.writerow(
                [
                    gn.get("p", row["p_target"]),
                    row["N"],
                    gn.get("mode"),
                    gn.get("seconds"),
                    adam.get("seconds"),
                    gn.get("peak_rss_bytes"),
                    adam.get("peak_rss_bytes"),
                ]
            )
    with open(RESULTS / "time_to_accuracy.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["solver", "iterations_per_step", "max_error", "seconds", "configuration"])
        for name, entry in report["time_to_accuracy"]["solvers"].items():
            for point in entry["curve"]:
                writer.writerow([name, point["iterations"], point["max_error"], point["seconds"], point["solver"]])
    text = REPORT.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    REPORT.write_text(head + BEGIN + "\n" + markdown(report) + END + tail)


SECTIONS = (
    "iteration_costs",
    "time_to_accuracy",
    "adapter_overhead",
    "solve_modes",
    "scaling",
    "crossovers",
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
        "crossovers": lambda: crossovers([300, 1000, 3000], [300, 1000, 3000] if quick else [300, 1000, 3000, 10000]),
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
    arguments = parser.parse_args()
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
        command = "python benchmarks/run.py" + (" --quick" if quick else "") + " --only " + " ".join(arguments.only)
        report.setdefault("updates", []).append({"command": command, "date": time.strftime("%Y-%m-%d")})
        names = arguments.only
    else:
        report = {
            "command": "python benchmarks/run.py" + (" --quick" if quick else ""),
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
