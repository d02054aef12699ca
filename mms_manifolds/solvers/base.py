"""The inner-solver protocol: ``solve(subproblem, theta0, tolerance=None) -> InnerResult``."""

from __future__ import annotations

import enum
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from .._checks import check_integer, check_positive_float, unchecked_values
from ..linalg import UnconvergedSolveCount
from ..subproblem import MMSSubproblem
from .state import NoState, SolverState

__all__ = ["InnerResult", "InnerSolver", "StopReason"]


class StopReason(enum.Enum):
    """Why an inner solve stopped; each member's value is the message shown to users."""

    CONVERGED = "the tangential residual reached the tolerance"
    MAX_ITERATIONS = "the iteration budget was used up"
    STALLED = "no decrease is possible at working precision (predicted decrease below rounding)"
    NO_PROGRESS = "no step decreased the cost (damping or line search exhausted); last good iterate kept"
    NON_FINITE = "a non-finite cost or gradient appeared; last good iterate kept"
    COST_INCREASE = "the final cost exceeded the initial one beyond tolerance; the initial point is kept"

    @property
    def failed(self) -> bool:
        """Whether the stop signals a failure rather than an ordinary end."""
        return self in (StopReason.NO_PROGRESS, StopReason.NON_FINITE, StopReason.COST_INCREASE)


@dataclass
class InnerResult:
    """Outcome of one inner solve.

    Attributes:
        point: final parameters, shape ``(p,)`` (the last good iterate).
        iterations: iterations taken (for Gauss–Newton: Jacobian evaluations; for the torch
            baselines: optimiser steps).
        cost_history: :math:`f` at the start and after each iteration.
        residual_history: tangential residuals :math:`\\|P_T r\\|_M` (see
            :meth:`MMSSubproblem.tangential_residual`), measured at ``residual_iterations``.
        residual_iterations: the iterations at which ``residual_history`` was measured.
        wall_time: seconds spent.
        stop_reason: why it stopped.
        failed_iteration: iteration at which a failure (non-finite value) occurred, else ``None``.
        extra: solver-specific records (for example ``rejected_point``).
        state: the solver's warm-start state after the solve, a frozen :class:`~mms_manifolds.solvers.state.SolverState`
            of the solver's ``state_type`` (:meth:`InnerSolver.initial_state`); the driver hands it to the next
            step's solve and writes its checkpoint form (``as_metadata()``) into the record.
        unconverged_solves: iterative linear solves (CG) of this solve that stopped at their iteration cap
            above their tolerance (:class:`~mms_manifolds.linalg.UnconvergedSolveWarning`).
    """

    point: torch.Tensor
    iterations: int
    cost_history: list[float]
    residual_history: list[float]
    residual_iterations: list[int]
    wall_time: float
    stop_reason: StopReason
    failed_iteration: int | None = None
    extra: dict = field(default_factory=dict)
    state: SolverState = field(default_factory=NoState)
    unconverged_solves: int = 0


