"""ENGD's logarithmic grid line search: the grid, its minimiser, and GaussNewton(line_search="logarithmic-grid")."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mms_manifolds import GaussNewton, L2Metric, L2Regression, LinearParametrization, MinimizingMovement
from mms_manifolds.solvers.line_search import (
    ENGD_GRID_SIZE,
    ENGD_LARGEST_LENGTH,
    GridPoint,
    grid_minimiser,
    logarithmic_grid,
)

from problems import regression_flow


def test_the_engd_grid_is_two_to_two_to_the_minus_29_halving_exactly():
    lengths = logarithmic_grid()
    assert len(lengths) == ENGD_GRID_SIZE == 31
    assert lengths[0] == ENGD_LARGEST_LENGTH == 2.0 and lengths[-1] == 2.0**-29
    assert all(shorter * 2 == longer for longer, shorter in zip(lengths, lengths[1:]))
    assert logarithmic_grid(0.75, 3) == (0.75, 0.375, 0.1875)


@pytest.mark.parametrize(("name", "value"), [("largest", 0.0), ("largest", -1.0), ("count", 0)])
def test_the_grid_refuses_empty_or_backward_grids(name, value):
    with pytest.raises(ValueError, match=name):
        logarithmic_grid(**{name: value})


@settings(max_examples=40, deadline=None)
@given(exponent=st.integers(-29, 1), offset=st.floats(-0.3, 0.3))
def test_on_an_exact_quadratic_the_search_returns_the_grid_minimiser(exponent, offset):
    """c(eta) = (log2 eta - m)^2 has its grid minimiser at the grid point nearest m in log2 (|offset| < 1/2)."""
    centre = exponent + offset
    evaluated: list[float] = []

    def cost(length: float) -> float:
        evaluated.append(length)
        return (math.log2(length) - centre) ** 2

    best = grid_minimiser(cost, logarithmic_grid(), start_cost=math.inf)
    assert best is not None and best.length == 2.0**exponent
    assert best.cost == (math.log2(best.length) - centre) ** 2
    assert evaluated == list(logarithmic_grid())  # every length once, largest first


def test_on_a_quadratic_in_the_length_the_best_grid_point_is_the_nearest_in_cost():
    """c(eta) = (eta - 0.3)^2 - 1: of the grid 2, 1, 1/2, 1/4, ... the least cost is at 1/4 (0.0025 above -1), not 1/2 (0.04)."""
    best = grid_minimiser(lambda length: (length - 0.3) ** 2 - 1.0, logarithmic_grid(), start_cost=0.0)
    assert best is not None and best.length == 0.25 and best.cost == pytest.approx(0.05**2 - 1.0, abs=1e-15)


def test_only_finite_costs_below_the_start_count():
    costs = {2.0: math.nan, 1.0: math.inf, 0.5: 3.0, 0.25: 1.0}
    assert grid_minimiser(costs.__getitem__, list(costs), start_cost=2.0) == GridPoint(0.25, 1.0)
    assert grid_minimiser(costs.__getitem__, list(costs), start_cost=1.0) is None  # 1.0 is not below 1.0


def _overdetermined_linear_flow(tau: float = 1e12) -> tuple[MinimizingMovement, torch.Tensor, torch.Tensor]:
    """phi(theta) = B theta, B 30 x 6 of rank 6 (singular values 1 .. 1e-3), E(u) = |u - y|^2/2: the step is least squares."""
    generator = torch.Generator().manual_seed(3)
    left, _ = torch.linalg.qr(torch.randn(30, 6, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    basis = left @ torch.diag(torch.logspace(0, -3, 6, dtype=torch.float64)) @ right.T
    target = torch.cos(torch.linspace(0, 4, 30, dtype=torch.float64)).unsqueeze(-1)
    metric = L2Metric(torch.ones(30, dtype=torch.float64))
    flow = MinimizingMovement(LinearParametrization(basis), L2Regression(target, metric), metric, tau, damping=0.0)
    return flow, basis, target


def test_engd_on_a_linear_in_parameters_model_lands_on_the_exact_least_squares_solution():
    """ENGD (full pseudo-inverse, no acceleration, the grid): length 1 of the grid is the exact minimiser of the
    proximal least-squares problem; theta* = (B^T B (1 + 1/tau))^{-1} B^T (y + u_0/tau) solved by lstsq."""
    flow, basis, target = _overdetermined_linear_flow()
    theta0 = flow.parametrization.initial_point()
    solver = GaussNewton(
        max_iterations=1, line_search="logarithmic-grid", step_cutoff=1e-30, geodesic_acceleration=False
    )
    result = solver.solve(flow.subproblem(theta0), theta0)
    anchor = flow.parametrization.value(theta0)
    prox = (anchor + flow.tau * target) / (1 + flow.tau)
    expected = torch.linalg.lstsq(basis, prox).solution.squeeze(-1)
    assert torch.allclose(result.point, expected, rtol=1e-9, atol=1e-9)
    assert result.state.step_length == 1.0


def test_each_iteration_takes_the_least_cost_of_the_31_lengths_along_the_step():
    """On a nonlinear regression step the first iteration's cost is the minimum over the grid along -A^+ g, evaluated here."""
    flow = regression_flow(seed=4, tau=1e3)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    model = subproblem.gauss_newton_model(theta0)
    step = model.step(0.0, 1e-30)
    by_hand = min(subproblem.cost(theta0 + length * step) for length in logarithmic_grid())
    solver = GaussNewton(
        max_iterations=1,
        globalization="line-search",
        line_search="logarithmic-grid",
        step_cutoff=1e-30,
        geodesic_acceleration=False,
    )
    result = solver.solve(subproblem, theta0)
    assert result.cost_history[1] == pytest.approx(by_hand, rel=1e-12)
    assert result.cost_history[1] < result.cost_history[0]
    assert result.state.step_length in logarithmic_grid()


