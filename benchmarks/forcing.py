r"""CG tolerances for Gauss–Newton's model solves: a fixed tolerance against forcing terms, on the regression step.

    python -m benchmarks.forcing [--iterations 3] [--side 70] [--hidden 64 64 64] [--device cuda] [--threads 1]

The 2-D regression step of :func:`benchmarks.flows.regression_step_flow` (MLP 2-64-64-64-1, ``p = 8577``, on a
70 x 70 grid, ``N = 4900``) in the matrix-free mode, one MMS step's inner solve from the network's initial
point, with Gauss–Newton's defaults (Levenberg–Marquardt, geodesic acceleration) and four rules for the CG
solves: the fixed relative tolerance ``1e-10`` (``ConjugateGradientSolve()``), ``CertifiedDecrease(0.9)``
(every solve of the mode, the residual splits' included), and Eisenstat–Walker choices 1 and 2 with a certified
share 0.9 (``GaussNewton(forcing=EisenstatWalker(...))``, the model solves only). Per Gauss–Newton iteration:
the CG iterations of its model solves and the cost, from the progress records; the forcing term and the certified
share of the exact damped model decrease the step reached, from ``InnerResult.extra["forcing"]``; the error
against the exact step :math:`(u_0 + \tau g)/(1 + \tau)` relative to the initial one. First, at the initial point, one
damped model solve (damping ``1e-3`` of the mean eigenvalue) by each rule: CG iterations and the model decrease
against the fixed tolerance's. CPU seconds (``benchmarks.timing.Stopwatch``), one torch thread unless
``--threads`` says otherwise. Results go to ``benchmarks/results/forcing-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from mms_manifolds import GaussNewton
from mms_manifolds.linalg import CertifiedDecrease, ConjugateGradientSolve, EisenstatWalker
from mms_manifolds.progress import LOGGER

from . import RESULTS
from .flows import STEP_TAU, regression_step_flow
from .timing import Stopwatch, conditions, use_threads

#: The damping of the initial-point comparison, relative to the mean eigenvalue (Gauss–Newton's initial damping).
RELATIVE_DAMPING = 1e-3

#: The rules compared: name -> (the solve mode's CG settings, the solver's forcing rule).
RULES = {
    "fixed 1e-10": (ConjugateGradientSolve(), None),
    "certified 0.9": (ConjugateGradientSolve(tolerance=CertifiedDecrease(0.9)), None),
    "eisenstat-walker 1": (ConjugateGradientSolve(), EisenstatWalker(choice=1)),
    "eisenstat-walker 2": (ConjugateGradientSolve(), EisenstatWalker(choice=2)),
}


class ProgressRecords(logging.Handler):
    """Keeps every :class:`~mms_manifolds.progress.InnerProgress` the solvers report while attached."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.progress)

    def __enter__(self) -> ProgressRecords:
        self._level = LOGGER.level
        LOGGER.addHandler(self)
        LOGGER.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        LOGGER.removeHandler(self)
        LOGGER.setLevel(self._level)


def initial_point_solves(hidden: tuple[int, ...], side: int, device: str) -> dict:
    """One damped model solve at the initial point per rule: CG iterations and the model decrease."""
    rows, reference = {}, None
    for name, (mode, forcing) in RULES.items():
        flow, _ = regression_step_flow(hidden, side, device, solve_mode=mode)
        theta = flow.parametrization.initial_point()
        model = flow.subproblem(theta).gauss_newton_model(theta)
        damping = RELATIVE_DAMPING * model.mean_eigenvalue
        factorization, shifted = model.factorization, damping / model.scale
        before = factorization.linear_iterations
        with Stopwatch(device) as clock:
            if forcing is None:
                solution = factorization.solve(model.gradient, shifted)
            else:  # the first iteration's solve: eta_0 and the certified share
                solution = factorization.solve_inexact(model.gradient, shifted, forcing.initial, forcing.fraction)
        step = -solution.value / model.scale
        decrease = model.predicted_decrease(step, damping)
        reference = decrease if reference is None else reference
        rows[name] = {
            "cg_iterations": factorization.linear_iterations - before,
            "model_decrease": decrease,
            "decrease_over_fixed": decrease / reference,
            "certified_fraction": solution.certified_fraction,
            "relative_residual": solution.relative_residual,
            "cpu_seconds": clock.cpu,
        }
        print(f"initial point, {name:>20}: {rows[name]}", flush=True)
    return rows


def solve_rows(hidden: tuple[int, ...], side: int, device: str, iterations: int) -> dict:
    """One inner solve per rule: per-iteration CG iterations, cost, error, forcing term and certified share."""
    rows = {}
    for name, (mode, forcing) in RULES.items():
        flow, _ = regression_step_flow(hidden, side, device, solve_mode=mode)
        theta = flow.parametrization.initial_point()
        subproblem = flow.subproblem(theta)
        u0 = flow.parametrization.value(theta)
        exact = (u0 + STEP_TAU * flow.energy.target) / (1 + STEP_TAU)
        initial_error = float(flow.metric.norm(u0 - exact))
        solver = GaussNewton(max_iterations=iterations, forcing=forcing)
        with ProgressRecords() as progress, Stopwatch(device) as clock:
            result = solver.solve(subproblem, theta)
        per_iteration = [
            {
                "iteration": record.iteration,
                "cost": record.cost,
                "cg_iterations": record.linear_iterations,
                "wall_seconds_so_far": record.seconds,  # the progress record's wall clock
                "relative_error": float(flow.metric.norm(flow.parametrization.value(record.point) - exact))
                / initial_error,
            }
            for record in progress.records
        ]
        for entry, forced in zip(per_iteration, result.extra.get("forcing", [])):
            entry.update(
                forcing_term=forced["forcing_term"],
                step_cg_iterations=forced["cg_iterations"],
                certified_fraction=forced["certified_fraction"],
            )
        rows[name] = {
            "iterations": per_iteration,
            "cg_iterations": sum(entry["cg_iterations"] for entry in per_iteration),
            "cost_decrease": result.cost_history[0] - result.cost_history[-1],
            "uncertified_iterations": result.extra.get("uncertified_iterations"),
            "cpu_seconds": clock.cpu,
            "wall_seconds": clock.wall,
            "stop_reason": result.stop_reason.name.lower(),
        }
        print(f"solve, {name:>20}: CG {rows[name]['cg_iterations']}, decrease {rows[name]['cost_decrease']:.6e}, "
              f"errors {[round(entry['relative_error'], 4) for entry in per_iteration]}, "
              f"{clock.cpu:.1f} s CPU", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3, help="Gauss–Newton iterations per solve")
    parser.add_argument("--side", type=int, default=70, help="grid side (N = side^2)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64, 64], help="hidden widths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    arguments = parser.parse_args()
    threads = use_threads(arguments.threads)
    hidden = tuple(arguments.hidden)
    flow, _ = regression_step_flow(hidden, arguments.side, arguments.device, solve_mode="cg")
    report = {
        "problem": {
            "hidden": list(hidden),
            "nodes": arguments.side**2,
            "parameters": flow.parametrization.num_parameters,
            "relative_damping": RELATIVE_DAMPING,
            "gauss_newton_iterations": arguments.iterations,
        },
        "conditions": {**conditions(arguments.device), "threads": threads, "clock": "process CPU seconds"},
        "initial_point": initial_point_solves(hidden, arguments.side, arguments.device),
        "solves": solve_rows(hidden, arguments.side, arguments.device, arguments.iterations),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"forcing-{torch.device(arguments.device).type}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
