"""The kernel side without the Jacobian (LayerKernelSolve): solves, splits and steps against the dense mode; no N x p tensor; the choice."""

from __future__ import annotations

import pytest
import torch
from test_linalg import LargestTensor

from mms_manifolds import (
    GaussNewton,
    IncrementManifold,
    L2Metric,
    L2Regression,
    SubspaceGaussNewton,
    TorchParametrization,
)
from mms_manifolds.grids import stiffness_1d, trapezoid_weights
from mms_manifolds.linalg import AutoSolve, DenseSolve, GramOperator, LayerKernelSolve, WhitenedJacobianProducts
from mms_manifolds.metrics import SobolevMetric
from mms_manifolds.subproblem import MMSSubproblem

from cases import mlp


def wide_problem(count: int = 30, widths=(1, 12, 12, 1), metric_kind: str = "l2"):
    """A net with p > Nm; an L2 or a Sobolev metric."""
    nodes = torch.linspace(-1, 1, count, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp(widths, 3), nodes)
    metric = L2Metric(torch.full((count,), 2 / count, dtype=torch.float64))
    if metric_kind == "sobolev":
        metric = SobolevMetric(trapezoid_weights(count, -1.0, 1.0), stiffness_1d(count, -1.0, 1.0, "neumann"), 0.1)
    return parametrization, metric, nodes


