"""Result files that lie or explode, non-regular files, lock links, glob names, journals; files the library writes.

The third round of attacks (docs/reliability.md): every file here is resealed with a valid checksum, so
only the record's own rules can refuse it; every file the library writes must read back.
"""

import json
import os
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

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
from mms_manifolds.grids import trapezoid_weights
from mms_manifolds.storage import WriterLock, atomic_write

COUNT = 16


def _flow(energy_kind: str = "prox", nodes=None) -> MinimizingMovement:
    x = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1) if nodes is None else nodes
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(4, 1, dtype=torch.float64)).double()
    metric = L2Metric(trapezoid_weights(COUNT, -1.0, 1.0))
    energy = L2Regression(x.abs(), metric)
    if energy_kind == "callable":
        energy = CallableEnergy(energy.value, convexity=1.0)
    return MinimizingMovement(TorchParametrization(net, x), energy, metric, 0.2, damping=1e-6)


def _arrays(path: Path) -> dict:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _write(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _resealed(arrays: dict, edit) -> dict:
    """``arrays`` after ``edit(arrays, header)`` with the checksum recomputed: only the record's rules can refuse it."""
    from mms_manifolds.storage import content_checksum

    arrays = dict(arrays)
    header = json.loads(str(arrays.pop("header")))
    edit(arrays, header)
    content = {"stop_reasons": header["stop_reasons"], "metadata": header["metadata"]}
    header["checksum"] = content_checksum(arrays, content)
    arrays["header"] = np.array(json.dumps(header))
    return arrays


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("valid")
    flow = _flow()
    result = flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=2))
    assert result.certified and np.isfinite(result.trajectory_error).all()
    return _arrays(result.save(folder / "valid.npz"))


def _set(name: str, index: int, value: float):
    def edit(arrays, header):
        column = arrays[f"column_{name}"].copy()
        column[index] = value
        arrays[f"column_{name}"] = column

    return edit


def _wider_thetas(arrays, header):
    thetas = arrays["thetas"]
    arrays["thetas"] = np.concatenate([thetas, np.zeros((len(thetas), 1))], axis=1)


def _error_above_bound(arrays, header):
    errors, bounds = arrays["column_trajectory_error"].copy(), arrays["column_tracking_bound"]
    errors[2] = bounds[2] * 1.5
    arrays["column_trajectory_error"] = errors


LIES = {
    "negative inner iterations": (_set("inner_iterations", 1, -3.0), "inner_iterations"),
    "fractional inner iterations": (_set("inner_iterations", 2, 1.5), "inner_iterations"),
    "nan retries": (_set("retries", 1, np.nan), "retries"),
    "negative unconverged solves": (_set("unconverged_solves", 1, -1.0), "unconverged_solves"),
    "negative wall time": (_set("wall_time", 1, -0.5), "wall_time"),
    "infinite wall time": (_set("wall_time", 1, np.inf), "wall_time"),
    "a negative jacobian rank": (_set("jacobian_rank", 1, -1.0), "jacobian_rank"),
    "a negative bound": (_set("tracking_bound", 1, -1e-3), "tracking_bound"),
    "thetas one column wider than the network": (_wider_thetas, "num_parameters"),
    "certified with e_k > B_k": (_error_above_bound, "e_k <= B_k"),
    "num_parameters a string": (lambda a, h: h["metadata"].update(num_parameters="13"), "num_parameters"),
    "certified a string": (lambda a, h: h["metadata"].update(certified="yes"), "certified"),
    "stop reason at step 0": (lambda a, h: h["stop_reasons"].__setitem__(0, "converged"), "stop_reasons"),
    "an unknown stop reason": (lambda a, h: h["stop_reasons"].__setitem__(1, "ok, trust me"), "stop_reasons"),
    "scheme_record a list": (lambda a, h: h["metadata"].update(scheme_record=[0.2, 0.2, 0.2]), "scheme_record"),
    "scheme_record with an unknown key": (lambda a, h: h["metadata"]["scheme_record"].update(order=2), "scheme_record"),
    "scheme_record with more steps than the record": (
        lambda a, h: h["metadata"]["scheme_record"]["time_steps"].append(0.2),
        "scheme_record",
    ),
    "a negative time step": (lambda a, h: h["metadata"]["scheme_record"]["time_steps"].__setitem__(0, -0.2), "scheme_record"),
    "scheme_record g_norm of 3 parts": (lambda a, h: h["metadata"]["scheme_record"].update(g_norm=[0.0] * 3), "g_norm"),
    "scheme_record g_norm strings": (lambda a, h: h["metadata"]["scheme_record"].update(g_norm=["0"] * 4), "g_norm"),
    "scheme_record next_step zero": (lambda a, h: h["metadata"]["scheme_record"].update(next_step=0.0), "next_step"),
    "scheme_record rejected_steps -1": (
        lambda a, h: h["metadata"]["scheme_record"].update(rejected_steps=-1),
        "rejected_steps",
    ),
    "scheme_record rejected_steps 1.5": (
        lambda a, h: h["metadata"]["scheme_record"].update(rejected_steps=1.5),
        "rejected_steps",
    ),
    "scheme_record g_form of 2 entries": (lambda a, h: h["metadata"]["scheme_record"].update(g_form=[1.0, 0.0]), "g_form"),
    "scheme_record ball of strings": (lambda a, h: h["metadata"]["scheme_record"].update(ball=["0"] * 7), "ball"),
    "solver_state a list": (lambda a, h: h["metadata"].update(solver_state=[0.5, 1e-3]), "solver_state"),
    "solver_state with a string": (
        lambda a, h: h["metadata"]["solver_state"].update(step_length="0.5"),
        "solver_state.*step_length",
    ),
    "solver_state with a nan": (
        lambda a, h: h["metadata"]["solver_state"].update(relative_damping=float("nan")),
        "solver_state.*relative_damping",
    ),
    "solver_state with a boolean": (lambda a, h: h["metadata"]["solver_state"].update(step_length=True), "solver_state"),
}


