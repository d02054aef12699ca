r"""The large-scale benchmarks on a GPU in one short session: shortened runs with ``--device cuda``, every result in one file.

    python -m benchmarks.device_session --out "$OUT"              # on the GPU machine (benchmarks/device_session.sh installs first)
    python -m benchmarks.device_session --out /tmp/plan --dry-run # the commands, limits and budget, nothing run
    python -m benchmarks.device_session --out "$OUT" --only poisson-5d teng-step-256

For a machine lent for minutes (``docs/performance.md``, "GPU": how to call it, what to carry). The runs, in this
order (:func:`plan`; the four benchmarks of the issue on Gauss–Newton at scale first), each its own process:

1. ``regression-step``: :mod:`benchmarks.scale` ``--only step`` (:math:`p = 20{,}601`, :math:`N = 4{,}900`):
   Gauss–Newton 6 iterations, Adam 300, L-BFGS 50, wall seconds to accuracy (limit 120 s);
2. ``poisson-2d``: :mod:`benchmarks.poisson_scale` (:math:`p = 9{,}873`, 900 + 120 nodes), ``ours_full``
   (Tikhonov steps, every search from length 1) and ``ours_tikhonov``, 50 iterations each (90 s);
3. ``teng-step-256`` and ``teng-step-1536``: :mod:`benchmarks.teng_side_by_side` ``step`` (TENG's heat step,
   :math:`p = 8{,}361`, :math:`N = 16{,}384`), subspace Gauss–Newton with blocks of 256 (12 iterations, the CPU
   record's settings) and 1536 (8), 60 s each; they need TENG's exported initial network (``--teng-parameters``),
   which is carried, never committed (``benchmarks/prepare_device_carry.sh``), and are skipped, saying so, without it;
4. ``poisson-5d``: :mod:`benchmarks.poisson_5d` (:math:`p = 10{,}065`, 3000 + 500 nodes drawn every iteration),
   up to 300 iterations, stopped at an L2 error of ``1e-5`` (120 s);
5. ``subspace``: :mod:`benchmarks.subspace` at its defaults (:math:`p = 5{,}301`, :math:`N = 1{,}600`);
6. ``regression-step-long``: :mod:`benchmarks.scale_cpu` ``--only gauss-newton subspace`` (12 and 40 iterations;
   120 s);
7. ``memory``: :mod:`benchmarks.scale` ``--only memory`` (one iteration at :math:`p = 99{,}901`,
   :math:`N = 10{,}000`, CG and layer-kernel modes, ``torch.cuda.max_memory_allocated``; 90 s).

The first four fit the default budget even if each takes its whole limit; the last three run in what they leave.

Each run has its own time limit, cut to what is left of ``--budget`` (seconds for the whole session; a run with
less than :data:`SHORTEST_RUN` seconds left is skipped). A run past its limit gets SIGINT first (the benchmarks
keep what they finished: ``poisson_5d`` writes its record on an interrupt, ``poisson_scale`` after every run),
then SIGKILL after :data:`GRACE_SECONDS`; a run's own child processes go with it. Before the runs, the
conditions (:func:`preflight`: torch, the GPU, the versions of the carried packages); with no CUDA device the
session stops there. ``--out`` receives two files, rewritten after every run so that a session cut short keeps
what it finished: ``device-session.json`` (the conditions, then per run its command, status, exit code, wall
seconds and the content of its result file) and ``device-session.log`` (every run's output). Nothing else is
written there: the device machine returns at most eight files. The runs' own files go to ``--work``, except those
of :mod:`benchmarks.scale` and :mod:`benchmarks.subspace`, which take no output path and write
``benchmarks/results/scale-cuda.json`` and ``subspace-cuda.json`` (the memory run rewrites the regression step's
``scale-cuda.json``, whose content the session has recorded by then).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import RESULTS, ROOT
from .timing import Stopwatch, conditions

__all__ = ["GRACE_SECONDS", "SHORTEST_RUN", "Run", "limits", "plan", "preflight", "run_command"]

SHORTEST_RUN = 20.0
"""Seconds: a run that would get less of the budget is skipped (a process with torch and CUDA takes ~10 s to start)."""
GRACE_SECONDS = 15.0
"""Seconds between a timed-out run's SIGINT and its SIGKILL."""
PACKAGES = ("mms_manifolds", "pymanopt", "geoopt", "autograd", "numpy", "scipy", "torch")
TENG_PARAMETERS = ROOT / ".gpu-carry" / "teng" / "teng_initial_parameters.npz"


