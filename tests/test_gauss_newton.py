"""The Gauss–Newton inner solver: line search, spectral cutoff, Levenberg–Marquardt, automatic choice, warm starts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mms_manifolds import (
    GaussNewton,
    IncrementManifold,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MinimizingMovement,
    MMSResult,
    MMSSubproblem,
    RiemannianGradientDescent,
    default_relative_damping,
)
from mms_manifolds.linalg import GramFactorization
from mms_manifolds.reproduce import build
from mms_manifolds.solvers import GaussNewtonState, NoState, SubspaceGaussNewtonState

from problems import regression_flow


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 50), globalization=st.sampled_from(["line-search", "levenberg-marquardt"]))
def test_cost_never_increases(seed, globalization):
    flow = regression_flow(seed=seed, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    for line_search in ("armijo", "grid"):
        solver = GaussNewton(max_iterations=6, globalization=globalization, line_search=line_search)
        result = solver.solve(flow.subproblem(theta0), theta0)
        costs = result.cost_history
        rounding = [16 * np.finfo(float).eps * max(1.0, abs(cost)) for cost in costs]
        assert all(after <= before + slack for before, after, slack in zip(costs, costs[1:], rounding)), costs
        assert not result.stop_reason.failed


def _linear_flow(singular_values: torch.Tensor, repeated_column: bool, tau: float = 1e3):
    """A linear model Phi = Q diag(s) W^T (plus a duplicated column) with the plain Euclidean metric."""
    generator = torch.Generator().manual_seed(0)
    count, size = 40, singular_values.numel()
    left, _ = torch.linalg.qr(torch.randn(count, size, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    basis = left @ torch.diag(singular_values) @ right.T
    if repeated_column:
        basis = torch.cat([basis, basis[:, :1]], dim=1)  # exactly rank deficient
    metric = L2Metric(torch.ones(count, dtype=torch.float64))
    target = torch.sin(torch.linspace(0, 3, count, dtype=torch.float64)).unsqueeze(-1)
    parametrization = LinearParametrization(basis)
    flow = MinimizingMovement(parametrization, L2Regression(target, metric), metric, tau, damping=0.0)
    return flow, basis, target


@pytest.mark.parametrize("repeated_column", [False, True])
def test_pseudo_inverse_step_on_an_ill_conditioned_jacobian(repeated_column):
    """cond(J) = 1e12, cond(A) = 1e24: eigenvalues <= p eps lambda_max are dropped, the step stays finite and useful.

    Forming A squares the conditioning: an eigenvalue lambda_i just above the cutoff is known only to relative
    accuracy eps lambda_max / lambda_i, so the image is compared with the SVD reference to 1e-2, not to rounding.
    """
    flow, basis, target = _linear_flow(torch.logspace(0, -12, 8, dtype=torch.float64), repeated_column)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    model = subproblem.gauss_newton_model(theta0)
    step = model.step(0.0)
    assert bool(torch.isfinite(step).all())
    eigenvalues = model.factorization.eigendecomposition()[0]
    assert int((eigenvalues > model.factorization.rtol * eigenvalues[-1]).sum()) == 5  # s >= 1.4e-7 kept
    left, singular, right = torch.linalg.svd(basis, full_matrices=False)
    kept = singular**2 > model.factorization.rtol * float(singular.max()) ** 2
    reference = -(right[kept].T @ ((right[kept] @ model.gradient) / singular[kept] ** 2)) / model.scale
    assert float((basis @ (step - reference)).norm()) <= 1e-2 * float((basis @ reference).norm())
    result = GaussNewton(max_iterations=1, globalization="line-search").solve(subproblem, theta0)
    assert result.cost_history[-1] < result.cost_history[0]


@pytest.mark.parametrize("repeated_column", [False, True])
def test_one_iteration_lands_on_the_constrained_minimiser_of_a_linear_model(repeated_column):
    """Linear phi, quadratic E: the model is exact, so -A^+ g reaches the M-projection of the prox onto range(Phi)."""
    flow, basis, target = _linear_flow(torch.logspace(0, -4, 8, dtype=torch.float64), repeated_column)  # exactly rank deficient if repeated
    theta0 = flow.parametrization.initial_point()
    result = GaussNewton(max_iterations=1, globalization="line-search").solve(flow.subproblem(theta0), theta0)
    prox = (flow.parametrization.value(theta0) + flow.tau * target) / (1 + flow.tau)
    columns = torch.linalg.svd(basis, full_matrices=False).U[:, :8]
    expected = columns @ (columns.T @ prox)
    assert torch.allclose(flow.parametrization.value(result.point), expected, atol=1e-8)
    assert bool(torch.isfinite(result.point).all()) and float(result.point.norm()) < 1e6


def test_the_step_cutoff_drops_the_eigenvalues_at_or_below_it():
    """Eigenvalues s_i^2 of A: 1, 3.7e-4, 1.4e-7, 5.2e-11, 1.9e-14, ...; a cutoff of 1e-12 keeps four directions.

    Those four are resolved to rounding, so the step matches the SVD reference tightly; a cutoff below the
    factorisation's own (p eps) changes nothing.
    """
    flow, basis, _ = _linear_flow(torch.logspace(0, -12, 8, dtype=torch.float64), repeated_column=False)
    theta0 = flow.parametrization.initial_point()
    model = flow.subproblem(theta0).gauss_newton_model(theta0)
    _, singular, right = torch.linalg.svd(basis, full_matrices=False)
    kept = singular**2 > 1e-12 * float(singular.max()) ** 2
    assert int(kept.sum()) == 4
    reference = -(right[kept].T @ ((right[kept] @ model.gradient) / singular[kept] ** 2)) / model.scale
    assert torch.allclose(model.step(0.0, 1e-12), reference, rtol=1e-8, atol=1e-12)
    assert torch.equal(model.step(0.0, 1e-30), model.step(0.0))
    assert not torch.allclose(model.step(0.0, 1e-12), model.step(0.0))


def test_the_full_pseudo_inverse_takes_over_where_the_truncated_step_has_nothing_left():
    """The residual lies along a singular direction below the step cutoff (s = 1e-7): the truncated step is zero.

    The full pseudo-inverse (cutoff p eps) still resolves that direction, and on this linear model one iteration
    lands on the constrained minimiser, the prox of the anchor (stopping there would be a false stall).
    """
    generator = torch.Generator().manual_seed(1)
    count = 20
    left, _ = torch.linalg.qr(torch.randn(count, 2, generator=generator, dtype=torch.float64))
    basis = left @ torch.diag(torch.tensor([1.0, 1e-7], dtype=torch.float64))
    metric = L2Metric(torch.ones(count, dtype=torch.float64))
    parametrization = LinearParametrization(basis)
    theta0 = parametrization.initial_point()
    anchor = parametrization.value(theta0)
    target = anchor - 0.5 * left[:, 1:]
    flow = MinimizingMovement(parametrization, L2Regression(target, metric), metric, 1e3, damping=0.0)
    subproblem = flow.subproblem(theta0)
    model = subproblem.gauss_newton_model(theta0)
    assert float(model.step(0.0, 1e-12).norm()) < 1e-15  # rounding only
    solver = GaussNewton(max_iterations=1, globalization="line-search")
    after_a_short_step = GaussNewtonState(step_length=0.5, relative_damping=solver.initial_damping)  # truncated
    assert solver.step_cutoff_after(after_a_short_step.step_length) == 1e-12
    result = solver.solve(subproblem, theta0, state=after_a_short_step)
    prox = (anchor + flow.tau * target) / (1 + flow.tau)
    assert torch.allclose(parametrization.value(result.point), prox, atol=1e-9)
    assert result.stop_reason.name != "STALLED"


@pytest.mark.parametrize("previous_length", [1.0, 0.25])
def test_the_line_search_follows_the_accelerated_curve_and_satisfies_armijo(previous_length):
    """The accepted point is theta + eta delta + eta^2 a / 2 with the second-order correction a of delta.

    delta is the full pseudo-inverse step after a full-length step, the truncated one (``step_cutoff``) after a
    shortened step and at a cold start.
    """
    flow = regression_flow(seed=2, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    solver = GaussNewton(max_iterations=1, globalization="line-search", step_cutoff=1e-6)
    state = GaussNewtonState(step_length=previous_length, relative_damping=solver.initial_damping)
    result = solver.solve(subproblem, theta0, state=state)
    length = result.state.step_length
    assert length <= min(1.0, 2 * previous_length)
    cutoff = None if previous_length == 1.0 else 1e-6
    assert solver.step_cutoff_after(previous_length) == cutoff
    assert solver.step_cutoff_after(solver.initial_state().step_length) == 1e-6  # a cold start is truncated
    model = subproblem.gauss_newton_model(theta0)
    step = model.step(0.0, cutoff)
    assert not torch.allclose(step, model.step(0.0, 1e-6 if cutoff is None else None))  # the cutoff matters here
    acceleration = subproblem.geodesic_acceleration(theta0, model, step, 0.0, cutoff)
    assert float(acceleration.norm()) > 0
    assert torch.allclose(result.point, theta0 + length * step + 0.5 * length**2 * acceleration, rtol=0, atol=1e-12)
    slope = float(model.gradient @ step)
    assert result.cost_history[-1] <= result.cost_history[0] + solver.armijo * length * slope
    straight = GaussNewton(max_iterations=1, globalization="line-search", geodesic_acceleration=False, step_cutoff=1e-6)
    assert not torch.allclose(straight.solve(subproblem, theta0, state=state).point, result.point)


def test_long_line_searches_do_not_creep_into_rounding_and_stall_the_flow():
    """The known-minimiser flow with 50 iterations per step: the search must keep moving the flow.

    Its steps take the line search (proximal share 0.39). When the search halved down to lengths of
    4e-16 it accepted points whose cost differed from the last by rounding alone and handed that length
    to the next MMS step, and from the third step on the flow stood still 0.098 from the minimiser. It
    now stops halving where the first-order decrease is below the cost's rounding level, falls back to
    Levenberg–Marquardt, and the next search starts afresh.
    """
    experiment = build("known_minimizer", "full")
    result = experiment.flow.run(experiment.theta0, 4, GaussNewton(max_iterations=50))
    distance = experiment.evaluations["distance_to_grid_minimiser"]
    distances = [distance(theta) for theta in result.thetas]
    assert distances[4] < 0.5 * distances[2], distances
    assert result.metadata["solver_state"]["step_length"] > 1e-8


@pytest.mark.parametrize("cutoff", [0.0, -1e-12, 1.0, math.nan, None])
def test_the_step_cutoff_is_checked(cutoff):
    with pytest.raises((TypeError, ValueError), match="step_cutoff"):
        GaussNewton(step_cutoff=cutoff)


def test_gram_factorization_matches_dense_solves_on_both_sides():
    generator = torch.Generator().manual_seed(3)
    tall = torch.randn(30, 12, generator=generator, dtype=torch.float64)
    wide = torch.randn(12, 30, generator=generator, dtype=torch.float64)
    for factor in (tall, wide):
        gram_matrix = factor.T @ factor
        rhs = torch.randn(factor.shape[1], generator=generator, dtype=torch.float64)
        smaller_side = (
            GramFactorization(gram_matrix) if factor is tall else GramFactorization(factor @ factor.T, factor=factor)
        )
        for damping in (1e-6, 0.3):
            reference = torch.linalg.solve(gram_matrix + damping * torch.eye(factor.shape[1], dtype=torch.float64), rhs)
            assert torch.allclose(smaller_side.solve(rhs, damping).value, reference, rtol=1e-7, atol=1e-9)
        pseudo = torch.linalg.pinv(factor) @ torch.linalg.pinv(factor).T @ rhs  # (B^T B)^+ rhs, minimum norm
        assert torch.allclose(smaller_side.solve(rhs, 0.0).value, pseudo, rtol=1e-7, atol=1e-9)


def test_cholesky_falls_back_to_the_eigendecomposition_when_rounding_makes_the_shift_indefinite():
    indefinite = torch.diag(torch.tensor([1.0, -1e-3], dtype=torch.float64))  # a rounding-damaged Gram matrix
    factorization = GramFactorization(indefinite)
    value = factorization.solve(torch.tensor([1.0, 1.0], dtype=torch.float64), 1e-6).value
    assert bool(torch.isfinite(value).all())
    assert value[1] == pytest.approx(1 / 1e-6)  # eigenvalue clamped at 0, then shifted


def test_automatic_globalization_follows_the_proximal_share():
    short = regression_flow(tau=0.2)
    long = regression_flow(tau=1e6)
    theta0 = short.parametrization.initial_point()
    solver = GaussNewton()
    short_model = short.subproblem(theta0).gauss_newton_model(theta0)
    long_model = long.subproblem(theta0).gauss_newton_model(theta0)
    assert short_model.proximal_share == pytest.approx(1 / (0.2 * (1 + 1 / 0.2)))
    assert solver.selected_globalization(short_model) == "levenberg-marquardt"
    assert solver.selected_globalization(long_model) == "line-search"
    assert GaussNewton(globalization="line-search").selected_globalization(short_model) == "line-search"


def test_matrix_free_model_agrees_with_the_dense_one():
    flow = regression_flow(tau=1e3)
    theta0 = flow.parametrization.initial_point()
    dense = flow.subproblem(theta0).gauss_newton_model(theta0, "dense")
    cg = flow.subproblem(theta0).gauss_newton_model(theta0, "cg")
    assert torch.allclose(dense.gradient, cg.gradient, rtol=1e-10, atol=1e-12)
    damping = 1e-3 * dense.mean_eigenvalue
    assert torch.allclose(dense.step(damping), cg.step(damping), rtol=1e-6, atol=1e-9)


def test_warm_started_resume_is_bit_identical(tmp_path):
    """The solver state (step length, damping) travels through the checkpoint: a resumed run repeats the original."""
    problem = regression_flow(tau=0.2)
    theta0 = problem.parametrization.initial_point()
    solver = GaussNewton(max_iterations=1)  # Levenberg-Marquardt here: its damping is the state that travels
    uninterrupted = problem.run(theta0, 6, solver)
    assert uninterrupted.metadata["solver_state"] != solver.initial_state().as_metadata()  # the state did change on the way
    path = tmp_path / "checkpoint.npz"
    problem.run(theta0, 3, solver, checkpoint=path)
    partial = MMSResult.load(path)
    assert partial.metadata["solver_state"] != solver.initial_state().as_metadata()
    assert solver.state_from_metadata(partial.metadata["solver_state"]).as_metadata() == partial.metadata["solver_state"]
    partial.metadata["steps"] = 6  # the same run, cut after three steps
    partial.save(path)
    cold_path = tmp_path / "cold.npz"
    partial.metadata["solver_state"] = solver.initial_state().as_metadata()  # a resume that forgot the state
    partial.save(cold_path)
    resumed = problem.run(theta0, 6, solver, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert resumed.metadata["solver_state"] == uninterrupted.metadata["solver_state"]
    forgetful = problem.run(theta0, 6, solver, checkpoint=cold_path)
    assert not all(torch.equal(a, b) for a, b in zip(forgetful.thetas, uninterrupted.thetas))


def test_solver_state_is_checked():
    solver = GaussNewton()
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    for bad in ({"step_length": 1.0, "relative_damping": 1e-3}, [1], NoState(), SubspaceGaussNewtonState(1.0, 1e-3)):
        with pytest.raises(TypeError, match="state must be a GaussNewtonState"):
            solver.solve(subproblem, theta0, state=bad)
    for length, damping in ((math.nan, 1e-3), (0.0, 1e-3), (1.0, -1.0), (1.0, math.inf), (True, 1e-3)):
        with pytest.raises(ValueError, match="GaussNewtonState (step_length|relative_damping) must be a finite positive"):
            GaussNewtonState(step_length=length, relative_damping=damping)
    with pytest.raises(ValueError, match="globalization"):
        GaussNewton(globalization="trust-region")
    with pytest.raises(ValueError, match="line_search"):
        GaussNewton(line_search="wolfe")
    with pytest.raises(ValueError, match="armijo"):
        GaussNewton(armijo=0.7)


def test_geometry_damping_does_not_reach_the_gauss_newton_model():
    """The model solves with A itself: the manifold's damping lambda_d is the metric's, not the solver's."""
    flow = regression_flow(tau=1e3)
    theta0 = flow.parametrization.initial_point()
    undamped = IncrementManifold(flow.parametrization, flow.metric, damping=0.0)
    subproblem = MMSSubproblem(undamped, flow.energy, flow.tau, flow.parametrization.value(theta0))
    damped = flow.subproblem(theta0)
    assert torch.equal(subproblem.gauss_newton_model(theta0).step(1e-4), damped.gauss_newton_model(theta0).step(1e-4))


