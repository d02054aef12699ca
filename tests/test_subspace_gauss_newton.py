"""Subspace Gauss–Newton: the full block is Gauss–Newton, a block step is the exact minimiser over the block, the draws resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_linalg import LargestTensor

from mms_manifolds import (
    GaussNewton,
    IncrementManifold,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MMSResult,
    MMSSubproblem,
    SubspaceGaussNewton,
    TorchParametrization,
)
from mms_manifolds.linalg import ConjugateGradientSolve
from mms_manifolds.parametrizations.base import Parametrization
from mms_manifolds.parametrizations.torch_function import FunctionParametrization
from mms_manifolds.solvers import GaussNewtonState, SubspaceGaussNewtonState

from cases import mlp
from problems import heat_flow, regression_flow


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("make_flow", [regression_flow, heat_flow], ids=["regression", "heat"])
def test_the_full_block_is_the_dense_gauss_newton_model(make_flow):
    """S = all parameters: gradient, damped steps, mean eigenvalue and proximal share are GaussNewton's dense model's."""
    flow = make_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    p = flow.parametrization.num_parameters
    model = SubspaceGaussNewton(block_size=p).subspace_model(subproblem, theta, torch.arange(p))
    reference = subproblem.gauss_newton_model(theta, "dense")
    assert _relative(model.gradient, reference.gradient) < 1e-12
    assert model.mean_eigenvalue == pytest.approx(reference.mean_eigenvalue, rel=1e-12)
    assert model.proximal_share == pytest.approx(reference.proximal_share, rel=1e-12)
    # J_S comes from JVPs, the dense mode's J from per-node reverse passes: they agree to rounding, which a
    # damping of 1e-3 of the mean eigenvalue amplifies by at most ~1e3 p (at 1e-6 the two differ by ~3e-10)
    for relative_damping in (1e-3, 1e-1, 1.0):
        damping = relative_damping * reference.mean_eigenvalue
        assert _relative(model.step(damping), reference.step(damping)) < 1e-10


@pytest.mark.parametrize("make_flow", [regression_flow, heat_flow], ids=["regression", "heat"])
def test_the_full_block_solve_is_levenberg_marquardt_gauss_newton(make_flow):
    """block_size >= p: a Levenberg–Marquardt solve takes GaussNewton's dense-mode iterates."""
    flow = make_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    p = flow.parametrization.num_parameters
    options = {"max_iterations": 4, "globalization": "levenberg-marquardt"}
    subspace = SubspaceGaussNewton(block_size=p + 3, **options).solve(subproblem, theta)
    dense = GaussNewton(solve_mode="dense", **options).solve(subproblem, theta)
    assert _relative(subspace.point - theta, dense.point - theta) < 1e-10
    assert subspace.state.relative_damping == pytest.approx(dense.state.relative_damping, rel=1e-10)


def _linear_subproblem(count: int, size: int, tau: float = 0.4):
    generator = torch.Generator().manual_seed(3)
    basis = torch.randn(count, size, generator=generator, dtype=torch.float64)
    metric = L2Metric(torch.rand(count, generator=generator, dtype=torch.float64) + 0.5)
    target = torch.randn(count, 1, generator=generator, dtype=torch.float64)
    theta0 = torch.randn(size, generator=generator, dtype=torch.float64)
    parametrization = LinearParametrization(basis, theta0)
    manifold = IncrementManifold(parametrization, metric, damping=0.0)
    anchor = torch.randn(count, 1, generator=generator, dtype=torch.float64)
    return MMSSubproblem(manifold, L2Regression(target, metric), tau, anchor), basis, metric.weights, target, anchor