def test_the_logarithmic_grid_never_raises_the_cost():
    flow = regression_flow(seed=7, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    result = GaussNewton(max_iterations=8, globalization="line-search", line_search="logarithmic-grid").solve(
        flow.subproblem(theta0), theta0
    )
    costs = result.cost_history
    assert all(after <= before for before, after in zip(costs, costs[1:])), costs
    assert not result.stop_reason.failed


def test_the_grid_starts_at_grid_largest_and_takes_the_least_cost_of_its_31_lengths():
    """``grid_largest=1`` (Woodbury-ENGD's and SPRING's grid, 2^0 .. 2^-30): the iteration's cost is the minimum over
    those lengths, evaluated here; the trial lengths are exactly them, largest first (counted)."""
    flow = regression_flow(seed=4, tau=1e3)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    step = subproblem.gauss_newton_model(theta0).step(0.0, 1e-30)
    lengths = logarithmic_grid(1.0)
    assert lengths[0] == 1.0 and lengths[-1] == 2.0**-30 and len(lengths) == ENGD_GRID_SIZE
    by_hand = min(subproblem.cost(theta0 + length * step) for length in lengths)
    solver = GaussNewton(
        max_iterations=1,
        globalization="line-search",
        line_search="logarithmic-grid",
        grid_largest=1.0,
        step_cutoff=1e-30,
        geodesic_acceleration=False,
    )
    tried = []
    original = solver._trial_cost

    def counted(subproblem, candidate):
        tried.append(float((candidate - theta0).norm() / step.norm()))
        return original(subproblem, candidate)

    solver._trial_cost = counted
    result = solver.solve(subproblem, theta0)
    assert result.cost_history[1] == pytest.approx(by_hand, rel=1e-12)
    assert result.state.step_length in lengths
    assert tried == pytest.approx(list(lengths), rel=1e-9)


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError), ("1", TypeError)])
def test_the_grid_largest_length_is_checked(bad, error):
    with pytest.raises(error, match="grid_largest"):
        GaussNewton(line_search="logarithmic-grid", grid_largest=bad)
