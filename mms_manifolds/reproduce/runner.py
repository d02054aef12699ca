"""Run the solver comparison: every experiment x solver x inner-iteration budget, with CSV, figures and a summary.

For each experiment the approximation floor is the max trajectory error of Gauss–Newton with a
large budget (``floor_budget`` iterations per step): what more inner iterations cannot improve. The
summary gives, per solver, the smallest budget (from the grid) whose max error is within twice the
floor, and the wall time of that run; rows record every bound check.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..mms import MMSDivergenceError
from .experiments import EXPERIMENTS, build
from .roster import RATE_GRIDS, SOLVERS, solver_variants

__all__ = ["Row", "append_csv", "compare", "read_csv", "summary_markdown", "write_csv"]

QUICK_BUDGETS = (1, 3, 10)
FULL_BUDGETS = (1, 2, 5, 10, 20, 50)
SLOW_MAX_BUDGET = {"quick": {"pymanopt-tr": 3}, "full": {"pymanopt-tr": 20, "rgd-exp": 10}}
"""Budgets above these are skipped for slow solvers: a trust-region iteration runs an inner truncated-CG
loop, and every exp-map step integrates a stiff geodesic ODE (10-20x a GN iteration)."""
NOT_RUN = {
    "quick": {},
    "full": {
        ("known_minimizer", "rgd-exp"): "not run: at budget 1 the exp-map steps (a stiff geodesic ODE each) "
        "had not finished after 12 minutes",
    },
}
"""Experiment x solver pairs left out of a size, with the reason (a row with this status is reported)."""


@dataclass
class Row:
    """One run: an experiment, a solver at a budget (best rate of its grid), and what it achieved."""

    experiment: str
    solver: str
    budget: int
    rate: float | None
    max_error: float
    final_error: float
    wall_time: float
    inner_iterations: int
    bound_holds: bool
    max_bound_ratio: float
    energy_monotone: bool
    status: str
    extra: str = ""


def _run(experiment, name: str, budget: int) -> Row:
    best: Row | None = None
    for rate, solver in solver_variants(name, budget):
        flow = experiment.flow
        start = time.perf_counter()
        status = "ok"
        try:
            result = flow.run(experiment.theta0, experiment.steps, solver, reference=experiment.reference)
        except MMSDivergenceError as error:
            result, status = error.result, f"diverged at step {error.step}"
        except (RuntimeError, ValueError) as error:
            row = Row(
                experiment.name,
                name,
                budget,
                rate,
                math.inf,
                math.inf,
                time.perf_counter() - start,
                0,
                True,
                math.nan,
                False,
                f"failed: {str(error)[:80]}",
            )
            best = row if best is None else best
            continue
        wall = time.perf_counter() - start
        errors, bounds = np.asarray(result.trajectory_error), np.asarray(result.tracking_bound)
        finite = np.isfinite(bounds)
        holds = bool(np.all(errors[finite] <= bounds[finite] * (1 + 1e-10) + 1e-12))
        ratio = float(np.max(bounds[1:] / np.maximum(errors[1:], 1e-300))) if finite[1:].all() else math.nan
        energies = np.asarray(result.energy)
        monotone = bool(np.all(np.diff(energies) <= 1e-10 * np.maximum(1.0, np.abs(energies[:-1]))))
        complete = status == "ok"
        theta = result.thetas[-1]
        extra = ";".join(f"{key}={evaluate(theta):.6g}" for key, evaluate in experiment.evaluations.items())
        row = Row(
            experiment.name,
            name,
            budget,
            rate,
            float(np.max(errors[1:])) if complete else math.inf,
            float(errors[-1]) if complete else math.inf,
            wall,
            int(np.sum(result.inner_iterations)),
            holds,
            ratio,
            monotone,
            status,
            extra,
        )
        if best is None or row.max_error < best.max_error:
            best = row
    return best


def compare(
    experiments: list[str] | None = None,
    solvers: list[str] | None = None,
    quick: bool = False,
    budgets: tuple[int, ...] | None = None,
    floor_budget: int | None = None,
    progress: bool = True,
    time_limit: float | None = None,
    journal: Path | None = None,
) -> tuple[list[Row], dict[str, float]]:
    """Run every experiment x solver x budget; return the rows and each experiment's approximation floor.

    A solver whose run at one budget took longer than ``time_limit`` seconds (default 20 quick, 120
    full) is not run at larger budgets of that experiment.

    With a ``journal`` (a CSV path), every finished run is appended to it at once, and runs already
    in it (same experiment, solver and budget) are read back instead of run again: an interrupted
    comparison resumes where it stopped. The floor run is journaled as Gauss–Newton at
    ``floor_budget``. A journal belongs to one size and one version of the code; delete it to start over.
    """
    experiments = list(EXPERIMENTS) if experiments is None else experiments
    solvers = list(SOLVERS) if solvers is None else solvers
    budgets = (QUICK_BUDGETS if quick else FULL_BUDGETS) if budgets is None else budgets
    floor_budget = (30 if quick else 50) if floor_budget is None else floor_budget
    size = "quick" if quick else "full"
    time_limit = (20.0 if quick else 120.0) if time_limit is None else time_limit
    done = {(row.experiment, row.solver, row.budget): row for row in read_csv(journal)} if journal else {}
    rows, floors = [], {}

    def run(experiment, solver: str, budget: int) -> Row:
        key = (experiment.name, solver, budget)
        if key not in done:
            done[key] = _run(experiment, solver, budget)
            if journal is not None:
                append_csv(done[key], journal)
            if progress:
                row = done[key]
                print(
                    f"{row.experiment:16s} {solver:13s} n={budget:3d} max e {row.max_error:.3e} "
                    f"{row.wall_time:6.2f} s {row.status}",
                    file=sys.stderr,
                )
        return done[key]

    for name in experiments:
        experiment = _Lazy(name, size)
        floors[name] = run(experiment, "gauss-newton", floor_budget).max_error
        for solver in solvers:
            if (name, solver) in NOT_RUN[size]:
                reason = NOT_RUN[size][name, solver]
                rows.append(
                    Row(name, solver, budgets[0], None, math.inf, math.inf, math.nan, 0, True, math.nan, True, reason)
                )
                continue
            for budget in budgets:
                if budget > SLOW_MAX_BUDGET[size].get(solver, math.inf):
                    continue
                if (
                    rows
                    and rows[-1].solver == solver
                    and rows[-1].experiment == name
                    and rows[-1].wall_time > time_limit
                ):
                    break  # larger budgets of a solver that already took too long are skipped (the summary says so)
                rows.append(run(experiment, solver, budget))
    return rows, floors


class _Lazy:
    """An experiment built on first use, so that a resumed comparison does not rebuild finished ones."""

    def __init__(self, name: str, size: str):
        self.name, self.size, self._experiment = name, size, None

    def __getattr__(self, attribute: str):
        if self._experiment is None:
            self._experiment = build(self.name, self.size)
        return getattr(self._experiment, attribute)


def write_csv(rows: list[Row], floors: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*asdict(rows[0]).keys(), "floor"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**asdict(row), "floor": floors[row.experiment]})


def append_csv(row: Row, path: Path) -> None:
    """Append one row to a journal CSV (with a header when the file is new), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(row).keys()))
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))
        handle.flush()
        os.fsync(handle.fileno())


