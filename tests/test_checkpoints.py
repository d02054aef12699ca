"""Checkpoints and result files against a hostile user: another problem, edited files, two writers, leftovers."""

import json
import math
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymanopt.optimizers import ConjugateGradient

from mms_manifolds import (
    CallableEnergy,
    GaussNewton,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    MMSResult,
    ResultFileError,
    TorchParametrization,
)
from mms_manifolds.adapters import GeooptSolver, PymanoptSolver
from mms_manifolds.grids import trapezoid_weights
from mms_manifolds.results import COLUMNS, FORMAT_VERSION
from mms_manifolds.storage import CheckpointInUseError, content_checksum

HERE = Path(__file__).parent
COUNT = 16


def _flow(
    nodes=None, target_shift=0.0, activation=torch.nn.Tanh, weights=None, tau=0.2, damping=1e-6, solve_mode="auto"
):
    x = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1) if nodes is None else nodes
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4, dtype=torch.float64), activation(), torch.nn.Linear(4, 1, dtype=torch.float64)).double()
    metric = L2Metric(trapezoid_weights(COUNT, -1.0, 1.0) if weights is None else weights)
    energy = L2Regression(x.abs() + target_shift, metric)
    return MinimizingMovement(TorchParametrization(net, x), energy, metric, tau, damping=damping, solve_mode=solve_mode)


def _run(flow, path, steps=2, solver=None, theta0=None):
    theta0 = flow.parametrization.initial_point() if theta0 is None else theta0
    return flow.run(theta0, steps, solver or GaussNewton(max_iterations=2), checkpoint=path)