@pytest.mark.parametrize(("count", "size", "block"), [(30, 40, 10), (30, 40, 35), (50, 12, 12)])
def test_a_block_step_on_a_linear_model_is_the_exact_minimiser_over_the_block(count, size, block):
    r"""f(theta + P_S z) = |Bθ - g|_M^2/2 + |Bθ - u_k|_M^2/(2τ) is quadratic: its (minimum-norm) minimiser in z is closed form.

    (30, 40, 35) has s > Nm: the kernel side, where the minimiser is not unique and the step is the minimum-norm one.
    """
    subproblem, basis, weights, target, anchor = _linear_subproblem(count, size)
    theta0 = subproblem.manifold.parametrization.initial_point()
    solver = SubspaceGaussNewton(block_size=block, seed=7, max_iterations=1, globalization="line-search")
    indices = solver.block(1, size, theta0.device)
    result = solver.solve(subproblem, theta0)
    tau = subproblem.tau
    columns = basis[:, indices]
    hessian = (1 + 1 / tau) * columns.T @ (weights[:, None] * columns)
    residual = (1 + 1 / tau) * (basis @ theta0) - target[:, 0] - anchor[:, 0] / tau
    minimiser = -torch.linalg.pinv(hessian, hermitian=True) @ (columns.T @ (weights * residual))
    expected = theta0.clone()
    expected[indices] += minimiser
    assert _relative(result.point - theta0, expected - theta0) < 1e-10
    off_block = torch.ones(size, dtype=torch.bool)
    off_block[indices] = False
    assert torch.equal(result.point[off_block], theta0[off_block])


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 50),
    block=st.integers(1, 30),
    globalization=st.sampled_from(["line-search", "levenberg-marquardt"]),
)
def test_cost_never_increases(seed, block, globalization):
    flow = regression_flow(seed=seed, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    solver = SubspaceGaussNewton(block_size=block, seed=seed, max_iterations=6, globalization=globalization)
    result = solver.solve(flow.subproblem(theta0), theta0)
    costs = result.cost_history
    rounding = [16 * np.finfo(float).eps * max(1.0, abs(cost)) for cost in costs]
    assert all(after <= before + slack for before, after, slack in zip(costs, costs[1:], rounding)), costs
    assert not result.stop_reason.failed
    assert costs[-1] < costs[0]


@pytest.mark.parametrize("separable", [None, True])
def test_the_subspace_solver_never_creates_an_n_by_p_tensor(separable):
    """Node-wise gradients in chunks no larger than J_S (N x s), sliced to S, or (node_separable=True, and after the
    first check) per-layer factors; the final residual is the matrix-free mode's."""
    count, widths, block = 400, (1, 24, 24, 1), 4
    nodes = torch.linspace(-1, 1, count, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp(widths, 2), nodes, node_separable=separable)
    metric = L2Metric(torch.full((count,), 2 / count, dtype=torch.float64))
    mode = ConjugateGradientSolve(max_iterations=50, on_unconverged="ignore")
    manifold = IncrementManifold(parametrization, metric, solve_mode=mode)
    p = parametrization.num_parameters
    anchor = torch.zeros(parametrization.output_shape, dtype=torch.float64)
    subproblem = MMSSubproblem(manifold, L2Regression(torch.sin(3 * nodes), metric), 0.1, anchor)
    theta = parametrization.initial_point()
    for globalization in ("line-search", "levenberg-marquardt"):
        guard = LargestTensor()
        with guard:
            result = SubspaceGaussNewton(block, max_iterations=2, globalization=globalization).solve(subproblem, theta)
        assert result.iterations == 2 and result.cost_history[-1] < result.cost_history[0]
        assert guard.largest < count * p / 10, (guard.largest, count * p)


def test_the_draws_are_seeded_and_counted():
    solver = SubspaceGaussNewton(block_size=6, seed=3)
    first = solver.block(1, 50, torch.device("cpu"))
    assert torch.equal(first, SubspaceGaussNewton(block_size=6, seed=3).block(1, 50, torch.device("cpu")))
    assert first.numel() == 6 and torch.equal(first, first.unique())  # distinct, ascending
    assert not torch.equal(first, solver.block(2, 50, torch.device("cpu")))
    assert not torch.equal(first, SubspaceGaussNewton(block_size=6, seed=4).block(1, 50, torch.device("cpu")))
    assert torch.equal(solver.block(1, 5, torch.device("cpu")), torch.arange(5))  # s >= p: every parameter
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    result = SubspaceGaussNewton(block_size=6, max_iterations=3).solve(flow.subproblem(theta0), theta0)
    assert result.state.next_draw == 1 + result.iterations


def test_warm_started_resume_is_bit_identical(tmp_path):
    """The draw counter travels through the checkpoint with the damping: a resumed run draws the same blocks."""
    problem = regression_flow(tau=0.2)
    theta0 = problem.parametrization.initial_point()
    solver = SubspaceGaussNewton(block_size=8, seed=5, max_iterations=2)
    uninterrupted = problem.run(theta0, 6, solver)
    path = tmp_path / "checkpoint.npz"
    problem.run(theta0, 3, solver, checkpoint=path)
    partial = MMSResult.load(path)
    assert partial.metadata["solver_state"]["next_draw"] > 1
    partial.metadata["steps"] = 6  # the same run, cut after three steps
    partial.save(path)
    cold_path = tmp_path / "cold.npz"
    partial.metadata["solver_state"] = solver.initial_state().as_metadata()  # a resume that forgot the draws
    partial.save(cold_path)
    resumed = problem.run(theta0, 6, solver, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))
    assert resumed.metadata["solver_state"] == uninterrupted.metadata["solver_state"]
    forgetful = problem.run(theta0, 6, solver, checkpoint=cold_path)
    assert not all(torch.equal(a, b) for a, b in zip(forgetful.thetas, uninterrupted.thetas))


