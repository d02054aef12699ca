r"""The record of an MMS run: per-step numbers, parameters, and their safe storage on disk.

Files are ``.npz`` archives of plain numeric arrays plus one JSON header, read with
``allow_pickle=False``: loading a result can never execute code. Every file is validated before any
value is used (schema, types, shapes, lengths consistent with the step count, and a SHA-256 checksum
of the arrays in the header), so a malformed or hand-edited file raises :class:`ResultFileError`.
Writes are atomic and take the path's writer lock (:mod:`mms_manifolds.storage`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .schemes import BDF2, TimeScheme
from .storage import WriterLock, atomic_write, content_checksum, resolve_path

__all__ = ["COLUMNS", "FORMAT_VERSION", "MMSResult", "ResultFileError", "StepRecord", "estimate_floors"]

FORMAT_VERSION = 2
"""Version 2 added the checksum, the run's fingerprint and the ``bound_rounding`` and ``unconverged_solves`` columns."""


@dataclass(frozen=True)
class StepRecord:
    r"""The numbers one MMS step adds to the record: one field per column of :class:`MMSResult`.

    Attributes:
        energy: :math:`E(u_k)`.
        inner_iterations: the inner solver's iterations (Gauss–Newton: Jacobian evaluations).
        retries: failed inner solves retried with the solver's fallback.
        wall_time: seconds for the step, bookkeeping included.
        initial_residual: the tangential residual of :math:`F_k` at the start of the step.
        residual_total, residual_tangential, residual_normal: :math:`\rho_k` and its :math:`M`-orthogonal split.
        tracking_bound: :math:`B_k` (``nan`` if uncertified).
        bound_inexactness, bound_approximation, bound_rounding: :math:`B_k`'s propagated parts.
        trajectory_error: :math:`e_k = \|u_k - v_k\|_M` (``nan`` without a reference).
        step_tolerance: the budget's tolerance :math:`\mu\eta` (``nan`` without a budget).
        jacobian_rank, jacobian_sigma_min: with ``diagnostics=True``, of :math:`M^{1/2}J(\theta_k)`.
        unconverged_solves: CG solves of the step that stopped at their cap above tolerance.
    """

    energy: float
    inner_iterations: int
    retries: int
    wall_time: float
    initial_residual: float
    residual_total: float
    residual_tangential: float
    residual_normal: float
    tracking_bound: float
    bound_inexactness: float
    bound_approximation: float
    bound_rounding: float
    trajectory_error: float
    step_tolerance: float
    jacobian_rank: float
    jacobian_sigma_min: float
    unconverged_solves: int

    @classmethod
    def at_start(cls, energy: float, trajectory_error: float, bound: tuple[float, float, float, float]) -> StepRecord:
        """The record of step 0: no solve, no residual; ``bound`` is :math:`(B_0, 0, 0, 0)` or four ``nan``."""
        nan = math.nan
        return cls(energy, 0, 0, 0.0, nan, nan, nan, nan, *bound, trajectory_error, nan, nan, nan, unconverged_solves=0)


COLUMNS = tuple(column.name for column in fields(StepRecord))
"""Per-step columns of :class:`MMSResult` (the fields of :class:`StepRecord`); index 0 is the initial state."""


class ResultFileError(ValueError):
    """A result or checkpoint file is missing pieces, truncated, corrupted or of another format."""


