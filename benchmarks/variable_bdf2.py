r"""Variable-step BDF2's certified tracking bound on the heat 2-D flow: violations and the largest bound over the largest error.

Two measurements (``docs/theory.md``, section 7.1; ``docs/results.md``):

- **Exact steps, perturbed** (:func:`perturbed_adaptive`): the heat 2-D grid of the tests (10 x 10 interior nodes of
  the unit square, Dirichlet, :math:`u_t = 0.25\Delta u`, :math:`u_0` two eigenmodes, :math:`T = 0.2`), the steps the
  :class:`~mms_manifolds.schemes.StepController` chooses for exact BDF2 at a tolerance; then those steps rerun with
  each exact step perturbed by ``size`` :math:`\cdot N(0, 1)` times a smooth mode and booked by the driver's
  ``SchemeStepper`` (:func:`mms_manifolds.testing.perturbed_bdf2_run`), against the same steps at a constant step
  of the same count.
- **The driver** (:func:`driver_runs`): ``MinimizingMovement(..., scheme=BDF2()).run(..., time_tolerance=tol)`` on the
  quick heat 2-D flow of ``docs/results.md`` (a network, Gauss–Newton at 3 iterations per step), its errors against the
  exact variable-step BDF2 iterates with the run's own steps, beside the same count of constant steps. ::

    python -m benchmarks.variable_bdf2 --json variable_bdf2.json
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from mms_manifolds import DirichletEnergy, GaussNewton, L2Metric, MinimizingMovement
from mms_manifolds.grids import grid_2d, grid_spacing, stiffness_2d
from mms_manifolds.reproduce.experiments import build
from mms_manifolds.schemes import BDF2, StepController, adaptive_exact_trajectory
from mms_manifolds.testing import perturbed_bdf2_run

from .timing import use_threads

FINAL_TIME = 0.2
SQUARE = (0.0, 1.0, 0.0, 1.0)


def heat_2d_grid(count: int = 10) -> tuple[L2Metric, DirichletEnergy, torch.Tensor, torch.Tensor]:
    r"""``(metric, energy, u0, mode)``: the heat 2-D grid flow and the perturbation's mode :math:`\sin\pi x(\sin\pi y + \sin 2\pi y)`."""
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    points = grid_2d(count, count, SQUARE, "dirichlet")
    metric = L2Metric(torch.full((count * count,), spacing**2, dtype=torch.float64))
    energy = DirichletEnergy(0.25 * stiffness_2d(count, count, SQUARE, "dirichlet"))
    x, y = math.pi * points[:, :1], math.pi * points[:, 1:]
    u0 = torch.sin(x) * torch.sin(y) + 0.3 * torch.sin(2 * x) * torch.sin(3 * y)
    return metric, energy, u0, torch.sin(x) * (torch.sin(y) + torch.sin(2 * y))


def perturbed_adaptive(tolerance: float, size: float = 1e-6, seeds: int = 3) -> dict:
    """Controller steps of exact BDF2 at ``tolerance`` (relative to ``||u0||``), rerun perturbed; and a constant step."""
    metric, energy, u0, mode = heat_2d_grid()
    controller = StepController(tolerance * float(metric.norm(u0)), order=2)
    _, steps, _ = adaptive_exact_trajectory(BDF2(start="euler"), energy, metric, u0, FINAL_TIME, 1e-3, controller)
    ratios = np.array(steps[1:]) / np.array(steps[:-1])
    row = {"tolerance": tolerance, "steps": len(steps), "ratio_min": ratios.min(), "ratio_max": ratios.max()}
    for label, sequence in (("adaptive", steps), ("constant", [FINAL_TIME / len(steps)] * len(steps))):
        violations, quotients, problems = 0, [], []
        for seed in range(seeds):
            bounds, errors, problem = perturbed_bdf2_run(energy, metric, u0, sequence, size, seed, mode)
            problems.append(problem)
            violations += sum(error > bound for error, bound in zip(errors, bounds))
            quotients.append(max(bounds) / max(errors))
        row[label] = {
            "violations": violations,
            "booked": seeds * len(steps),
            "quotients": quotients,
            "withdrawn": problems,
        }
    return row


def driver_runs(tolerance: float | None, steps: int) -> dict:
    """BDF2 through the driver on the quick heat 2-D flow, adaptive at ``tolerance`` (``None``: the flow's constant step):
    certified?, violations, largest bound over largest error."""
    experiment = build("heat_2d", "quick")
    flow = experiment.flow
    flow = MinimizingMovement(flow.parametrization, flow.energy, flow.metric, flow.tau, scheme=BDF2())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an inner solve stopped far from converged: reported, not a failure here
        result = flow.run(experiment.theta0, steps, GaussNewton(max_iterations=3), time_tolerance=tolerance)
    record = result.metadata["scheme_record"]
    ratios = np.array(record["time_steps"][1:]) / np.array(record["time_steps"][:-1])
    errors, bounds = result.trajectory_error[1:], result.tracking_bound[1:]
    return {
        "tolerance": tolerance,
        "steps": steps,
        "certified": bool(result.certified),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
        "rejected": record["rejected_steps"],
        "violations": int(np.sum(errors > bounds)),
        "max_error": float(errors.max()),
        "max_bound": float(bounds.max()),
        "quotient": float(bounds.max() / errors.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results here")
    arguments = parser.parse_args()
    use_threads(1)
    exact = [perturbed_adaptive(tolerance) for tolerance in (1e-6, 7e-8)]
    for row in exact:
        print(
            f"exact, tol {row['tolerance']:g}: {row['steps']} steps, ratios {row['ratio_min']:.3f}-{row['ratio_max']:.3f}; "
            + "; ".join(
                f"{label}: violations {row[label]['violations']}/{row[label]['booked']}, "
                f"bound/error {min(row[label]['quotients']):.2f}-{max(row[label]['quotients']):.2f}"
                for label in ("adaptive", "constant")
            )
        )
    driver = [driver_runs(tolerance, steps) for tolerance, steps in ((2e-5, 6), (5e-6, 10), (None, 6), (None, 10))]
    for row in driver:
        print(
            f"driver, tol {row['tolerance']}, {row['steps']} steps: certified {row['certified']}, ratios "
            f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f}, rejected {row['rejected']}, violations {row['violations']}, "
            f"max error {row['max_error']:.3g}, max bound {row['max_bound']:.3g}, bound/error {row['quotient']:.2f}"
        )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"exact": exact, "driver": driver}, indent=1, default=float))


if __name__ == "__main__":
    main()
