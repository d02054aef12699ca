"""A checkpointed MMS run for the SIGKILL test: ``python interruptible_run.py CHECKPOINT [KILL_AT_SOLVE]``.

Runs 30 steps of the regression flow with Gauss-Newton, resuming from CHECKPOINT if it exists. With
KILL_AT_SOLVE = k the process sends itself SIGKILL as its k-th inner solve starts (counted from this
process's start): a kill at a point the test controls, not at a moment of the clock.
"""

import os
import signal
import sys

import torch

torch.set_default_dtype(torch.float64)

from mms_manifolds import GaussNewton  # noqa: E402

from problems import regression_flow  # noqa: E402


class SelfKillingGaussNewton(GaussNewton):
    """Gauss-Newton that SIGKILLs its own process at the start of solve number ``kill_at``."""

    def __init__(self, kill_at: int | None, **options):
        super().__init__(**options)
        self._kill_at, self._solves = kill_at, 0

    def solve(self, subproblem, theta0, tolerance=None, state=None):
        self._solves += 1
        if self._solves == self._kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().solve(subproblem, theta0, tolerance, state)


if __name__ == "__main__":
    kill_at = int(sys.argv[2]) if len(sys.argv) > 2 else None
    flow = regression_flow(widths=(1, 16, 16, 1), count=96)
    solver = SelfKillingGaussNewton(kill_at, max_iterations=4)
    flow.run(flow.parametrization.initial_point(), 30, solver, checkpoint=sys.argv[1])