@pytest.mark.parametrize("metric_kind", ["l2", "sobolev"])
def test_whitened_jacobian_products_are_b_and_its_transpose(metric_kind):
    parametrization, metric, _ = wide_problem(metric_kind=metric_kind)
    theta = parametrization.initial_point()
    operator = GramOperator(parametrization, metric, theta)
    formed = operator.whitened_jacobian()
    products = WhitenedJacobianProducts(GramOperator(parametrization, metric, theta))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(parametrization.num_parameters, generator=generator, dtype=torch.float64)
    y = torch.randn(parametrization.ambient_dimension, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(products @ x, formed @ x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(products.T @ y, formed.T @ y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("metric_kind", ["l2", "sobolev"])
@pytest.mark.parametrize("damping", [1e-2, 1e-6])
def test_layer_kernel_solves_equal_the_dense_solves(metric_kind, damping):
    parametrization, metric, _ = wide_problem(metric_kind=metric_kind)
    theta = parametrization.initial_point()
    rhs = torch.randn(parametrization.num_parameters, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).solve(rhs, damping).value
    factorization = LayerKernelSolve().factorize(GramOperator(parametrization, metric, theta))
    layer = factorization.solve(rhs, damping).value
    assert float((layer - dense).norm() / dense.norm()) < 1e-10
    assert factorization.kernel_source == "layers"
    whitened = GramOperator(parametrization, metric, theta).whitened_jacobian()
    expected = whitened @ whitened.T
    assert torch.equal(factorization.gram, factorization.gram.T)
    torch.testing.assert_close(factorization.gram, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    assert abs(factorization.known_trace() - float(whitened.square().sum())) <= 1e-12 * float(whitened.square().sum())


def test_layer_kernel_gauss_newton_solve_equals_the_dense_one():
    """The exact trace of K gives the same damping as the dense mode, so the iterates agree to rounding."""
    parametrization, metric, nodes = wide_problem()
    energy = L2Regression(torch.sin(3 * nodes), metric)
    theta = parametrization.initial_point()
    results = {}
    for mode in ("dense", "layer-kernel"):
        manifold = IncrementManifold(parametrization, metric, solve_mode=mode, damping=1e-8)
        subproblem = MMSSubproblem(manifold, energy, 0.2, torch.zeros_like(nodes))
        results[mode] = GaussNewton(max_iterations=3, globalization="levenberg-marquardt").solve(subproblem, theta)
    difference = float((results["layer-kernel"].point - results["dense"].point).norm())
    assert difference <= 1e-9 * float(results["dense"].point.norm())


def test_layer_kernel_mode_refuses_a_tall_problem_and_bad_settings():
    nodes = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp((1, 3, 1), 0), nodes)
    metric = L2Metric(torch.full((50,), 0.04, dtype=torch.float64))
    with pytest.raises(ValueError, match="Nm < p"):
        LayerKernelSolve().factorize(GramOperator(parametrization, metric, parametrization.initial_point()))
    with pytest.raises(ValueError, match="block_rows"):
        LayerKernelSolve(block_rows=0)


class _ScaledOutput(torch.nn.Module):
    """A trainable scalar outside any Linear layer: no layer kernel."""

    def __init__(self):
        super().__init__()
        self.body = mlp((1, 12, 12, 1), 0)
        self.scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.body(x)


def test_without_a_layer_kernel_the_mode_forms_b_and_says_so():
    nodes = torch.linspace(-1, 1, 20, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(_ScaledOutput(), nodes)
    assert parametrization.jacobian_kernel_flops() is None
    metric = L2Metric(torch.full((20,), 0.1, dtype=torch.float64))
    theta = parametrization.initial_point()
    factorization = LayerKernelSolve().factorize(GramOperator(parametrization, metric, theta))
    rhs = torch.ones(parametrization.num_parameters, dtype=torch.float64)
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).solve(rhs, 1e-3).value
    assert float((factorization.solve(rhs, 1e-3).value - dense).norm() / dense.norm()) < 1e-10
    assert factorization.kernel_source == "jacobian"


def test_the_layer_kernel_mode_never_creates_an_n_by_p_tensor():
    """K is N x N = 1e4 numbers here, N x p = 1.8e5: every tensor of a step (full and subspace), a residual, a gradient and a retraction stays below N p / 10."""
    count, widths = 100, (1, 40, 40, 1)
    parametrization, metric, nodes = wide_problem(count, widths)
    manifold = IncrementManifold(parametrization, metric, solve_mode="layer-kernel")
    p = parametrization.num_parameters
    subproblem = MMSSubproblem(manifold, L2Regression(torch.sin(3 * nodes), metric), 0.1, torch.zeros_like(nodes))
    theta = parametrization.initial_point()
    guard = LargestTensor()
    with guard:
        manifold.egrad2rgrad(theta, subproblem.euclidean_gradient(theta))
        subproblem.residual(theta)
        result = GaussNewton(max_iterations=2).solve(subproblem, theta)
        manifold.retract_projective(theta, 1e-3 * result.point)
        SubspaceGaussNewton(8, max_iterations=1).solve(subproblem, theta)
    assert count * count <= guard.largest < count * p / 10, (guard.largest, count * p)
    assert result.cost_history[-1] < result.cost_history[0]
    factorization = manifold.metric_factorization(theta)
    assert factorization.gram.shape == (count, count) and factorization.kernel_source == "layers"


def test_a_network_of_linear_layers_gets_the_layer_kernel_where_the_kernel_side_pays():
    """AutoSolve reads the layer kernel's flops from the parametrisation; without them the formed-B kernel, as before."""
    parametrization, metric, _ = wide_problem(1000, (1, 64, 64, 1))
    flops = parametrization.jacobian_kernel_flops()
    assert flops == pytest.approx(1000**2 * (64 + 64 + 1) + 1000**2 * (1 + 64 + 64))
    assert AutoSolve().select(parametrization.num_parameters, 1000, kernel_flops=flops)[0].name == "layer-kernel"
    assert AutoSolve().select(parametrization.num_parameters, 1000)[0].name == "kernel"
    # p = 1e5, N = 1e4: the formed-B kernel needs 25 GiB (CG before); the layer kernel 3.0 GiB (3.72 GiB resident measured)
    mode, reason = AutoSolve().select(100_801, 10_000, kernel_flops=1e4**2 * 447 + 1e4**2 * 449)
    assert mode.name == "layer-kernel" and "layer kernel" in reason
    assert AutoSolve(memory_budget_bytes=2**30).select(100_801, 10_000, kernel_flops=1e11)[0].name == "cg"
    assert IncrementManifold(parametrization, metric).solve_mode_name() == "layer-kernel"
