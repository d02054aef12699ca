"""Run the solver comparison: every experiment x solver x inner-iteration budget, with CSV, figures and a summary.

For each experiment the approximation floor is the max trajectory error of Gauss–Newton with a
large budget (``floor_budget`` iterations per step): what more inner iterations cannot improve. The
summary gives, per solver, the smallest budget (from the grid) whose max error is within twice the
floor, and the wall time of that run; rows record every bound check.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
import warnings
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
"""The largest budget a slow solver runs at, per size; larger budgets are left out (the summary says so)."""
SLOW_REASONS = {
    "pymanopt-tr": "a trust-region iteration runs an inner truncated-CG loop",
    "rgd-exp": "every exp-map step integrates a stiff geodesic ODE, 10-20x a GN iteration",
}
NOT_RUN = {
    "quick": {
        ("known_minimizer", "rgd-exp"): "not run: at budget 3 the exp-map steps (a stiff geodesic ODE each) "
        "had not finished after 10 minutes (budget 1 took 34 s)",
    },
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


def planned_budgets(solver: str, budgets: tuple[int, ...], size: str) -> tuple[tuple[int, ...], str]:
    """The budgets ``solver`` runs at in a comparison of ``size``, and why any are left out (``""`` if none)."""
    cap = SLOW_MAX_BUDGET[size].get(solver, math.inf)
    kept = tuple(budget for budget in budgets if budget <= cap)
    if len(kept) == len(budgets):
        return kept, ""
    left_out = ", ".join(str(budget) for budget in budgets if budget > cap)
    return kept, f"budgets {left_out} not run in {size} mode ({solver} capped at {cap}: {SLOW_REASONS[solver]})"


def compare(
    experiments: list[str] | None = None,
    solvers: list[str] | None = None,
    quick: bool = False,
    budgets: tuple[int, ...] | None = None,
    floor_budget: int | None = None,
    progress: bool = True,
    journal: Path | None = None,
) -> tuple[list[Row], dict[str, float]]:
    """Run every experiment x solver x budget; return the rows and each experiment's approximation floor.

    The cells are fixed before anything runs, by the size alone (never by how long a run took): every
    budget of the grid, except those above a slow solver's cap (:data:`SLOW_MAX_BUDGET`) and the pairs of
    :data:`NOT_RUN`; each left-out cell becomes a row whose status says why, which the summary prints.
    With ``progress``, a bar on standard error counts the runs and estimates the time left.

    With a ``journal`` (a CSV path), every finished run is appended to it at once, and runs already
    in it (same experiment, solver and budget) are read back instead of run again: an interrupted
    comparison resumes where it stopped. The floor run is journaled as Gauss–Newton at
    ``floor_budget``. A journal belongs to one size and one version of the code; delete it to start over.
    """
    from tqdm import tqdm

    experiments = list(EXPERIMENTS) if experiments is None else experiments
    solvers = list(SOLVERS) if solvers is None else solvers
    unknown = sorted(set(experiments) - set(EXPERIMENTS)) + sorted(set(solvers) - set(SOLVERS))
    if unknown:
        raise ValueError(
            f"unknown experiment or solver {unknown}; experiments {list(EXPERIMENTS)}, solvers {list(SOLVERS)}"
        )
    budgets = (QUICK_BUDGETS if quick else FULL_BUDGETS) if budgets is None else budgets
    floor_budget = (30 if quick else 50) if floor_budget is None else floor_budget
    size = "quick" if quick else "full"
    done = {(row.experiment, row.solver, row.budget): row for row in read_csv(journal)} if journal else {}

    plan: list[tuple[str, str, int]] = []  # (experiment, solver, budget) in running order, each floor first
    cells: list[tuple[str, str, int]] = []  # the cells that become rows (the floor run is not one)
    skipped: list[Row] = []
    for name in experiments:
        plan.append((name, "gauss-newton", floor_budget))
        for solver in solvers:
            if (name, solver) in NOT_RUN[size]:
                reason = NOT_RUN[size][name, solver]
                skipped.append(
                    Row(name, solver, budgets[0], None, math.inf, math.inf, math.nan, 0, True, math.nan, True, reason)
                )
                continue
            kept, reason = planned_budgets(solver, budgets, size)
            cells += [(name, solver, budget) for budget in kept]
            plan += [(name, solver, budget) for budget in kept]
            if reason:
                skipped.append(
                    Row(name, solver, max(budgets), None, math.inf, math.inf, math.nan, 0, True, math.nan, True, reason)
                )
    plan = list(dict.fromkeys(plan))  # GN at the floor budget, if on the grid, runs once
    journaled = sum(cell in done for cell in plan)
    if progress:
        print(
            f"{len(experiments)} experiments x {len(solvers)} solvers ({size}): {len(plan)} runs, "
            f"{journaled} already in the journal {journal}"
            if journal
            else f"{len(plan)} runs",
            file=sys.stderr,
        )
    bar = tqdm(total=len(plan), disable=not progress, unit="run", file=sys.stderr, dynamic_ncols=True)
    bar.update(journaled)
    built: dict[str, _Lazy] = {}
    for name, solver, budget in plan:
        if (name, solver, budget) in done:
            continue
        bar.set_description(f"{name} {solver} n={budget}")
        experiment = built.setdefault(name, _Lazy(name, size))
        row = done[name, solver, budget] = _run(experiment, solver, budget)
        if journal is not None:
            append_csv(row, journal)
        bar.update(1)
        bar.write(
            f"{name:16s} {solver:13s} n={budget:3d} max e {row.max_error:.3e} {row.wall_time:6.2f} s {row.status}"
        )
    bar.close()

    floors = {name: done[name, "gauss-newton", floor_budget].max_error for name in experiments}
    return _ordered([done[cell] for cell in cells] + skipped, experiments, solvers), floors


def _ordered(rows: list[Row], experiments: list[str], solvers: list[str]) -> list[Row]:
    """Rows grouped by experiment, then solver in roster order, then budget (skipped cells last in their group)."""
    rank = {name: index for index, name in enumerate(experiments)}
    order = {name: index for index, name in enumerate(solvers)}
    return sorted(
        rows,
        key=lambda row: (
            rank[row.experiment],
            order.get(row.solver, -1),
            row.status.startswith("budgets "),
            row.budget,
        ),
    )


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


def _csv_line(row: Row) -> bytes:
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=list(asdict(row).keys())).writerow(asdict(row))
    return buffer.getvalue().encode()


def append_csv(row: Row, path: Path) -> None:
    """Append one row to a journal CSV (with a header when the file is new) all or nothing, then ``fsync``.

    The row is one ``write`` on an ``O_APPEND`` descriptor; if the write is cut short (a file-size limit,
    a full disk) the file is truncated back to its previous length and the error raised, so a torn row
    never stays behind to be read as a valid one. A torn last line another writer left is dropped first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _csv_line(row)
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = _drop_torn_tail(descriptor, path)
        if size == 0:
            data = (",".join(asdict(row).keys()) + "\r\n").encode() + data
        try:
            written = os.write(descriptor, data)
        except OSError:
            os.ftruncate(descriptor, size)
            raise
        if written != len(data):
            os.ftruncate(descriptor, size)
            raise OSError(f"journal {path}: only {written} of {len(data)} bytes written; the row was not kept")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _drop_torn_tail(descriptor: int, path: Path) -> int:
    """Truncate a last line without its line end (a writer killed mid-row) before appending; the new length.

    Appended to, the torn row would glue onto the next one and make a malformed line in the middle of the
    journal (:func:`read_csv` drops only a torn *last* line); the run it belonged to is done again.
    """
    size = os.fstat(descriptor).st_size
    if size == 0 or os.pread(descriptor, 1, size - 1) == b"\n":
        return size
    kept = os.pread(descriptor, size, 0).rfind(b"\n") + 1
    warnings.warn(f"journal {path}: dropped a torn last line before appending; that run is done again", stacklevel=3)
    os.ftruncate(descriptor, kept)
    return kept


