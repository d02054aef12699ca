"""The MMS driver: the tracking bound holds and is informative, floors, neighbourhoods, budget, storage."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mms_manifolds import (
    LBFGS,
    SGD,
    Adam,
    CallableEnergy,
    GaussNewton,
    GinzburgLandau,
    MinimizingMovement,
    MMSDivergenceError,
    MMSResult,
    ResultFileError,
    RiemannianGradientDescent,
    TrajectoryBudget,
)
from mms_manifolds.grids import stiffness_1d

from problems import heat_flow, linear_regression_flow, regression_flow

SOLVERS = {
    "gn-1": lambda: GaussNewton(max_iterations=1),
    "gn-5": lambda: GaussNewton(max_iterations=5),
    "adam-1": lambda: Adam(lr=1e-2, max_iterations=1),
    "adam-30": lambda: Adam(lr=1e-2, max_iterations=30),
    "sgd-5": lambda: SGD(lr=1e-2, max_iterations=5),
    "lbfgs-1": lambda: LBFGS(max_iterations=1),
    "rgd-retraction-2": lambda: RiemannianGradientDescent(max_iterations=2, use_exp=False),
}


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("flow", [regression_flow, heat_flow], ids=["regression", "heat"])
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 1000))
def test_tracking_bound_holds_for_every_solver(flow, solver, seed):
    problem = flow(seed)
    result = problem.run(problem.parametrization.initial_point(), 4, SOLVERS[solver]())
    assert result.certified
    assert np.all(np.isfinite(result.trajectory_error))
    assert np.all(result.trajectory_error <= result.tracking_bound * (1 + 1e-9) + 1e-13)
    # Informative, not vacuous: within a small factor of the true error (docs/driver.md states the
    # measured ratios; the heat flow damps high modes faster than L = 1/(1 + tau lambda_min) assumes, and
    # the more accurate the solver, the larger B/e: Gauss-Newton with geodesic acceleration reached 59).
    ratio = result.tracking_bound[1:] / result.trajectory_error[1:]
    assert ratio.max() < {"regression_flow": 10.0, "heat_flow": 100.0}[flow.__name__]


def test_bound_and_error_start_at_zero_and_are_reported():
    problem = regression_flow()
    result = problem.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert result.tracking_bound[0] == 0.0 and result.trajectory_error[0] == 0.0
    for name in ("energy", "inner_iterations", "residual_tangential", "residual_normal", "tracking_bound"):
        assert getattr(result, name).shape == (3,)
    assert len(result.thetas) == 3
    assert "B_k" in result.table()


def test_linear_model_normal_residual_is_the_distance_to_the_span():
    problem = linear_regression_flow()
    result = problem.run(problem.parametrization.initial_point(), 4, GaussNewton(max_iterations=20))
    basis = problem.parametrization.basis[:, 0, :]
    weights = problem.metric.weights.sqrt()
    mu = problem.constants.strong_convexity
    for k in range(1, 5):
        exact_step = problem.energy.prox(
            problem.parametrization.value(result.thetas[k - 1]), problem.tau, problem.metric
        )
        coefficients = torch.linalg.lstsq(weights[:, None] * basis, weights * exact_step[:, 0]).solution
        distance = float(torch.linalg.vector_norm(weights * (basis @ coefficients - exact_step[:, 0])))
        assert result.residual_normal[k] / mu == pytest.approx(distance, rel=1e-8)
        assert result.residual_tangential[k] < 1e-10 * result.residual_normal[k]
    # With the tangential part gone, the error sits at the approximation floor and below the bound.
    assert np.all(result.trajectory_error[1:] <= result.bound_approximation[1:] * (1 + 1e-8))
    assert result.tracking_bound[-1] == pytest.approx(result.bound_approximation[-1], rel=1e-6)


def test_iterates_enter_the_predicted_neighbourhood_of_the_minimiser():
    """lambda = 1 > 0: ||u_k - g|| <= B_k + L^k ||v_0 - g||, and the neighbourhood shrinks to the bound's floor."""
    problem = regression_flow(widths=(1, 12, 1), tau=0.5)
    theta0 = problem.parametrization.initial_point()
    result = problem.run(theta0, 15, GaussNewton(max_iterations=5))
    target = problem.energy.target
    initial_gap = float(problem.metric.norm(problem.parametrization.value(theta0) - target))
    for k, theta in enumerate(result.thetas):
        distance = float(problem.metric.norm(problem.parametrization.value(theta) - target))
        assert distance <= result.tracking_bound[k] + problem.constants.lipschitz**k * initial_gap + 1e-12
    final = float(problem.metric.norm(problem.parametrization.value(result.thetas[-1]) - target))
    assert final <= result.tracking_bound[-1] + problem.constants.lipschitz**15 * initial_gap
    assert problem.constants.lipschitz**15 * initial_gap < 0.01 * initial_gap  # the neighbourhood is O(delta)