@pytest.mark.parametrize("case", sorted(LIES))
def test_a_resealed_file_that_breaks_the_records_rules_is_refused_naming_the_rule(tmp_path, valid, case):
    edit, rule = LIES[case]
    path = _write(tmp_path / "lie.npz", _resealed(valid, edit))
    with pytest.raises(ResultFileError, match=rf"not a valid MMS result: .*{rule}"):
        MMSResult.load(path)


@pytest.mark.parametrize(
    "stored, problem",
    [
        ({"step_length": 0.5}, "keys"),  # a field missing
        ({"step_length": 0.5, "relative_damping": 1e-3, "next_draw": 2}, "keys"),  # another solver's state
        ({"step_length": -0.5, "relative_damping": 1e-3}, "step_length must be a finite positive number"),
    ],
)
def test_a_resealed_solver_state_the_solver_refuses_stops_the_resume_naming_it(tmp_path, valid, stored, problem):
    """The file's rules take any object of finite numbers; which fields and values, the solver's state class says."""
    assert set(json.loads(str(valid["header"]))["metadata"]["solver_state"]) == {"step_length", "relative_damping"}
    path = _write(tmp_path / "state.npz", _resealed(valid, lambda a, h: h["metadata"].update(solver_state=stored)))
    MMSResult.load(path)  # a valid file
    flow = _flow()
    with pytest.raises(ValueError, match=rf"cannot be resumed: its solver_state: .*GaussNewtonState.*{problem}"):
        flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=2), checkpoint=path)


def test_an_uncertified_record_may_have_errors_above_its_bounds(tmp_path, valid):
    def uncertified(arrays, header):
        _error_above_bound(arrays, header)
        header["metadata"]["certified"] = False

    assert MMSResult.load(_write(tmp_path / "ok.npz", _resealed(valid, uncertified))).steps_done == 3


# ----------------------------------------------------------------------------------- memory bombs


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _members(valid: dict) -> dict[str, bytes]:
    return {f"{name}.npy": _npy_bytes(array) for name, array in valid.items()}


