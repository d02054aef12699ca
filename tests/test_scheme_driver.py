"""The driver with time schemes: implicit Euler bit for bit, BDF2's bound against exact BDF2 iterates, resumes, adaptive steps, the continuous-flow bound."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mms_manifolds import GaussNewton, L2Metric, MinimizingMovement, MMSResult
from mms_manifolds import mms as mms_module
from mms_manifolds.reproduce.experiments import build
from mms_manifolds.schemes import BDF2, ImplicitEuler
from mms_manifolds.time_stepping import SchemeRecord, SchemeStepper


def _flow(experiment, scheme):
    flow = experiment.flow
    return MinimizingMovement(flow.parametrization, flow.energy, flow.metric, flow.tau, scheme=scheme)


def test_default_scheme_is_the_minimizing_movement_bit_for_bit():
    experiment = build("heat_1d", "quick")
    solver = GaussNewton(max_iterations=3)
    default = experiment.flow.run(experiment.theta0, 3, solver)
    explicit = _flow(experiment, ImplicitEuler()).run(experiment.theta0, 3, solver)
    theta, state, by_hand = experiment.theta0, None, [experiment.theta0]
    for _ in range(3):  # the loop before schemes existed: the flow's own step from theta_k, warm-started
        inner = solver.solve(experiment.flow.subproblem(theta), theta, None, state)
        theta, state = inner.point, inner.state
        by_hand.append(theta)
    for run in (explicit, default):
        assert all(torch.equal(a, b) for a, b in zip(run.thetas, by_hand))
    assert np.array_equal(default.tracking_bound, explicit.tracking_bound)


@pytest.mark.parametrize(("name", "cap"), [("heat_1d", 10.0), ("heat_2d", 10.0)])
def test_bdf2_tracks_its_exact_iterates_with_a_certified_bound(name, cap):
    experiment = build(name, "quick")
    solver = GaussNewton(max_iterations=3)
    bdf2 = _flow(experiment, BDF2()).run(experiment.theta0, experiment.steps, solver)
    euler = _flow(experiment, ImplicitEuler()).run(experiment.theta0, experiment.steps, solver)
    assert bdf2.certified and bdf2.metadata["scheme_record"]["g_norm"] is not None
    errors, bounds = bdf2.trajectory_error[1:], bdf2.tracking_bound[1:]
    assert np.all(errors <= bounds)  # no violation
    assert bounds.max() <= cap * errors.max()  # informative (docs/driver.md gives the ratios)
    assert errors.max() <= 2 * euler.trajectory_error[1:].max()  # as close as implicit Euler to its own iterates
    parts = bdf2.bound_inexactness + bdf2.bound_approximation + bdf2.bound_rounding
    assert np.all(bdf2.tracking_bound[1:] <= parts[1:] * (1 + 1e-12))


def test_bdf2_semi_convex_bound_holds_on_allen_cahn_or_is_withdrawn_with_the_reason():
    experiment = build("allen_cahn", "quick")
    solver = GaussNewton(max_iterations=3)
    assert experiment.flow.convexity < 0 and 4 * experiment.flow.tau * -experiment.flow.convexity < 1
    result = _flow(experiment, BDF2()).run(experiment.theta0, experiment.steps, solver)
    assert result.certified and np.all(result.trajectory_error[1:] <= result.tracking_bound[1:])
    assert result.tracking_bound[1:].max() <= 10 * result.trajectory_error[1:].max()  # 4.1 measured (docs/driver.md)
    flow = experiment.flow
    wide = MinimizingMovement(flow.parametrization, flow.energy, flow.metric, 0.3, scheme=BDF2())
    with pytest.warns(RuntimeWarning, match="4 tau lambda_- < 1"):
        withdrawn = wide.run(experiment.theta0, 2, solver)
    assert not withdrawn.certified and np.isnan(withdrawn.tracking_bound).all()
    assert "4 tau lambda_- < 1" in withdrawn.metadata["certification_withdrawn"]["reason"]


@pytest.mark.parametrize("scheme", [BDF2(), BDF2(start="euler")], ids=["richardson", "euler"])
def test_resumed_bdf2_run_repeats_an_uninterrupted_one(tmp_path, scheme):
    experiment = build("heat_1d", "quick")
    flow, solver = _flow(experiment, scheme), GaussNewton(max_iterations=2)
    uninterrupted = flow.run(experiment.theta0, 5, solver)
    path = tmp_path / "bdf2.npz"
    flow.run(experiment.theta0, 2, solver, checkpoint=path)  # interrupted after step 2
    assert MMSResult.load(path).steps_done == 2
    resumed = flow.run(experiment.theta0, 5, solver, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert np.array_equal(resumed.tracking_bound, uninterrupted.tracking_bound)
    assert resumed.metadata["scheme_record"] == uninterrupted.metadata["scheme_record"]
    with pytest.raises(ValueError, match="scheme"):  # another scheme's checkpoint is another problem
        _flow(experiment, ImplicitEuler()).run(experiment.theta0, 6, solver, checkpoint=path)


def test_a_lost_scheme_history_breaks_the_resume(tmp_path, monkeypatch):
    experiment = build("heat_1d", "quick")
    flow, solver = _flow(experiment, BDF2()), GaussNewton(max_iterations=2)
    path = tmp_path / "bdf2.npz"
    flow.run(experiment.theta0, 2, solver, checkpoint=path)
    # a driver that did not carry the scheme's record across the resume
    found = tuple(key for key in mms_module._FOUND_BY_THE_RUN if key != "scheme_record")
    monkeypatch.setattr(mms_module, "_FOUND_BY_THE_RUN", found)
    with pytest.raises(ValueError, match="time scheme's history"):
        flow.run(experiment.theta0, 4, solver, checkpoint=path)


def test_adaptive_steps_record_estimates_and_certify_variable_step_bdf2():
    experiment = build("heat_2d", "quick")
    solver = GaussNewton(max_iterations=3)
    tolerance = 2e-5
    euler = _flow(experiment, ImplicitEuler()).run(experiment.theta0, 6, solver, time_tolerance=tolerance)
    record = euler.metadata["scheme_record"]
    assert len(set(record["time_steps"])) > 1 and record["next_step"] is not None
    estimates = record["local_error_estimate"]
    assert None not in estimates  # steps 1 and 2 from step 3's estimate, the first whose window holds no u_0
    assert estimates[:2] == ImplicitEuler().start_estimates(record["time_steps"][:3], estimates[2])
    assert all(value <= tolerance for value in estimates)
    assert euler.certified and np.all(euler.trajectory_error[1:] <= euler.tracking_bound[1:])
    bdf2 = _flow(experiment, BDF2()).run(experiment.theta0, 6, solver, time_tolerance=tolerance)
    record = bdf2.metadata["scheme_record"]
    assert len(set(record["time_steps"])) > 2 and record["g_form"] is not None and len(record["ball"]) == 7
    assert np.isfinite(bdf2.trajectory_error).all()  # the exact BDF2 iterates follow the run's own steps
    assert bdf2.certified and np.all(bdf2.trajectory_error[1:] <= bdf2.tracking_bound[1:])
    assert np.max(bdf2.tracking_bound[1:]) <= 10 * np.max(bdf2.trajectory_error[1:])
    with pytest.raises(ValueError, match="budget"):
        from mms_manifolds import TrajectoryBudget

        _flow(experiment, BDF2()).run(experiment.theta0, 2, solver, budget=TrajectoryBudget(1e-3))


def test_euler_flow_bound_holds_against_the_continuous_flow():
    experiment = build("heat_2d", "quick")
    flow = experiment.flow
    result = flow.run(experiment.theta0, 4, GaussNewton(max_iterations=3))
    bounds = result.metadata["scheme_record"]["flow_bound"]
    metric, stiffness = flow.metric, flow.energy.stiffness
    weights = metric.to_dense((stiffness.shape[0], 1), dtype=stiffness.dtype, device=stiffness.device).diagonal()
    generator = torch.linalg.solve(torch.diag(weights), stiffness)  # M^{-1} K
    u0 = flow.parametrization.value(experiment.theta0)
    for k, bound in enumerate(bounds, start=1):
        exact = torch.linalg.matrix_exp(-k * flow.tau * generator) @ u0
        assert float(metric.norm(flow.parametrization.value(result.thetas[k]) - exact)) <= bound
    bdf2 = _flow(experiment, BDF2()).run(experiment.theta0, 2, GaussNewton(max_iterations=3))
    assert bdf2.metadata["scheme_record"]["flow_bound"] == [None, None]  # derived for implicit Euler only


def test_bad_scheme_arguments_are_named():
    experiment = build("regression", "quick")
    flow = experiment.flow
    with pytest.raises(TypeError, match="TimeScheme"):
        MinimizingMovement(flow.parametrization, flow.energy, flow.metric, flow.tau, scheme="bdf2")
    with pytest.raises(ValueError, match="time_tolerance"):
        flow.run(experiment.theta0, 2, GaussNewton(), time_tolerance=-1.0)


def test_certify_false_with_bdf2_computes_no_residual_in_the_richardson_start():
    """certify=False skips the driver's residuals, BDF2's Richardson start (step 1) included; same steps as certified."""
    import math

    experiment = build("heat_1d", "quick")
    solver = GaussNewton(max_iterations=3)
    certified = _flow(experiment, BDF2()).run(experiment.theta0, 3, solver)
    quick = _flow(experiment, BDF2()).run(experiment.theta0, 3, solver, certify=False)
    assert all(torch.equal(a, b) for a, b in zip(quick.thetas, certified.thetas))
    assert certified.certified and not quick.certified
    assert math.isfinite(certified.residual_total[1])
    assert all(math.isnan(value) for value in quick.residual_total[1:])
    assert all(math.isnan(value) for value in quick.tracking_bound[1:])


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()], ids=["euler", "bdf2"])
def test_a_resumed_adaptive_run_repeats_an_uninterrupted_one_rejections_included(tmp_path, scheme):
    """The controller's next step and rejection count travel in the scheme's record through the checkpoint; interrupted
    after step 3, the BDF2 run writes its start's estimates (steps 1-3, from step 4's) after the resume, implicit Euler
    (steps 1-2, from step 3's) before it."""
    experiment = build("heat_1d", "quick")
    flow, solver, tolerance = _flow(experiment, scheme), GaussNewton(max_iterations=2), 5e-7
    uninterrupted = flow.run(experiment.theta0, 8, solver, time_tolerance=tolerance)
    record = uninterrupted.metadata["scheme_record"]
    assert record["rejected_steps"] > 0 and len(set(record["time_steps"])) > 1
    assert None not in record["local_error_estimate"]
    path = tmp_path / "adaptive.npz"
    flow.run(experiment.theta0, 3, solver, checkpoint=path, time_tolerance=tolerance)
    resumed = flow.run(experiment.theta0, 8, solver, checkpoint=path, time_tolerance=tolerance)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert resumed.metadata["scheme_record"] == record
    assert np.array_equal(resumed.tracking_bound, uninterrupted.tracking_bound)  # variable-step BDF2 certified too
    assert uninterrupted.certified


def test_the_scheme_record_is_frozen_and_the_stepper_returns_new_ones():
    record = SchemeRecord(time_steps=(0.1,), local_error_estimate=(None,), flow_bound=(None,), next_step=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.rejected_steps = 3
    metric = L2Metric(torch.full((4,), 0.25, dtype=torch.float64))
    stepper = SchemeStepper(ImplicitEuler(), 0.1, 1.0, metric, torch.float64, 4, True, 1e-3)
    assert stepper.next_step(record) == 0.2
    assert stepper.accept(0.2, 1e-2) == (False, pytest.approx(0.2 * max(0.2, 0.9 * (1e-3 / 1e-2) ** 0.5)))
    after = stepper.after_step(record, 0.2, 1e-4, 0.5, 0.3, 2)
    assert after == SchemeRecord((0.1, 0.2), (None, 1e-4), (None, 0.5), None, 0.3, 2)
    assert record == SchemeRecord((0.1,), (None,), (None,), None, 0.2, 0)  # unchanged
    assert SchemeRecord.from_metadata(json.loads(json.dumps(after.as_metadata()))) == after
    fixed = SchemeStepper(ImplicitEuler(), 0.1, 1.0, metric, torch.float64, 4, True, None)
    assert fixed.after_step(record, 0.1, math.nan, math.nan, 0.7, 0).next_step == 0.2  # no controller: kept
