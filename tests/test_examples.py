"""Every example script runs to completion (with its defaults, or a smaller size for full experiments)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

QUICK_PAIR = ["--solvers", "gauss-newton", "adam", "--output-dir", "{tmp}"]

# Scripts whose defaults are a full experiment run here with the same code path at a smaller size.
SMALLER = {
    "poisson_2d": ["--steps", "1", "--iterations", "2"],
    "heat_4d": ["--nodes", "200", "--steps", "2"],
    "gpu_check": ["--parameters", "200", "--nodes", "200"],
    "reproduce": ["--quick", "--experiments", "regression", *QUICK_PAIR],
}
# The per-experiment scripts of the reproduction: quick size, GN against Adam.
for experiment_script in ("regression_flow", "latent_diffusion", "heat_flow", "allen_cahn", "known_minimizer"):
    SMALLER[experiment_script] = ["--quick", *QUICK_PAIR]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(script, tmp_path):
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in SMALLER.get(script.stem, [])]
    # No timeout: each example's work is bounded, and a clock-based limit fails on a busy machine.
    completed = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
