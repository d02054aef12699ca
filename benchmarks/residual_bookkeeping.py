r"""The residual bookkeeping of one MMS step at p = 8,577 (MLP 2-64-64-64-1), N = 4,900: its share of the step's CPU time.

    python -m benchmarks.residual_bookkeeping

The regression flow of :mod:`benchmarks.scale` (:func:`benchmarks.flows.regression_step_flow`) with three hidden
layers of 64, one certified step (``MinimizingMovement.run``) per solver and per booked residual
(``run(residual="split")``, the default, then ``residual="total"``, the two alternating in one process, each on a
flow built afresh so that no run finds another's cached linearisation): Adam with 1 and 300 iterations, L-BFGS 50,
Gauss–Newton 3, subspace Gauss–Newton ``s = 1024`` 10, and the last two again with ``final_residual=False`` (``no
final``: the solver does not measure its end point's split for the ledger, which then computes what it books). Every call of :meth:`MMSSubproblem.residual` (the solver's
own, the stopping tests', the ledger's) is timed (``time.process_time``, summed), and the computations behind
them counted: splits (``MMSSubproblem._residual``) and totals alone (``MMSSubproblem._total_residual``). The two
modes' tracking bounds are compared bit for bit. One torch thread. Results go to
``benchmarks/results/residual-bookkeeping-cpu.json``.
"""

from __future__ import annotations

import json
import time

import torch

from mms_manifolds import LBFGS, Adam, GaussNewton, SubspaceGaussNewton
from mms_manifolds.subproblem import RESIDUAL_PARTS, MMSSubproblem

from . import RESULTS
from .flows import regression_step_flow
from .timing import use_threads

HIDDEN, SIDE = (64, 64, 64), 70
"""The network's hidden widths and the grid's side (:math:`N = 70^2`)."""


class ResidualClock:
    """Times every ``MMSSubproblem.residual`` call (summed CPU seconds) and counts the splits and totals computed."""

    _COUNTED = ("_residual", "_total_residual")

    def __init__(self):
        self.seconds, self.calls = 0.0, {name: 0 for name in self._COUNTED}
        self._originals = {name: getattr(MMSSubproblem, name) for name in ("residual", *self._COUNTED)}

    def __enter__(self) -> ResidualClock:
        clock, residual = self, self._originals["residual"]

        def timed(subproblem: MMSSubproblem, theta: torch.Tensor, *args, **kwargs):
            start = time.process_time()
            try:
                return residual(subproblem, theta, *args, **kwargs)
            finally:
                clock.seconds += time.process_time() - start

        def counted(name: str):
            original = self._originals[name]

            def count(subproblem: MMSSubproblem, theta: torch.Tensor):
                clock.calls[name] += 1
                return original(subproblem, theta)

            return count

        MMSSubproblem.residual = timed
        for name in self._COUNTED:
            setattr(MMSSubproblem, name, counted(name))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(MMSSubproblem, name, original)


def main() -> None:
    use_threads(1)
    solvers = {
        "adam 1": lambda: Adam(lr=1e-3, max_iterations=1),
        "adam 300": lambda: Adam(lr=1e-3, max_iterations=300),
        "lbfgs 50": lambda: LBFGS(max_iterations=50),
        "gauss-newton 3": lambda: GaussNewton(max_iterations=3),
        "subspace s=1024 10": lambda: SubspaceGaussNewton(1024, seed=0, max_iterations=10),
        "gauss-newton 3 no final": lambda: GaussNewton(max_iterations=3, final_residual=False),
        "subspace s=1024 10 no final": lambda: SubspaceGaussNewton(1024, seed=0, max_iterations=10, final_residual=False),
    }
    rows, setups, flow = {}, [], None
    for name, make_solver in solvers.items():
        rows[name], bounds = {}, {}
        for parts in RESIDUAL_PARTS:
            start = time.process_time()
            flow, _ = regression_step_flow(HIDDEN, SIDE, "cpu")
            setups.append(time.process_time() - start)
            theta = flow.parametrization.initial_point()
            with ResidualClock() as clock:
                start = time.process_time()
                result = flow.run(theta, 1, make_solver(), residual=parts)
                total = time.process_time() - start
            bounds[parts] = float(result.tracking_bound[-1])
            rows[name][parts] = {
                "step_cpu_seconds": total,
                "residual_cpu_seconds": clock.seconds,
                "splits": clock.calls["_residual"],
                "totals_alone": clock.calls["_total_residual"],
                "share": clock.seconds / total,
                "residual_total": float(result.residual_total[-1]),
                "residual_tangential": float(result.residual_tangential[-1]),
                "tracking_bound": bounds[parts],
                "certified": result.certified,
            }
            row = rows[name][parts]
            print(
                f"{name:>27} {parts:>5}: step {total:.2f} s, residual {clock.seconds:.3f} s "
                f"({row['splits']} splits, {row['totals_alone']} totals; {row['share']:.1%})",
                flush=True,
            )
        rows[name]["same_tracking_bound"] = bounds["split"] == bounds["total"]
    report = {
        "clock": "time.process_time (CPU seconds of this process)",
        "threads": torch.get_num_threads(),
        "num_parameters": flow.parametrization.num_parameters,
        "nodes": SIDE * SIDE,
        "solve_mode": flow.manifold.solve_choice.mode.name,
        "setup_cpu_seconds": setups,
        "order": "per solver: residual='split' then residual='total', each on a freshly built flow",
        "steps": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "residual-bookkeeping-cpu.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