def test_jacobian_columns_are_the_jacobians_columns():
    """Node-wise reverse mode, batched JVPs and the base class's one JVP per column all give J[..., S]."""
    flow = regression_flow()
    parametrization = flow.parametrization
    theta = parametrization.initial_point()
    indices = torch.tensor([0, 3, 4, 11])
    columns = parametrization.jacobian(theta)[..., indices]
    assert torch.allclose(parametrization.jacobian_columns(theta, indices), columns, atol=1e-14)
    assert torch.allclose(Parametrization.jacobian_columns(parametrization, theta, indices), columns, atol=1e-14)
    batched = FunctionParametrization.jacobian_columns(parametrization, theta, indices)
    assert torch.allclose(batched, columns, atol=1e-14)


@pytest.mark.parametrize("make_flow", [regression_flow, heat_flow], ids=["regression", "heat"])
def test_a_block_with_memory_is_the_dense_model_on_its_orthonormal_basis(make_flow):
    """memory: the model over V = [P_S, Q_D] is the dense Gauss–Newton model of c -> phi(theta + V c) at c = 0, mapped by V."""
    flow = make_flow()
    parametrization = flow.parametrization
    theta = parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    p = parametrization.num_parameters
    solver = SubspaceGaussNewton(block_size=5, memory=2)
    indices = solver.block(1, p, theta.device)
    generator = torch.Generator().manual_seed(7)
    directions = torch.randn(2, p, generator=generator, dtype=torch.float64)
    model = solver.subspace_model(subproblem, theta, indices, directions)
    basis = solver._orthonormal_directions(directions, indices)
    frame = torch.cat([torch.eye(p, dtype=torch.float64)[:, indices], basis], dim=1)  # V, (p, s + q)
    assert basis.shape == (p, 2) and torch.allclose(frame.T @ frame, torch.eye(7, dtype=torch.float64), atol=1e-13)
    restricted = FunctionParametrization(lambda c: parametrization.value(theta + frame @ c), torch.zeros(7, dtype=torch.float64))
    manifold = IncrementManifold(restricted, flow.metric, solve_mode="dense")
    anchor = parametrization.value(theta).detach()
    reference = MMSSubproblem(manifold, flow.energy, flow.tau, anchor).gauss_newton_model(torch.zeros(7, dtype=torch.float64), "dense")
    assert _relative(model.gradient, frame @ reference.gradient) < 1e-12
    assert model.mean_eigenvalue == pytest.approx(reference.mean_eigenvalue, rel=1e-12)
    for relative_damping in (1e-3, 1e-1, 1.0):
        damping = relative_damping * reference.mean_eigenvalue
        assert _relative(model.step(damping), frame @ reference.step(damping)) < 1e-10