def _same(a: object, b: object) -> bool:
    """Equality of result contents with NaN equal to NaN: numbers, strings, lists, dicts, tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a.isnan(), b.isnan()))
            and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
        )
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return a == b


_READ_ERRORS = (
    OSError,
    KeyError,
    ValueError,
    RuntimeError,  # zipfile: "File ... is encrypted, password required"
    NotImplementedError,  # zipfile: "That compression method is not supported"
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    json.JSONDecodeError,
)


_COUNT_COLUMNS = ("inner_iterations", "retries", "unconverged_solves")
"""Columns that count things: finite non-negative integers in every row."""

_NORM_COLUMNS = (
    "initial_residual",
    "residual_total",
    "residual_tangential",
    "residual_normal",
    "tracking_bound",
    "bound_inexactness",
    "bound_approximation",
    "bound_rounding",
    "trajectory_error",
    "step_tolerance",
    "jacobian_sigma_min",
)
"""Columns of norms, bounds and tolerances: non-negative wherever they are not ``nan`` (not computed)."""

_MEMBERS = {f"column_{name}.npy" for name in COLUMNS} | {"thetas.npy", "reference_states.npy", "header.npy"}
"""The archive members a result file may hold."""


def _open_regular_file(path: Path, fail) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file; a named pipe, device or socket is refused without blocking.

    ``O_NONBLOCK`` makes opening a named pipe return at once (a plain open waits for a writer forever);
    the open file's own ``fstat`` then decides, so the check and the read concern the same file.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a device, socket or other special file"
        raise fail(f"not a regular file ({kind}); a result is an .npz file")
    return os.fdopen(descriptor, "rb")


def _check_members(handle: io.BufferedReader, fail) -> None:
    r"""Refuse an archive whose members could make reading it cost more memory than the file holds.

    Before any array is read: only the expected member names, each once; no encrypted or compressed
    member (this library stores members uncompressed, so a member's size in memory is its size on disk:
    a deflated member could inflate a thousandfold); every ``.npy`` header read on its own (no data),
    a numeric dtype, and a declared size :math:`\prod(\text{shape})\cdot\text{itemsize}` equal to the
    bytes the member holds after its header.
    """
    with zipfile.ZipFile(handle) as archive:
        members = archive.infolist()
        names = [member.filename for member in members]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise fail(f"archive members {twice} appear more than once (which one would be read?)")
        unknown = sorted(set(names) - _MEMBERS)
        if unknown:
            raise fail(f"unexpected archive members {unknown}: a result holds only its columns, thetas, "
                       "reference_states and header")
        for member in members:
            if member.flag_bits & 0x1:
                raise fail(f"archive member {member.filename} is encrypted")
            if member.compress_type != zipfile.ZIP_STORED:
                raise fail(
                    f"archive member {member.filename} uses compression method {member.compress_type}: this "
                    "library stores members uncompressed, and a compressed one could inflate far beyond the file"
                )
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise fail(f"archive member {member.filename} has .npy format version {version}")
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(stream)
                if dtype.hasobject:
                    raise fail(f"archive member {member.filename} has dtype {dtype}: results hold numbers only")
                declared = math.prod(shape) * dtype.itemsize
                held = member.file_size - stream.tell()
            if declared != held:
                raise fail(
                    f"archive member {member.filename} declares shape {shape} of {dtype} ({declared} bytes) but "
                    f"holds {held} bytes"
                )


def _read_validated(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and header of ``path``, after checking every rule of the format; else :class:`ResultFileError`."""

    def fail(problem: str) -> ResultFileError:
        return ResultFileError(f"{path} is not a valid MMS result: {problem}")

    try:
        with _open_regular_file(path, fail) as handle:
            magic = handle.read(6)
            if magic == b"\x93NUMPY":
                raise fail("a plain .npy array, not an .npz archive")
            if magic[:4] != b"PK\x03\x04":
                raise fail("not an .npz archive (no zip signature)")
            handle.seek(0)
            _check_members(handle, fail)
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except ResultFileError:
        raise
    except _READ_ERRORS as error:
        raise fail(f"unreadable, truncated or corrupted (or not an archive): {error}") from error
    if "header" not in arrays:
        raise fail("no header")
    raw = arrays.pop("header")
    if raw.shape != () or raw.dtype.kind != "U":
        raise fail(f"the header must be one JSON string, got an array of {raw.dtype} and shape {raw.shape}")
    try:
        header = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise fail(f"the header is not JSON: {error}") from error
    _validate_content(arrays, header, fail)
    return arrays, header