@dataclass(frozen=True)
class Run:
    """One benchmark process of the session.

    Attributes:
        name: its key in the record.
        module: the benchmark, run as ``python -m benchmarks.<module>``.
        arguments: its command-line arguments.
        limit: its time limit in seconds (before the budget cuts it).
        result: the JSON file it writes, read into the record where it was written during the run.
        needs: files it cannot run without (it is skipped, naming them, where one is missing).
    """

    name: str
    module: str
    arguments: tuple[str, ...]
    limit: float
    result: Path
    needs: tuple[Path, ...] = field(default=())

    def command(self) -> list[str]:
        """``[python, "-m", "benchmarks.<module>", *arguments]``."""
        return [sys.executable, "-m", f"benchmarks.{self.module}", *self.arguments]


def plan(device: str, work: Path, teng_parameters: Path = TENG_PARAMETERS) -> list[Run]:
    """The session's runs in order (module docstring), on ``device``, their files under ``work``."""
    on = ("--device", device)
    kind = torch.device(device).type
    teng = work / "teng"
    teng_step = ("step", "--out", str(teng), *on, "--no-acceleration", "--residual-cg-iterations", "1", "--scheme", "euler")
    return [
        Run("regression-step", "scale", (*on, "--only", "step", "--gn-iterations", "6", "--adam-iterations", "300",
            "--lbfgs-iterations", "50"), 120, RESULTS / f"scale-{kind}.json"),
        Run("poisson-2d", "poisson_scale", (*on, "--iterations", "50", "--ours", "ours_full", "ours_tikhonov",
            "--output", str(work / f"poisson-scale-{kind}.json")), 90, work / f"poisson-scale-{kind}.json"),
        Run("teng-step-256", "teng_side_by_side", (*teng_step, "--block", "256", "--iterations", "12",
            "--name", f"step-{kind}-256"), 60, teng / f"step-{kind}-256.json", (teng_parameters,)),
        Run("teng-step-1536", "teng_side_by_side", (*teng_step, "--block", "1536", "--iterations", "8",
            "--name", f"step-{kind}-1536"), 60, teng / f"step-{kind}-1536.json", (teng_parameters,)),
        Run("poisson-5d", "poisson_5d", (*on, "--iterations", "300", "--target", "1e-5", "--log",
            str(work / f"poisson-5d-{kind}.jsonl"), "--output", str(work / f"poisson-5d-{kind}.json")), 120,
            work / f"poisson-5d-{kind}.json"),
        Run("subspace", "subspace", on, 90, RESULTS / f"subspace-{kind}.json"),
        Run("regression-step-long", "scale_cpu", (*on, "--only", "gauss-newton", "subspace", "--output",
            str(work / f"scale-{kind}-time.json")), 120, work / f"scale-{kind}-time.json"),
        Run("memory", "scale", (*on, "--only", "memory"), 90, RESULTS / f"scale-{kind}.json"),
    ]


def limits(runs: list[Run], budget: float, spent: float = 0.0) -> list[float | None]:
    """Each run's limit if every run before it took its whole limit: ``min(limit, budget left)``, ``None`` below :data:`SHORTEST_RUN`.

    The session applies the same rule with the time actually spent (:func:`run_session`); this is its plan.
    """
    planned = []
    for run in runs:
        left = budget - spent
        limit = min(run.limit, left) if left >= SHORTEST_RUN else None
        planned.append(limit)
        spent += limit or 0.0
    return planned