def test_geodesic_acceleration_solves_its_normal_equations():
    """a = -(A + mu I)^{-1} J^T W D^2phi[delta, delta]: (A + mu I) a + J^T W D^2phi[delta, delta] = 0."""
    flow = regression_flow(tau=0.2)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    model = subproblem.gauss_newton_model(theta0)
    damping = 1e-3 * model.mean_eigenvalue
    step = model.step(damping)
    acceleration = subproblem.geodesic_acceleration(theta0, model, step, damping)
    jacobian = flow.parametrization.jacobian(theta0).reshape(-1, theta0.numel())
    weights = flow.metric.weights.unsqueeze(-1).expand(*flow.parametrization.output_shape).reshape(-1)
    gram = jacobian.T @ ((1 + 1 / flow.tau) * weights.unsqueeze(-1) * jacobian)  # W = (c + 1/tau) M, c = 1
    curvature = flow.parametrization.second_derivative(theta0, step, step).reshape(-1)
    residual = (gram + damping * torch.eye(theta0.numel(), dtype=torch.float64)) @ acceleration
    residual = residual + jacobian.T @ ((1 + 1 / flow.tau) * weights * curvature)
    assert float(residual.norm()) <= 1e-8 * float((jacobian.T @ (weights * curvature)).norm())
    assert float(acceleration.norm()) > 0


