r"""What an inner solver carries from one MMS step's solve to the next, and its form in a checkpoint.

A solver that learns something during a solve which the next step's solve should start from (Gauss–Newton's
step length and damping, the subspace solver's draw counter) returns it as a frozen :class:`SolverState` in
``InnerResult.state``; the driver hands it to the next step's solve and writes :meth:`SolverState.as_metadata`
into the record's ``metadata["solver_state"]`` after every step. A resumed run reads it back once, through
:meth:`SolverState.from_metadata` of the solver's ``state_type``, so that it continues exactly as an
uninterrupted run (JSON keeps every float exactly: ``json`` writes the shortest representation that reads back
to the same double).

The checkpoint form is a JSON object mapping each field's name to a finite number or a list of finite numbers
(a vector: :class:`MomentumGaussNewtonState`'s last direction; :func:`metadata_problem`, also a rule of the result
files, :mod:`mms_manifolds.results`); each state class checks its own values in
``__post_init__`` (positive, whole), so an invalid state cannot be built, whether by hand or from a file.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TypeVar

__all__ = [
    "GaussNewtonState",
    "MomentumGaussNewtonState",
    "NoState",
    "SolverState",
    "SubspaceGaussNewtonState",
    "metadata_problem",
]

State = TypeVar("State", bound="SolverState")


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def metadata_problem(stored: object) -> str | None:
    """Why ``stored`` is not the checkpoint form of a solver state (a JSON object of finite numbers or lists of them), or ``None``."""
    if not isinstance(stored, dict) or not all(isinstance(key, str) for key in stored):
        return f"must be an object mapping names to numbers, got {type(stored).__name__}"
    for key, value in stored.items():
        if isinstance(value, (list, tuple)):
            if not all(_finite_number(entry) for entry in value):
                return f"entry {key!r} must be a list of finite numbers, one is not"
        elif not _finite_number(value):
            return f"entry {key!r} must be a finite number, got {value!r}"
    return None


def _check_positive(state: SolverState, name: str) -> None:
    value = getattr(state, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{type(state).__name__} {name} must be a finite positive number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SolverState:
    """A solver's warm-start state: a frozen record of numbers (the base class has none).

    Subclasses add fields (``float``, ``int``, or a vector as a ``tuple`` of floats) and check their values in ``__post_init__``, raising
    ``ValueError``; :meth:`as_metadata` and :meth:`from_metadata` then need nothing more.
    """

    def as_metadata(self) -> dict[str, float | int]:
        """The checkpoint form: ``{field name: value}``, a vector field as a list, JSON-ready (:meth:`from_metadata` reverses it)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_metadata(cls: type[State], stored: object) -> State:
        """The state whose checkpoint form is ``stored`` (:meth:`as_metadata`).

        Raises:
            ValueError: ``stored`` is not an object of finite numbers, has other keys than the fields, or holds
                values the state refuses; the message names the state class.
        """
        names = sorted(field.name for field in dataclasses.fields(cls))
        problem = metadata_problem(stored)
        if problem is None and sorted(stored) != names:
            problem = f"must have the keys {names}, got {sorted(stored)}"
        if problem is not None:
            raise ValueError(f"a {cls.__name__} in checkpoint form {problem}")
        return cls(**stored)


@dataclasses.dataclass(frozen=True)
class NoState(SolverState):
    """The state of a solver that carries nothing from step to step (gradient descent, the torch optimisers, the adapters)."""


@dataclasses.dataclass(frozen=True)
class GaussNewtonState(SolverState):
    r""":class:`~mms_manifolds.solvers.GaussNewton`'s warm start.

    Attributes:
        step_length: the last line-search length :math:`\eta_{\text{prev}}`; the next search starts at
            :math:`\min(\eta_{\max}, 2\eta_{\text{prev}})` (``max_step_length`` :math:`\eta_{\max}`, default 1;
            ``search_start="full"``: :math:`\eta_{\max}`), truncated after a shortened step (:math:`< \eta_{\max}`).
        relative_damping: Levenberg–Marquardt's :math:`\mu` relative to :math:`\operatorname{tr}(A)/p`.
    """

    step_length: float
    relative_damping: float

    def __post_init__(self) -> None:
        _check_positive(self, "step_length")
        _check_positive(self, "relative_damping")


@dataclasses.dataclass(frozen=True)
class SubspaceGaussNewtonState(GaussNewtonState):
    """:class:`~mms_manifolds.solvers.SubspaceGaussNewton`'s warm start: Gauss–Newton's and the draw counter.

    Attributes:
        next_draw: the number :math:`d \\ge 1` of the next random block (its generator is seeded from
            ``(seed, d)``), counted over the solver's solves.
    """

    next_draw: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.next_draw, bool) or not isinstance(self.next_draw, int) or self.next_draw < 1:
            raise ValueError(f"{type(self).__name__} next_draw must be a whole number >= 1, got {self.next_draw!r}")


@dataclasses.dataclass(frozen=True)
class MomentumGaussNewtonState(GaussNewtonState):
    r"""The warm start of :class:`~mms_manifolds.solvers.GaussNewton` with ``momentum > 0``: Gauss–Newton's and SPRING's last direction.

    Attributes:
        previous_direction: :math:`\phi_{k-1}` of :mod:`mms_manifolds.solvers.momentum` (its entries as Python
            floats, which keep every float64 and float32 value exactly), the direction of the solver's last
            line-search iteration over its solves, before the search's length; ``()`` before the first one and after
            an iteration of Levenberg–Marquardt (the next direction starts from :math:`\phi = 0`).
    """

    previous_direction: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.previous_direction, (tuple, list)) or not all(
            _finite_number(entry) for entry in self.previous_direction
        ):
            raise ValueError(f"{type(self).__name__} previous_direction must be a sequence of finite numbers")
        object.__setattr__(self, "previous_direction", tuple(float(entry) for entry in self.previous_direction))
