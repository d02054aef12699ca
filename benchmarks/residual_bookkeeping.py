r"""The residual bookkeeping of one MMS step at p = 8,577 (MLP 2-64-64-64-1), N = 4,900: its share of the step's CPU time.

    python -m benchmarks.residual_bookkeeping

The regression flow of :mod:`benchmarks.scale` (:func:`benchmarks.flows.regression_step_flow`) with three hidden layers of 64, one step (``MinimizingMovement.run``,
certified) per solver: Adam with 1 and 300 iterations, L-BFGS 50, Gauss–Newton 3, subspace Gauss–Newton
``s = 1024`` 10. Every computation of a residual split (``MMSSubproblem._residual``: the solver's own, the
stopping tests', the ledger's; the cache of :meth:`MMSSubproblem.residual` serves repeats) is counted and its
CPU time (``time.process_time``) summed. One torch thread. Results go to
``benchmarks/results/residual-bookkeeping-cpu.json``.
"""

from __future__ import annotations

import json
import time

import torch

from mms_manifolds import LBFGS, Adam, GaussNewton, SubspaceGaussNewton
from mms_manifolds.subproblem import MMSSubproblem

from . import RESULTS
from .flows import regression_step_flow
from .timing import use_threads


class ResidualClock:
    """Wraps ``MMSSubproblem._residual`` (one computation of a split) to count its calls and sum their CPU time."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self._original = MMSSubproblem._residual

    def __enter__(self) -> ResidualClock:
        original, clock = self._original, self

        def timed(subproblem: MMSSubproblem, theta: torch.Tensor):
            start = time.process_time()
            try:
                return original(subproblem, theta)
            finally:
                clock.seconds += time.process_time() - start
                clock.calls += 1

        MMSSubproblem._residual = timed
        return self

    def __exit__(self, *exc: object) -> None:
        MMSSubproblem._residual = self._original


def main() -> None:
    use_threads(1)
    start = time.process_time()
    flow, _ = regression_step_flow((64, 64, 64), 70, "cpu")
    setup = time.process_time() - start
    theta = flow.parametrization.initial_point()
    solvers = {
        "adam 1": Adam(lr=1e-3, max_iterations=1),
        "adam 300": Adam(lr=1e-3, max_iterations=300),
        "lbfgs 50": LBFGS(max_iterations=50),
        "gauss-newton 3": GaussNewton(max_iterations=3),
        "subspace s=1024 10": SubspaceGaussNewton(1024, seed=0, max_iterations=10),
    }
    rows = {}
    for name, solver in solvers.items():
        with ResidualClock() as clock:
            start = time.process_time()
            result = flow.run(theta, 1, solver)
            total = time.process_time() - start
        rows[name] = {
            "step_cpu_seconds": total,
            "residual_cpu_seconds": clock.seconds,
            "residual_computations": clock.calls,
            "share": clock.seconds / total,
            "residual_tangential": float(result.residual_tangential[-1]),
        }
        print(f"{name:>20}: step {total:.2f} s, residual {clock.seconds:.2f} s in {clock.calls} ({rows[name]['share']:.0%})", flush=True)
    report = {
        "clock": "time.process_time (CPU seconds of this process)",
        "threads": torch.get_num_threads(),
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": 4900,
        "solve_mode": flow.manifold.solve_choice.mode.name,
        "setup_cpu_seconds": setup,
        "steps": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "residual-bookkeeping-cpu.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
