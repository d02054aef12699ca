"""The solvers' warm-start states: frozen, checked when built, and their checkpoint form reads back exactly."""

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mms_manifolds import MMSResult, StepRecord
from mms_manifolds.solvers import (
    Adam,
    GaussNewton,
    GaussNewtonState,
    NoState,
    RiemannianGradientDescent,
    SubspaceGaussNewton,
    SubspaceGaussNewtonState,
)
from mms_manifolds.solvers.state import metadata_problem

positive = st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(length=positive, damping=positive, draw=st.integers(min_value=1, max_value=2**62))
def test_the_checkpoint_form_reads_back_bit_for_bit_through_json(length, damping, draw):
    for state in (
        GaussNewtonState(step_length=length, relative_damping=damping),
        SubspaceGaussNewtonState(step_length=length, relative_damping=damping, next_draw=draw),
    ):
        stored = json.loads(json.dumps(state.as_metadata()))
        assert metadata_problem(stored) is None
        back = type(state).from_metadata(stored)
        assert back == state and type(back) is type(state)
        assert all(type(getattr(back, name)) is type(getattr(state, name)) for name in stored)


def test_the_checkpoint_form_survives_a_result_file(tmp_path):
    state = SubspaceGaussNewtonState(step_length=0.1 + 0.2, relative_damping=1 / 3, next_draw=7)
    result = MMSResult(metadata={"solver_state": state.as_metadata()})
    result.append(torch.zeros(3, dtype=torch.float64), "", None, StepRecord.at_start(1.0, math.nan, (math.nan,) * 4))
    loaded = MMSResult.load(result.save(tmp_path / "state.npz"))
    assert SubspaceGaussNewton(block_size=2).state_from_metadata(loaded.metadata["solver_state"]) == state


@pytest.mark.parametrize(
    "solver, kind",
    [
        (GaussNewton(initial_damping=1e-2), GaussNewtonState(0.5, 1e-2)),
        (SubspaceGaussNewton(block_size=3, initial_damping=1e-2), SubspaceGaussNewtonState(0.5, 1e-2, 1)),
        (RiemannianGradientDescent(max_iterations=2), NoState()),
        (Adam(max_iterations=2), NoState()),
    ],
)
def test_each_solver_names_its_state_and_starts_cold_from_it(solver, kind):
    assert solver.initial_state() == kind and type(solver.initial_state()) is solver.state_type
    assert solver.check_state(None) == kind
    assert solver.state_from_metadata(None) is None  # no state stored: each solver's own cold start, a fallback's too
    assert solver.state_from_metadata(kind.as_metadata()) == kind


def test_states_are_frozen():
    state = GaussNewtonState(step_length=0.5, relative_damping=1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.step_length = 1.0


@pytest.mark.parametrize(
    "stored, problem",
    [
        ([0.5, 1e-3], "must be an object mapping names to numbers, got list"),
        ({"step_length": "0.5", "relative_damping": 1e-3}, "entry 'step_length' must be a finite number"),
        ({"step_length": float("inf"), "relative_damping": 1e-3}, "entry 'step_length' must be a finite number"),
        ({"step_length": 0.5, "relative_damping": None}, "entry 'relative_damping' must be a finite number"),
        ({"step_length": 0.5}, r"must have the keys \['relative_damping', 'step_length'\]"),
        ({"step_length": 0.5, "relative_damping": 0.0}, "relative_damping must be a finite positive number"),
    ],
)
def test_a_malformed_checkpoint_form_is_refused_naming_the_state_and_the_entry(stored, problem):
    with pytest.raises(ValueError, match=rf"GaussNewtonState.*{problem}"):
        GaussNewtonState.from_metadata(stored)
