"""SPRING's momentum in GaussNewton (``GaussNewton(momentum=...)``, ``mms_manifolds.solvers.momentum``)."""

from __future__ import annotations

import math

import pytest
import torch

from mms_manifolds import GaussNewton, L2Metric, L2Regression, LinearParametrization, MinimizingMovement, MMSResult
from mms_manifolds.solvers import GaussNewtonState, MomentumGaussNewtonState, RowSampling, SubspaceGaussNewton
from mms_manifolds.solvers.state import metadata_problem

from problems import regression_flow

DAMPING = 1e-2  # step_damping, relative to tr(A)/p


def _spring(momentum: float, iterations: int = 1, **options) -> GaussNewton:
    return GaussNewton(
        max_iterations=iterations,
        globalization="line-search",
        step_filter="tikhonov",
        step_damping=DAMPING,
        geodesic_acceleration=False,
        momentum=momentum,
        **options,
    )


def _linear_flow(count: int, size: int) -> MinimizingMovement:
    """phi(theta) = Phi theta on ``count`` nodes with ``size`` parameters, E(u) = |u - y|^2_M / 2, tau = 1."""
    generator = torch.Generator().manual_seed(3)
    basis = torch.randn(count, size, generator=generator, dtype=torch.float64)
    metric = L2Metric(torch.rand(count, generator=generator, dtype=torch.float64) + 0.5)
    target = torch.cos(torch.linspace(0, 4, count, dtype=torch.float64)).unsqueeze(-1)
    return MinimizingMovement(LinearParametrization(basis), L2Regression(target, metric), metric, 1.0, damping=0.0)


def _spring_reference(cost, theta: torch.Tensor, momentum: float, iterations: int) -> torch.Tensor:
    r"""SPRING's kernel-side update written out: A = B^T B, g = B^T s from the quadratic cost's own derivatives,
    phi_k = beta phi_{k-1} + B^T (B B^T + lambda I)^{-1}(-s - beta B phi_{k-1}), theta += phi_k (unit steps)."""
    hessian = torch.autograd.functional.hessian(cost, theta)
    values, vectors = torch.linalg.eigh(hessian)
    kept = values > 1e-12 * values.max()  # A = B^T B with B = Lambda^{1/2} V^T on A's range (rank rows)
    gram_side = values[kept].sqrt().unsqueeze(-1) * vectors[:, kept].T
    damping = DAMPING * float(torch.trace(hessian)) / theta.numel()
    direction = torch.zeros_like(theta)
    for _ in range(iterations):
        point = theta.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(cost(point), point)
        residual = (vectors[:, kept].T @ gradient) / values[kept].sqrt()  # g = B^T s (g lies in A's range)
        kernel = gram_side @ gram_side.T + damping * torch.eye(gram_side.shape[0], dtype=theta.dtype)
        solved = torch.linalg.solve(kernel, -residual - momentum * (gram_side @ direction))
        direction = momentum * direction + gram_side.T @ solved
        theta = theta + direction
    return theta.detach()


@pytest.mark.parametrize(("count", "size"), [(40, 8), (12, 30)])  # the model on its parameter and its kernel side
def test_spring_iterations_equal_the_kernel_side_update_on_a_linear_model(count, size):
    flow = _linear_flow(count, size)
    theta0 = flow.parametrization.initial_point() + 0.1
    subproblem = flow.subproblem(theta0)
    momentum, iterations = 0.6, 4
    result = _spring(momentum, iterations).solve(subproblem, theta0)
    expected = _spring_reference(subproblem.cost_tensor, theta0, momentum, iterations)
    assert result.iterations == iterations
    assert torch.allclose(result.point, expected, rtol=0, atol=1e-10), float((result.point - expected).abs().max())
    plain = _spring(0.0, iterations).solve(subproblem, theta0)
    assert not torch.allclose(plain.point, expected, rtol=0, atol=1e-6)  # the momentum does change the iterates
    carried = torch.tensor(result.state.previous_direction, dtype=torch.float64)
    before = _spring_reference(subproblem.cost_tensor, theta0, momentum, iterations - 1)
    assert torch.allclose(carried, expected - before, rtol=0, atol=1e-10)  # phi_k = theta_{k+1} - theta_k


def test_zero_momentum_is_the_plain_step_bit_for_bit_and_the_first_spring_step_too():
    flow = regression_flow(tau=1e3)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    options = {"max_iterations": 3, "step_filter": "tikhonov", "step_damping": 1e-4, "globalization": "line-search"}
    plain = GaussNewton(**options).solve(subproblem, theta0)
    zero = GaussNewton(**options, momentum=0.0).solve(subproblem, theta0)
    assert torch.equal(plain.point, zero.point) and plain.cost_history == zero.cost_history
    assert type(zero.state) is GaussNewtonState and zero.state == plain.state
    first_plain = GaussNewton(**{**options, "max_iterations": 1}).solve(subproblem, theta0)
    first_spring = GaussNewton(**{**options, "max_iterations": 1}, momentum=0.9).solve(subproblem, theta0)
    assert torch.equal(first_plain.point, first_spring.point)  # phi_0 = 0
    assert type(first_spring.state) is MomentumGaussNewtonState
    assert len(first_spring.state.previous_direction) == theta0.numel()


