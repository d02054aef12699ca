"""The step problem owns its anchor: any anchor, any step size, the flow's constants computed once."""

from __future__ import annotations

import pytest
import torch

from mms_manifolds import GaussNewton, L2Regression, MMSSubproblem, StepConstants

from problems import linear_regression_flow, regression_flow


def test_the_flow_builds_the_step_from_theta_bit_for_bit_like_the_constructor():
    flow = regression_flow(tau=0.2)
    theta = flow.parametrization.initial_point() * 0.9
    built = flow.subproblem(theta)
    by_hand = MMSSubproblem(flow.manifold, flow.energy, flow.tau, flow.parametrization.value(theta))
    assert built.manifold is flow.manifold and built.constants == flow.constants
    assert built.cost(theta) == by_hand.cost(theta)
    assert torch.equal(built.euclidean_gradient(theta), by_hand.euclidean_gradient(theta))


def test_an_anchor_that_no_network_reaches_and_another_step_size_give_the_exact_constrained_step():
    r"""BDF2's step: anchor a = (4u_k - u_{k-1})/3 (off the model's range), step 2 tau/3.

    Linear model and L2 regression E = ||u - g||_M^2/2: the step min_u E(u) + ||u - a||_M^2/(2s) has the minimiser
    (a + s g)/(1 + s), and over the model's range its M-projection; one undamped Gauss–Newton iteration is exact.
    """
    flow = linear_regression_flow(damping=0.0, tau=0.3)
    theta = flow.parametrization.initial_point()
    previous, current = flow.parametrization.value(theta), flow.parametrization.value(1.1 * theta)
    nodes = torch.linspace(-1.0, 1.0, previous.shape[0], dtype=torch.float64).unsqueeze(-1)
    anchor = (4 * current - previous) / 3 + 0.05 * torch.sin(7 * nodes)  # not a network output
    size = 2 * flow.tau / 3
    step = flow.step_problem(anchor, size)
    assert step.tau == size and torch.equal(step.anchor, anchor)
    assert step.constants == StepConstants.of(size, flow.convexity)
    assert step.strong_convexity == pytest.approx(1 / size + 1.0)  # lambda = 1 for L2 regression
    result = GaussNewton(max_iterations=1, globalization="line-search").solve(step, theta)
    minimiser = (anchor + size * flow.energy.target) / (1 + size)
    basis, weights = flow.parametrization.basis[:, 0, :], flow.metric.weights.unsqueeze(-1)
    coefficients = torch.linalg.lstsq(weights.sqrt() * basis, (weights.sqrt() * minimiser)[:, 0]).solution
    assert torch.allclose(flow.parametrization.value(result.point)[:, 0], basis @ coefficients, atol=1e-10)
    assert step.residual(result.point).tangential < 1e-10


class _CountingRegression(L2Regression):
    calls = 0

    def convexity(self, metric):
        type(self).calls += 1
        return super().convexity(metric)


def test_the_energy_is_asked_for_its_convexity_once_per_flow_not_per_step():
    flow = regression_flow(tau=0.2)
    counting = _CountingRegression(flow.energy.target, flow.metric)
    flow = type(flow)(flow.parametrization, counting, flow.metric, flow.tau)
    assert _CountingRegression.calls == 1
    flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=2))
    flow.step_problem(flow.parametrization.value(flow.parametrization.initial_point()), flow.tau / 2)
    assert _CountingRegression.calls == 1


def test_a_bad_anchor_is_named():
    flow = regression_flow()
    shape = flow.parametrization.output_shape
    with pytest.raises(ValueError, match="anchor has shape"):
        flow.step_problem(torch.zeros(shape[0] + 1, shape[1], dtype=torch.float64))
    with pytest.raises(ValueError, match="anchor contains"):
        flow.step_problem(torch.full(shape, float("nan"), dtype=torch.float64))
    with pytest.raises(TypeError, match="anchor has dtype"):
        flow.step_problem(torch.zeros(shape, dtype=torch.float32))
    with pytest.raises(ValueError, match="tau"):
        flow.step_problem(torch.zeros(shape, dtype=torch.float64), -1.0)


def test_a_step_size_too_large_for_a_semiconvex_energy_is_refused():
    with pytest.raises(ValueError, match="not strongly convex"):
        StepConstants.of(2.0, -1.0)
    assert StepConstants.of(0.5, None) == StepConstants(0.5, None, None, None)
    with pytest.raises(ValueError, match="must be finite"):
        StepConstants.of(0.5, float("nan"))


def test_a_candidate_between_two_residuals_of_theta_forms_each_jacobian_once():
    """Cost does not depend on call order: theta, candidate, theta again forms two Jacobians, not three."""
    flow = regression_flow(tau=0.2)
    theta = flow.parametrization.initial_point() + 0.005  # off the initial point, whose J the set-up cached
    step = flow.subproblem(theta)
    formed = []
    jacobian = flow.parametrization.jacobian
    flow.parametrization.jacobian = lambda point: formed.append(point) or jacobian(point)
    first = step.residual(theta)
    candidate = step.residual(theta + 0.01)
    assert step.residual(theta) == first and step.residual(theta + 0.01) == candidate
    assert len(formed) == 2


def test_the_step_hessian_says_when_it_is_a_multiple_of_the_metric():
    """W = Hess E + M/tau from composable pieces: (c + 1/tau) M for regression, a plain sum for a stiffness."""
    from mms_manifolds.linalg import OperatorSum, ScaledOperator

    from problems import heat_flow

    flow = regression_flow(tau=0.2)
    u = flow.parametrization.value(flow.parametrization.initial_point())
    weight = flow.subproblem(flow.parametrization.initial_point()).step_hessian(u)
    assert weight.multiple_of(flow.metric) == 1.0 + 1 / 0.2
    assert OperatorSum(flow.metric, ScaledOperator(flow.metric, factor=2.0)).multiple_of(flow.metric) == 3.0
    heat = heat_flow()
    u = heat.parametrization.value(heat.parametrization.initial_point())
    assert heat.subproblem(heat.parametrization.initial_point()).step_hessian(u).multiple_of(heat.metric) is None
    with pytest.raises(ValueError, match="exactly one"):
        ScaledOperator(flow.metric)


def test_the_reason_for_the_solve_mode_is_recorded():
    flow = regression_flow()
    result = flow.run(flow.parametrization.initial_point(), 1, GaussNewton(max_iterations=1))
    assert result.metadata["solve_mode"] == "dense"
    assert result.metadata["solve_mode_reason"] == flow.manifold.solve_choice.reason
    assert "Cholesky" in result.metadata["solve_mode_reason"]
    forced = type(flow)(flow.parametrization, flow.energy, flow.metric, flow.tau, solve_mode="cg")
    assert forced.manifold.solve_choice.reason == "cg, as given"