class InnerSolver(ABC):
    """An inner solver for one MMS step.

    :meth:`solve` checks ``theta0`` at the door and runs the iteration inside
    :func:`~mms_manifolds._checks.unchecked_values` (the iterates are the solver's own: their finiteness is
    not re-checked at every geometric call, each check being a host synchronisation on a GPU; solvers watch
    their costs instead). It guards every solver the same way: a result whose final cost exceeds the initial one
    by more than ``COST_INCREASE_TOLERANCE`` (relative; at least 16 epsilon of the dtype, so that a float32
    cost one rounding unit higher is not an increase) is replaced by the initial point with stop
    reason ``COST_INCREASE``; the rejected point stays in ``extra["rejected_point"]``.

    A solver that carries a warm start from one MMS step's solve to the next names its frozen state class in
    ``state_type`` (a :class:`~mms_manifolds.solvers.state.SolverState` subclass), returns its cold start from
    :meth:`initial_state` and the state it ended with in ``InnerResult.state``; the driver checkpoints it
    (:meth:`state_from_metadata` reads it back on resume).

    Args:
        max_iterations: iteration cap (``>= 1``).
        tolerance: stop when the tangential residual is at or below it (``0`` disables).
    """

    name: str = "solver"
    state_type: type[SolverState] = NoState
    COST_INCREASE_TOLERANCE = 1e-10

    def __init__(self, max_iterations: int, tolerance: float = 0.0):
        self.max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
        self.tolerance = check_positive_float("tolerance", tolerance, allow_zero=True)

    def solve(
        self,
        subproblem: MMSSubproblem,
        theta0: torch.Tensor,
        tolerance: float | None = None,
        state: SolverState | None = None,
    ) -> InnerResult:
        """Minimise ``subproblem`` from ``theta0``.

        Args:
            subproblem: the MMS step.
            theta0: the starting point, shape ``(p,)``.
            tolerance: overrides the constructor's (the driver's budget).
            state: a warm-start state returned by an earlier solve (``InnerResult.state``); ``None`` for
                :meth:`initial_state`.
        """
        theta0 = subproblem.manifold.check_point(theta0, "theta0")
        target = self.tolerance if tolerance is None else check_positive_float("tolerance", tolerance, allow_zero=True)
        state = self.check_state(state)
        start = time.perf_counter()
        with unchecked_values():  # theta0 was just checked
            initial_cost = subproblem.cost(theta0)
        if not math.isfinite(initial_cost):
            return InnerResult(
                theta0, 0, [initial_cost], [], [], time.perf_counter() - start, StopReason.NON_FINITE, 0, state=state
            )
        with UnconvergedSolveCount(f"{type(self).__name__} solve") as unconverged, unchecked_values():
            result = self._solve(subproblem, theta0.detach().clone(), target, state)
        result.unconverged_solves = unconverged.count
        initial, final = result.cost_history[0], result.cost_history[-1]
        relative = max(self.COST_INCREASE_TOLERANCE, 16 * torch.finfo(theta0.dtype).eps)  # float32: a few ulps
        if not result.stop_reason.failed and final > initial + relative * max(1.0, abs(initial)):
            result.extra["rejected_point"] = result.point
            result.point, result.stop_reason = theta0.detach().clone(), StopReason.COST_INCREASE
            result.failed_iteration = result.iterations
        result.wall_time = time.perf_counter() - start
        return result

    def initial_state(self) -> SolverState:
        """The warm-start state of a cold start: ``state_type()`` (:class:`NoState` for solvers that carry nothing)."""
        return self.state_type()

    def check_state(self, state: object) -> SolverState:
        """``state`` if it is a state of this solver (its values were checked when it was built); ``None`` gives :meth:`initial_state`.

        Raises:
            TypeError: ``state`` is not a ``state_type`` (a dict, or another solver's state).
        """
        if state is None:
            return self.initial_state()
        if type(state) is not self.state_type:
            raise TypeError(
                f"{type(self).__name__} state must be a {self.state_type.__name__} (initial_state() or an earlier "
                f"InnerResult.state), got {type(state).__name__}"
            )
        return state

    def state_from_metadata(self, stored: object) -> SolverState | None:
        """The warm-start state a checkpoint holds (``metadata["solver_state"]``); ``None`` (a cold start) for ``None``.

        Raises:
            ValueError: ``stored`` is not the checkpoint form of a ``state_type`` (:meth:`SolverState.from_metadata`).
        """
        return None if stored is None else self.state_type.from_metadata(stored)

    def fallback(self) -> InnerSolver | None:
        """A more cautious copy of this solver for the driver to retry a failed step with, or ``None``.

        The default has none; Gauss–Newton raises its initial damping, the learning-rate solvers
        divide the rate by 10.
        """
        return None

    @abstractmethod
    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: SolverState
    ) -> InnerResult:
        """The iteration itself, from the checked warm-start ``state``; ``wall_time`` is filled in by :meth:`solve`."""

    def __repr__(self) -> str:
        """Every public setting, sorted: the driver compares it when resuming from a checkpoint."""
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(vars(self).items()) if not key.startswith("_"))
        return f"{type(self).__name__}({settings})"