def test_the_direction_travels_through_a_checkpoint_and_a_resume_repeats_the_run(tmp_path):
    problem = regression_flow(tau=1e3)
    theta0 = problem.parametrization.initial_point()
    solver = _spring(0.5, iterations=2)
    uninterrupted = problem.run(theta0, 6, solver, certify=False)
    path = tmp_path / "checkpoint.npz"
    problem.run(theta0, 3, solver, checkpoint=path, certify=False)
    partial = MMSResult.load(path)
    stored = partial.metadata["solver_state"]
    assert len(stored["previous_direction"]) == theta0.numel() and any(stored["previous_direction"])
    partial.metadata["steps"] = 6  # the same run, cut after three steps
    partial.save(path)
    forgetful_path = tmp_path / "forgetful.npz"
    partial.metadata["solver_state"] = {**stored, "previous_direction": []}  # a resume that lost the direction
    partial.save(forgetful_path)
    resumed = problem.run(theta0, 6, solver, checkpoint=path, certify=False)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert resumed.metadata["solver_state"] == uninterrupted.metadata["solver_state"]
    forgetful = problem.run(theta0, 6, solver, checkpoint=forgetful_path, certify=False)
    assert not torch.equal(forgetful.thetas[-1], uninterrupted.thetas[-1])


def test_the_state_keeps_float32_directions_exactly_and_refuses_bad_ones():
    values = torch.randn(7, dtype=torch.float32)
    state = MomentumGaussNewtonState(1.0, 1e-3, tuple(values.tolist()))
    back = MomentumGaussNewtonState.from_metadata(state.as_metadata())
    assert back == state and torch.equal(torch.tensor(back.previous_direction, dtype=torch.float32), values)
    assert isinstance(state.as_metadata()["previous_direction"], list)
    for bad in ((math.nan,), (1.0, math.inf), ("x",), 3.0):
        with pytest.raises(ValueError, match="previous_direction"):
            MomentumGaussNewtonState(1.0, 1e-3, bad)
    assert "list of finite numbers" in metadata_problem({"previous_direction": [1.0, math.nan]})
    assert metadata_problem({"step_length": 1.0, "previous_direction": [1.0, 2]}) is None


def test_a_direction_of_another_size_is_refused():
    flow = regression_flow(tau=1e3)
    theta0 = flow.parametrization.initial_point()
    with pytest.raises(ValueError, match="previous_direction has 3 entries"):
        _spring(0.5).solve(flow.subproblem(theta0), theta0, state=MomentumGaussNewtonState(0.5, 1e-3, (1.0, 2.0, 3.0)))
    with pytest.raises(TypeError, match="MomentumGaussNewtonState"):
        _spring(0.5).solve(flow.subproblem(theta0), theta0, state=GaussNewtonState(0.5, 1e-3))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"momentum": 1.0}, "momentum must be in"),
        ({"momentum": -0.5}, "momentum must be >= 0"),
        ({"momentum": 0.5}, "needs a damped line-search step"),  # the truncated filter
        ({"momentum": 0.5, "step_filter": "tikhonov", "globalization": "levenberg-marquardt"}, "needs a damped"),
    ],
)
def test_momentum_is_checked(options, match):
    with pytest.raises(ValueError, match=match):
        GaussNewton(**options)


def test_the_subspace_solver_does_not_take_momentum():
    with pytest.raises(ValueError, match="SubspaceGaussNewton does not take momentum"):
        SubspaceGaussNewton(block_size=4, step_filter="tikhonov", momentum=0.5)


def test_momentum_refuses_row_sampling():
    """SPRING's direction solves with every row's model: a row-sampled model would mix two kernels, so the pair is refused."""
    with pytest.raises(ValueError, match="row_sampling"):
        GaussNewton(step_filter="tikhonov", momentum=0.5, row_sampling=RowSampling(rows=10))


def test_a_spring_direction_that_climbs_is_replaced_by_the_plain_step():
    r"""With :math:`\phi_{k-1}` a large multiple of the gradient, :math:`\phi_k = \delta_k + \beta\lambda(A + \lambda I)^{-1}\phi_{k-1}`
    climbs (:math:`g\cdot\phi_k > 0`): the solver searches along the plain Tikhonov step instead, and carries that step."""
    flow = _linear_flow(40, 8)
    theta0 = flow.parametrization.initial_point() + 0.1
    subproblem = flow.subproblem(theta0)
    point = theta0.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(subproblem.cost_tensor(point), point)
    climbing = tuple((1e8 * gradient).tolist())
    state = MomentumGaussNewtonState(step_length=1.0, relative_damping=1e-3, previous_direction=climbing)
    spring = _spring(0.9).solve(subproblem, theta0, state=state)
    plain = _spring(0.0).solve(subproblem, theta0)
    assert torch.equal(spring.point, plain.point)
    carried = torch.tensor(spring.state.previous_direction, dtype=torch.float64)
    assert torch.allclose(carried, plain.point - theta0, rtol=0, atol=1e-12)  # a unit step along delta_k


def test_a_levenberg_marquardt_iteration_restarts_the_direction(monkeypatch):
    """Where the line search finds no decrease the iteration falls back to Levenberg–Marquardt, whose step is no
    SPRING direction: the state carries none (phi restarts from 0)."""
    flow = _linear_flow(40, 8)
    theta0 = flow.parametrization.initial_point() + 0.1
    subproblem = flow.subproblem(theta0)
    monkeypatch.setattr(GaussNewton, "_line_search", lambda *arguments, **options: (None, 0.0, None))
    result = _spring(0.9, iterations=2).solve(subproblem, theta0)
    assert result.iterations == 2 and result.cost_history[-1] < result.cost_history[0]
    assert result.state.previous_direction == ()
