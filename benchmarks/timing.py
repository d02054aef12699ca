r"""The benchmarks' clocks: wall and CPU seconds of a call, torch's thread count, and peak memory.

The project's rule for timings: measure with one torch thread and with torch's default thread count,
and say which (on a shared machine, torch's thread pool makes small problems wait for busy cores;
``docs/performance.md``, "Threads on a shared machine"). Every script of :mod:`benchmarks` takes its
times from here:

- :class:`Stopwatch` (``with Stopwatch(device) as clock: ...``): the wall seconds
  (:func:`time.perf_counter`) and the process's CPU seconds (:func:`time.process_time`, all threads
  together) of a block, synchronised on CUDA at both ends so that queued kernels are counted;
- :func:`time_call`: the median over ``repeats`` calls, after ``warmup`` untimed ones, of a call's
  wall and CPU seconds, with the torch thread count it ran under;
- :func:`one_and_default_threads`: :func:`time_call` with one thread and with torch's default count;
- :func:`torch_threads` (a context manager) and :func:`use_threads` (the ``--threads`` option of the
  scripts: ``0`` keeps torch's default) set the count, and return it so that results can name it;
- :func:`peak_rss_bytes`: the process's peak resident set size, and :func:`fresh_process`, which runs a
  measurement in a new interpreter so that the peak is its own;
- :func:`use_cpu_clocks`: a peer's script's own timers switched to CPU seconds;
- :func:`run_clock`: the clock of a run on a device (CPU seconds on a CPU, synchronised wall seconds on CUDA);
- :func:`conditions`: what a result was measured under (device, thread counts, machine, torch), for its record.

CPU over wall seconds near the thread count means the threads were busy; near one on several threads,
that they waited.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from . import ROOT

__all__ = [
    "Stopwatch",
    "Timing",
    "conditions",
    "default_thread_count",
    "fresh_process",
    "one_and_default_threads",
    "peak_rss_bytes",
    "synchronize",
    "time_call",
    "torch_threads",
    "use_cpu_clocks",
    "use_threads",
]

#: Torch's own thread count, read when this module is first imported (before any script changes it).
_DEFAULT_THREADS = torch.get_num_threads()


def default_thread_count() -> int:
    """Torch's default number of intra-op threads in this process (read at import, before any change)."""
    return _DEFAULT_THREADS


def synchronize(device: torch.device | str = "cpu") -> None:
    """Wait for the queued work of a CUDA ``device`` (nothing on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds of one timed call (or the median of several).

    Attributes:
        wall: wall-clock seconds.
        cpu: CPU seconds of the whole process (every thread) over the same interval.
        threads: torch's intra-op thread count during the call.
    """

    wall: float
    cpu: float
    threads: int

    def as_dict(self) -> dict[str, float]:
        """``{"wall": ..., "cpu": ..., "threads": ...}`` for a JSON record."""
        return asdict(self)


class Stopwatch:
    """Wall and CPU seconds of a ``with`` block; ``wall``, ``cpu`` and :meth:`timing` are read after it ends.

    On a CUDA ``device`` the block is synchronised before the clocks start and before they stop.
    :meth:`elapsed` reads the wall seconds so far inside the block (unsynchronised).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.wall = float("nan")
        self.cpu = float("nan")

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._wall_start, self._cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.wall = time.perf_counter() - self._wall_start
        self.cpu = time.process_time() - self._cpu_start

    def elapsed(self) -> float:
        """Wall seconds since the block began."""
        return time.perf_counter() - self._wall_start

    def timing(self) -> Timing:
        """The block's :class:`Timing`, with the thread count in use now."""
        return Timing(self.wall, self.cpu, torch.get_num_threads())


def time_call(
    function: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 1, warmup: int = 0
) -> Timing:
    """Median wall and median CPU seconds of ``function()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        function()
    walls, cpus = [], []
    for _ in range(repeats):
        with Stopwatch(device) as clock:
            function()
        walls.append(clock.wall)
        cpus.append(clock.cpu)
    middle = repeats // 2
    return Timing(sorted(walls)[middle], sorted(cpus)[middle], torch.get_num_threads())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run the block with ``count`` torch threads (``0``: torch's default), then restore the count before; yields the count in use."""
    before = torch.get_num_threads()
    torch.set_num_threads(count if count > 0 else _DEFAULT_THREADS)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def use_threads(count: int) -> int:
    """Set torch's thread count for the rest of the process (``0`` keeps torch's default); returns the count in use."""
    if count < 0:
        raise ValueError(f"the thread count must be >= 0 (0: torch's default), got {count}")
    if count > 0:
        torch.set_num_threads(count)
    return torch.get_num_threads()


def use_cpu_clocks(module: object) -> None:
    """Replace the wall clocks a module imported (its names ``time`` and ``perf_counter``, where it has them) by
    :func:`time.process_time`, so that the module's own timers count the process's CPU seconds.

    For a peer's training script run beside the library on a shared machine (:mod:`benchmarks.peer_clock`): its
    logged times then compare with the CPU seconds the library's runs record.
    """
    for name in ("time", "perf_counter"):
        if hasattr(module, name):
            setattr(module, name, time.process_time)


def one_and_default_threads(
    function: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 1, warmup: int = 0
) -> dict[str, Timing]:
    """:func:`time_call` with one torch thread and with torch's default count: ``{"one": ..., "default": ...}``."""
    timings = {}
    for name, count in (("one", 1), ("default", _DEFAULT_THREADS)):
        with torch_threads(count):
            timings[name] = time_call(function, device, repeats, warmup)
    return timings


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fresh_process(module: str, arguments: list[str], timeout: float | None = None) -> dict:
    """``python -m benchmarks.<module> *arguments`` in a new interpreter, from the repository's root: the JSON of its last output line.

    Raises:
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
        subprocess.CalledProcessError: it failed (its standard error is the exception's ``stderr``).
    """
    command = [sys.executable, "-m", f"benchmarks.{module}", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def conditions(device: torch.device | str = "cpu") -> dict[str, object]:
    """``device``, ``threads`` (torch's count now), ``default_threads``, ``machine`` and ``torch``: the conditions of a result."""
    return {
        "device": str(torch.device(device)),
        "threads": torch.get_num_threads(),
        "default_threads": _DEFAULT_THREADS,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def clock_name(device: torch.device | str = "cpu") -> str:
    """Which clock a run on ``device`` is timed with: ``"cpu"`` (the process's CPU seconds) on a CPU, else ``"wall"``
    (wall seconds, synchronised: CPU seconds would count only the launches of an accelerator's work)."""
    return "cpu" if torch.device(device).type == "cpu" else "wall"


def run_clock(device: torch.device | str = "cpu") -> Callable[[], float]:
    """The clock of :func:`clock_name` for ``device``: :func:`time.process_time` on a CPU; elsewhere wall seconds
    (:func:`time.perf_counter`) read after the device's queued work (:func:`synchronize`)."""
    device = torch.device(device)
    if clock_name(device) == "cpu":
        return time.process_time

    def synchronised_wall_seconds() -> float:
        synchronize(device)
        return time.perf_counter()

    return synchronised_wall_seconds
