"""A checkpointed MMS run for the SIGKILL and writer-lock tests: ``python interruptible_run.py CHECKPOINT [AT [ACTION]]``.

Runs 30 steps of the regression flow with Gauss-Newton, resuming from CHECKPOINT if it exists. With
AT = k the process acts as its k-th inner solve starts (counted from this process's start): ACTION
``kill`` (default) sends itself SIGKILL; ``sigint`` sends itself SIGINT (Ctrl-C); ``pause`` prints ``paused``
and waits for a line on standard input, holding the checkpoint's writer lock meanwhile. Either way the moment is one the test controls,
not one of the clock.
"""

import os
import signal
import sys

from mms_manifolds import GaussNewton

from problems import regression_flow

# A suite started as a background job (``pytest &`` in a shell without job control) hands its children SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler: restore Ctrl-C's, which this script stands for.
signal.signal(signal.SIGINT, signal.default_int_handler)


class InterruptibleGaussNewton(GaussNewton):
    """Gauss-Newton that kills or pauses its own process at the start of solve number ``at``."""

    def __init__(self, at: int | None, action: str, **options):
        super().__init__(**options)
        self._at, self._action, self._solves = at, action, 0

    def solve(self, subproblem, theta0, tolerance=None, state=None):
        self._solves += 1
        if self._solves == self._at:
            if self._action in ("kill", "sigint"):
                os.kill(os.getpid(), signal.SIGKILL if self._action == "kill" else signal.SIGINT)
            print("paused", flush=True)
            sys.stdin.readline()
        return super().solve(subproblem, theta0, tolerance, state)


if __name__ == "__main__":
    at = int(sys.argv[2]) if len(sys.argv) > 2 else None
    action = sys.argv[3] if len(sys.argv) > 3 else "kill"
    flow = regression_flow(widths=(1, 16, 16, 1), count=96)
    solver = InterruptibleGaussNewton(at, action, max_iterations=4)
    flow.run(flow.parametrization.initial_point(), 30, solver, checkpoint=sys.argv[1], progress=action == "sigint")
