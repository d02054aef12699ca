"""Command line: ``python -m mms_manifolds demo | reproduce | show FILE`` (also the ``mms-manifolds`` console script)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .mms import MinimizingMovement
from .problems import regression_flow
from .results import MMSResult, ResultFileError
from .solvers import LBFGS, Adam, GaussNewton, InnerSolver

__all__ = ["main", "regression_demo_problem", "run_show"]


def regression_demo_problem(seed: int = 0, nodes: int = 128, width: int = 12, tau: float = 0.2) -> MinimizingMovement:
    r"""The demo's flow: :func:`mms_manifolds.problems.regression_flow` with a 1-w-w-1 tanh MLP, float64."""
    return regression_flow(nodes, (1, width, width, 1), seed, tau)


def _plot(results: dict[str, MMSResult], path: Path) -> Path | None:
    try:
        import matplotlib.figure
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'mms_manifolds[plot]')", file=sys.stderr)
        return None
    figure = matplotlib.figure.Figure(figsize=(6.5, 4))
    axis = figure.subplots()
    for index, (name, result) in enumerate(results.items()):
        steps = np.arange(1, len(result.thetas))
        color = f"C{index}"
        axis.semilogy(steps, result.trajectory_error[1:], "o-", color=color, label=f"{name}: error e_k")
        axis.semilogy(steps, result.tracking_bound[1:], "--", color=color, label=f"{name}: bound B_k")
    axis.set_xlabel("MMS step k")
    axis.set_ylabel("||u_k - v_k||_M")
    axis.set_title("Neural MMS, regression flow: error against the exact MMS iterates")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def run_show(path: Path, every: int = 1, plot: Path | None = None, table_csv: Path | None = None) -> int:
    """Print a saved result (its settings, notes and per-step table); optionally plot it or write its CSV.

    Returns 0, or 2 when the file is missing or not a valid result (the reason on standard error).
    """
    try:
        result = MMSResult.load(path)
    except (FileNotFoundError, ResultFileError) as error:
        print(f"mms_manifolds show: {error}", file=sys.stderr)
        return 2
    metadata = result.metadata
    print(
        f"{path}: {result.steps_done} steps, tau = {metadata.get('tau')}, solver {metadata.get('solver')}, "
        f"{len(result.thetas[0])} parameters, solve mode {metadata.get('solve_mode')}"
    )
    print(result.table(every))
    if table_csv is not None:
        print(f"table: {result.to_csv(table_csv)}")
    if plot is not None:
        try:
            print(f"plot: {result.plot(plot)}")
        except ImportError as error:
            print(f"mms_manifolds show: {error}", file=sys.stderr)
            return 2
    return 0


