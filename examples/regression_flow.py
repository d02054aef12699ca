"""Nonlinear regression flow, the paper's first experiment: trajectory error against inner iterations.

E(u) = ||u - g||^2 / 2 on 128 nodes of [-1, 1], g = |x| + 0.3 sin(5x) (a kink and a frequency), a
1-12-12-1 tanh MLP, the trapezoid L2 metric, tau = 0.2, 12 steps. The exact MMS iterates are
v_k = g + (1 + tau)^-k (v_0 - g); every solver of the roster runs at 1, 2, 5, 10, 20, 50 inner
iterations per step (seeds fixed, best learning rate of each grid).

    python examples/regression_flow.py                                      # every solver
    python examples/regression_flow.py --quick --solvers gauss-newton adam lbfgs

Writes mms_regression/{results.csv, regression.png, summary.md} and prints the summary (the
iterations and wall time each solver needs to reach twice the approximation floor).
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--experiments", "regression", "--output-dir", "mms_regression", *sys.argv[1:]]))
