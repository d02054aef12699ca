"""``run(residual="total")``: a certified step that books only the total residual rho_k, no split.

Held to the split run (the same tracking bound, bit for bit), to a closed-form reference (a linear-in-parameters
model, whose exact network step and residual are known), to the exact MMS iterates (no violation), and counted:
no split, no linearisation, no Jacobian in that mode.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mms_manifolds import (
    LBFGS,
    Adam,
    GaussNewton,
    IncrementManifold,
    MinimizingMovement,
    TorchParametrization,
    TrajectoryBudget,
)
from mms_manifolds.ledger import TrackingLedger
from mms_manifolds.run_settings import RunSettings
from mms_manifolds.schemes import BDF2, ImplicitEuler
from mms_manifolds.subproblem import MMSSubproblem, Residual

from problems import heat_flow, linear_regression_flow, regression_flow

_SPLIT_COLUMNS = ("residual_tangential", "residual_normal", "bound_inexactness", "bound_approximation")


def _column(result, name) -> np.ndarray:
    return np.asarray(result.columns[name], dtype=np.float64)


def _closed_form_step(flow: MinimizingMovement, u_old: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    r"""The exact network step of the linear model and its residual's norms ``(u, total, normal)``.

    :math:`u = \Phi\theta` with :math:`\theta` minimising :math:`\tfrac12\|u - g\|_M^2 + \|u - u_k\|_M^2/(2\tau)`:
    the :math:`M`-projection onto :math:`\operatorname{range}\Phi` of :math:`(g + u_k/\tau)/(1 + 1/\tau)`;
    :math:`r = M^{-1}\nabla F_k(u) = (u - g) + (u - u_k)/\tau`, tangential part 0 at the exact step.
    """
    basis, weights, tau = flow.parametrization.basis.squeeze(1), flow.metric.weights, flow.tau  # (N, features)
    target = flow.energy.target.reshape(-1)
    goal = (target + u_old.reshape(-1) / tau) / (1 + 1 / tau)
    root = weights.sqrt().unsqueeze(-1)
    coefficients = torch.linalg.lstsq(root * basis, root.squeeze(-1) * goal).solution
    u = (basis @ coefficients).reshape(u_old.shape)
    r = (u - flow.energy.target) + (u - u_old) / tau
    return u, float(flow.metric.norm(r)), float(flow.metric.norm(r))


def test_total_bound_equals_the_split_bound_and_the_closed_form_recursion_on_a_linear_model():
    """GN solves the linear model's steps exactly: rho_k is the closed form's, and B_k its recursion, in both modes."""
    flow = linear_regression_flow()
    theta0 = flow.parametrization.initial_point()
    runs = {parts: flow.run(theta0, 4, GaussNewton(max_iterations=20), residual=parts) for parts in ("split", "total")}
    split, total = runs["split"], runs["total"]
    assert split.certified and total.certified
    assert np.array_equal(_column(split, "tracking_bound"), _column(total, "tracking_bound"))  # bit for bit
    assert np.array_equal(_column(split, "residual_total"), _column(total, "residual_total"), equal_nan=True)
    assert np.array_equal(_column(split, "bound_rounding"), _column(total, "bound_rounding"))
    lipschitz, mu = flow.constants.lipschitz, flow.constants.strong_convexity
    u_old, hand = flow.parametrization.value(theta0), 0.0
    for k in range(1, 5):
        u, rho, normal = _closed_form_step(flow, u_old)
        torch.testing.assert_close(flow.parametrization.value(torch.as_tensor(total.thetas[k])), u, rtol=0, atol=1e-10)
        assert total.residual_total[k] == pytest.approx(rho, rel=1e-9)
        assert split.residual_tangential[k] <= 1e-9 * rho  # the exact step: nothing tangential left
        assert split.residual_normal[k] == pytest.approx(normal, rel=1e-9)
        hand = lipschitz * hand + rho / mu
        assert total.tracking_bound[k] == pytest.approx(hand + total.bound_rounding[k], rel=1e-9)
        u_old = u
    for name in _SPLIT_COLUMNS:
        assert np.all(np.isnan(_column(total, name)[1:])), name


@pytest.mark.parametrize(
    "solver",
    [Adam(lr=1e-2, max_iterations=4), LBFGS(max_iterations=3), GaussNewton(max_iterations=1)],
    ids=["adam", "lbfgs", "gauss-newton"],
)
def test_total_bound_holds_on_the_exact_flow_and_equals_the_split_bound(solver):
    """Unconverged steps of a tanh network against the exact MMS iterates: 0 violations; the same bound as the split's."""
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    split = flow.run(theta0, 5, solver)
    total = flow.run(theta0, 5, solver, residual="total")
    assert total.certified and "certification_withdrawn" not in total.metadata
    error, bound = _column(total, "trajectory_error"), _column(total, "tracking_bound")
    assert np.all(np.isfinite(bound)) and np.all(error <= bound)  # the driver checks e_k <= B_k every step, too
    assert np.all(error[1:] > 0)
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(split.thetas, total.thetas))
    assert np.array_equal(_column(split, "tracking_bound"), bound)
    for name in _SPLIT_COLUMNS:
        assert np.all(np.isnan(_column(total, name)[1:])), name
    assert np.all(np.isfinite(_column(split, "residual_tangential")[1:]))
    assert total.metadata["residual"] == "total" and split.metadata["residual"] == "split"
    assert any("residual='total'" in note for note in total.metadata["notes"])


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()], ids=["euler", "bdf2"])
def test_total_bound_of_the_heat_flow_equals_the_split_bound_adaptive_and_bdf2_included(scheme):
    """Both schemes (BDF2's Richardson start and its G-norm recursion) and adaptive steps: the same certified bound."""
    base = heat_flow()
    flow = MinimizingMovement(base.parametrization, base.energy, base.metric, base.tau, scheme=scheme)
    theta0, solver = flow.parametrization.initial_point(), GaussNewton(max_iterations=2)
    for options in ({}, {"time_tolerance": 1e-4}):
        split = flow.run(theta0, 4, solver, **options)
        total = flow.run(theta0, 4, solver, residual="total", **options)
        assert split.certified and total.certified
        assert np.array_equal(_column(split, "tracking_bound"), _column(total, "tracking_bound"))
        assert total.metadata["scheme_record"]["time_steps"] == split.metadata["scheme_record"]["time_steps"]
        for name in _SPLIT_COLUMNS:
            assert np.all(np.isnan(_column(total, name)[1:])), name


