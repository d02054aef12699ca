"""Reliability: degenerate geometry, divergence fallbacks, safe and atomic checkpoints, SIGKILL, determinism."""

import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mms_manifolds import (
    SGD,
    GaussNewton,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    MMSDivergenceError,
    MMSResult,
    ResultFileError,
    TorchParametrization,
)
from mms_manifolds.grids import trapezoid_weights

from cases import mlp
from problems import regression_flow

HERE = Path(__file__).parent


def _flow_for(net: torch.nn.Module, count: int) -> MinimizingMovement:
    x = torch.linspace(-1.0, 1.0, count, dtype=torch.float64).unsqueeze(-1)
    metric = L2Metric(trapezoid_weights(count, -1.0, 1.0))
    return MinimizingMovement(TorchParametrization(net, x), L2Regression(torch.sin(3 * x), metric), metric, 0.3)


def _duplicated_units():
    net = mlp((1, 4, 1), seed=0)
    with torch.no_grad():
        net[0].weight[1], net[0].bias[1], net[2].weight[0, 1] = net[0].weight[0], net[0].bias[0], net[2].weight[0, 0]
    return _flow_for(net, 24)


def _dead_relu():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 6, dtype=torch.float64), torch.nn.ReLU(), torch.nn.Linear(6, 1, dtype=torch.float64)).double()
    with torch.no_grad():
        net[0].bias[:2] = -10.0  # two units never activate on [-1, 1]: their weights have zero Jacobian columns
    return _flow_for(net, 24)


def _wide_network():
    return _flow_for(mlp((1, 16, 1), seed=0), 8)  # p = 49 > Nm = 8


@pytest.mark.parametrize(
    "build", [_duplicated_units, _dead_relu, _wide_network], ids=["duplicated", "dead-relu", "p>Nm"]
)
def test_rank_deficient_jacobians_still_run_and_are_reported(build):
    flow = build()
    result = flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=3), diagnostics=True)
    assert np.all(np.isfinite(result.trajectory_error)) and result.certified
    assert np.all(result.trajectory_error <= result.tracking_bound * (1 + 1e-9) + 1e-13)
    assert np.all(result.jacobian_rank[1:] < flow.parametrization.num_parameters)
    assert result.metadata["rank_deficient_steps"] == [1, 2, 3]
    assert any("rank deficient" in note for note in result.metadata["notes"])
    assert not flow.manifold.diagnostics(result.thetas[-1]).full_column_rank


def test_failed_steps_are_retried_with_the_fallback_or_raise():
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    reckless = SGD(lr=30.0, max_iterations=5)  # raises the cost: COST_INCREASE, then lr 3.0, 0.3, ...
    result = flow.run(theta0, 3, reckless, on_failure="retry", max_retries=4)
    assert result.retries[1:].max() >= 1
    assert np.all(result.trajectory_error <= result.tracking_bound * (1 + 1e-9) + 1e-13)
    with pytest.raises(MMSDivergenceError, match=r"MMS step 1: .*iteration 5 .*cost exceeded.* 0 retries") as caught:
        flow.run(theta0, 3, reckless, on_failure="raise")
    assert caught.value.result.steps_done == 0
    with pytest.raises(ValueError, match="on_failure"):
        flow.run(theta0, 3, reckless, on_failure="ignore")


class _Payload:
    """Would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_cannot_execute_code(tmp_path):
    flow = regression_flow()
    path = flow.run(flow.parametrization.initial_point(), 1, GaussNewton(max_iterations=1)).save(tmp_path / "ok.npz")
    marker = tmp_path / "executed"
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["thetas"] = np.array([_Payload(marker)], dtype=object)
    with open(tmp_path / "evil.npz", "wb") as handle:
        np.savez(handle, **arrays)
    assert pickle.dumps(_Payload(marker))  # the payload is a real pickle bomb
    with pytest.raises(ResultFileError, match="not a valid MMS result"):
        MMSResult.load(tmp_path / "evil.npz")
    assert not marker.exists()


def test_a_crash_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    flow = regression_flow()
    result = flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=1))
    path = result.save(tmp_path / "checkpoint.npz")
    before = path.read_bytes()

    def crash(handle, **arrays):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        result.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.npz.lock", "checkpoint.npz"]  # no temporary
    monkeypatch.undo()
    assert MMSResult.load(path).steps_done == 2


def _run_target(checkpoint: Path, kill_at_solve: int | None) -> int:
    """Run ``interruptible_run.py``; with ``kill_at_solve`` it SIGKILLs itself as that inner solve starts."""
    environment = {**os.environ, "PYTHONPATH": str(HERE)}
    command = [sys.executable, str(HERE / "interruptible_run.py"), str(checkpoint)]
    if kill_at_solve is not None:
        command.append(str(kill_at_solve))
    return subprocess.run(command, env=environment).returncode


def test_runs_killed_at_random_steps_resume_to_identical_results(tmp_path):
    """SIGKILL at random inner solves (chosen by the test, not by the clock), resume each time from the checkpoint."""
    reference = tmp_path / "reference.npz"
    assert _run_target(reference, None) == 0
    interrupted = tmp_path / "interrupted.npz"
    generator, done = random.Random(7), [0]
    for _ in range(3):
        kill_at = generator.randint(2, 9)  # solves counted from this process's start
        assert _run_target(interrupted, kill_at) == -signal.SIGKILL
        done.append(MMSResult.load(interrupted).steps_done)
        assert done[-1] == done[-2] + kill_at - 1  # every finished step was checkpointed, nothing more
    assert _run_target(interrupted, None) == 0
    expected, actual = MMSResult.load(reference), MMSResult.load(interrupted)
    assert actual.steps_done == expected.steps_done == 30
    assert all(torch.equal(a, b) for a, b in zip(actual.thetas, expected.thetas))
    assert np.array_equal(actual.tracking_bound, expected.tracking_bound)


def test_same_seed_same_trajectory():
    first, second = regression_flow(seed=3), regression_flow(seed=3)
    a = first.run(first.parametrization.initial_point(), 3, GaussNewton(max_iterations=3))
    b = second.run(second.parametrization.initial_point(), 3, GaussNewton(max_iterations=3))
    assert all(torch.equal(x, y) for x, y in zip(a.thetas, b.thetas))