def _validate_content(arrays: dict[str, np.ndarray], header: object, fail) -> None:
    """Every rule of the format for the arrays (header excluded) and the parsed header; ``fail(problem)`` is raised."""
    if not isinstance(header, dict):
        raise fail(f"the header must be a JSON object, got {type(header).__name__}")
    if header.get("format_version") != FORMAT_VERSION:
        raise fail(f"format version {header.get('format_version')!r}, this library reads {FORMAT_VERSION}")
    for key, kind in (("stop_reasons", list), ("metadata", dict), ("checksum", str)):
        if not isinstance(header.get(key), kind):
            raise fail(f"header key {key!r} must be a {kind.__name__}, got {type(header.get(key)).__name__}")
    if not all(isinstance(reason, str) for reason in header["stop_reasons"]):
        raise fail("header key 'stop_reasons' must hold strings")
    expected = {f"column_{name}" for name in COLUMNS} | {"thetas"}
    missing, unknown = expected - set(arrays), set(arrays) - expected - {"reference_states"}
    if missing or unknown:
        raise fail(f"missing arrays {sorted(missing)}, unknown arrays {sorted(unknown)}")
    content = {"stop_reasons": header["stop_reasons"], "metadata": header["metadata"]}
    if content_checksum(arrays, content) != header["checksum"]:
        raise fail("the checksum does not match its arrays and settings: edited by hand or corrupted")
    steps = len(header["stop_reasons"])
    for name in COLUMNS:
        column = arrays[f"column_{name}"]
        if column.dtype != np.float64 or column.shape != (steps,):
            raise fail(f"column {name!r} must be float64 of shape ({steps},), got {column.dtype} {column.shape}")
    thetas = arrays["thetas"]
    if thetas.dtype.kind != "f" or thetas.ndim != 2 or thetas.shape[0] != steps or thetas.shape[1] < 1:
        raise fail(f"thetas must be a float array of shape ({steps}, p), got {thetas.dtype} {thetas.shape}")
    if not np.all(np.isfinite(thetas)):
        raise fail("thetas hold non-finite values")
    references = arrays.get("reference_states")
    if references is not None and (references.dtype.kind != "f" or references.ndim != 3 or len(references) != steps):
        raise fail(
            f"reference_states must be floats of shape ({steps}, N, m), got {references.dtype} {references.shape}"
        )
    measured = np.isfinite(arrays["column_trajectory_error"])
    if references is None and measured.any():
        raise fail("trajectory errors are recorded but the reference_states they were measured against are missing")
    if references is not None and not measured.all():
        raise fail("reference_states are stored but some trajectory errors are not")
    _check_record_rules(arrays, header, fail)


