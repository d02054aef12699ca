"""Ctrl-C during a run: one line (steps saved, path, the resuming call), no library traceback; resume says so; == holds."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mms_manifolds import GaussNewton, MMSResult
from mms_manifolds.cli import main

from problems import regression_flow

HERE = Path(__file__).parent


def _run(checkpoint: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(HERE)}
    command = [sys.executable, str(HERE / "interruptible_run.py"), str(checkpoint), *arguments]
    return subprocess.run(command, env=environment, capture_output=True, text=True)


def test_sigint_at_step_11_says_what_the_checkpoint_holds_and_resume_is_identical(tmp_path):
    reference = tmp_path / "reference.npz"
    assert _run(reference).returncode == 0
    checkpoint = tmp_path / "run.npz"
    interrupted = _run(checkpoint, "11", "sigint")  # SIGINT as the 11th inner solve starts: 10 steps done
    assert interrupted.returncode == -signal.SIGINT  # Python's exit for an uncaught KeyboardInterrupt
    line = (
        f"MMS run interrupted during step 11 of 30: checkpoint {checkpoint} holds 10 steps; resume with the same "
        f"call, flow.run(theta0, 30, solver, checkpoint={str(checkpoint)!r})"
    )
    assert interrupted.stderr.strip().endswith(f"KeyboardInterrupt: {line}")
    assert interrupted.stderr.count(line) == 1  # once, as the exception's message
    traceback = interrupted.stderr[interrupted.stderr.index("Traceback") :]
    frames = [row for row in traceback.splitlines() if row.strip().startswith("File ")]
    assert len(frames) == 2 and "interruptible_run.py" in frames[0] and "interrupts.py" in frames[1]
    assert MMSResult.load(checkpoint).steps_done == 10
    resumed = _run(checkpoint)
    assert resumed.returncode == 0
    assert f"MMS run resumed from step 10 of 30 (checkpoint {checkpoint})" in resumed.stderr
    first, second = MMSResult.load(checkpoint), MMSResult.load(reference)
    assert first == second  # bit-identical numbers; wall time is not compared
    assert not first.same_timing(second) and first.same_timing(MMSResult.load(checkpoint))


class _InterruptAt(GaussNewton):
    """Gauss-Newton that raises KeyboardInterrupt as solve number ``at`` starts."""

    def __init__(self, at, **options):
        super().__init__(**options)
        self._at, self._solves = at, 0

    def solve(self, subproblem, theta0, tolerance=None, state=None):
        self._solves += 1
        if self._solves == self._at:
            raise KeyboardInterrupt
        return super().solve(subproblem, theta0, tolerance, state)


def test_interruption_is_a_keyboard_interrupt_raised_from_the_wrapper_only(tmp_path):
    flow = regression_flow(count=32)
    with pytest.raises(KeyboardInterrupt, match="during step 3 of 5: checkpoint .* holds 2 steps") as caught:
        flow.run(
            flow.parametrization.initial_point(), 5, _InterruptAt(3, max_iterations=2), checkpoint=tmp_path / "a.npz"
        )
    error = caught.value
    assert type(error) is KeyboardInterrupt and error.steps_saved == 2 and error.steps == 5
    assert error.checkpoint == (tmp_path / "a.npz").absolute()
    assert error.__cause__ is None and error.__suppress_context__
    innermost = error.__traceback__
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    assert innermost.tb_frame.f_code.co_filename.endswith("interrupts.py")


def test_interruption_without_a_checkpoint_says_nothing_was_kept():
    flow = regression_flow(count=32)
    with pytest.raises(KeyboardInterrupt, match="no checkpoint was given, so nothing was kept") as caught:
        flow.run(flow.parametrization.initial_point(), 5, _InterruptAt(2, max_iterations=2))
    assert caught.value.steps_saved == 0 and caught.value.checkpoint is None


def test_command_line_exits_130_with_the_line(monkeypatch, capsys):
    line = "MMS run interrupted during step 3 of 12: checkpoint /x.npz holds 2 steps; resume with the same call, ..."

    def interrupted(*arguments, **options):
        raise KeyboardInterrupt(line)

    monkeypatch.setattr("mms_manifolds.cli.run_demo", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err.strip() == line
