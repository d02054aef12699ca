"""A flow with a known global minimiser of a non-quadratic energy: the iterates reach its neighbourhood.

E(v) = int 1/2 v'^2 + 1/4 v^4 - f v on [-1, 1] (Neumann), f = pi^2 cos(pi x) + cos(pi x)^3, whose
minimiser is cos(pi x); 80 nodes, tau = 0.5, 15 steps from a random 1-12-12-1 tanh network. The
reference MMS iterates come from the energy's exact prox (Newton on the grid).

The summary's notes give, for the last budget of each solver, the final distance to cos(pi x), to the
grid minimiser v*, and delta = min_theta ||phi(theta) - v*||_M (a long L2 fit): the radius of the
neighbourhood a network of this size can reach.

    python examples/known_minimizer.py
    python examples/known_minimizer.py --quick --solvers gauss-newton adam

Writes mms_known_minimizer/{results.csv, known_minimizer.png, summary.md}.
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(
        main(["reproduce", "--experiments", "known_minimizer", "--output-dir", "mms_known_minimizer", *sys.argv[1:]])
    )
