"""Allen–Cahn: the L2 gradient flow of the Ginzburg–Landau energy, semi-convex, with a Newton reference.

E(u) = int eps^2/2 |u'|^2 + (1 - u^2)^2 / 4 on [-1, 1] (Neumann), eps = 0.1, 80 nodes, tau = 0.1 < 1
(the step is strongly convex for tau below the inverse semi-convexity modulus), 12 steps from a fitted
0.6 sin(2.5 pi x) + 0.2 x. The reference MMS iterates are computed on the grid by damped Newton.
The summary says whether the energy decreased monotonically in every run.

    python examples/allen_cahn.py
    python examples/allen_cahn.py --quick --solvers gauss-newton adam

Writes mms_allen_cahn/{results.csv, allen_cahn.png, summary.md}.
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--experiments", "allen_cahn", "--output-dir", "mms_allen_cahn", *sys.argv[1:]]))
