"""Every example script runs to completion (with its defaults, or a smaller size for full experiments).

Scripts that only forward their arguments to ``mms_manifolds.cli.main`` run in this process (a new
interpreter would add nothing but its start-up); every other script runs as a program, in its own
interpreter, as a user starts it.
"""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def forwards_to_the_command_line(script: Path) -> bool:
    """Whether ``script`` is a thin wrapper: it imports ``mms_manifolds.cli.main`` and only calls it."""
    return "from mms_manifolds.cli import main" in script.read_text()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(script, tmp_path, monkeypatch):
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in SMALLER.get(script.stem, [])]
    if forwards_to_the_command_line(script):
        monkeypatch.setattr(sys, "argv", [str(script), *arguments])
        monkeypatch.chdir(tmp_path)  # a script's default output directory lands here
        threads = torch.get_num_threads()  # the reproduce command sets one thread for its timings
        try:
            with pytest.raises(SystemExit) as exit_status:
                runpy.run_path(str(script), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
        assert exit_status.value.code in (0, None)
        return
    # No timeout: each example's work is bounded, and a clock-based limit fails on a busy machine.
    completed = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
