"""pymanopt adapter: pymanopt's own diagnostics as the outside judge, its optimisers on our manifold."""

import re

import autograd.numpy as anp
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pymanopt
import pytest
import torch
from pymanopt.manifolds import Euclidean, Product
from pymanopt.optimizers import ConjugateGradient, NelderMead, ParticleSwarm, SteepestDescent, TrustRegions
from pymanopt.tools import diagnostics

from mms_manifolds import AutogradParametrization, IncrementManifold, L2Metric, L2Regression, MMSSubproblem
from mms_manifolds.adapters import PymanoptIncrementManifold, PymanoptSolver, make_problem

import pymanopt_numpy2
from problems import linear_regression_flow, regression_flow

pymanopt_numpy2.install()


def _mlp_problem(damping=None):
    flow = regression_flow(widths=(1, 4, 1), count=16)
    manifold = (
        flow.manifold if damping is None else IncrementManifold(flow.parametrization, flow.metric, damping=damping)
    )
    theta0 = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta0)
    subproblem = MMSSubproblem(manifold.with_anchor(anchor), flow.energy, flow.tau)
    adapter = PymanoptIncrementManifold(subproblem.manifold)
    return subproblem, adapter, make_problem(subproblem, adapter), theta0.numpy() + 0.1


def _slope(problem, x, d, quadratic):
    h, error, segment, poly = diagnostics.check_directional_derivative(problem, x, d, use_quadratic_model=quadratic)
    return poly[0]


def test_gradient_and_hessian_pass_pymanopt_checks(capsys):
    subproblem, adapter, problem, x = _mlp_problem(damping=1e-3)
    d = 0.1 * adapter.random_tangent_vector(x)  # short geodesics keep the 102 exp calls cheap
    assert _slope(problem, x, d, quadratic=False) == pytest.approx(2.0, abs=0.1)
    assert _slope(problem, x, d, quadratic=True) == pytest.approx(3.0, abs=0.15)
    diagnostics.check_hessian(problem, x, d)
    output = capsys.readouterr().out
    linearity = float(re.search(r"b\*H\[d2\] should be very close to 0: (\S+)\.", output).group(1))
    symmetry = float(re.search(r"= (\S+)\.\nIf it is far from 0 then the Hessian is not a symmetric", output).group(1))
    assert abs(linearity) < 1e-8 and abs(symmetry) < 1e-8


def test_retraction_passes_pymanopt_check(capsys):
    _, adapter, _, x = _mlp_problem(damping=1e-3)
    diagnostics.check_retraction(adapter, x, 0.1 * adapter.random_tangent_vector(x))
    slope = float(re.search(r"It appears the slope is: (\S+)\.", capsys.readouterr().out).group(1))
    assert slope == pytest.approx(2.0, abs=0.25)


@pytest.mark.parametrize(
    "optimizer",
    [
        TrustRegions(max_iterations=20, min_gradient_norm=1e-13, verbosity=0),
        ConjugateGradient(max_iterations=300, min_gradient_norm=1e-13, min_step_size=0.0, verbosity=0),
        SteepestDescent(max_iterations=500, min_gradient_norm=1e-13, min_step_size=0.0, verbosity=0),
    ],
    ids=lambda o: type(o).__name__,
)
def test_optimizers_reach_the_closed_form_step_on_a_linear_model(optimizer):
    flow = linear_regression_flow(damping=0.0)  # full-rank basis: the undamped pullback metric is exact
    basis = flow.parametrization.basis[:, 0, :]
    theta0 = torch.ones(basis.shape[1]) + 0.1 * flow.parametrization.initial_point()
    # Start and target close to each other keep the cost small, so cost-based line searches
    # (SteepestDescent, ConjugateGradient) can resolve 1e-8 above rounding.
    x = torch.linspace(-1.0, 1.0, basis.shape[0])
    energy = L2Regression((basis @ torch.ones(basis.shape[1]) + 0.01 * x**7).unsqueeze(-1), flow.metric)
    subproblem = MMSSubproblem(flow.manifold.with_anchor(flow.parametrization.value(theta0)), energy, flow.tau)
    # Closed form: the M-least-squares projection of prox(u_k) onto the span.
    weights = flow.metric.weights.sqrt()
    exact = energy.prox(flow.parametrization.value(theta0), flow.tau, flow.metric)[:, 0]
    expected = torch.linalg.lstsq(weights[:, None] * basis, weights * exact).solution
    result = PymanoptSolver(optimizer).solve(subproblem, theta0)
    difference = flow.parametrization.value(result.point) - flow.parametrization.value(expected)
    assert float(flow.metric.norm(difference)) < 1e-8


@pytest.mark.parametrize("optimizer_class", [NelderMead, ParticleSwarm])
def test_derivative_free_optimizers_run(optimizer_class):
    subproblem, adapter, problem, x = _mlp_problem()
    optimizer = optimizer_class(max_iterations=5, verbosity=0)
    outcome = optimizer.run(problem)
    assert np.isfinite(outcome.cost) and outcome.point.shape == (adapter.dim,)