def test_geodesic_acceleration_makes_short_steps_more_accurate():
    """Measured on the heat flow: one accelerated Levenberg-Marquardt iteration per step tracks the exact flow better."""
    from problems import heat_flow

    errors = {}
    for accelerated in (False, True):
        flow = heat_flow(tau=0.05)
        result = flow.run(flow.parametrization.initial_point(), 4, GaussNewton(1, geodesic_acceleration=accelerated))
        errors[accelerated] = float(result.trajectory_error.max())
    assert errors[True] < errors[False]
    with pytest.raises(TypeError, match="geodesic_acceleration"):
        GaussNewton(geodesic_acceleration="yes")


def test_solvers_check_points_at_the_door_not_in_the_hot_path(monkeypatch):
    """theta0 is checked for finite values once; the iterates a solver makes itself are not (a host sync each on a GPU)."""
    from mms_manifolds import _checks

    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    checked = []
    original = _checks.check_finite
    monkeypatch.setattr(_checks, "check_finite", lambda name, value: checked.append(name) or original(name, value))
    result = GaussNewton(max_iterations=5).solve(subproblem, theta0)
    assert result.iterations == 5 and checked == ["theta0"]
    checked.clear()
    subproblem.cost(theta0)  # a public call from outside a solver is checked
    assert checked == ["theta"]
    with pytest.raises(ValueError, match="theta0 contains 1 non-finite"):
        GaussNewton(max_iterations=5).solve(subproblem, torch.cat([theta0[:-1], torch.tensor([math.nan], dtype=torch.float64)]))