@contextlib.contextmanager
def _interruptible_children() -> Iterator[None]:
    """Children started inside take SIGINT's default action even where this process ignores it.

    A process started as a background job of a shell without job control (``python -m benchmarks.device_session &``)
    ignores SIGINT, its children inherit that through ``exec``, and a Python child then installs no
    ``KeyboardInterrupt`` handler: the limit's SIGINT would be lost and the run killed without writing what it
    finished. So while a child starts, SIGINT's action here is the default (a SIGINT in that instant would end the
    session as well); it is restored at once.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_command(command: list[str], limit: float, log: Path, environment: dict[str, str] | None = None) -> dict:
    """``command`` from the repository's root, its output appended to ``log``, stopped at ``limit`` seconds.

    Returns ``{"status", "exit_code", "wall_seconds"}``: status ``"ok"`` (exit 0), ``"failed"`` or ``"timed out"``
    (SIGINT to its process group at the limit, SIGKILL :data:`GRACE_SECONDS` later if it is still there).
    """
    with log.open("a") as handle, Stopwatch() as clock:
        handle.write(f"\n=== {' '.join(command)} (limit {limit:.0f} s)\n")
        handle.flush()
        with _interruptible_children():
            process = subprocess.Popen(
                command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=environment, start_new_session=True
            )
        try:
            code = process.wait(timeout=limit)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timed out"
            os.killpg(process.pid, signal.SIGINT)
            try:
                code = process.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
    return {"status": status, "exit_code": code, "wall_seconds": clock.wall}


def preflight(device: str) -> dict:
    """The session's conditions: :func:`benchmarks.timing.conditions`, CUDA's availability and GPU, the packages' versions and origin."""
    import mms_manifolds

    record = conditions(device)
    record["cuda_available"] = torch.cuda.is_available()
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(torch.device(device))
        record["gpu"] = {"name": properties.name, "memory_bytes": properties.total_memory, "cuda": torch.version.cuda}
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    record["packages"] = versions
    record["mms_manifolds_imported_from"] = str(Path(mms_manifolds.__file__).parent)
    record["python"] = sys.version.split()[0]
    return record


def _modified(path: Path) -> float | None:
    """``path``'s modification time, ``None`` where it does not exist."""
    return path.stat().st_mtime if path.exists() else None


def _read_result(path: Path, before: float | None) -> object:
    """The JSON of ``path`` where the run wrote it (its modification time is not ``before``, the one it had before the run), else ``None``."""
    if _modified(path) in (None, before):
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return {"unreadable": str(error)}


def run_session(runs: list[Run], budget: float, out: Path, work: Path, device: str, teng_parameters: Path) -> dict:
    """Every run in turn within ``budget`` seconds, the record rewritten to ``out`` after each (module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    record_path, log = out / "device-session.json", out / "device-session.log"
    log.write_text("")
    record: dict = {"budget_seconds": budget, "preflight": preflight(device), "runs": {}}
    record_path.write_text(json.dumps(record, indent=1, default=float))
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing run", flush=True)
        return record
    if teng_parameters.exists():
        (work / "teng").mkdir(exist_ok=True)
        shutil.copy(teng_parameters, work / "teng" / "teng_initial_parameters.npz")
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    spent = 0.0
    for run in runs:
        entry: dict = {"command": " ".join(["python", "-m", f"benchmarks.{run.module}", *run.arguments])}
        missing = [str(path) for path in run.needs if not path.exists()]
        left = budget - spent
        if missing:
            entry["status"] = f"skipped: missing {', '.join(missing)}"
        elif left < SHORTEST_RUN:
            entry["status"] = f"skipped: {left:.0f} s of the budget left"
        else:
            before = _modified(run.result)
            entry |= run_command(run.command(), min(run.limit, left), log, environment)
            entry["result"] = _read_result(run.result, before)
            spent += entry["wall_seconds"]
        record["runs"][run.name] = entry
        record["spent_seconds"] = spent
        record_path.write_text(json.dumps(record, indent=1, default=float))
        seconds = f", {entry['wall_seconds']:.1f} s" if "wall_seconds" in entry else ""
        print(f"{run.name}: {entry['status']}{seconds}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder of device-session.json and .log")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-device-session"), help="the runs' own files")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all runs together")
    parser.add_argument("--only", nargs="+", help="run only these (names in the module docstring), in plan order")
    parser.add_argument("--teng-parameters", type=Path, default=TENG_PARAMETERS, help="TENG's exported initial network")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its limits; run nothing")
    arguments = parser.parse_args()
    runs = plan(arguments.device, arguments.work, arguments.teng_parameters)
    if arguments.only:
        unknown = set(arguments.only) - {run.name for run in runs}
        if unknown:
            parser.error(f"no such run: {', '.join(sorted(unknown))} (the runs: {', '.join(run.name for run in runs)})")
        runs = [run for run in runs if run.name in arguments.only]
    if arguments.dry_run:
        for run, limit in zip(runs, limits(runs, arguments.budget)):
            shown = "only in what the runs before leave" if limit is None else f"{limit:.0f} s"
            print(f"{run.name} [{shown}]: python -m benchmarks.{run.module} {' '.join(run.arguments)}")
        return
    run_session(runs, arguments.budget, arguments.out, arguments.work, arguments.device, arguments.teng_parameters)


if __name__ == "__main__":
    main()
