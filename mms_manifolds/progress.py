"""Progress inside a long MMS step: one record per inner iteration, through :mod:`logging`.

Every inner solver reports each iteration to the logger ``mms_manifolds.progress`` at level ``INFO``
(:func:`report_inner_iteration`): the iteration, the cost, the tangential residual where it was measured,
the iterative linear-solve (CG) iterations it took, and the seconds since the solve began. Nothing is
formatted unless a handler listens. ``MinimizingMovement.run(progress=True)`` attaches a standard-error
handler for the run (:func:`progress_to_stderr`); any other handler (a file, a notebook) can be attached to
the logger by the usual ``logging`` calls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["LOGGER", "InnerProgress", "progress_to_stderr", "report_inner_iteration"]

LOGGER = logging.getLogger("mms_manifolds.progress")


@dataclass(frozen=True)
class InnerProgress:
    """One inner iteration, as reported.

    Attributes:
        solver: the solver's name.
        iteration: iterations done in this solve (``1`` after the first).
        cost: :math:`f(\\theta)` after it.
        residual: the tangential residual after it where the solver measured it, else ``nan``.
        linear_iterations: CG iterations the iteration's solves took (``0`` for direct solves).
        seconds: since the solve began.
        point: the iterate after it, shape ``(p,)`` (the solver's own tensor, not copied: read, never modify).
    """

    solver: str
    iteration: int
    cost: float
    residual: float
    linear_iterations: int
    seconds: float
    point: torch.Tensor

    def line(self) -> str:
        """The one-line text a handler prints."""
        residual = "not measured" if math.isnan(self.residual) else f"{self.residual:.3e}"
        return (
            f"  {self.solver} iteration {self.iteration}: cost = {self.cost:.9e}, residual = {residual}, "
            f"CG iterations = {self.linear_iterations}, {self.seconds:.2f} s"
        )


def reporting() -> bool:
    """Whether a handler listens at ``INFO`` (solvers skip building a record otherwise)."""
    return LOGGER.isEnabledFor(logging.INFO)


def report_inner_iteration(progress: InnerProgress) -> None:
    """Log ``progress`` at ``INFO`` on :data:`LOGGER` (the record's ``progress`` attribute holds it)."""
    if reporting():
        LOGGER.info(progress.line(), extra={"progress": progress})


@contextlib.contextmanager
def progress_to_stderr(enabled: bool) -> Iterator[None]:
    """While inside, print :data:`LOGGER`'s ``INFO`` records to standard error (nothing when ``enabled`` is false)."""
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = LOGGER.level
    LOGGER.addHandler(handler)
    if LOGGER.getEffectiveLevel() > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous_level)