def read_csv(path: Path) -> list[Row]:
    """The rows of a CSV written by :func:`append_csv` or :func:`write_csv` (none if it does not exist)."""
    if not path.exists():
        return []
    types = {field.name: field.type for field in fields(Row)}
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            values = {}
            for name, kind in types.items():
                text = record[name]
                if kind == "bool":
                    values[name] = text == "True"
                elif kind == "int":
                    values[name] = int(text)
                elif kind in ("float", "float | None"):
                    values[name] = None if text == "" else float(text)
                else:
                    values[name] = text
            rows.append(Row(**values))
    return rows


def plot(rows: list[Row], floors: dict[str, float], folder: Path) -> list[Path]:
    """Per experiment: max and final error vs inner iterations per step and vs wall time; the floor dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures (pip install 'mms_manifolds[plot]')", file=sys.stderr)
        return []
    paths = []
    for experiment, floor in floors.items():
        figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
        for index, solver in enumerate(dict.fromkeys(row.solver for row in rows)):
            mine = [
                row
                for row in rows
                if row.experiment == experiment and row.solver == solver and math.isfinite(row.max_error)
            ]
            if not mine:
                continue
            style = {"color": f"C{index % 10}", "marker": "o", "label": solver}
            for line, field in ((0, "max_error"), (1, "final_error")):
                errors = [getattr(row, field) for row in mine]
                axes[line, 0].loglog([row.budget for row in mine], errors, **style)
                axes[line, 1].loglog([row.wall_time for row in mine], errors, **style)
        for (line, column), axis in np.ndenumerate(axes):
            axis.axhline(floor, color="k", linestyle="--", linewidth=1, label="approximation floor")
            axis.set_xlabel(("inner iterations per MMS step", "wall time of the run (s)")[column])
            axis.set_ylabel(("max_k ||u_k - v_k||_M", "final ||u_K - v_K||_M")[line])
            axis.grid(True, which="both", alpha=0.3)
        axes[0, 0].set_title(experiment)
        axes[0, 1].legend(fontsize=7, ncol=2)
        figure.tight_layout()
        path = folder / f"{experiment}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def reach(rows: list[Row], experiment: str, solver: str, target: float) -> Row | None:
    """The run with the smallest budget whose max error is within ``target``."""
    hits = [row for row in rows if row.experiment == experiment and row.solver == solver and row.max_error <= target]
    return min(hits, key=lambda row: row.budget) if hits else None


def summary_markdown(rows: list[Row], floors: dict[str, float], command: str) -> str:
    lines = [
        f"Command: `{command}`. Learning-rate grids searched: "
        + ", ".join(f"{name} {list(rates)}" for name, rates in RATE_GRIDS.items())
        + ".",
        "",
    ]
    violations = [row for row in rows if not row.bound_holds]
    lines.append(f"Tracking bound checked on {len(rows)} runs: {len(violations)} violations.")
    lines.append("")
    for experiment, floor in floors.items():
        lines += [
            f"#### {experiment}",
            "",
            f"Approximation floor (GN, large budget): {floor:.4g}; target 2x floor = {2 * floor:.4g}.",
            "",
            "| solver | budgets: max error | iterations/step to 2x floor | wall time there (s) | notes |",
            "| --- | --- | --- | --- | --- |",
        ]
        for solver in dict.fromkeys(row.solver for row in rows if row.experiment == experiment):
            mine = [row for row in rows if row.experiment == experiment and row.solver == solver]
            curve = ", ".join(f"{row.budget}: {row.max_error:.3g}" for row in mine)
            hit = reach(rows, experiment, solver, 2 * floor)
            notes = "; ".join(
                sorted(
                    {row.status for row in mine if row.status != "ok"} | {row.extra for row in mine[-1:] if row.extra}
                )
            )
            if experiment == "allen_cahn":
                notes = (notes + "; " if notes else "") + (
                    "energy monotone"
                    if all(r.energy_monotone for r in mine if r.status == "ok")
                    else "energy NOT monotone in some run"
                )
            lines.append(
                f"| {solver} | {curve} | {hit.budget if hit else '—'} | "
                f"{f'{hit.wall_time:.3g}' if hit else '—'} | {notes} |"
            )
        gn = reach(rows, experiment, "gauss-newton", 2 * floor)
        for other in ("adam", "lbfgs"):
            hit = reach(rows, experiment, other, 2 * floor)
            if gn and hit:
                lines.append(
                    f"\n{other} / GN to 2x floor: {hit.budget / gn.budget:.3g}x iterations, "
                    f"{hit.wall_time / gn.wall_time:.3g}x wall time."
                )
            elif gn:
                lines.append(
                    f"\n{other} did not reach 2x floor within the budgets; GN needed {gn.budget} iterations/step."
                )
        lines.append("")
    return "\n".join(lines)