def _check_record_rules(arrays: dict[str, np.ndarray], header: dict, fail) -> None:
    r"""What every record of a run satisfies, so that a file resealed by hand cannot state the impossible.

    Counts are finite non-negative integers; wall times finite and non-negative; norms, bounds and
    tolerances non-negative where computed; the Jacobian rank ``nan`` or a non-negative integer; step 0
    has no stop reason and every later one is an inner solver's; ``certified`` a boolean and
    ``num_parameters`` the width of ``thetas``; the solver's warm-start state, where stored, an object of finite
    numbers (:func:`~mms_manifolds.solvers.state.metadata_problem`; which fields, the solver checks on resume); and where the record is certified, :math:`e_k \le B_k`
    wherever both are computed (the bound is the point of the record).
    """
    from .solvers.base import StopReason  # the solvers import the subproblem, which needs this module's users
    from .solvers.state import metadata_problem

    column = lambda name: arrays[f"column_{name}"]  # noqa: E731
    for name in _COUNT_COLUMNS:
        values = column(name)
        if not (np.isfinite(values).all() and (values >= 0).all() and (values == np.floor(values)).all()):
            raise fail(f"column {name!r} must hold non-negative integers (counts), got {values.tolist()}")
    if not (np.isfinite(column("wall_time")).all() and (column("wall_time") >= 0).all()):
        raise fail(f"column 'wall_time' must hold finite non-negative seconds, got {column('wall_time').tolist()}")
    for name in _NORM_COLUMNS + ("jacobian_rank",):
        values = column(name)
        if (values[~np.isnan(values)] < 0).any():
            raise fail(f"column {name!r} must be non-negative where computed, got {values.tolist()}")
    rank = column("jacobian_rank")
    finite_rank = rank[~np.isnan(rank)]
    if not (np.isfinite(finite_rank).all() and (finite_rank == np.floor(finite_rank)).all()):
        raise fail(f"column 'jacobian_rank' must hold integers or nan, got {rank.tolist()}")
    reasons, known = header["stop_reasons"], {reason.name.lower() for reason in StopReason}
    if reasons and reasons[0] != "" or any(reason not in known for reason in reasons[1:]):
        raise fail(f"stop_reasons must be '' at step 0 and one of {sorted(known)} after, got {reasons}")
    metadata = header["metadata"]
    if "certified" in metadata and not isinstance(metadata["certified"], bool):
        raise fail(f"metadata 'certified' must be true or false, got {metadata['certified']!r}")
    if "num_parameters" in metadata:
        width = metadata["num_parameters"]
        if isinstance(width, bool) or not isinstance(width, int) or width != arrays["thetas"].shape[1]:
            raise fail(f"thetas have {arrays['thetas'].shape[1]} columns, metadata 'num_parameters' is {width!r}")
    if "solver_state" in metadata and (problem := metadata_problem(metadata["solver_state"])) is not None:
        raise fail(f"metadata 'solver_state' {problem}")
    if "scheme_record" in metadata:
        _check_scheme_record(metadata["scheme_record"], max(len(reasons) - 1, 0), fail)
    if metadata.get("certified"):
        errors, bounds = column("trajectory_error"), column("tracking_bound")
        both = np.isfinite(errors) & np.isfinite(bounds)
        above = np.flatnonzero(both & (errors > bounds))
        if above.size:
            step = int(above[0])
            raise fail(
                f"the record is certified but e_k <= B_k fails at step {step} (e = {errors[step]!r}, "
                f"B = {bounds[step]!r})"
            )


def _check_scheme_record(stored: object, steps_done: int, fail) -> None:
    """The time scheme's record (:class:`~mms_manifolds.time_stepping.SchemeRecord`) of a run with ``steps_done`` steps.

    An object with the record's fields only; ``time_steps`` (positive, finite), ``local_error_estimate`` and
    ``flow_bound`` (numbers or ``null``) lists of equal length, at most one entry per step (a checkpoint written
    before schemes existed has fewer, which a resumed implicit Euler run fills in); ``g_norm`` ``null`` or the four
    bound parts, ``next_step`` ``null`` or positive and finite, ``rejected_steps`` a whole number ``>= 0``,
    ``anchor_bound`` ``null`` or a number ``>= 0``, ``g_form`` (variable-step BDF2's G-matrix) ``null`` or three
    numbers, ``ball`` (its resolvent ball) ``null`` or seven numbers.
    """
    from .time_stepping import SchemeRecord  # the time stepping imports the subproblem, which needs this module's users

    names = {item.name for item in fields(SchemeRecord)}
    if not isinstance(stored, dict) or not set(stored) <= names:
        keys = sorted(stored) if isinstance(stored, dict) else type(stored).__name__
        raise fail(f"metadata 'scheme_record' must be an object with keys among {sorted(names)}, got {keys}")
    lists = [stored.get(name, []) for name in ("time_steps", "local_error_estimate", "flow_bound")]
    number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    if not all(isinstance(entries, list) for entries in lists) or len({len(entries) for entries in lists}) != 1:
        raise fail("metadata 'scheme_record' must hold lists time_steps, local_error_estimate, flow_bound of one length")
    if len(lists[0]) > steps_done:
        raise fail(f"metadata 'scheme_record' holds {len(lists[0])} time steps for a record of {steps_done} steps")
    if not all(number(tau) and math.isfinite(tau) and tau > 0 for tau in lists[0]):
        raise fail(f"metadata 'scheme_record' time steps must be finite and positive, got {lists[0]}")
    if not all(value is None or number(value) for entries in lists[1:] for value in entries):
        raise fail("metadata 'scheme_record' estimates and flow bounds must be numbers or null")
    g_norm, next_step, rejected = stored.get("g_norm"), stored.get("next_step"), stored.get("rejected_steps", 0)
    if g_norm is not None and not (isinstance(g_norm, list) and len(g_norm) == 4 and all(map(number, g_norm))):
        raise fail(f"metadata 'scheme_record' g_norm must be null or a list of 4 numbers, got {g_norm!r}")
    if next_step is not None and not (number(next_step) and math.isfinite(next_step) and next_step > 0):
        raise fail(f"metadata 'scheme_record' next_step must be null or finite and positive, got {next_step!r}")
    if not (isinstance(rejected, int) and not isinstance(rejected, bool) and rejected >= 0):
        raise fail(f"metadata 'scheme_record' rejected_steps must be a whole number >= 0, got {rejected!r}")
    anchor = stored.get("anchor_bound")
    if anchor is not None and not (number(anchor) and anchor >= 0):
        raise fail(f"metadata 'scheme_record' anchor_bound must be null or a number >= 0, got {anchor!r}")
    for name, length in (("g_form", 3), ("ball", 7)):
        entries = stored.get(name)
        if entries is not None and not (isinstance(entries, list) and len(entries) == length and all(map(number, entries))):
            raise fail(f"metadata 'scheme_record' {name} must be null or a list of {length} numbers, got {entries!r}")