def run_demo(steps: int, output_dir: Path, seed: int, quick: bool, threads: int = 1) -> int:
    """Run the regression flow with each demo solver, print the comparison, write results and a plot.

    ``threads`` sets ``torch.set_num_threads`` for the run (0 keeps torch's default). One thread is the
    default: the demo's problems are small, and on a shared 2-core machine torch's default threads made
    it 10-20 times slower (``docs/performance.md``).
    """
    if threads > 0:
        torch.set_num_threads(threads)
    flow = regression_demo_problem(seed=seed, nodes=64 if quick else 128)
    theta0 = flow.parametrization.initial_point()
    solvers: dict[str, InnerSolver] = {
        "gauss-newton": GaussNewton(max_iterations=5),
        "adam": Adam(lr=1e-2, max_iterations=30 if quick else 100),
        "lbfgs": LBFGS(max_iterations=20 if quick else 50),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Regression flow, {flow.parametrization.num_parameters} parameters, "
        f"{flow.parametrization.output_shape[0]} nodes, tau = {flow.tau}, {steps} steps, float64, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    print(f"{'solver':<14} {'inner/step':>10} {'max e_k':>10} {'max B_k':>10} {'max B/e':>8} {'time [s]':>9}")
    results = {}
    for name, solver in solvers.items():
        start = time.perf_counter()
        result = flow.run(theta0, steps, solver)
        elapsed = time.perf_counter() - start
        results[name] = result
        result.save(output_dir / f"demo_{name}.npz")
        ratio = np.max(result.tracking_bound[1:] / result.trajectory_error[1:])
        print(
            f"{name:<14} {result.inner_iterations[1:].mean():>10.0f} {result.trajectory_error.max():>10.3e} "
            f"{result.tracking_bound.max():>10.3e} {ratio:>8.2f} {elapsed:>9.2f}"
        )
    plot = _plot(results, output_dir / "demo.png")
    print(f"results: {output_dir}/demo_*.npz" + (f", plot: {plot}" if plot else ""))
    print("e_k = ||u_k - v_k||_M against the exact MMS iterates v_k; B_k = certified tracking bound (e_k <= B_k).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mms_manifolds``: the command's exit status, 130 after Ctrl-C (with the line saying what was kept)."""
    try:
        return _dispatch(argv)
    except KeyboardInterrupt as interrupted:  # an MMS run's carries the line: steps saved, path, resuming call
        print(str(interrupted) or "interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: Sequence[str] | None) -> int:
    """Parse the command line and run the command."""
    parser = argparse.ArgumentParser(prog="mms_manifolds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="regression flow: Gauss-Newton against Adam and L-BFGS")
    demo.add_argument("--steps", type=int, default=12, help="MMS steps (default 12)")
    demo.add_argument("--output-dir", type=Path, default=Path("mms_demo"), help="where results and the plot go")
    demo.add_argument("--seed", type=int, default=0, help="network initialisation seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="fewer nodes and baseline iterations (for tests)")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 keeps torch's default)")
    from .reproduce.experiments import EXPERIMENTS
    from .reproduce.roster import SOLVERS

    reproduce = commands.add_parser("reproduce", help="every experiment x inner solver x iteration budget")
    reproduce.add_argument("--quick", action="store_true", help="small problems, budgets 1, 3, 10")
    reproduce.add_argument(
        "--experiments", nargs="+", choices=list(EXPERIMENTS), metavar="NAME", help=f"subset of {list(EXPERIMENTS)}"
    )
    reproduce.add_argument(
        "--solvers", nargs="+", choices=list(SOLVERS), metavar="NAME", help=f"subset of {list(SOLVERS)}"
    )
    reproduce.add_argument(
        "--output-dir", type=Path, default=Path("mms_reproduce"), help="CSV, figures, summary; resumes from its journal"
    )
    reproduce.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 keeps torch's default)")
    show = commands.add_parser("show", help="print a saved result or checkpoint (.npz); --plot and --csv export it")
    show.add_argument("file", type=Path, help="a file written by MMSResult.save or a run's checkpoint")
    show.add_argument("--every", type=int, default=1, help="print every n-th step and the last (default 1)")
    show.add_argument("--plot", type=Path, metavar="OUT.png", help="write the error, bound and residual plot")
    show.add_argument("--csv", type=Path, metavar="OUT.csv", help="write the per-step table as CSV")
    arguments = parser.parse_args(argv)
    if arguments.command == "show":
        if arguments.every < 1:
            parser.error("--every must be >= 1")
        return run_show(arguments.file, arguments.every, arguments.plot, arguments.csv)
    if arguments.threads < 0:
        parser.error("--threads must be >= 0")
    if arguments.command == "reproduce":
        return run_reproduce(
            arguments.quick, arguments.experiments, arguments.solvers, arguments.output_dir, arguments.threads
        )
    if arguments.steps < 1:
        parser.error("--steps must be >= 1")
    return run_demo(arguments.steps, arguments.output_dir, arguments.seed, arguments.quick, arguments.threads)


def run_reproduce(
    quick: bool, experiments: list[str] | None, solvers: list[str] | None, output_dir: Path, threads: int = 1
) -> int:
    """Run the solver comparison; write ``results.csv``, one figure per experiment and ``summary.md``.

    Every finished run is journaled in ``runs_quick.csv`` / ``runs_full.csv`` in ``output_dir``; running
    the same command again resumes from it (delete it to start over). ``threads`` as for the demo.
    """
    from .reproduce.runner import compare, plot, summary_markdown, write_csv

    if threads > 0:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    journal = output_dir / f"runs_{'quick' if quick else 'full'}.csv"
    print(
        f"reproduce{' --quick' if quick else ''}, {torch.get_num_threads()} torch thread(s): results, figures and "
        f"summary.md go to {output_dir}/",
        file=sys.stderr,
    )
    rows, floors = compare(experiments, solvers, quick=quick, journal=journal)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, floors, output_dir / "results.csv")
    plot(rows, floors, output_dir)
    command = "python -m mms_manifolds reproduce" + (" --quick" if quick else "")
    summary = summary_markdown(rows, floors, command)
    summary += (
        f"\nWall time of this invocation {time.perf_counter() - start:.0f} s (journaled runs read back not included).\n"
    )
    (output_dir / "summary.md").write_text(summary)
    print(summary)
    return 0 if all(row.bound_holds for row in rows) else 1