class _Counter:
    """Counts the calls of the methods it wraps (never times them)."""

    def __init__(self, monkeypatch, targets):
        self.calls = {f"{owner.__name__}.{name}": 0 for owner, name in targets}
        for owner, name in targets:
            original, key = getattr(owner, name), f"{owner.__name__}.{name}"

            def counting(*args, _original=original, _key=key, **kwargs):
                self.calls[_key] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(owner, name, counting)


_LINEARISATION = (
    (MMSSubproblem, "_residual"),
    (IncrementManifold, "split_norms"),
    (IncrementManifold, "metric_factorization"),
    (IncrementManifold, "egrad2rgrad"),
    (TorchParametrization, "jacobian"),
    (TorchParametrization, "jvp"),
)


@pytest.mark.parametrize("solver", [Adam(lr=1e-2, max_iterations=3), LBFGS(max_iterations=3)], ids=["adam", "lbfgs"])
def test_no_split_no_solve_with_g_and_no_jacobian_in_total_mode(monkeypatch, solver):
    """Counted: a first-order run that books the total forms nothing of the linearisation; the split run one split per step."""
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    counter = _Counter(monkeypatch, _LINEARISATION)
    total = flow.run(theta0, 3, solver, residual="total")
    assert total.certified
    assert all(count == 0 for count in counter.calls.values()), counter.calls
    flow.run(theta0, 3, solver)
    assert counter.calls["MMSSubproblem._residual"] == 3 and counter.calls["IncrementManifold.split_norms"] == 3


def test_gauss_newton_skips_its_final_split_where_the_run_books_the_total(monkeypatch):
    """Counted: ``final_residual=True`` measures the final split for the ledger only; a total-mode run books none."""
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    counter = _Counter(monkeypatch, ((MMSSubproblem, "_residual"),))
    total = flow.run(theta0, 2, GaussNewton(max_iterations=2), residual="total")
    assert total.certified and counter.calls["MMSSubproblem._residual"] == 0
    flow.run(theta0, 2, GaussNewton(max_iterations=2))
    assert counter.calls["MMSSubproblem._residual"] == 2


def test_total_residual_reuses_a_kept_split_and_is_the_same_number():
    """A split kept for the point gives its total (no recomputation); a fresh total is the split's total, bit for bit."""
    flow = regression_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    moved = theta + 0.01
    fresh = subproblem.residual(moved, "total")
    assert not fresh.split and math.isnan(fresh.tangential) and math.isnan(fresh.normal)
    split = subproblem.residual(moved)
    assert split.split and split.total == fresh.total
    assert subproblem.residual(moved, "total") == Residual.total_only(split.total)
    assert Residual.total_only(1.0).booked() == (1.0,) and len(split.booked()) == 3
    with pytest.raises(ValueError, match="parts"):
        subproblem.residual(moved, "tangential")