def _check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` that holds data; a wrong kind is a ``TypeError``, ``meta`` or a bad name ``ValueError``."""
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"device must be a torch.device, a name like 'cpu' or 'cuda:0', or an index; got {device!r}")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from error
    if device.type == "meta":
        raise ValueError("device 'meta' holds no values: the loaded parameters would be empty shells")
    return device


@dataclass(eq=False)
class MMSResult:
    r"""Per-step record of a minimizing-movement run; every column has length ``steps + 1``.

    Columns (numpy arrays through attributes of the same name): ``energy`` :math:`E(u_k)`,
    ``inner_iterations``, ``retries`` (failed inner solves
    retried with the solver's fallback), ``wall_time`` (seconds per step), ``initial_residual`` (the tangential
    residual of :math:`F_k` at the start of the step), ``residual_total`` :math:`\rho_k = \|r\|_M`,
    ``residual_tangential`` (inner inexactness), ``residual_normal`` (approximation error),
    ``tracking_bound`` :math:`B_k`, its parts ``bound_inexactness``, ``bound_approximation``
    (propagated tangential and normal residuals) and ``bound_rounding`` (the floating-point allowance),
    ``trajectory_error`` :math:`e_k = \|u_k - v_k\|_M` (``nan`` without a reference), ``step_tolerance``
    (the budget's tolerance, ``nan`` without one), ``jacobian_rank`` and ``jacobian_sigma_min`` (with
    ``diagnostics=True``), ``unconverged_solves`` (iterative solves of the step that stopped at their cap).
    Bounds are ``nan`` when the energy's convexity is unknown (``certified`` is then ``False``).

    Attributes:
        columns: the columns above, as lists.
        thetas: parameters after each step, ``steps + 1`` tensors of shape ``(p,)``.
        stop_reasons: the inner solver's stop reason per step (``""`` at index 0).
        reference_states: exact MMS iterates :math:`v_k`, shape ``(N, m)`` each, when computed.
        metadata: ``tau``, ``convexity``, ``lipschitz``, ``strong_convexity``, ``certified``, ``solver``,
            ``steps``, ``damping``, ``solve_mode``, ``budget``, ``notes``, ...
    """

    columns: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in COLUMNS})
    thetas: list[torch.Tensor] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)
    reference_states: list[torch.Tensor] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        if name in COLUMNS:
            return np.asarray(self.__dict__["columns"][name], dtype=float)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        """Same numbers, parameters, stop reasons, reference states and metadata, with NaN equal to NaN; wall time excluded.

        ``nan`` marks what was not computed (bounds without a convexity modulus, errors without a
        reference), so a result read back from its file equals the one that was saved. Tensors compare by
        value (dtype and device of the same values do not matter: :meth:`load` chooses them). The
        ``wall_time`` column is left out: it is a measurement of the machine, not of the flow, so a resumed
        run equals the uninterrupted one whenever every computed number is bit-identical. Compare timings
        with :meth:`same_timing`.
        """
        if not isinstance(other, MMSResult):
            return NotImplemented
        tensors = lambda values: [value.detach().cpu().double() for value in values]  # noqa: E731
        numbers = lambda result: {name: v for name, v in result.columns.items() if name != "wall_time"}  # noqa: E731
        return (
            _same(numbers(self), numbers(other))
            and _same(tensors(self.thetas), tensors(other.thetas))
            and self.stop_reasons == other.stop_reasons
            and _same(tensors(self.reference_states), tensors(other.reference_states))
            and _same(self.metadata, other.metadata)
        )

    def same_timing(self, other: MMSResult) -> bool:
        """Whether the ``wall_time`` columns are equal too (``==`` leaves them out): true for a result and its file."""
        if not isinstance(other, MMSResult):
            raise TypeError(f"same_timing compares two MMSResults, got {type(other).__name__}")
        return _same(self.columns["wall_time"], other.columns["wall_time"])

    @property
    def steps_done(self) -> int:
        """Number of completed MMS steps (``len(thetas) - 1``)."""
        return len(self.thetas) - 1

    @property
    def certified(self) -> bool:
        """Whether the tracking bound rests on a known convexity modulus."""
        return bool(self.metadata.get("certified", False))

    def append(self, theta: torch.Tensor, stop_reason: str, reference: torch.Tensor | None, record: StepRecord) -> None:
        """Add one step: its parameters, the inner solver's stop reason, the exact state :math:`v_k` (if any) and its numbers."""
        for name in COLUMNS:
            self.columns[name].append(float(getattr(record, name)))
        self.thetas.append(theta.detach().clone())
        self.stop_reasons.append(stop_reason)
        if reference is not None:
            self.reference_states.append(reference.detach().clone())

    # ------------------------------------------------------------------------------- storage

    def arrays(self) -> dict[str, np.ndarray]:
        """The record as the named arrays of its file (columns, ``thetas``, ``reference_states``), before the header."""
        arrays = {f"column_{name}": np.asarray(values, dtype=np.float64) for name, values in self.columns.items()}
        arrays["thetas"] = torch.stack(self.thetas).detach().cpu().numpy() if self.thetas else np.zeros((0, 0))
        if self.reference_states:
            arrays["reference_states"] = torch.stack(self.reference_states).detach().cpu().numpy()
        return arrays

    def save(self, path: str | os.PathLike, *, lock: WriterLock | None = None) -> Path:
        """Write the result atomically to ``path`` (``.npz``, a symbolic link is written through); returns the path.

        Args:
            path: the file.
            lock: the path's :class:`~mms_manifolds.storage.WriterLock` when the caller holds it (the MMS
                driver holds it for a whole run); otherwise it is taken for the save.

        Raises:
            TypeError: ``path`` is not a path.
            ResultFileError: the record breaks a rule of the format (what :meth:`load` checks); nothing is written.
            mms_manifolds.storage.CheckpointInUseError: another run is writing ``path``.
        """
        path = resolve_path(path)
        arrays = self.arrays()
        content = {"stop_reasons": self.stop_reasons, "metadata": self.metadata}
        header = {"format_version": FORMAT_VERSION, **content, "checksum": content_checksum(arrays, content)}
        refuse = lambda problem: ResultFileError(f"refusing to write {path}, it would break a rule: {problem}")  # noqa: E731
        _validate_content(arrays, header, refuse)  # never write a file that load would refuse
        arrays["header"] = np.array(json.dumps(header))
        if lock is not None:
            return atomic_write(path, lambda handle: np.savez(handle, **arrays), lock)
        with WriterLock(path) as own:
            return atomic_write(path, lambda handle: np.savez(handle, **arrays), own)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
    ) -> MMSResult:
        """Read a result written by :meth:`save`, validating the whole file before using any value.

        Args:
            path: the file.
            dtype: floating dtype of the returned parameters and reference states. Default float64.
            device: their device. Default CPU.

        Raises:
            FileNotFoundError: no file at ``path``.
            TypeError: ``dtype`` is not a floating dtype (parameters would be truncated), or ``path`` no path.
            ResultFileError: the file is truncated, corrupted, edited (checksum), not an MMS result, of another
                format version, or breaks the schema (a header that is not an object, missing or mistyped
                keys, columns that are not 1-D float arrays of the step count, ...); the message says which.
        """
        path = resolve_path(path)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype}: parameters would be truncated")
        device = _check_device(device)
        if not path.exists():
            raise FileNotFoundError(f"no result file at {path}")
        arrays, header = _read_validated(path)
        convert = lambda array: torch.as_tensor(array, dtype=dtype, device=device)  # noqa: E731
        references = arrays.get("reference_states")
        return cls(
            columns={name: arrays[f"column_{name}"].tolist() for name in COLUMNS},
            thetas=[convert(theta) for theta in arrays["thetas"]],
            stop_reasons=list(header["stop_reasons"]),
            reference_states=[] if references is None else [convert(state) for state in references],
            metadata=header["metadata"],
        )

    # --------------------------------------------------------------------------- presentation

    def table(self, every: int = 1) -> str:
        """A plain-text table of the per-step numbers (every ``every``-th step and the last)."""
        header = f"{'step':>4} {'energy':>11} {'inner':>5} {'time[s]':>8} {'rho_tan':>9} {'rho_nor':>9} {'B_k':>9} {'e_k':>9}  stop"
        lines = [header, "-" * len(header)]
        for step in range(len(self.thetas)):
            if step % every and step != len(self.thetas) - 1:
                continue
            lines.append(
                f"{step:>4} {self.columns['energy'][step]:>11.4e} {int(self.columns['inner_iterations'][step]):>5} "
                f"{self.columns['wall_time'][step]:>8.3f} {self.columns['residual_tangential'][step]:>9.2e} "
                f"{self.columns['residual_normal'][step]:>9.2e} {self.columns['tracking_bound'][step]:>9.2e} "
                f"{self.columns['trajectory_error'][step]:>9.2e}  {self.stop_reasons[step]}"
            )
        if self.certified:
            lines.append(
                f"bounds certified: B_k >= ||u_k - v_k||_M from the convexity modulus "
                f"lambda = {self.metadata.get('convexity')} and the residuals"
            )
        else:
            lines.append(
                "bounds uncertified: " + "; ".join(self.metadata.get("notes") or ["convexity modulus unknown"])
            )
        return "\n".join(lines)

    def rows(self) -> list[dict[str, float | int | str]]:
        """One dict per step (index 0 is the initial state): ``step``, every column, and ``stop_reason``."""
        return [
            {
                "step": step,
                **{name: self.columns[name][step] for name in COLUMNS},
                "stop_reason": self.stop_reasons[step],
            }
            for step in range(len(self.stop_reasons))
        ]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the per-step table as CSV (header ``step``, the columns, ``stop_reason``); returns the path.

        Numbers are written with ``repr`` (they read back bit for bit), ``nan`` as ``nan``. No pandas
        needed; ``pandas.read_csv(path)`` reads it.
        """
        path = resolve_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", *COLUMNS, "stop_reason"])
            writer.writeheader()
            writer.writerows(self.rows())
        return path

    def to_dataframe(self):
        """The per-step table as a ``pandas.DataFrame`` indexed by ``step``.

        Raises:
            ImportError: pandas is not installed (it is optional: ``pip install pandas``; :meth:`to_csv` needs none).
        """
        try:
            import pandas
        except ImportError as error:
            raise ImportError(
                "MMSResult.to_dataframe needs pandas, which mms_manifolds does not require: pip install pandas "
                "(or write the table with MMSResult.to_csv, which needs nothing)"
            ) from error
        return pandas.DataFrame(self.rows()).set_index("step")

    def figure(self, title: str | None = None):
        """A ``matplotlib.figure.Figure`` of trajectory error, tracking bound and residuals against the step.

        Built from :class:`matplotlib.figure.Figure` directly, without pyplot: the user's backend and
        pyplot's figure list are left alone (show it with ``display(fig)`` in a notebook, or save it).

        Raises:
            ImportError: matplotlib is missing (install the ``plot`` extra).
        """
        try:
            import matplotlib.figure
            import matplotlib.ticker
        except ImportError as error:
            raise ImportError("MMSResult.plot needs matplotlib: pip install 'mms_manifolds[plot]'") from error
        figure = matplotlib.figure.Figure(figsize=(6, 4))
        axis = figure.subplots()
        steps = np.arange(len(self.thetas))
        for name, style in (
            ("trajectory_error", "o-"),
            ("tracking_bound", "--"),
            ("residual_tangential", ":"),
            ("residual_normal", "-."),
        ):
            values = getattr(self, name)
            if np.isfinite(values[1:]).any():
                axis.semilogy(steps[1:], np.abs(values[1:]) + 1e-300, style, label=name.replace("_", " "))
        axis.set_xlabel("MMS step k")
        axis.set_ylabel("M-norm (error, bound, residuals)")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are whole numbers
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize=8)
        certified = "certified bound" if self.certified else "bound uncertified"
        axis.set_title(title or f"{self.metadata.get('solver', '')} ({certified})", fontsize=9)
        figure.tight_layout()
        return figure

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Save :meth:`figure` to ``path`` (any format matplotlib writes, by suffix); returns the path.

        The user's matplotlib backend is not changed (no ``matplotlib.use``, no pyplot).

        Raises:
            ImportError: matplotlib is missing (install the ``plot`` extra).
        """
        figure = self.figure(title)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        return path


def estimate_floors(result: MMSResult, scheme: TimeScheme) -> list[float | None]:
    r"""Per step, the bound :math:`\pi_k` of :meth:`~mms_manifolds.schemes.TimeScheme.estimate_floor` for a run's estimates.

    The defects are the step residuals' share: :math:`d_j = \tau_j'\rho_j/(1 + \tau_j'\lambda) \ge
    \|u_j - \operatorname{prox}_{\tau_j'E}(\tilde u_j)\|_M` (:math:`\rho_j` = ``residual_total``, the step problem
    :math:`(1/\tau_j' + \lambda)`-strongly convex); BDF2's Richardson start is no single proximal step, and its defect
    is its tracking bound :math:`B_1` (against the exact start from :math:`u_0 = v_0`), ``nan`` where the run was not
    certified. The first ``estimate_history`` steps' estimates scale step ``estimate_history + 1``'s
    (:meth:`~mms_manifolds.schemes.TimeScheme.start_estimates`), and so do their floors. ``None`` where the run has no
    estimate; ``nan`` where a defect or :math:`\lambda` is unknown.
    Rounding is not counted.
    """
    from .time_stepping import SchemeRecord  # the time stepping imports the subproblem, which needs this module's users

    record = SchemeRecord.from_metadata(result.metadata.get("scheme_record"))
    convexity = result.metadata.get("convexity")
    convexity = math.nan if convexity is None else float(convexity)
    residuals, bounds = result.columns["residual_total"], result.columns["tracking_bound"]
    steps, defects = list(record.time_steps), []
    for j, tau in enumerate(steps, start=1):
        if j == 1 and isinstance(scheme, BDF2) and scheme.start == "richardson":
            defects.append(float(bounds[1]) if float(bounds[0]) == 0 else math.nan)
            continue
        effective = scheme.anchor_weights(steps[max(0, j - 2) : j])[1] if j > 1 else tau
        defects.append(effective * float(residuals[j]) / (1 + effective * convexity))
    needed = scheme.estimate_history
    floors = [
        None if estimate is None or k < needed - 1 else scheme.estimate_floor(steps[k + 1 - needed : k + 1], defects[k + 1 - needed : k + 1], convexity)
        for k, estimate in enumerate(record.local_error_estimate)
    ]
    if len(floors) > needed and floors[needed] is not None:  # the start's estimates scale step m + 1's (start_estimates)
        started = scheme.start_estimates(steps[: needed + 1], floors[needed])
        floors[:needed] = [None if e is None else f for e, f in zip(record.local_error_estimate, started)]
    return floors