def test_memory_drops_directions_inside_the_block_and_repeats():
    """Q_D keeps only what a direction adds off S and beyond the earlier ones; memory=0 is the block alone."""
    indices = torch.tensor([0, 2])
    directions = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.0], [5.0, 4.0, 1.0, 0.0]], dtype=torch.float64)
    basis = SubspaceGaussNewton._orthonormal_directions(directions, indices)
    assert basis.shape == (4, 1) and torch.allclose(basis[:, 0], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert SubspaceGaussNewton._orthonormal_directions(directions[:1], indices) is None
    flow = regression_flow(tau=0.2)
    theta0 = flow.parametrization.initial_point()
    plain = SubspaceGaussNewton(block_size=6, max_iterations=4).solve(flow.subproblem(theta0), theta0)
    with_memory = SubspaceGaussNewton(block_size=6, memory=2, max_iterations=4).solve(flow.subproblem(theta0), theta0)
    first = SubspaceGaussNewton(block_size=6, memory=2, max_iterations=1).solve(flow.subproblem(theta0), theta0)
    single = SubspaceGaussNewton(block_size=6, max_iterations=1).solve(flow.subproblem(theta0), theta0)
    assert torch.equal(first.point, single.point)  # no step yet: the first iteration is the block's
    assert with_memory.cost_history[-1] <= plain.cost_history[-1]
    assert with_memory.state.next_draw == plain.state.next_draw == 5
    with pytest.raises(ValueError, match="memory"):
        SubspaceGaussNewton(block_size=6, memory=-1)


class _PeriodicFeatures(torch.nn.Module):
    """A first layer with parameters outside ``torch.nn.Linear`` (TENG's ``a cos(x + phi) + c``): their columns by per-node gradients."""

    def __init__(self, units: int, dimension: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.a, self.phi = (torch.nn.Parameter(torch.randn(units, dimension, generator=generator, dtype=torch.float64)) for _ in range(2))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return (self.a * torch.cos(points[:, None, :] + self.phi)).reshape(points.shape[0], -1)


def _layer_networks():
    """Node-separable networks of several shapes: m = 1 and m = 3 outputs, a frozen weight, a bias-free layer, a non-Linear first layer."""
    torch.manual_seed(0)  # torch.nn.Linear's initialisation
    plain = torch.nn.Sequential(torch.nn.Linear(2, 9), torch.nn.Tanh(), torch.nn.Linear(9, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1)).double()
    outputs = torch.nn.Sequential(torch.nn.Linear(2, 6, bias=False), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    frozen = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    frozen[0].weight.requires_grad_(False)
    periodic = torch.nn.Sequential(_PeriodicFeatures(3, 2, 1), torch.nn.Tanh(), torch.nn.Linear(6, 4).double(), torch.nn.Tanh(), torch.nn.Linear(4, 1).double())
    return {"plain": plain, "outputs": outputs, "frozen": frozen, "periodic": periodic}


@pytest.mark.parametrize("name", ["plain", "outputs", "frozen", "periodic"])
def test_layer_factor_columns_are_the_node_wise_columns(name):
    """J_S from per-layer factors (node_separable=True) equals the node-wise Jacobian's columns to 1e-10, in any order of S."""
    module = _layer_networks()[name]
    nodes = torch.rand(37, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    parametrization = TorchParametrization(module, nodes, node_separable=True)
    theta = parametrization.initial_point() + 0.1 * torch.randn(parametrization.num_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full = parametrization._node_wise_jacobian(theta)
    size = parametrization.num_parameters
    for indices in (torch.arange(size), torch.randperm(size, generator=torch.Generator().manual_seed(4))[: size // 3], torch.tensor([size - 1, 0])):
        columns = parametrization.jacobian_columns(theta, indices)
        assert columns.shape == (37, parametrization.output_shape[1], indices.numel())
        assert float((columns - full[..., indices]).abs().max()) <= 1e-10 * float(full.abs().max())


def test_layer_factor_columns_fall_back_where_a_layer_is_used_twice():
    """A Linear layer applied twice has no single (a, g) factor pair: the node-wise path answers, still J[..., S]."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(3, 3).double()

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.lift, self.out = shared, torch.nn.Linear(2, 3).double(), torch.nn.Linear(3, 1).double()

        def forward(self, x):
            return self.out(torch.tanh(self.inner(torch.tanh(self.inner(torch.tanh(self.lift(x)))))))

    nodes = torch.rand(11, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    parametrization = TorchParametrization(Twice(), nodes, node_separable=True)
    theta = parametrization.initial_point()
    indices = torch.tensor([0, 4, 9, 13, parametrization.num_parameters - 1])
    expected = parametrization._node_wise_jacobian(theta)[..., indices]
    assert torch.allclose(parametrization.jacobian_columns(theta, indices), expected, rtol=1e-12, atol=1e-14)


def test_layer_factor_columns_never_create_an_n_by_p_tensor():
    """The layer-factor path with a non-Linear first layer (its columns by per-node gradients): nothing N x p."""
    count = 400
    module = torch.nn.Sequential(
        _PeriodicFeatures(12, 2, 0), torch.nn.Tanh(), torch.nn.Linear(24, 24).double(), torch.nn.Tanh(), torch.nn.Linear(24, 1).double()
    )
    nodes = torch.rand(count, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    parametrization = TorchParametrization(module, nodes, node_separable=True)
    p = parametrization.num_parameters
    theta = parametrization.initial_point()
    indices = torch.tensor([0, 5, 30, 47, 100, p - 1])  # first layer (a, phi), a weight, a bias, the output
    guard = LargestTensor()
    with guard:
        columns = parametrization.jacobian_columns(theta, indices)
    assert columns.shape == (count, 1, 6)
    assert guard.largest < count * p / 10, (guard.largest, count * p)


@pytest.mark.parametrize("name", ["plain", "periodic"])
def test_the_subspace_step_is_the_same_on_either_column_path(name):
    """One SubspaceGaussNewton solve with layer-factor columns (node_separable=True) equals the node-wise path's to 1e-10."""
    nodes = torch.rand(60, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    metric = L2Metric(torch.full((60,), 1 / 60, dtype=torch.float64))
    points = {}
    for separable in (True, False):
        module = _layer_networks()[name]
        parametrization = TorchParametrization(module, nodes, node_separable=True)
        if not separable:  # the node-wise reverse-mode columns, the path before the layer factors
            parametrization.jacobian_columns = lambda theta, indices, p=parametrization: p._node_wise_jacobian(theta, indices)
        manifold = IncrementManifold(parametrization, metric, solve_mode="dense")
        target = torch.sin(3 * nodes[:, :1]) * torch.cos(nodes[:, 1:])
        anchor = parametrization.value(parametrization.initial_point()).detach()
        subproblem = MMSSubproblem(manifold, L2Regression(target, metric), 0.1, anchor)
        theta = parametrization.initial_point()
        points[separable] = SubspaceGaussNewton(7, seed=1, max_iterations=4).solve(subproblem, theta).point
    assert float((points[True] - points[False]).norm()) <= 1e-10 * float(points[False].norm())


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"block_size": 0}, ValueError),
        ({"block_size": 2.0}, TypeError),
        ({"block_size": 4, "seed": -1}, ValueError),
        ({"block_size": 4, "seed": 1.0}, TypeError),
        ({"block_size": 4, "globalization": "trust"}, ValueError),
        ({"block_size": 4, "solve_mode": "dense"}, TypeError),
    ],
)
def test_bad_settings_are_refused(options, error):
    with pytest.raises(error):
        SubspaceGaussNewton(**options)


def test_a_damaged_draw_counter_is_refused():
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    solver = SubspaceGaussNewton(block_size=4)
    stored = solver.initial_state().as_metadata()
    for draw in (0, 2.5, 2.0, True):
        with pytest.raises(ValueError, match="next_draw must be a whole number >= 1"):
            SubspaceGaussNewtonState(step_length=0.5, relative_damping=1e-3, next_draw=draw)
        with pytest.raises(ValueError, match="SubspaceGaussNewtonState.*next_draw"):
            solver.state_from_metadata({**stored, "next_draw": draw})
    with pytest.raises(ValueError, match="SubspaceGaussNewtonState in checkpoint form must have the keys"):
        solver.state_from_metadata({"step_length": 0.5, "relative_damping": 1e-3})
    with pytest.raises(TypeError, match="state must be a SubspaceGaussNewtonState"):
        solver.solve(flow.subproblem(theta0), theta0, state=GaussNewtonState(step_length=0.5, relative_damping=1e-3))


def test_a_flow_runs_with_the_subspace_solver():
    flow = regression_flow()
    theta0 = flow.parametrization.initial_point()
    result = flow.run(theta0, 3, SubspaceGaussNewton(block_size=10, max_iterations=4))
    assert result.steps_done == 3