def test_ledger_books_nan_parts_and_a_finite_bound_from_a_total_alone():
    flow = regression_flow()
    u = flow.parametrization.value(flow.parametrization.initial_point())
    ledger = TrackingLedger(flow.constants, flow.metric, u.dtype, u.numel())
    from mms_manifolds.ledger import BoundParts

    previous = BoundParts(0.5, 0.3, 0.2, 1e-15)
    split = ledger.step(previous, Residual(0.05, 0.03, 0.04), u + 0.01, u)
    total = ledger.step(previous, Residual.total_only(0.05), u + 0.01, u)
    assert total.tracking_bound == split.tracking_bound and total.rounding == split.rounding
    assert math.isnan(total.inexactness) and math.isnan(total.approximation)


def test_total_mode_resumes_bit_for_bit_and_refuses_the_other_mode(tmp_path):
    flow, path = regression_flow(), tmp_path / "total.npz"
    theta0, solver = flow.parametrization.initial_point(), Adam(lr=1e-2, max_iterations=3)
    uninterrupted = flow.run(theta0, 4, solver, residual="total")
    flow.run(theta0, 2, solver, residual="total", checkpoint=path)
    with pytest.raises(ValueError, match="residual = 'total', this run has 'split'"):
        flow.run(theta0, 4, solver, checkpoint=path)
    resumed = flow.run(theta0, 4, solver, residual="total", checkpoint=path)
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    for name in uninterrupted.columns:
        if name != "wall_time":
            assert np.array_equal(_column(resumed, name), _column(uninterrupted, name), equal_nan=True), name
    assert resumed.metadata["residual"] == "total" and resumed.certified
    split_path = tmp_path / "split.npz"
    flow.run(theta0, 2, solver, checkpoint=split_path)
    with pytest.raises(ValueError, match="residual = 'split', this run has 'total'"):
        flow.run(theta0, 4, solver, residual="total", checkpoint=split_path)


def test_bdf2_total_mode_resumes_bit_for_bit(tmp_path):
    """BDF2's G-norm parts (nan for the split parts) travel through the checkpoint's JSON record."""
    base, path = heat_flow(), tmp_path / "bdf2.npz"
    flow = MinimizingMovement(base.parametrization, base.energy, base.metric, base.tau, scheme=BDF2())
    theta0, solver = flow.parametrization.initial_point(), GaussNewton(max_iterations=2)
    uninterrupted = flow.run(theta0, 4, solver, residual="total")
    flow.run(theta0, 2, solver, residual="total", checkpoint=path)
    resumed = flow.run(theta0, 4, solver, residual="total", checkpoint=path)
    assert np.array_equal(_column(resumed, "tracking_bound"), _column(uninterrupted, "tracking_bound"))
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(resumed.thetas, uninterrupted.thetas))


def test_a_checkpoint_written_before_the_setting_resumes_as_split():
    settings = RunSettings(
        0.2, 1.0, 1 / 1.2, 6.0, True, False, "Adam()", 3, 10, 1e-3, "dense", "", None, "split", (), {"network": "a"}
    )
    stored = {key: value for key, value in settings.as_metadata().items() if key != "residual"}
    assert settings.resume_conflict(stored, 2) is None
    total = RunSettings(**{**vars(settings), "residual": "total"})
    assert "residual = 'split'" in total.resume_conflict(stored, 2)


def test_bad_residual_settings_are_named():
    flow = regression_flow()
    theta0, solver = flow.parametrization.initial_point(), Adam(max_iterations=1)
    with pytest.raises(ValueError, match="residual must be one of"):
        flow.run(theta0, 1, solver, residual="tangential")
    with pytest.raises(TypeError, match="residual"):
        flow.run(theta0, 1, solver, residual=True)
    with pytest.raises(ValueError, match="certify=False"):
        flow.run(theta0, 1, solver, residual="total", certify=False)
    with pytest.raises(ValueError, match="TrajectoryBudget"):
        flow.run(theta0, 1, solver, residual="total", budget=TrajectoryBudget(1e-2))


def test_total_mode_is_refused_for_a_semidefinite_metric():
    """A jet metric that weighs values only: M^{-1} grad F_k does not exist, so there is no total to book."""
    from mms_manifolds.meshfree import JetMetric, JetParametrization, RitzEnergy, box_midpoint_grid

    from cases import mlp

    jets = JetParametrization(mlp((1, 4, 1), 0), {"interior": box_midpoint_grid(9, 1, ("value", "gradient"))})
    flow = MinimizingMovement(jets, RitzEnergy(jets, diffusion=0.25), JetMetric(jets, value={"interior": 1.0}), tau=0.02)
    assert not flow.metric.positive_definite
    with pytest.raises(ValueError, match="semi-definite"):
        flow.run(jets.initial_point(), 1, Adam(max_iterations=1), residual="total")
