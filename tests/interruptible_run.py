"""A checkpointed MMS run for the SIGKILL test: ``python interruptible_run.py CHECKPOINT``.

Runs 60 steps of the regression flow with Gauss-Newton, resuming from CHECKPOINT if it exists.
"""

import sys

import torch

torch.set_default_dtype(torch.float64)

from mms_manifolds import GaussNewton  # noqa: E402

from problems import regression_flow  # noqa: E402

if __name__ == "__main__":
    flow = regression_flow(widths=(1, 16, 16, 1), count=96)
    flow.run(flow.parametrization.initial_point(), 60, GaussNewton(max_iterations=4), checkpoint=sys.argv[1])