def read_csv(path: Path) -> list[Row]:
    """The rows of a CSV written by :func:`append_csv` or :func:`write_csv` (none if it does not exist).

    A last line without its line end is a torn append (a writer killed mid-row): it is dropped with a
    warning and the run is done again. Any other malformed row raises ``ValueError`` naming the line.
    """
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        torn = text[text.rfind("\n") + 1 :]
        warnings.warn(f"journal {path}: dropped a torn last line ({torn[:60]!r}); that run is done again", stacklevel=2)
        text = text[: len(text) - len(torn)]
    types = {field.name: field.type for field in fields(Row)}
    rows = []
    for line, record in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            if None in record or any(value is None for value in record.values()):
                raise ValueError("wrong number of fields")
            values = {}
            for name, kind in types.items():
                text_value = record[name]
                if kind == "bool":
                    if text_value not in ("True", "False"):
                        raise ValueError(f"{name} = {text_value!r} is not True or False")
                    values[name] = text_value == "True"
                elif kind == "int":
                    values[name] = int(text_value)
                elif kind in ("float", "float | None"):
                    values[name] = None if text_value == "" else float(text_value)
                else:
                    values[name] = text_value
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"journal {path}, line {line}: not a valid row ({error}); delete the journal to start over"
            ) from error
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
    markers = "osv^DPX*<>"
    names = list(dict.fromkeys(row.solver for row in rows))
    for experiment, floor in floors.items():
        figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
        for index, solver in enumerate(names):
            mine = [
                row
                for row in rows
                if row.experiment == experiment and row.solver == solver and math.isfinite(row.max_error)
            ]
            if not mine:
                continue
            # Colour, marker and line style all differ between solvers (Adam and SGD were hard to tell apart);
            # the torch baselines are dashed, the Riemannian solvers solid.
            style = {
                "color": f"C{index % 10}",
                "marker": markers[index % len(markers)],
                "linestyle": "--" if solver in ("adam", "sgd", "lbfgs") else "-",
                "markerfacecolor": "none" if index % 2 else f"C{index % 10}",
                "label": solver,
            }
            for line, field in ((0, "max_error"), (1, "final_error")):
                errors = [getattr(row, field) for row in mine]
                axes[line, 0].loglog([row.budget for row in mine], errors, **style)
                axes[line, 1].loglog([row.wall_time for row in mine], errors, **style)
        for (line, column), axis in np.ndenumerate(axes):
            axis.axhline(floor, color="k", linestyle=":", linewidth=1, label="approximation floor (GN, large budget)")
            axis.set_xlabel(("inner iterations per MMS step", "wall time of the run (s)")[column])
            axis.set_ylabel(("max_k ||u_k - v_k||_M", "final ||u_K - v_K||_M")[line])
            axis.grid(True, which="both", alpha=0.3)
        figure.suptitle(experiment)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)  # below, never on points
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        path = folder / f"{experiment}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def _left_out(row: Row) -> bool:
    """Whether ``row`` stands for a cell that was not run (its status says why)."""
    return row.status.startswith(("not run", "budgets "))


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
    ran = [row for row in rows if not _left_out(row)]
    violations = [row for row in ran if not row.bound_holds]
    lines.append(f"Tracking bound checked on {len(ran)} runs: {len(violations)} violations.")
    lines.append("")
    for experiment, floor in floors.items():
        lines += [
            f"#### {experiment}",
            "",
            f"Approximation floor (GN, large budget): {floor:.4g}; target 2x floor = {2 * floor:.4g}.",
            "",
            "| solver | budget: max error | iterations/step to 2x floor | wall time there (s) | notes |",
            "| --- | --- | --- | --- | --- |",
        ]
        for solver in dict.fromkeys(row.solver for row in rows if row.experiment == experiment):
            mine = [row for row in rows if row.experiment == experiment and row.solver == solver]
            ran = [row for row in mine if not _left_out(row)]
            curve = ", ".join(f"{row.budget}: {row.max_error:.3g}" for row in ran) or "—"
            hit = reach(ran, experiment, solver, 2 * floor)
            if hit:
                budget, wall = str(hit.budget), f"{hit.wall_time:.3g}"
            elif ran:
                budget, wall = f"not reached by {max(row.budget for row in ran)}", "—"
            else:
                budget, wall = "not run", "—"
            notes = "; ".join(
                sorted(
                    {row.status for row in mine if row.status != "ok"} | {row.extra for row in ran[-1:] if row.extra}
                )
            )
            if experiment == "allen_cahn" and ran:
                notes = (notes + "; " if notes else "") + (
                    "energy monotone"
                    if all(r.energy_monotone for r in ran if r.status == "ok")
                    else "energy NOT monotone in some run"
                )
            lines.append(f"| {solver} | {curve} | {budget} | {wall} | {notes} |")
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