def test_the_step_hessian_knows_when_it_is_a_multiple_of_the_metric():
    from problems import heat_flow

    flow = regression_flow()
    theta = flow.parametrization.initial_point()
    u = flow.parametrization.value(theta)
    step = flow.step_problem(u).step_hessian(u)
    assert step.multiple_of(flow.metric) == pytest.approx(1 + 1 / flow.tau)  # W = (c + 1/tau) M with c = 1
    v = torch.randn(u.shape, generator=torch.Generator().manual_seed(0), dtype=u.dtype)
    assert torch.allclose(step.apply(v), step.multiple_of(flow.metric) * flow.metric.apply(v), atol=1e-14)
    heat = heat_flow()
    u = heat.parametrization.value(heat.parametrization.initial_point())
    step = heat.step_problem(u).step_hessian(u)
    assert step.multiple_of(heat.metric) is None  # the stiffness is no multiple of M: W is applied as a sum
    v = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=u.dtype)
    assert torch.allclose(step.apply(v), heat.energy.stiffness @ v + heat.metric.apply(v) / heat.tau, atol=1e-12)


def test_a_riemannian_gradient_step_along_the_geodesic_is_the_damped_gauss_newton_step_moved_along_it():
    """Where Hess E = cM (regression), RGD's default step is Levenberg–Marquardt's at the manifold's damping.

    At the point the manifold's damping was fixed, -tau/(1 + tau c) G^{-1} g = -(A + mu I)^{-1} g with
    A = (c + 1/tau) J^T M J and mu the same relative damping of tr(A)/p: an RGD-exp iteration is the
    Gauss–Newton step moved along the exact geodesic instead of the chart (docs/gauss_newton.md).
    """
    flow = regression_flow(seed=3, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    assert GaussNewton().initial_damping == default_relative_damping(torch.float64)
    model = subproblem.gauss_newton_model(theta0)
    gauss_newton_step = model.step(GaussNewton().initial_damping * model.mean_eigenvalue)
    rate = subproblem.tau / (1 + subproblem.tau * subproblem.convexity)
    torch.testing.assert_close(-rate * subproblem.riemannian_gradient(theta0), gauss_newton_step, rtol=1e-9, atol=0)
    result = RiemannianGradientDescent(max_iterations=1, exp_rtol=1e-10).solve(subproblem, theta0)
    along_geodesic = flow.manifold.geodesic(theta0, gauss_newton_step, rtol=1e-10, atol=1e-12).point
    torch.testing.assert_close(result.point, along_geodesic, rtol=1e-7, atol=1e-9)
    assert not torch.allclose(result.point, theta0 + gauss_newton_step, rtol=1e-3, atol=1e-3)



def test_a_full_search_start_tries_length_one_after_a_short_step(monkeypatch):
    """``search_start="full"``: the first trial of every search is at length 1, where ``"doubled"`` starts at twice the last length."""
    flow, _, _ = _linear_flow(torch.logspace(0, -2, 6, dtype=torch.float64), repeated_column=False)
    theta = flow.parametrization.initial_point()
    short = GaussNewtonState(step_length=2.0**-10, relative_damping=1e-3)
    first_lengths = {}
    for start in ("doubled", "full"):
        lengths: list[float] = []
        original = GaussNewton._trial_cost

        def recorded(self, subproblem, candidate, lengths=lengths, original=original):
            lengths.append(float((candidate - theta).norm()))
            return original(self, subproblem, candidate)

        monkeypatch.setattr(GaussNewton, "_trial_cost", recorded)
        solver = GaussNewton(max_iterations=1, globalization="line-search", geodesic_acceleration=False, search_start=start)
        result = solver.solve(flow.subproblem(theta), theta, state=short)
        monkeypatch.undo()
        first_lengths[start] = (lengths[0], result.state.step_length)
    # without acceleration the trial point is theta + eta delta: the first trials differ by the factor 1 / 2^-9
    ratio = first_lengths["full"][0] / first_lengths["doubled"][0]
    assert abs(ratio - 2.0**9) <= 1e-9 * 2.0**9
    assert first_lengths["doubled"][1] <= 2.0**-9 and first_lengths["full"][1] > 2.0**-9
    with pytest.raises(ValueError, match="search_start"):
        GaussNewton(search_start="tripled")
    with pytest.raises(TypeError, match="search_start"):
        GaussNewton(search_start=1.0)


def test_the_line_search_starts_no_longer_than_max_step_length():
    """Linear phi, quadratic E: Armijo accepts the exact step at its first trial, so the iterate is theta + eta_max delta."""
    flow, _, _ = _linear_flow(torch.logspace(0, -4, 8, dtype=torch.float64), False)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    step = subproblem.gauss_newton_model(theta0).step(0.0)
    full = GaussNewton(max_iterations=1, globalization="line-search").solve(subproblem, theta0)
    assert torch.allclose(full.point, theta0 + step, rtol=0, atol=1e-12)
    for longest in (0.5, 0.3):
        solver = GaussNewton(max_iterations=1, globalization="line-search", max_step_length=longest)
        result = solver.solve(subproblem, theta0)
        assert torch.allclose(result.point, theta0 + longest * step, rtol=0, atol=1e-12)
        assert result.state.step_length == longest
        assert solver.step_cutoff_after(longest) is None and solver.step_cutoff_after(longest / 2) == solver.step_cutoff


@pytest.mark.parametrize("longest", [1.0, 0.5, 0.3])
def test_a_cold_start_counts_as_a_shortened_step_at_every_max_step_length(longest):
    """The fresh state is half the longest length: its first search starts at eta_max with the truncated step."""
    solver = GaussNewton(max_step_length=longest)
    fresh = solver.initial_state().step_length
    assert fresh == 0.5 * longest and min(longest, 2 * fresh) == longest
    assert solver.step_cutoff_after(fresh) == solver.step_cutoff and solver.step_cutoff_after(longest) is None


@pytest.mark.parametrize("longest", [0.0, -0.5, 1.5, math.nan])
def test_max_step_length_is_checked(longest):
    with pytest.raises(ValueError, match="max_step_length"):
        GaussNewton(max_step_length=longest)


def test_a_damping_below_the_grams_rounding_is_raised_to_the_first_shift_with_a_cholesky_factor():
    """``GramFactorization.resolved_damping``: diag(1, 1/2, -1e-15) (a rounding-negative eigenvalue) has no factor at
    1e-17; the shifts max(1e-17, eps tr) 4^k give the first at k = 1 (eps tr = 3.3e-16 leaves -6.7e-16), and the solve
    at it is the Cholesky solve (kept: no second factorisation, no eigendecomposition)."""
    gram = torch.diag(torch.tensor([1.0, 0.5, -1e-15], dtype=torch.float64))
    factorization = GramFactorization(gram)
    unit = torch.finfo(torch.float64).eps * float(torch.trace(gram))
    resolved = factorization.resolved_damping(1e-17)
    assert resolved == 4 * unit
    assert factorization._cholesky[0] == resolved and factorization._cholesky[1] is not None
    assert factorization._eigen is None
    rhs = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    value = factorization.solve(rhs, resolved).value
    assert factorization._eigen is None
    assert torch.allclose(value, rhs / (torch.diagonal(gram) + resolved), rtol=1e-12)
    # a damping the Gram resolves, and 0, are kept; one no shift resolves is returned as it is
    assert GramFactorization(torch.eye(3, dtype=torch.float64)).resolved_damping(1e-17) == 1e-17
    assert factorization.resolved_damping(0.0) == 0.0
    hopeless = GramFactorization(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    assert hopeless.resolved_damping(1e-17) == 1e-17


def test_the_line_search_takes_the_damping_the_factorisation_resolves(monkeypatch):
    """``GaussNewton._filter_damping`` ends with the factorisation's ``resolved_damping``: a raised damping is the one the step uses."""
    flow = regression_flow(tau=1e6)
    theta0 = flow.parametrization.initial_point()
    model = flow.subproblem(theta0).gauss_newton_model(theta0, "dense")
    solver = GaussNewton(step_filter="tikhonov", step_damping=1e-6)
    requested = 1e-6 * model.mean_eigenvalue
    assert solver._filter_damping(model, None) == requested
    monkeypatch.setattr(type(model.factorization), "resolved_damping", lambda self, damping: 3.0 * damping)
    assert solver._filter_damping(model, None) == 3.0 * requested


def test_each_iteration_whose_damping_was_raised_is_recorded_with_both_dampings(monkeypatch):
    """``InnerResult.extra["raised_damping"]``: empty where the factorisation resolves every damping; where it raises
    them (here threefold), one entry per iteration, numbered from 1, with the damping asked for and the one taken; no
    entry for truncated steps, which take no damping."""
    flow = regression_flow(tau=1e6)
    theta0 = flow.parametrization.initial_point()
    options = {"max_iterations": 3, "globalization": "line-search", "final_residual": False}
    solver = GaussNewton(step_filter="tikhonov", step_damping=1e-6, **options)
    assert solver.solve(flow.subproblem(theta0), theta0).extra["raised_damping"] == []
    assert "raised_damping" not in GaussNewton(**options).solve(flow.subproblem(theta0), theta0).extra
    factorization_type = type(flow.subproblem(theta0).gauss_newton_model(theta0, "auto").factorization)
    monkeypatch.setattr(factorization_type, "resolved_damping", lambda self, damping: 3.0 * damping)
    raised = solver.solve(flow.subproblem(theta0), theta0)
    records = raised.extra["raised_damping"]
    assert raised.iterations == 3
    assert [record["iteration"] for record in records] == [1, 2, 3]
    for record in records:
        assert record["requested"] > 0 and record["resolved"] == pytest.approx(3.0 * record["requested"], rel=1e-15)


def test_a_raised_damping_is_recorded_only_for_the_step_taken(monkeypatch):
    """A search that finds no decrease falls back to Levenberg–Marquardt, whose steps take their own damping: no entry,
    though the search's damping was raised. Within an iteration only the last search's last damping counts, and only
    once its step is accepted (``_DampingRecord``: a rejected row-sampled search, or a truncated step replaced by the
    full pseudo-inverse's, leaves nothing)."""
    from mms_manifolds.solvers.gauss_newton import _DampingRecord

    flow = regression_flow(tau=1e6)
    theta0 = flow.parametrization.initial_point()
    factorization_type = type(flow.subproblem(theta0).gauss_newton_model(theta0, "auto").factorization)
    monkeypatch.setattr(factorization_type, "resolved_damping", lambda self, damping: 3.0 * damping)
    monkeypatch.setattr(GaussNewton, "_trial_cost", lambda self, subproblem, candidate: math.inf)
    solver = GaussNewton(
        max_iterations=2, step_filter="tikhonov", step_damping=1e-6, globalization="line-search", final_residual=False
    )
    result = solver.solve(flow.subproblem(theta0), theta0)
    assert result.extra["raised_damping"] == []
    record = _DampingRecord()
    record.start(1)
    record.begin_search()
    record.resolved(1.0, 4.0)
    record.begin_search()  # a second search of the iteration (the full model after a rejected sampled one)
    record.resolved(1.0, 1.0)
    record.accept()
    record.start(2)
    record.begin_search()
    record.resolved(1.0, 4.0)
    record.resolved(2.0, 8.0)  # the full pseudo-inverse's damping replaces the truncated step's
    record.accept()
    record.accept()  # nothing pending: no second entry
    record.start(3)
    record.begin_search()
    record.resolved(1.0, 4.0)  # a search whose step is not taken
    record.start(4)
    record.accept()
    assert record.records == [{"iteration": 2, "requested": 2.0, "resolved": 8.0}]


def test_a_raised_damping_is_resolved_in_the_factorisations_units_and_factored_once(monkeypatch):
    """The model's factorisation holds A/s (``scale`` s, here 1e3): the damping is resolved as mu/s there and returned
    as s times that; the step at it reuses the one Cholesky factor and forms no eigendecomposition (both counted)."""
    from mms_manifolds.subproblem import GaussNewtonModel

    gram = torch.diag(torch.tensor([1.0, 0.5, -1e-15], dtype=torch.float64))  # of A/s, a rounding-negative eigenvalue
    factorization = GramFactorization(gram)
    scale = 1e3
    model = GaussNewtonModel(0.0, torch.ones(3, dtype=torch.float64), factorization, scale, 1.0, 0.0)
    solver = GaussNewton(step_filter="tikhonov", step_damping=1e-14, absolute_damping=True)  # 1e-17 in A/s
    factorizations, eigendecompositions = [], []
    original_cholesky, original_eigh = torch.linalg.cholesky_ex, torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda *a, **k: factorizations.append(1) or original_cholesky(*a, **k))
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: eigendecompositions.append(1) or original_eigh(*a, **k))
    damping = solver._filter_damping(model, None)
    unit = torch.finfo(torch.float64).eps * float(torch.trace(gram))
    assert damping == pytest.approx(scale * 4 * unit, rel=1e-15)
    assert len(factorizations) == 3  # refused at 1e-17 and at eps tr, factored at 4 eps tr
    step = model.step(damping)
    assert len(factorizations) == 3 and eigendecompositions == []
    assert torch.allclose(step, -torch.ones(3, dtype=torch.float64) / (torch.diagonal(gram) + damping / scale) / scale, rtol=1e-12)


def test_a_grid_largest_length_needs_the_logarithmic_grid():
    with pytest.raises(ValueError, match="grid_largest=1.0 needs line_search='logarithmic-grid'"):
        GaussNewton(grid_largest=1.0)
