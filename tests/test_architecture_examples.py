"""The worked examples of docs/architecture.md ("Where to add"), each checked against an exact answer."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mms_manifolds import (
    Energy,
    GaussNewton,
    IncrementManifold,
    InnerResult,
    InnerSolver,
    L2Metric,
    L2Regression,
    LinearParametrization,
    Metric,
    MinimizingMovement,
    MMSResult,
    SolverState,
    StopReason,
)
from mms_manifolds.linalg import GramFactorization, GramOperator

DTYPE = torch.float64


def _square_linear_flow(tau: float = 0.1, **options) -> MinimizingMovement:
    """phi(theta) = B theta with an invertible B (N = p = 6): the network reaches every state, steps are exact."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.eye(6, dtype=DTYPE) + 0.1 * torch.randn(6, 6, generator=generator, dtype=DTYPE)
    metric = L2Metric(torch.full((6,), 1 / 6, dtype=DTYPE))
    target = torch.linspace(-1, 1, 6, dtype=DTYPE).unsqueeze(-1)
    return MinimizingMovement(LinearParametrization(basis), L2Regression(target, metric), metric, tau, **options)


def test_a_time_scheme_bdf2_from_step_problems():
    """BDF2: u_{k+1} = argmin E(u) + ||u - (4u_k - u_{k-1})/3||^2_M / (2 (2 tau/3)), the first step implicit Euler."""
    flow = _square_linear_flow(damping=0.0)
    solver = GaussNewton(max_iterations=1, globalization="line-search")
    theta0 = torch.zeros(6, dtype=DTYPE)
    thetas = [theta0, solver.solve(flow.subproblem(theta0), theta0).point]
    for _ in range(3):
        u_previous, u_k = (flow.parametrization.value(theta) for theta in thetas[-2:])
        step = flow.step_problem((4 * u_k - u_previous) / 3, 2 * flow.tau / 3)
        thetas.append(solver.solve(step, thetas[-1]).point)
    # the exact BDF2 recursion for E = ||u - g||^2/2: u_{k+1} = (a + s g) / (1 + s), a = (4u_k - u_{k-1})/3, s = 2tau/3
    g, s = flow.energy.target, 2 * flow.tau / 3
    exact = [torch.zeros_like(g), g * flow.tau / (1 + flow.tau)]
    for _ in range(3):
        exact.append(((4 * exact[-1] - exact[-2]) / 3 + s * g) / (1 + s))
    for theta, state in zip(thetas, exact):
        assert torch.allclose(flow.parametrization.value(theta), state, atol=1e-12)


class Doubled(Metric):
    """M = 2 diag(w): a metric needs only ``apply``."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return 2 * self.weights.unsqueeze(-1) * v


def test_a_metric_with_only_apply():
    flow = _square_linear_flow()
    manifold = IncrementManifold(flow.parametrization, Doubled(flow.metric.weights), damping=0.0)
    theta = torch.ones(6, dtype=DTYPE)
    g = torch.linspace(1, 2, 6, dtype=DTYPE)
    basis = flow.parametrization.basis[:, 0, :]
    gram = basis.T @ (2 * flow.metric.weights.unsqueeze(-1) * basis)  # G = B^T M B
    assert torch.allclose(manifold.egrad2rgrad(theta, g), torch.linalg.solve(gram, g), atol=1e-10)


class Quartic(Energy):
    """E(u) = sum_i w_i u_i^4 / 4: an energy needs only ``value``; gradient and Hessian come from autodiff."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return (self.weights.unsqueeze(-1) * u**4).sum() / 4


def test_an_energy_with_only_value():
    weights = torch.full((6,), 1 / 6, dtype=DTYPE)
    u = torch.linspace(-1, 1, 6, dtype=DTYPE).unsqueeze(-1)
    v = torch.ones_like(u)
    energy = Quartic(weights)
    assert torch.allclose(energy.gradient(u), weights.unsqueeze(-1) * u**3)
    assert torch.allclose(energy.hessian_matvec(u, v), 3 * weights.unsqueeze(-1) * u**2 * v)
    assert energy.convexity(L2Metric(weights)) is None  # not stated: no bound is certified


class OneNaturalGradientStep(InnerSolver):
    """One step theta - eta grad f at the rate eta = 1/(c + 1/tau): a solver implements ``_solve``."""

    name = "one-natural-gradient-step"

    def _solve(self, subproblem, theta0, tolerance, state):
        theta = theta0 - subproblem.riemannian_step_size(theta0) * subproblem.riemannian_gradient(theta0)
        costs = [subproblem.cost(theta0), subproblem.cost(theta)]
        residuals = [subproblem.tangential_residual(theta)]
        return InnerResult(theta, 1, costs, residuals, [1], 0.0, StopReason.MAX_ITERATIONS)


