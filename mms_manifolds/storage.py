r"""File mechanics for results and checkpoints: one writer per path, atomic replacement, a content checksum.

- :class:`WriterLock` — an exclusive ``flock`` on ``.NAME.lock`` beside the file, held by a run for its
  whole lifetime (and by a standalone save for the save). A second writer is refused with the holder's
  process id; a lock left by a killed process is released by the kernel, so it never blocks the next run.
- :func:`atomic_write` — write to a temporary file in the same folder, ``fsync``, rename into place,
  ``fsync`` the folder. An interrupted write leaves the previous file intact; temporary files a killed
  writer left behind are removed by the next write (under the lock, so they cannot be another writer's).
  A symbolic link at the path is written through: its target is replaced, the link stays.
- :func:`content_checksum` — SHA-256 over the names, dtypes, shapes and bytes of a set of arrays and
  over the canonical JSON of the header's other entries; a file edited by hand (an array or a setting)
  no longer matches the checksum in its header.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

try:  # POSIX; on other platforms runs are not protected against a second writer (docs/reliability.md)
    import fcntl
except ImportError:  # pragma: no cover - exercised only off POSIX
    fcntl = None

__all__ = ["CheckpointInUseError", "WriterLock", "content_checksum", "atomic_write", "resolve_path"]


class CheckpointInUseError(RuntimeError):
    """Another process (or another run in this one) is writing the same result or checkpoint path."""


def resolve_path(path: object, name: str = "path") -> Path:
    """``path`` as an absolute :class:`~pathlib.Path` with symbolic links resolved (so writes go to the target).

    Raises:
        TypeError: ``path`` is not a ``str`` or ``os.PathLike``.
        ValueError: it names a folder.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}")
    resolved = Path(os.path.realpath(os.fspath(path)))
    if resolved.is_dir():
        raise ValueError(f"{name} {path} is a folder, not a file")
    return resolved


class WriterLock:
    """An exclusive, non-blocking lock on ``.NAME.lock`` beside ``path``; a context manager.

    The lock file stays after release (removing it could let two writers lock two different files);
    it holds the last holder's process id, which the refusal message names.

    Raises:
        CheckpointInUseError: on entry, when another open lock on the same path is held.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.parent / f".{path.name}.lock"
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise CheckpointInUseError(
                f"{self.path} is being written by another run (process {holder}): wait for it to finish, or "
                "use another path; two writers would leave one file that is neither run's record"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exception: object) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.*.tmp`` beside ``path``: leftovers of a killed writer (the caller holds the lock)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], lock: WriterLock) -> Path:
    """Write ``path`` through ``write(handle)`` atomically; ``lock`` must be held on ``path``.

    Returns:
        The path written (the target of a symbolic link, which stays a link).
    """
    if lock.path != path or (fcntl is not None and not lock.held):
        raise RuntimeError(f"atomic_write({path}) needs the writer lock of that path held")
    _remove_stale_temporaries(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(folder)
    return path


def content_checksum(arrays: Mapping[str, np.ndarray], header: object) -> str:
    """SHA-256 hex digest of ``arrays`` (each name, dtype, shape and C-order bytes, in name order) and of ``header``.

    ``header`` is any JSON-serialisable object (its canonical JSON, sorted keys, is hashed): a file's
    metadata and stop reasons, so that neither an array nor a setting can be edited unseen.
    """
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, allow_nan=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
