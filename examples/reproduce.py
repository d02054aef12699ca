"""Reproduce the paper's claim: trajectory error against inner iterations, every solver, every experiment.

    python examples/reproduce.py --quick      # under 10 minutes on 2 cores
    python examples/reproduce.py              # the full comparison (docs/results.md)
    python examples/reproduce.py --experiments regression --solvers gauss-newton adam lbfgs

Same as ``python -m mms_manifolds reproduce``: writes ``mms_reproduce/results.csv``, one figure per
experiment and ``summary.md``. Experiments: regression, latent_diffusion, heat_1d, heat_2d,
allen_cahn, known_minimizer (see ``mms_manifolds.reproduce.experiments``).
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