def test_pymanopt_solver_in_the_driver_records_history():
    flow = regression_flow(widths=(1, 4, 1), count=16)
    solver = PymanoptSolver(TrustRegions(max_iterations=3, verbosity=0))
    result = flow.run(flow.parametrization.initial_point(), 2, solver)
    assert np.all(result.trajectory_error <= result.tracking_bound + 1e-12)
    inner = solver.solve(
        MMSSubproblem(flow.manifold.with_anchor(flow.parametrization.value(result.thetas[0])), flow.energy, flow.tau),
        result.thetas[0],
    )
    assert inner.iterations <= 3 and len(inner.residual_history) >= 2
    assert inner.residual_history[-1] < inner.residual_history[0]


def test_product_with_euclidean_and_user_written_pytorch_cost():
    """Fit u = phi(theta) + c with a jointly fitted scalar c, the cost written with @pymanopt.function.pytorch."""
    flow = regression_flow(widths=(1, 4, 1), count=16)
    adapter = PymanoptIncrementManifold(flow.manifold)
    product = Product([adapter, Euclidean(1)])
    target = flow.energy.target + 2.0
    weights = flow.metric.weights

    @pymanopt.function.pytorch(product)
    def cost(theta, offset):
        residual = adapter.function_values(theta) + offset - target
        return 0.5 * (weights[:, None] * residual**2).sum()

    problem = pymanopt.Problem(product, cost)
    start = [flow.parametrization.initial_point().numpy(), np.zeros(1)]
    outcome = ConjugateGradient(max_iterations=200, verbosity=0).run(problem, initial_point=start)
    assert outcome.cost < 1e-3 * problem.cost(start)
    assert outcome.point[1][0] > 0.5  # the offset shares the shift with the last layer's bias


def test_user_written_autograd_cost_matches_the_core():
    flow = regression_flow(widths=(1, 4, 1), count=16)
    adapter = PymanoptIncrementManifold(flow.manifold)
    target, weights = flow.energy.target.numpy(), flow.metric.weights.numpy()

    @pymanopt.function.autograd(adapter)
    def cost(theta):
        residual = adapter.function_values(theta) - target
        return 0.5 * anp.sum(weights[:, None] * residual**2)

    problem = pymanopt.Problem(adapter, cost)
    x = flow.parametrization.initial_point().numpy()
    d = 0.05 * adapter.random_tangent_vector(x)
    theta = torch.as_tensor(x)
    expected_gradient = flow.parametrization.vjp(theta, flow.energy.gradient(flow.parametrization.value(theta)))
    assert np.allclose(problem.euclidean_gradient(x), expected_gradient.numpy(), atol=1e-12)
    assert _slope(problem, x, d, quadratic=True) == pytest.approx(3.0, abs=0.15)


def test_autograd_parametrization_inside_autograd_cost():
    def network(theta, x):
        return anp.tanh(theta[0] * x + theta[1]) * theta[2]

    x = np.linspace(-1, 1, 12)
    phi = AutogradParametrization(network, np.array([1.0, 0.2, 0.5]), x)
    adapter = PymanoptIncrementManifold(IncrementManifold(phi, L2Metric(torch.full((12,), 1 / 6))))

    @pymanopt.function.autograd(adapter)
    def cost(theta):
        return anp.sum((adapter.function_values(theta)[:, 0] - anp.abs(x)) ** 2)

    outcome = TrustRegions(max_iterations=10, verbosity=0).run(
        pymanopt.Problem(adapter, cost), initial_point=np.array([1.0, 0.2, 0.5])
    )
    assert outcome.cost < cost(np.array([1.0, 0.2, 0.5]))


def test_bad_input_at_the_adapter_boundary():
    _, adapter, _, x = _mlp_problem()
    with pytest.raises(ValueError, match="float64"):
        adapter.inner_product(x.astype(np.float32), x, x)
    with pytest.raises(ValueError, match="shape"):
        adapter.retraction(x[:3], x[:3])
    bad = x.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        adapter.euclidean_to_riemannian_gradient(x, bad)
    with pytest.raises(TypeError, match="pymanopt optimizer"):
        PymanoptSolver("TrustRegions")


@pytest.mark.parametrize(
    ("settings", "tolerance", "expected"),
    [
        ({"max_iterations": 2}, 0.0, "MAX_ITERATIONS"),  # "max iterations reached"
        ({"max_iterations": 50}, 1e3, "CONVERGED"),  # "min grad norm reached after 0 iterations"
        ({"max_iterations": 50, "min_step_size": 1e3}, 0.0, "STALLED"),  # "min step_size reached"
    ],
)
def test_each_pymanopt_stop_is_classified_from_its_numbers(settings, tolerance, expected):
    """pymanopt 2.2 says "min grad norm reached after N iterations": a substring test read it as MAX_ITERATIONS."""
    flow = regression_flow(widths=(1, 4, 1), count=16)
    theta0 = flow.parametrization.initial_point()
    subproblem = MMSSubproblem(flow.manifold.with_anchor(flow.parametrization.value(theta0)), flow.energy, flow.tau)
    solver = PymanoptSolver(SteepestDescent(verbosity=0, **settings))
    result = solver.solve(subproblem, theta0, tolerance=tolerance)
    assert result.stop_reason.name == expected, result.extra["stopping_criterion"]
