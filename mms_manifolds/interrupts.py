"""Ctrl-C during an MMS run: one line that says what the checkpoint holds and how to resume, and a resume that says so.

:func:`report_interruption` wraps :meth:`~mms_manifolds.MinimizingMovement.run`. A ``KeyboardInterrupt`` raised
anywhere inside the run (an inner solve, a progress line, a save: every save is atomic, so the file holds
the last finished step) is replaced, once the run has released its checkpoint, by a new
``KeyboardInterrupt`` raised from the wrapper itself (no library frames below it, no chained traceback)
whose message is the line::

    MMS run interrupted during step 11 of 30: checkpoint /abs/run.npz holds 10 steps; resume with the same
    call, flow.run(theta0, 30, solver, checkpoint='/abs/run.npz')

and whose attributes ``checkpoint`` (absolute path or ``None``), ``steps_saved`` and ``steps`` say the same
to a program. The line is also logged (logger ``mms_manifolds``, level INFO, so that it is not printed twice). It stays a plain
``KeyboardInterrupt``, not a subclass, so that a script that does not catch it still exits the way
Ctrl-C exits (signal SIGINT, status 130 in a shell: Python does so only for ``KeyboardInterrupt`` itself);
the command line prints the line alone and exits with status 130.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["announce_resume", "interruption_message", "report_interruption"]

logger = logging.getLogger("mms_manifolds")

Run = TypeVar("Run", bound=Callable)


def _steps_saved(checkpoint: Path) -> int | None:
    """The steps the checkpoint file holds (its writes are atomic), or ``None`` when there is no readable one."""
    from .results import MMSResult, ResultFileError

    try:
        return MMSResult.load(checkpoint).steps_done
    except (FileNotFoundError, ResultFileError):
        return None


def interruption_message(checkpoint: Path | None, steps: int) -> tuple[str, int]:
    """The line for a run of ``steps`` steps interrupted with ``checkpoint`` (read back now), and the steps it holds."""
    if checkpoint is None:
        return (
            f"MMS run of {steps} steps interrupted: no checkpoint was given, so nothing was kept; run with "
            "checkpoint=PATH to be able to resume (flow.run(theta0, steps, solver, checkpoint='run.npz'))",
            0,
        )
    saved = _steps_saved(checkpoint)
    call = f"flow.run(theta0, {steps}, solver, checkpoint={str(checkpoint)!r})"
    if saved is None:
        return f"MMS run interrupted before its first checkpoint was written ({checkpoint}); start again: {call}", 0
    if saved >= steps:
        return f"MMS run interrupted after its last step: checkpoint {checkpoint} holds all {saved} steps", saved
    return (
        f"MMS run interrupted during step {saved + 1} of {steps}: checkpoint {checkpoint} holds {saved} steps; "
        f"resume with the same call, {call}",
        saved,
    )


def report_interruption(run: Run) -> Run:
    """Wrap ``MinimizingMovement.run``: a ``KeyboardInterrupt`` inside is raised again with its line (module docstring)."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            if hasattr(interrupt, "steps_saved"):  # already reported by a run inside this one
                raise
        # reported here, outside the except block, so that the new exception carries no chained traceback
        bound = signature.bind_partial(*args, **kwargs).arguments
        checkpoint = bound.get("checkpoint")
        from .storage import resolve_path

        path = None if checkpoint is None else resolve_path(checkpoint, "checkpoint").absolute()
        message, saved = interruption_message(path, int(bound.get("steps", 0)))
        logger.info(message)
        interrupt = KeyboardInterrupt(message)
        interrupt.checkpoint, interrupt.steps_saved, interrupt.steps = path, saved, int(bound.get("steps", 0))
        raise interrupt from None

    return wrapper  # type: ignore[return-value]


def announce_resume(checkpoint: Path, steps_done: int, steps: int) -> None:
    """Say on standard error (and in the log, level INFO) that a run resumed from step ``steps_done`` of its checkpoint."""
    message = f"MMS run resumed from step {steps_done} of {steps} (checkpoint {checkpoint})"
    logger.info(message)
    print(message, file=sys.stderr)