VARIANTS = {
    "energy": lambda: (_flow(target_shift=1e-3), None),
    "parametrization": lambda: (_flow(nodes=torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1) * 0.99), None),
    "activation": lambda: (_flow(activation=torch.nn.Sigmoid), None),
    "metric": lambda: (_flow(weights=trapezoid_weights(COUNT, -1.0, 1.0) * 1.01), None),
    "tau": lambda: (_flow(tau=0.3), None),
    "damping": lambda: (_flow(damping=1e-5), None),
    "solve_mode": lambda: (_flow(solve_mode="woodbury"), None),
    "solver": lambda: (_flow(), GaussNewton(max_iterations=2, initial_damping=1e-2)),
}
EXPECTED_PART = {"activation": "parametrization"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_resume_refuses_another_problem_naming_what_differs(tmp_path, variant):
    path = tmp_path / "run.npz"
    _run(_flow(), path)
    flow, solver = VARIANTS[variant]()
    part = EXPECTED_PART.get(variant, variant)
    with pytest.raises(ValueError, match=rf"written for another problem: .*{part}.* differ"):
        _run(flow, path, steps=3, solver=solver)
    _run(_flow(), path, steps=3)  # the same problem resumes (and may ask for more steps)


def test_solver_settings_missing_from_old_reprs_are_part_of_the_fingerprint(tmp_path):
    flow = _flow()
    first = PymanoptSolver(ConjugateGradient, max_iterations=2, beta_rule="FletcherReeves", min_step_size=0.0)
    _run(flow, tmp_path / "pymanopt.npz", solver=first)
    other = PymanoptSolver(ConjugateGradient, max_iterations=2, beta_rule="PolakRibiere", min_step_size=0.0)
    with pytest.raises(ValueError, match="solver differ"):
        _run(flow, tmp_path / "pymanopt.npz", solver=other)
    _run(flow, tmp_path / "geoopt.npz", solver=GeooptSolver(geoopt.optim.RiemannianSGD, max_iterations=2, lr=0.1))
    tighter = GeooptSolver(geoopt.optim.RiemannianSGD, max_iterations=2, lr=0.1, tolerance=1e-3)
    with pytest.raises(ValueError, match="solver differ"):
        _run(flow, tmp_path / "geoopt.npz", solver=tighter)


def test_a_file_cannot_grant_certification_or_change_the_step_count(tmp_path):
    flow = _flow()
    uncertified = MinimizingMovement(
        flow.parametrization, CallableEnergy(flow.energy.value), flow.metric, flow.tau, damping=1e-6
    )
    path = tmp_path / "run.npz"
    result = _run(uncertified, path)
    assert not result.certified
    result.metadata["certified"] = True  # a forged file with a valid checksum
    result.save(path)
    assert not _run(uncertified, path, steps=3).certified
    five = _run(flow, tmp_path / "five.npz", steps=5)
    five.metadata["steps"] = 3
    five.save(tmp_path / "five.npz")
    with pytest.raises(ValueError, match="holds 5 steps, more than steps = 3"):
        _run(flow, tmp_path / "five.npz", steps=3)


def test_a_hand_edited_array_or_setting_fails_the_checksum(tmp_path):
    path = _run(_flow(), tmp_path / "run.npz").save(tmp_path / "copy.npz")
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["column_tracking_bound"] = np.zeros_like(arrays["column_tracking_bound"])  # "the bound was 0"
    _write(tmp_path / "edited.npz", arrays)
    with pytest.raises(ResultFileError, match="checksum does not match"):
        MMSResult.load(tmp_path / "edited.npz")
    header = json.loads(str(arrays["header"]))
    header["metadata"]["certified"] = not header["metadata"]["certified"]
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["header"] = np.array(json.dumps(header))
    _write(tmp_path / "edited_header.npz", arrays)
    with pytest.raises(ResultFileError, match="checksum does not match"):
        MMSResult.load(tmp_path / "edited_header.npz")


def test_wrong_kinds_of_path_and_dtype_are_refused(tmp_path):
    flow = _flow()
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        flow.run(flow.parametrization.initial_point(), 1, GaussNewton(max_iterations=1), checkpoint=123)
    path = _run(flow, tmp_path / "run.npz").save(tmp_path / "copy.npz")
    with pytest.raises(TypeError, match="floating torch dtype"):
        MMSResult.load(path, dtype=torch.int64)


# ----------------------------------------------------------------------------------- malformed files


def _write(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _valid_arrays(tmp_path) -> dict:
    path = _run(_flow(), tmp_path / "valid.npz")
    path = MMSResult.load(tmp_path / "valid.npz").save(tmp_path / "valid_copy.npz")
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _resealed(arrays: dict, header: object) -> dict:
    """``arrays`` with ``header``, its checksum recomputed where it can be, so the schema checks are reached."""
    arrays = {name: value for name, value in arrays.items() if name != "header"}
    if isinstance(header, dict) and isinstance(header.get("metadata"), dict):
        content = {"stop_reasons": header.get("stop_reasons"), "metadata": header["metadata"]}
        try:
            header = {**header, "checksum": content_checksum(arrays, content)}
        except (TypeError, ValueError):
            pass
    arrays["header"] = np.array(json.dumps(header))
    return arrays


MALFORMED = {
    "header is a list": lambda a, h: _resealed(a, [h]),
    "header is null": lambda a, h: _resealed(a, None),
    "stop_reasons missing": lambda a, h: _resealed(a, {k: v for k, v in h.items() if k != "stop_reasons"}),
    "stop_reasons an integer": lambda a, h: _resealed(a, {**h, "stop_reasons": 3}),
    "metadata a string": lambda a, h: _resealed(a, {**h, "metadata": "x"}),
    "format version 1": lambda a, h: _resealed(a, {**h, "format_version": 1}),
    "a column of strings": lambda a, h: _resealed({**a, "column_energy": a["column_energy"].astype(str)}, h),
    "a column with an extra dimension": lambda a, h: _resealed({**a, "column_energy": a["column_energy"][:, None]}, h),
    "a column one step short": lambda a, h: _resealed({**a, "column_energy": a["column_energy"][:-1]}, h),
    "thetas of integers": lambda a, h: _resealed({**a, "thetas": a["thetas"].astype(np.int64)}, h),
    "thetas with nan": lambda a, h: _resealed({**a, "thetas": a["thetas"] * np.nan}, h),
    "reference_states missing": lambda a, h: _resealed({k: v for k, v in a.items() if k != "reference_states"}, h),
    "an unknown array": lambda a, h: _resealed({**a, "payload": np.zeros(3)}, h),
    "a header of bytes": lambda a, h: {**a, "header": np.frombuffer(b"{}", dtype=np.uint8)},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_that_parse_raise_result_file_error(tmp_path, case):
    arrays = _valid_arrays(tmp_path)
    header = json.loads(str(arrays["header"]))
    _write(tmp_path / "bad.npz", MALFORMED[case](arrays, header))
    with pytest.raises(ResultFileError, match="not a valid MMS result"):
        MMSResult.load(tmp_path / "bad.npz")


def _patched_central_directory(data: bytes, offset: int, value: int) -> bytes:
    """Every central-directory entry's 2-byte field at ``offset`` set to ``value``."""
    data, start = bytearray(data), 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        data[start + offset : start + offset + 2] = struct.pack("<H", value)
        start += 4
    return bytes(data)


def test_plain_npy_encrypted_and_unsupported_compression_raise_result_file_error(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    data = _run(_flow(), tmp_path / "valid.npz").save(tmp_path / "valid_copy.npz").read_bytes()
    (tmp_path / "encrypted.npz").write_bytes(_patched_central_directory(data, 8, 0x1))  # general purpose flag bit 0
    (tmp_path / "method99.npz").write_bytes(_patched_central_directory(data, 10, 99))  # compression method 99
    for name, message in (("plain", "plain .npy"), ("encrypted", "encrypted"), ("method99", "compression")):
        with pytest.raises(ResultFileError, match=message):
            MMSResult.load(tmp_path / f"{name}.npz")


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_ARRAYS = st.one_of(
    st.builds(np.zeros, st.tuples(st.integers(0, 4)), st.sampled_from([np.float64, np.float32, np.int64, np.bool_])),
    st.builds(np.zeros, st.tuples(st.integers(0, 4), st.integers(0, 3)), st.sampled_from([np.float64, np.int64])),
    st.builds(lambda: np.array(["a", "b"])),
)
_FILE_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@_FILE_FUZZ
@given(
    key=st.sampled_from(["format_version", "stop_reasons", "metadata", "checksum", "extra"]),
    value=_JSON,
    array_name=st.sampled_from(["thetas", "reference_states", *(f"column_{name}" for name in COLUMNS)]),
    array=st.one_of(st.none(), _ARRAYS),
)
def test_fuzzed_headers_and_arrays_load_or_raise_result_file_error(tmp_path_factory, key, value, array_name, array):
    """Whatever a file holds, loading returns a consistent result or raises ResultFileError, nothing else."""
    folder = tmp_path_factory.mktemp("fuzz")
    arrays = FUZZ_BASE(folder)
    header = json.loads(str(arrays["header"]))
    header[key] = value
    if array is not None:
        arrays = {**arrays, array_name: array}
    _write(folder / "fuzzed.npz", _resealed(arrays, header))
    try:
        loaded = MMSResult.load(folder / "fuzzed.npz")
    except ResultFileError:
        return
    steps = len(loaded.thetas)
    assert all(len(values) == steps for values in loaded.columns.values()) and len(loaded.stop_reasons) == steps
    assert header["format_version"] == FORMAT_VERSION


_BASE: dict = {}


def FUZZ_BASE(folder: Path) -> dict:  # noqa: N802 - a cached fixture for hypothesis
    if "arrays" not in _BASE:
        _BASE["arrays"] = _valid_arrays(folder)
    return dict(_BASE["arrays"])


# ----------------------------------------------------------------------------------- writers


def _start_paused_run(checkpoint: Path, pause_at: int) -> subprocess.Popen:
    """A run of ``interruptible_run.py`` that pauses (holding the writer lock) as solve ``pause_at`` starts."""
    environment = {**os.environ, "PYTHONPATH": str(HERE)}
    command = [sys.executable, str(HERE / "interruptible_run.py"), str(checkpoint), str(pause_at), "pause"]
    process = subprocess.Popen(command, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "paused"
    return process


def test_a_second_writer_is_refused_and_a_killed_writers_lock_does_not_block(tmp_path):
    from interruptible_run import InterruptibleGaussNewton

    from problems import regression_flow

    checkpoint = tmp_path / "shared.npz"
    first = _start_paused_run(checkpoint, pause_at=3)  # two steps saved, lock held
    flow = regression_flow(widths=(1, 16, 16, 1), count=96)
    theta0 = flow.parametrization.initial_point()
    with pytest.raises(CheckpointInUseError, match=rf"being written by another run \(process {first.pid}\)"):
        flow.run(theta0, 30, GaussNewton(max_iterations=4), checkpoint=checkpoint)
    with pytest.raises(CheckpointInUseError):
        MMSResult.load(checkpoint).save(checkpoint)  # a standalone save takes the lock too
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".shared.npz.lock").exists()  # left behind by the killed process, but not held
    resumed = flow.run(theta0, 3, InterruptibleGaussNewton(None, "kill", max_iterations=4), checkpoint=checkpoint)
    assert resumed.steps_done == 3


def test_stale_temporaries_are_removed_and_symlinks_written_through(tmp_path):
    flow = _flow()
    leftover = tmp_path / ".run.npz.a1b2c3.tmp"
    leftover.write_bytes(b"\0" * 1_000_000)  # what a writer killed mid-save leaves
    _run(flow, tmp_path / "run.npz")
    assert not leftover.exists()
    target_folder = tmp_path / "data"
    target_folder.mkdir()
    (tmp_path / "link.npz").symlink_to(target_folder / "real.npz")
    _run(flow, tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink() and (target_folder / "real.npz").is_file()
    assert _run(flow, tmp_path / "link.npz", steps=3).steps_done == 3
    assert MMSResult.load(target_folder / "real.npz").steps_done == 3
    assert math.isfinite(MMSResult.load(tmp_path / "link.npz").tracking_bound[-1])


def test_sparse_data_is_fingerprinted_by_its_entries_without_a_dense_copy():
    from mms_manifolds.fingerprint import describe

    indices = torch.tensor([[0, 1, 999_999], [0, 1, 999_999]])
    values = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    huge = torch.sparse_coo_tensor(indices, values, (1_000_000, 1_000_000))  # 8 TB if densified
    assert describe(huge) == describe(torch.sparse_coo_tensor(indices, values.clone(), huge.shape))
    assert describe(huge) != describe(torch.sparse_coo_tensor(indices, values * 2, huge.shape))


def test_objects_without_attributes_digest_by_content_never_by_address():
    from mms_manifolds.fingerprint import describe

    class Slotted:
        __slots__ = ("value",)

        def __init__(self, value):
            self.value = value

    assert describe(torch.Generator().manual_seed(3)) == describe(torch.Generator().manual_seed(3))
    assert describe(torch.Generator().manual_seed(3)) != describe(torch.Generator().manual_seed(4))
    assert describe(Slotted(1)) == describe(Slotted(1)) and describe(Slotted(1)) != describe(Slotted(2))
    assert b"0x" not in describe(object())


def test_functions_with_nested_code_digest_by_their_code():
    from mms_manifolds.fingerprint import describe

    def make(scale):
        def energy(u):
            return sum(value * scale for value in [u])  # a comprehension: a nested code object

        return energy

    assert describe(make(2.0)) == describe(make(2.0)) and b" at 0x" not in describe(make(2.0))
    assert describe(make(2.0)) != describe(make(3.0))  # the captured value is part of it


def test_builtins_and_partials_digest_by_what_they_compute():
    import functools

    from mms_manifolds.fingerprint import describe

    assert describe(torch.sin) == describe(torch.sin) and describe(torch.sin) != describe(torch.cos)
    assert b" at 0x" not in describe(torch.sin)

    def scaled(u, scale):
        return u * scale

    assert describe(functools.partial(scaled, scale=2.0)) != describe(functools.partial(scaled, scale=3.0))