def test_budget_meets_its_tolerance_with_fewer_iterations():
    problem = regression_flow(widths=(1, 12, 1))
    theta0 = problem.parametrization.initial_point()
    tolerance = 0.02
    budgeted = problem.run(theta0, 6, GaussNewton(max_iterations=40), budget=TrajectoryBudget(tolerance))
    unbudgeted = problem.run(theta0, 6, GaussNewton(max_iterations=40))
    floor = budgeted.bound_approximation.max()
    assert budgeted.tracking_bound.max() <= tolerance + floor
    assert budgeted.inner_iterations.sum() < unbudgeted.inner_iterations.sum()
    assert budgeted.trajectory_error[-1] <= tolerance + floor
    assert isinstance(budgeted.metadata["predicted_inner_iterations"], int)


def test_trajectory_budget_arithmetic():
    budget = TrajectoryBudget(0.1)
    assert budget.per_step_allowance(0.5, 1) == pytest.approx(0.1)
    assert budget.per_step_allowance(0.5, 1000) == pytest.approx(0.05)  # (1 - L) eps in the limit
    assert budget.per_step_allowance(1.0, 4) == pytest.approx(0.025)
    assert TrajectoryBudget.predicted_inner_iterations(1.0, 1e-3, 0.1) == 3
    with pytest.raises(ValueError, match="tolerance"):
        TrajectoryBudget(0.0)


def test_unknown_convexity_gives_uncertified_results():
    problem = regression_flow()
    energy = CallableEnergy(lambda u: 0.5 * problem.metric.inner(u - 1.0, u - 1.0))
    flow = MinimizingMovement(problem.parametrization, energy, problem.metric, 0.2)
    result = flow.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert not result.certified and np.all(np.isnan(result.tracking_bound))
    assert np.all(np.isnan(result.trajectory_error))
    assert "uncertified" in result.table()
    with pytest.raises(ValueError, match="convexity"):
        flow.run(problem.parametrization.initial_point(), 2, GaussNewton(), budget=TrajectoryBudget(0.1))


