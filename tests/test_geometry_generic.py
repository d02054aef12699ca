"""Geometry identities on every case of ``cases.CASES``, crossed with the three solve modes.

Each identity is checked against an independent dense reference built here with ``torch.func``
(``jacfwd`` Jacobian, explicit G, autodiff through the solve), not against the library itself.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacfwd, jvp

from mms_manifolds import IncrementManifold
from mms_manifolds.testing import taylor_slope

from cases import CASES

SEEDS = st.integers(0, 2**12)
MODES = ["dense", "woodbury", "cg"]
RELATIVE_DAMPING = 1e-4


def build(case, seed, solve_mode="dense", damping=None):
    phi = case.build_parametrization(seed)
    metric = case.build_metric(phi)
    manifold = IncrementManifold(phi, metric, damping=0.0, solve_mode=solve_mode)
    if damping is None:
        theta = phi.initial_point()
        trace = sum(float(manifold.metric_matvec(theta, e) @ e) for e in torch.eye(phi.num_parameters, dtype=torch.float64))
        damping = RELATIVE_DAMPING * trace / phi.num_parameters
    return IncrementManifold(phi, metric, damping=damping, solve_mode=solve_mode)


def dense_metric(manifold, theta):
    """Reference G(theta) = J^T M J + lambda I from a jacfwd Jacobian and the dense metric matrix."""
    phi = manifold.parametrization
    jacobian = jacfwd(phi.value)(theta).reshape(phi.ambient_dimension, -1)
    matrix = manifold.metric.to_dense(phi.output_shape, dtype=theta.dtype, device=theta.device)
    return jacobian.T @ matrix @ jacobian + manifold.damping * torch.eye(phi.num_parameters, dtype=torch.float64)


def energy(manifold):
    """A non-quadratic test function f(theta) = 1/2 |phi - g|_M^2 + sum(phi^4)/4 with a fixed target g."""
    phi = manifold.parametrization
    target = torch.cos(torch.arange(phi.ambient_dimension, dtype=phi.dtype)).reshape(phi.output_shape)

    def value(theta):
        u = phi.value(theta)
        return 0.5 * manifold.metric.inner(u - target, u - target) + (u**4).sum() / 4

    return value


def random_vectors(manifold, seed, count):
    generator = torch.Generator().manual_seed(seed)
    theta = manifold.parametrization.initial_point()
    return theta, [manifold.random_tangent(theta, generator) for _ in range(count)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=4, deadline=None)
@given(seed=SEEDS)
def test_metric_symmetric_positive_and_matches_reference(case, mode, seed):
    manifold = build(case, seed, mode)
    theta, (xi, eta) = random_vectors(manifold, seed, 2)
    assert torch.allclose(manifold.inner(theta, xi, eta), manifold.inner(theta, eta, xi), atol=1e-12)
    assert float(manifold.inner(theta, xi, xi)) > 0
    reference = dense_metric(manifold, theta)
    assert torch.allclose(manifold.metric_matvec(theta, xi), reference @ xi, atol=1e-10)
    assert torch.allclose(manifold.inner(theta, xi, eta), xi @ reference @ eta, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=4, deadline=None)
@given(seed=SEEDS)
def test_solve_modes_agree(case, seed):
    solutions = []
    for mode in MODES:
        manifold = build(case, seed, mode)
        theta, (g,) = random_vectors(manifold, seed, 1)
        solutions.append(manifold.egrad2rgrad(theta, g))
        reference = torch.linalg.solve(dense_metric(manifold, theta), g)
    scale = float(reference.norm())
    for solution in solutions:
        assert float((solution - reference).norm()) <= 1e-7 * scale


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_projection_idempotent_and_orthogonal(case):
    """Undamped dense mode: J G^+ J^T M is the M-orthogonal projector onto range J (truncated SVD)."""
    manifold = build(case, 0, "dense", damping=0.0)
    phi = manifold.parametrization
    theta = phi.initial_point()
    v = torch.randn(phi.output_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    image = manifold.to_ambient(theta, manifold.project(theta, v))
    again = manifold.to_ambient(theta, manifold.project(theta, image))
    assert torch.allclose(again, image, atol=1e-7 * float(v.norm()))
    residual = v - image
    for column in torch.eye(phi.num_parameters, dtype=torch.float64):
        tangent_image = manifold.to_ambient(theta, column)
        assert abs(float(manifold.metric.inner(residual, tangent_image))) <= 1e-7 * float(
            tangent_image.norm() * v.norm()
        )
    tangential, normal = manifold.split_norms(theta, v)
    assert math.isclose(tangential, float(manifold.metric.norm(image)), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(normal, float(manifold.metric.norm(residual)), rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=3, deadline=None)
@given(seed=SEEDS)
def test_rhess_is_the_levi_civita_hessian_and_symmetric(case, seed):
    manifold = build(case, seed)
    theta, (xi, eta) = random_vectors(manifold, seed, 2)
    f = energy(manifold)
    egrad = torch.func.grad(f)(theta)

    def hvp(v):
        return jvp(torch.func.grad(f), (theta,), (v,))[1]

    hess_xi = manifold.rhess(theta, egrad, hvp(xi), xi)
    hess_eta = manifold.rhess(theta, egrad, hvp(eta), eta)

    # Connection definition: D(grad f)[xi] + Gamma(xi, grad f), all dense and by autodiff.
    def rgrad(point):
        return torch.linalg.solve(dense_metric(manifold, point), torch.func.grad(f)(point))

    derivative = jvp(rgrad, (theta,), (xi,))[1]
    phi = manifold.parametrization
    jacobian = jacfwd(phi.value)(theta).reshape(phi.ambient_dimension, -1)
    matrix = manifold.metric.to_dense(phi.output_shape, dtype=theta.dtype, device=theta.device)
    second = phi.second_derivative(theta, xi, rgrad(theta)).reshape(-1)
    christoffel = torch.linalg.solve(dense_metric(manifold, theta), jacobian.T @ matrix @ second)
    reference = derivative + christoffel
    assert float((hess_xi - reference).norm()) <= 1e-6 * max(float(reference.norm()), 1.0)
    lhs, rhs = manifold.inner(theta, hess_xi, eta), manifold.inner(theta, xi, hess_eta)
    assert abs(float(lhs - rhs)) <= 1e-6 * max(abs(float(lhs)), 1.0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_geodesic_has_constant_speed(case):
    manifold = build(case, 0, damping=None)
    theta, (xi,) = random_vectors(manifold, 3, 1)
    # Jets: every derivative evaluation forms a jet Jacobian (40 ms); a shorter geodesic needs 18 steps, not 53.
    xi = (0.1 if case.name.startswith("jets") else 0.3) * xi
    speed0 = float(manifold.norm(theta, xi))
    for time in (0.5, 1.0):
        geodesic = manifold.geodesic(theta, xi, time)
        assert abs(float(manifold.norm(geodesic.point, geodesic.velocity)) - speed0) <= 1e-8 * max(speed0, 1.0)
        assert geodesic.error_estimate < 1e-6


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: c.name)
def test_retractions_agree_with_exp_to_first_and_second_order(case):
    manifold = build(case, 0)
    theta, (xi,) = random_vectors(manifold, 5, 1)
    scales = torch.logspace(-3.0, -2.0, 5, dtype=torch.float64).tolist()
    exact = {t: manifold.exp(theta, t * xi) for t in scales}
    first = [float((manifold.retract(theta, t * xi) - exact[t]).norm()) for t in scales]
    second = [float((manifold.retract_second_order(theta, t * xi) - exact[t]).norm()) for t in scales]
    projective = [float((manifold.retract_projective(theta, t * xi, 1) - exact[t]).norm()) for t in scales]
    assert taylor_slope(scales, first) == pytest.approx(2.0, abs=0.25)
    assert taylor_slope(scales, second) == pytest.approx(3.0, abs=0.3)
    assert taylor_slope(scales, projective) == pytest.approx(3.0, abs=0.3)  # one iteration: second order


@pytest.mark.parametrize("mode", MODES)
def test_float32_model_works_with_documented_accuracy(mode):
    from mms_manifolds import L2Metric
    from mms_manifolds.grids import trapezoid_weights

    from cases import mlp_parametrization

    single = mlp_parametrization(0, dtype=torch.float32)
    double = mlp_parametrization(0)
    weights = trapezoid_weights(12, -1.0, 1.0)
    m32 = IncrementManifold(single, L2Metric(weights.float()), solve_mode=mode)
    m64 = IncrementManifold(double, L2Metric(weights), damping=m32.damping, solve_mode=mode)
    theta = double.initial_point()
    egrad = torch.randn(double.num_parameters, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r32 = m32.egrad2rgrad(theta.float(), egrad.float())
    r64 = m64.egrad2rgrad(theta, egrad)
    assert r32.dtype == torch.float32
    assert float((r32.double() - r64).norm()) <= 1e-2 * float(r64.norm())


@pytest.mark.parametrize("mode", ["dense", "woodbury"])
def test_one_point_forms_the_jacobian_once(mode):
    manifold = build(CASES[0], 0, mode)
    theta, (xi,) = random_vectors(manifold, 1, 1)
    v = torch.ones(manifold.parametrization.output_shape, dtype=torch.float64)
    manifold.egrad2rgrad(theta, xi)
    manifold.rhess(theta, xi, xi, xi)
    manifold.project(theta, v)
    manifold.split_norms(theta, v)
    manifold.diagnostics(theta)
    assert manifold.gram_operator(theta).jacobian_evaluations == 1
