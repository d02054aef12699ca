r"""File mechanics for results and checkpoints: one writer per path, atomic replacement, a content checksum.

- :class:`WriterLock` — an exclusive ``flock`` on ``.NAME.lock`` beside the file, held by a run for its
  whole lifetime (and by a standalone save for the save). A second writer is refused with the holder's
  process id; a symbolic link or named pipe at the lock path is refused, never followed; a lock left by a
  killed process is released by the kernel, so it never blocks the next run.
- :func:`atomic_write` — write to a temporary file in the same folder, ``fsync``, rename into place,
  ``fsync`` the folder. An interrupted write leaves the previous file intact; temporary files a killed
  writer left behind are removed by the next write (under the lock, so they cannot be another writer's; their
  names are matched literally, never as a glob pattern built from the path).
  A symbolic link at the path is written through: its target is replaced, the link stays.
- :func:`content_checksum` — SHA-256 over the names, dtypes, shapes and bytes of a set of arrays and
  over the canonical JSON of the header's other entries; a file edited by hand (an array or a setting)
  no longer matches the checksum in its header.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
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
        descriptor = self._open_lock_file()
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

    def _open_lock_file(self) -> int:
        """The lock file's descriptor; a symbolic link, named pipe or other non-regular file there is refused.

        ``O_NOFOLLOW`` keeps a link planted at the lock path from making the lock truncate its target;
        ``O_NONBLOCK`` keeps a named pipe from blocking the open; the open file's ``fstat`` decides.
        """
        refusal = (
            f"the lock file {self.lock_path} is not a regular file (%s): remove it; the lock truncates and writes "
            "its file, which must not be another one's"
        )
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            descriptor = os.open(self.lock_path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            if os.path.islink(self.lock_path):
                raise ValueError(refusal % "a symbolic link") from error
            raise
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise ValueError(refusal % "a named pipe, device or socket")
        return descriptor

    def __exit__(self, *exception: object) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None


def _temporary_name(path: Path) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives its temporaries for ``path``: ``.NAME.XXXX.tmp``, ``XXXX`` without dots.

    ``NAME`` is matched literally (never as a glob: ``run[1].npz`` must not match ``.run1.npz....tmp``), and
    the random part has no dots, so ``a.npz`` does not match the temporaries of ``a.npz.b.npz``.
    """
    return re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]+" + re.escape(".tmp"))


def _remove_stale_temporaries(path: Path) -> None:
    """Delete this path's temporaries beside it: leftovers of a killed writer (the caller holds the lock)."""
    pattern = _temporary_name(path)
    with os.scandir(path.parent) as entries:
        leftovers = [entry.path for entry in entries if pattern.fullmatch(entry.name)]
    for leftover in leftovers:
        Path(leftover).unlink(missing_ok=True)


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