def test_bad_input_is_rejected():
    problem = regression_flow()
    theta0 = problem.parametrization.initial_point()
    for tau in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="tau"):
            MinimizingMovement(problem.parametrization, problem.energy, problem.metric, tau)
    weights = problem.metric.weights
    semi_convex = GinzburgLandau(0.1, stiffness_1d(32, -1.0, 1.0, "neumann"), weights)
    with pytest.raises(ValueError, match="1/\\|lambda\\|"):
        MinimizingMovement(problem.parametrization, semi_convex, problem.metric, 1.5)
    with pytest.raises(ValueError, match="steps"):
        problem.run(theta0, 0, GaussNewton())
    with pytest.raises(ValueError, match="theta0 has shape"):
        problem.run(theta0[:3], 2, GaussNewton())
    with pytest.raises(ValueError, match="reference has shape"):
        problem.run(theta0, 2, GaussNewton(), reference=torch.zeros(2, 32, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_iterations"):
        GaussNewton(max_iterations=0)
    with pytest.raises(ValueError, match="lr"):
        Adam(lr=-1.0)


def test_non_finite_energy_stops_with_step_and_iteration_and_keeps_the_last_state(tmp_path):
    problem = regression_flow()
    calls = {"count": 0}

    def exploding(u):
        calls["count"] += 1
        value = 0.5 * problem.metric.inner(u, u)
        return value * math.nan if calls["count"] > 40 else value

    flow = MinimizingMovement(problem.parametrization, CallableEnergy(exploding, convexity=1.0), problem.metric, 0.2)
    with pytest.raises(MMSDivergenceError, match=r"MMS step \d+: .* iteration \d+ .*non-finite.* 3 retries") as caught:
        flow.run(problem.parametrization.initial_point(), 50, Adam(max_iterations=5), checkpoint=tmp_path / "run.npz")
    error = caught.value
    assert error.retries == 3 and error.reason.name == "NON_FINITE"
    assert error.result.steps_done == error.step - 1
    assert torch.isfinite(error.result.thetas[-1]).all()
    assert MMSResult.load(tmp_path / "run.npz").steps_done == error.step - 1


def test_results_round_trip_and_reject_corrupted_files(tmp_path):
    problem = regression_flow()
    result = problem.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    path = result.save(tmp_path / "result.npz")
    loaded = MMSResult.load(path)
    assert np.array_equal(loaded.tracking_bound, result.tracking_bound)
    assert all(torch.equal(a, b) for a, b in zip(loaded.thetas, result.thetas))
    assert loaded.metadata == result.metadata and loaded.stop_reasons == result.stop_reasons
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ResultFileError, match="truncated or corrupted"):
        MMSResult.load(truncated)
    with pytest.raises(FileNotFoundError):
        MMSResult.load(tmp_path / "missing.npz")


class _Interrupt(Exception):
    pass


class _InterruptingGaussNewton(GaussNewton):
    """Gauss-Newton that raises after a given number of solves (a simulated kill)."""

    def __init__(self, interrupt_after: int, **options):
        super().__init__(**options)
        self.interrupt_after, self.calls = interrupt_after, 0

    def solve(self, subproblem, theta0, tolerance=None, state=None):
        self.calls += 1
        if self.calls > self.interrupt_after:
            raise _Interrupt
        return super().solve(subproblem, theta0, tolerance, state)

    def __repr__(self):  # the checkpoint compares solver settings, not the interruption
        return repr(GaussNewton(max_iterations=self.max_iterations))


def test_interrupted_run_resumes_to_identical_results(tmp_path):
    problem = regression_flow()
    theta0 = problem.parametrization.initial_point()
    uninterrupted = problem.run(theta0, 5, GaussNewton(max_iterations=3))
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(_Interrupt):
        problem.run(theta0, 5, _InterruptingGaussNewton(2, max_iterations=3), checkpoint=path)
    assert MMSResult.load(path).steps_done == 2
    resumed = problem.run(theta0, 5, GaussNewton(max_iterations=3), checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert np.array_equal(resumed.tracking_bound, uninterrupted.tracking_bound)
    with pytest.raises(ValueError, match="tau"):
        regression_flow(tau=0.3).run(theta0, 5, GaussNewton(max_iterations=3), checkpoint=path)
    with pytest.raises(ValueError, match="solver"):
        problem.run(theta0, 5, GaussNewton(max_iterations=3, initial_damping=1e-2), checkpoint=path)


def test_demo_command_runs(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "mms_manifolds", "demo", "--steps", "2", "--output-dir", str(tmp_path), "--quick"],
        capture_output=True,
        text=True,
    )  # no timeout: the work is bounded, and a clock-based limit fails on a busy machine
    assert completed.returncode == 0, completed.stderr
    assert "gauss-newton" in completed.stdout and "adam" in completed.stdout
    assert (tmp_path / "demo.png").exists() and (tmp_path / "demo_gauss-newton.npz").exists()


def test_progress_lines_and_plot(tmp_path, capsys):
    problem = regression_flow()
    result = problem.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=1), progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and "B = " in lines[0] and "e = " in lines[0]
    path = result.plot(tmp_path / "run.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axis = result.figure().axes[0]  # the figure plot() saves, built without pyplot
    assert axis.get_ylabel() and "certified bound" in axis.get_title()
    assert all(float(tick).is_integer() for tick in axis.get_xticks())  # steps, not 0.5-steps


def test_a_saved_result_loads_equal_nans_included(tmp_path):
    problem = regression_flow()
    result = problem.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=1))
    assert np.isnan(result.step_tolerance).all()  # no budget: a column of nan
    loaded = MMSResult.load(result.save(tmp_path / "run.npz"))
    assert loaded == result and not (loaded != result)
    loaded.columns["energy"][1] += 1e-12
    assert loaded != result
    assert "bounds certified" in result.table()


def test_matrix_free_mode_never_forms_the_jacobian(monkeypatch):
    """With solve_mode='cg' a whole MMS run (metric, damping, GN steps, residual split, bound) uses JVP/VJP only."""
    problem = regression_flow()
    flow = MinimizingMovement(problem.parametrization, problem.energy, problem.metric, problem.tau, solve_mode="cg")

    def refuse(theta):
        raise AssertionError("the (N, m, p) Jacobian was materialised in the matrix-free mode")

    monkeypatch.setattr(problem.parametrization, "jacobian", refuse)
    result = flow.run(problem.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert np.all(result.trajectory_error <= result.tracking_bound * (1 + 1e-9) + 1e-13)


def test_the_convexity_modulus_is_computed_once_per_flow():
    """Every step used to ask the energy again (a dense Cholesky and an eigenvalue problem for a stiffness energy)."""
    problem = heat_flow()
    calls = []
    original = type(problem.energy).convexity

    def counting(energy, metric):
        calls.append(1)
        return original(energy, metric)

    energy = problem.energy
    energy.convexity = counting.__get__(energy)
    flow = MinimizingMovement(problem.parametrization, energy, problem.metric, problem.tau)
    result = flow.run(problem.parametrization.initial_point(), 4, GaussNewton(max_iterations=1))
    assert len(calls) == 1 and result.certified