def test_a_solver_with_only_solve():
    """For regression (Hess E = M) without damping, the step at rate 1/(1 + 1/tau) is the exact step."""
    flow = _square_linear_flow(damping=0.0)
    result = flow.run(torch.zeros(6, dtype=DTYPE), 2, OneNaturalGradientStep(max_iterations=1))
    assert bool((result.trajectory_error <= 1e-12).all())
    assert bool((result.residual_total[1:] <= 1e-12).all())


@dataclasses.dataclass(frozen=True)
class SolveCount(SolverState):
    """What the solver below carries from step to step: the number of solves so far."""

    solves: int = 0

    def __post_init__(self):
        if isinstance(self.solves, bool) or not isinstance(self.solves, int) or self.solves < 0:
            raise ValueError(f"SolveCount solves must be a whole number >= 0, got {self.solves!r}")


class DecayingNaturalGradientStep(OneNaturalGradientStep):
    """One step at the rate eta/(1 + k), k the solves before it: a solver whose state travels with the run."""

    state_type = SolveCount  # initial_state() is SolveCount(); the driver checkpoints state.as_metadata()

    def _solve(self, subproblem, theta0, tolerance, state):
        rate = subproblem.riemannian_step_size(theta0) / (1 + state.solves)
        theta = theta0 - rate * subproblem.riemannian_gradient(theta0)
        costs = [subproblem.cost(theta0), subproblem.cost(theta)]
        residuals = [subproblem.tangential_residual(theta)]
        after = SolveCount(state.solves + 1)
        return InnerResult(theta, 1, costs, residuals, [1], 0.0, StopReason.MAX_ITERATIONS, state=after)


def test_a_solver_with_a_warm_start_state(tmp_path):
    """u_{k+1} - g = (1 - eta/(1 + k))(u_k - g), eta = tau/(1 + tau); a resumed run repeats an uninterrupted one."""
    flow = _square_linear_flow(damping=0.0)
    solver, theta0 = DecayingNaturalGradientStep(max_iterations=1), torch.zeros(6, dtype=DTYPE)
    uninterrupted = flow.run(theta0, 4, solver)
    g, eta = flow.energy.target, flow.tau / (1 + flow.tau)
    exact = [torch.zeros_like(g)]
    for k in range(4):
        exact.append(g + (1 - eta / (1 + k)) * (exact[-1] - g))
    for theta, state in zip(uninterrupted.thetas, exact):
        assert torch.allclose(flow.parametrization.value(theta), state, atol=1e-12)
    assert uninterrupted.metadata["solver_state"] == {"solves": 4}
    path = tmp_path / "run.npz"
    flow.run(theta0, 2, solver, checkpoint=path)
    assert MMSResult.load(path, dtype=DTYPE).metadata["solver_state"] == {"solves": 2}
    resumed = flow.run(theta0, 4, solver, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    with pytest.raises(ValueError, match="SolveCount solves"):
        solver.state_from_metadata({"solves": -1})


class EigenSolve:
    """A solve mode: its name, whether it forms J, and the factorisations of the metric's and the step's Gram operators."""

    name = "eigen"
    forms_jacobian = True

    def factorize(self, operator: GramOperator) -> GramFactorization:  # the metric's: it also splits residuals
        return GramFactorization(operator.gram_matrix(), mode=self.name, operator=operator)

    def factorize_weighted(self, operator: GramOperator) -> GramFactorization:
        return GramFactorization(operator.gram_matrix(), mode=self.name)


def test_a_solve_mode_with_two_factorisations():
    flow = _square_linear_flow()
    plugged = MinimizingMovement(flow.parametrization, flow.energy, flow.metric, flow.tau, solve_mode=EigenSolve())
    assert plugged.manifold.solve_choice.reason == "eigen, as given"
    theta = torch.ones(6, dtype=DTYPE)
    g = torch.linspace(1, 2, 6, dtype=DTYPE)
    assert torch.allclose(plugged.manifold.egrad2rgrad(theta, g), flow.manifold.egrad2rgrad(theta, g), atol=1e-10)
    with pytest.raises(ValueError, match="solve_mode"):
        IncrementManifold(flow.parametrization, flow.metric, solve_mode=object())
    assert math.isfinite(plugged.run(theta, 1, GaussNewton(max_iterations=2)).residual_total[-1])