def _declaring(shape: tuple[int, ...], payload: bytes = b"\0" * 4096) -> bytes:
    """An .npy header declaring float64 ``shape`` followed by ``payload`` (far fewer bytes than declared)."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _peak_bytes_of_load(path: Path) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ResultFileError, match="not a valid MMS result"):
            MMSResult.load(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_declaring_a_trillion_floats_is_refused_before_reading(tmp_path, valid):
    members = {**_members(valid), "thetas.npy": _declaring((10**12,))}
    path = _zip(tmp_path / "bomb.npz", members)
    assert path.stat().st_size < 64_000
    assert _peak_bytes_of_load(path) < 8_000_000


def test_a_member_inflating_far_beyond_its_stored_size_is_refused_before_reading(tmp_path, valid):
    path = tmp_path / "zipbomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in _members(valid).items():
            if name != "column_energy.npy":
                archive.writestr(name, data)
        with archive.open("column_energy.npy", "w", force_zip64=True) as member:
            member.write(_declaring((2**23,), b""))  # 64 MiB of zeros, stored in about 64 kB
            zeros = bytes(2**20)
            for _ in range(64):
                member.write(zeros)
    assert path.stat().st_size < 1_000_000
    assert _peak_bytes_of_load(path) < 16_000_000


def test_duplicate_and_unexpected_member_names_are_refused(tmp_path, valid):
    members = _members(valid)
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("thetas.npy", _npy_bytes(valid["thetas"] * 2))
    with pytest.raises(ResultFileError, match="more than once"):
        MMSResult.load(path)
    for name in ("../thetas.npy", "thetas", "notes.txt"):
        odd = {**{k: v for k, v in members.items() if k != "thetas.npy"}, name: members["thetas.npy"]}
        with pytest.raises(ResultFileError, match="member"):
            MMSResult.load(_zip(tmp_path / "odd.npz", odd))


def test_object_arrays_and_declared_sizes_that_disagree_with_the_member_are_refused(tmp_path, valid):
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    members = {**_members(valid), "thetas.npy": buffer.getvalue() + b"\x80\x04N."}
    with pytest.raises(ResultFileError, match="dtype"):
        MMSResult.load(_zip(tmp_path / "object.npz", members))
    short = _npy_bytes(valid["column_energy"])[:-8]  # the header declares one float more than the member holds
    with pytest.raises(ResultFileError, match="declares"):
        MMSResult.load(_zip(tmp_path / "short.npz", {**_members(valid), "column_energy.npy": short}))


# ----------------------------------------------------------------------------------- paths that are not files


def test_a_named_pipe_at_the_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    outcome: list = []

    def load() -> None:
        try:
            MMSResult.load(fifo)
        except Exception as error:  # noqa: BLE001 - recorded and checked below
            outcome.append(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so that the test process can end
        with open(fifo, "wb"):
            pass
        worker.join(5)
        pytest.fail("MMSResult.load blocked on a named pipe")
    assert isinstance(outcome[0], ResultFileError) and "not a regular file" in str(outcome[0])
    flow = _flow()
    with pytest.raises(ResultFileError, match="not a regular file"):
        flow.run(flow.parametrization.initial_point(), 1, GaussNewton(max_iterations=1), checkpoint=fifo)


def test_a_symbolic_link_at_the_lock_path_never_truncates_its_target(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("years of work")
    (tmp_path / ".a.npz.lock").symlink_to(precious)
    flow = _flow()
    with pytest.raises(ValueError, match="lock file .* is not a regular file"):
        flow.run(flow.parametrization.initial_point(), 1, GaussNewton(max_iterations=1), checkpoint=tmp_path / "a.npz")
    assert precious.read_text() == "years of work"
    os.mkfifo(tmp_path / ".fifo.npz.lock")
    with pytest.raises(ValueError, match="lock file .* is not a regular file"):
        with WriterLock(tmp_path / "fifo.npz"):
            pass


@pytest.mark.parametrize(
    ("name", "other"),
    [("run[1].npz", "run1.npz"), ("run?.npz", "runA.npz"), ("a.npz", "a.npz.b.npz"), ("*.npz", "x.npz")],
)
def test_a_name_with_glob_characters_never_removes_another_writers_temporaries(tmp_path, name, other):
    others = tmp_path / f".{other}.k3j9x_2a.tmp"
    others.write_bytes(b"another writer's half-written checkpoint")
    mine = tmp_path / f".{name}.q8w7e6r5.tmp"
    mine.write_bytes(b"a leftover of this path")
    path = tmp_path / name
    with WriterLock(path) as lock:
        atomic_write(path, lambda handle: handle.write(b"data"), lock)
    assert others.exists() and not mine.exists() and path.read_bytes() == b"data"


def test_a_torn_journal_row_followed_by_a_resumed_comparison_keeps_the_journal_readable(tmp_path):
    from mms_manifolds.reproduce import runner

    journal = tmp_path / "runs.csv"
    first = runner.Row("regression", "adam", 3, 0.01, 0.5, 0.4, 1.25, 9, True, 1.5, True, "ok")
    second = runner.Row("regression", "sgd", 3, 0.02, 0.6, 0.5, 1.5, 9, True, 1.5, True, "ok")
    runner.append_csv(first, journal)
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[1][:25])  # a writer killed mid-row
    with pytest.warns(UserWarning, match="dropped a torn last line before appending"):
        runner.append_csv(second, journal)  # the resumed comparison journals its next run
    assert runner.read_csv(journal) == [first, second]
    assert journal.read_bytes().count(b"\n") == 3
