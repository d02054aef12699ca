"""The GPU session (``benchmarks/device_session.py``) is ready without a GPU: its commands parse, its budget holds, its runs stop."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from pathlib import Path

import pytest

from benchmarks import device_session
from benchmarks.device_session import SHORTEST_RUN, Run, limits, plan, run_command, run_session

PLAN = plan("cuda", Path("/tmp/work"), Path("/tmp/teng_initial_parameters.npz"))


class _Parsed(Exception):
    """Raised in place of a benchmark's work once its parser is seen (and, where asked, its arguments parsed)."""


def _run_main_until_parsed(module: str, arguments: list[str] | None, monkeypatch) -> dict:
    """The benchmark's own ``main()`` up to its ``parse_args``: ``{"options"}`` (its option strings), and with ``arguments``
    also ``{"namespace"}``, parsed by its own parser (a bad option or value exits: ``SystemExit``)."""
    seen: dict = {}
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        seen["options"] = set(self._option_string_actions)
        if arguments is not None:
            seen["namespace"] = parse(self, args, namespace)
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        patch.setattr(sys, "argv", [module, *(arguments or [])])
        with pytest.raises(_Parsed):
            importlib.import_module(f"benchmarks.{module}").main()
    return seen


@pytest.mark.parametrize("run", PLAN, ids=[run.name for run in PLAN])
def test_every_planned_command_parses_with_its_benchmarks_own_parser(run, monkeypatch):
    """Each run's options exist in its benchmark and take its values; each runs on the session's device."""
    assert "--device" in _run_main_until_parsed(run.module, None, monkeypatch)["options"], f"benchmarks.{run.module} must take --device"
    assert _run_main_until_parsed(run.module, list(run.arguments), monkeypatch)["namespace"].device == "cuda"


def test_the_four_benchmarks_fit_the_default_budget_and_the_rest_run_in_what_is_left():
    """Worst case (each run takes its whole limit): the first five runs get their limits within 450 s, the others none."""
    planned = limits(PLAN, 450.0)
    names = [run.name for run in PLAN]
    assert names[:5] == ["regression-step", "poisson-2d", "teng-step-256", "teng-step-1536", "poisson-5d"]
    assert planned[:5] == [run.limit for run in PLAN[:5]] and sum(planned[:5]) <= 450.0
    assert planned[5:] == [None, None, None]
    assert limits(PLAN, 100.0) == [100.0] + [None] * 7  # cut to what is left
    assert limits(PLAN, 120.0 + SHORTEST_RUN - 1) == [120.0] + [None] * 7  # too little left for another process
    assert limits(PLAN, 120.0 + SHORTEST_RUN) == [120.0, SHORTEST_RUN] + [None] * 6


_WAITS_FOR_AN_INTERRUPT = """
import signal, sys
print("waiting", flush=True)
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the test until here: delivered now
    signal.pause()
except KeyboardInterrupt:
    print("interrupted: what it finished is written", flush=True)
    sys.exit(0)
"""


def test_a_run_past_its_limit_is_interrupted_first_and_keeps_its_output(tmp_path):
    """A run that never ends by itself gets SIGINT at its limit (its handler runs) and is recorded as timed out.

    SIGINT is blocked in this process while the child starts (a child inherits the mask), so the interrupt waits
    for the child's handler however long its start takes.
    """
    log = tmp_path / "session.log"
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        outcome = run_command([sys.executable, "-c", _WAITS_FOR_AN_INTERRUPT], 0.1, log)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    assert outcome["status"] == "timed out" and outcome["exit_code"] == 0
    assert "interrupted: what it finished is written" in log.read_text()


def test_a_session_that_ignores_sigint_still_interrupts_its_runs_at_their_limit(tmp_path):
    """Started as a background job, the session ignores SIGINT; its runs must not inherit that, or the limit kills them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        outcome = run_command([sys.executable, "-c", _WAITS_FOR_AN_INTERRUPT], 0.1, tmp_path / "session.log")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the session's own action is left as it was
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    assert outcome["status"] == "timed out" and outcome["exit_code"] == 0
    assert "interrupted: what it finished is written" in (tmp_path / "session.log").read_text()


def test_a_run_that_ignores_the_interrupt_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(device_session, "GRACE_SECONDS", 0.1)
    script = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    signal.pause()\n"
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        outcome = run_command([sys.executable, "-c", script], 0.1, tmp_path / "session.log")
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    assert outcome["status"] == "timed out" and outcome["exit_code"] == -signal.SIGKILL


def test_the_session_records_every_run_and_says_why_one_was_skipped(tmp_path):
    """A run with a missing file, one that runs, one past the budget: each in the record written to ``--out``, and why."""
    out, work, missing, none = tmp_path / "out", tmp_path / "work", tmp_path / "absent.npz", tmp_path / "none.json"
    runs = [
        Run("needs-a-file", "device_session", ("--out", str(out), "--dry-run"), 30, none, (missing,)),
        Run("runs", "device_session", ("--out", str(out), "--dry-run", "--device", "cpu"), 60, none),
    ]
    record = run_session(runs, 1e6, out, work, "cpu", missing)
    stored = json.loads((out / "device-session.json").read_text())
    assert stored["runs"]["needs-a-file"]["status"] == f"skipped: missing {missing}"
    assert stored["runs"]["runs"]["status"] == "ok" and stored["runs"]["runs"]["result"] is None  # it wrote no result
    assert "regression-step [120 s]" in (out / "device-session.log").read_text()  # its output went to the log
    assert stored["preflight"]["device"] == "cpu" and "pymanopt" in stored["preflight"]["packages"]
    assert record["runs"].keys() == stored["runs"].keys() == {"needs-a-file", "runs"}
    short = run_session([runs[1]], SHORTEST_RUN - 1, out, work, "cpu", missing)
    assert short["runs"]["runs"]["status"] == f"skipped: {SHORTEST_RUN - 1:.0f} s of the budget left"
