"""Heat equation as the L2 gradient flow of the Dirichlet energy, in 1-D and 2-D.

1-D: u_t = u_xx / 4 on [0, 1], zero boundary values, u_0 = sin(pi x), 48 nodes, tau = 0.05, 12 steps;
the exact MMS iterates are (1 + tau lambda_h)^-k u_0 with the grid eigenvalue lambda_h.
2-D: the same on the unit square with u_0 = sin(pi x) sin(pi y), 14 x 14 nodes, tau = 0.02, 10 steps.
The networks carry a bubble factor (zero on the boundary), their initial parameters are fitted to u_0.

    python examples/heat_flow.py
    python examples/heat_flow.py --quick --solvers gauss-newton adam

Writes mms_heat/{results.csv, heat_1d.png, heat_2d.png, summary.md}.
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--experiments", "heat_1d", "heat_2d", "--output-dir", "mms_heat", *sys.argv[1:]]))
