"""Metrics on a subspace (H^-1 on zero-mean functions), fixed-mass networks, Cahn-Hilliard, and singular metrics refused."""

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from mms_manifolds import (
    ConstrainedParametrization,
    DirichletEnergy,
    GaussNewton,
    GinzburgLandau,
    HMinusOneMetric,
    IncrementManifold,
    L2Metric,
    L2Regression,
    MatrixMetric,
    Metric,
    MinimizingMovement,
    SobolevMetric,
    SubspaceMetric,
    TorchParametrization,
)
from mms_manifolds.grids import stiffness_1d, uniform_nodes
from mms_manifolds.problems import cahn_hilliard_flow, mlp
from mms_manifolds.testing import adjoint_mismatch, taylor_slope

N = 64


def _grid(count=N):
    weights = torch.full((count,), 1.0 / count, dtype=torch.float64)
    return stiffness_1d(count, 0.0, 1.0, "periodic"), weights


def _mean_zero(generator, count=N, columns=3):
    v = torch.randn(count, columns, generator=generator, dtype=torch.float64)
    return v - v.mean(0)


def _fixed_mass_network(count=N, mass=0.1, outputs=1):
    x = uniform_nodes(count, 0.0, 1.0, "periodic")
    features = torch.stack([torch.cos(2 * math.pi * x), torch.sin(2 * math.pi * x)], dim=-1)
    network = TorchParametrization(mlp((2, 6, outputs), 1), features)
    return network, ConstrainedParametrization.fixed_mass(network, torch.full((count,), 1.0 / count, dtype=torch.float64), mass)


# ------------------------------------------------------------------------------------------- the metrics


def test_h_minus_one_is_w_pinv_k_w_on_zero_mean_functions():
    stiffness, weights = _grid()
    metric = HMinusOneMetric(stiffness, weights)
    reference = np.diag(weights.numpy()) @ np.linalg.pinv(stiffness.numpy()) @ np.diag(weights.numpy())
    v = _mean_zero(torch.Generator().manual_seed(0))
    assert np.allclose(metric.apply(v.T.unsqueeze(-1)).squeeze(-1).T.numpy(), reference @ v.numpy(), atol=1e-15)
    assert np.allclose(
        metric.inner(v.T.unsqueeze(-1), v.T.unsqueeze(-1)).numpy(), np.sum(v.numpy() * (reference @ v.numpy()), 0)
    )


def test_subspace_metric_riesz_map_identities():
    stiffness, weights = _grid(16)
    reference = torch.diag(weights) @ torch.linalg.pinv(stiffness) @ torch.diag(weights)
    generator = torch.Generator().manual_seed(1)
    for metric in (HMinusOneMetric(stiffness, weights), SubspaceMetric(reference, weights)):
        v = _mean_zero(generator, 16, 2)
        g = torch.randn(16, 2, generator=generator, dtype=torch.float64)  # any dual vector
        r = metric.solve(g)
        assert float(metric.constraint_values(r).abs().max()) < 1e-15 * float(r.abs().max())  # r lies in V
        assert torch.allclose(metric.inner(r, v), (g * v).sum(), rtol=1e-11)  # <r, v>_M = g.v on V
        assert torch.allclose(metric.solve(metric.apply(v)), v, atol=1e-12)
        assert torch.allclose(metric.apply(v), reference @ v, atol=1e-15)  # A on V
        assert torch.allclose((metric.whiten(v) ** 2).sum(), metric.inner(v, v), rtol=1e-12)
        projected = metric.project(g)
        assert float(metric.constraint_values(projected).abs().max()) < 1e-15 * float(g.abs().max())
        assert torch.allclose(metric.inner(g - projected, v), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)  # M-orthogonal
        basis = metric.subspace_basis((16, 2), dtype=torch.float64, device="cpu")
        assert basis.shape == (32, 30) and torch.allclose(basis.T @ basis, torch.eye(30, dtype=torch.float64), atol=1e-13)
        ok, reason = metric.check_positive_definite((16, 2))
        assert ok, reason


def test_subspace_metric_bad_input():
    stiffness, weights = _grid(8)
    with pytest.raises(ValueError, match="full column rank"):
        SubspaceMetric(torch.eye(8, dtype=torch.float64), torch.stack([weights, 2 * weights], -1))
    with pytest.raises(ValueError, match="constraints have shape"):
        SubspaceMetric(torch.eye(8, dtype=torch.float64), torch.ones(7, dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive definite|numerically singular"):
        SubspaceMetric(torch.diag(torch.tensor([0.0, 0.0, *[1.0] * 6], dtype=torch.float64)), weights)  # singular on V too
    with pytest.raises(ValueError, match="constants as kernel"):
        HMinusOneMetric(stiffness_1d(8, 0.0, 1.0, "dirichlet"), weights)


def test_convexity_of_ginzburg_landau_is_per_metric():
    """-1 in L2(w), -23.9 in H^-1 at N = 64, eps = 0.1: the Fourier formula min_j N^2 k_j (eps^2 k_j - 1/N)."""
    stiffness, weights = _grid()
    energy = GinzburgLandau(0.1, stiffness, weights)
    eigenvalues = N * (2 - 2 * np.cos(2 * np.pi * np.arange(1, N) / N))  # of K on the mean-zero modes
    fourier = float(np.min(N**2 * eigenvalues * (0.01 * eigenvalues - 1 / N)))
    assert energy.convexity(HMinusOneMetric(stiffness, weights)) == pytest.approx(fourier, rel=1e-10)
    assert fourier == pytest.approx(-23.886, abs=1e-3)
    assert energy.convexity(L2Metric(weights)) == pytest.approx(-1.0, abs=1e-12)


def test_exact_steps_in_a_subspace_metric_conserve_mass_and_solve_the_constrained_problem():
    stiffness, weights = _grid(32)
    metric = HMinusOneMetric(stiffness, weights)
    generator = torch.Generator().manual_seed(2)
    u = 0.3 + 0.5 * torch.randn(32, 1, generator=generator, dtype=torch.float64)
    target = torch.randn(32, 1, generator=generator, dtype=torch.float64)
    for energy in (
        DirichletEnergy(stiffness),
        L2Regression(target, L2Metric(weights)),
        GinzburgLandau(0.1, stiffness, weights),
    ):
        v = energy.prox(u, 0.005, metric)
        assert abs(float(weights @ (v - u).squeeze(-1))) < 1e-15  # mass to rounding
        residual = energy.gradient(v) + metric.apply(v - u) / 0.005  # KKT: orthogonal to V, i.e. constant
        assert float((residual - residual.mean()).abs().max()) < 1e-9 * float(residual.abs().max() + 1)
    shared = L2Regression(target, metric)  # the energy's own metric, which is the flow's: no closed form on V
    v = shared.prox(u, 0.2, metric)
    assert abs(float(weights @ (v - u).squeeze(-1))) < 1e-15


# -------------------------------------------------------------------------------- fixed-mass networks


def test_fixed_mass_network_keeps_its_mass_and_its_derivatives_are_consistent():
    network, constrained = _fixed_mass_network(outputs=2)
    weights = torch.full((N,), 1.0 / N, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    theta = constrained.initial_point() + 0.5 * torch.randn(constrained.num_parameters, generator=generator, dtype=torch.float64)
    assert torch.allclose(weights @ constrained.value(theta), torch.full((2,), 0.1, dtype=torch.float64), atol=1e-15)
    xi = torch.randn(constrained.num_parameters, generator=generator, dtype=torch.float64)
    w = torch.randn(N, 2, generator=generator, dtype=torch.float64)
    assert adjoint_mismatch(lambda t: constrained.jvp(theta, t), lambda c: constrained.vjp(theta, c), xi, w) < 1e-14
    assert float((weights @ constrained.jvp(theta, xi)).abs().max()) < 1e-15
    assert torch.allclose(constrained.jacobian(theta) @ xi, constrained.jvp(theta, xi), atol=1e-13)
    errors = [
        float(
            (
                constrained.value(theta + t * xi)
                - constrained.value(theta)
                - t * constrained.jvp(theta, xi)
                - t**2 / 2 * constrained.second_derivative(theta, xi, xi)
            ).norm()
        )
        for t in (1e-1, 5e-2, 2.5e-2)
    ]
    assert taylor_slope([1e-1, 5e-2, 2.5e-2], errors) > 2.7
    eta = torch.randn(constrained.num_parameters, generator=generator, dtype=torch.float64)
    adjoint = constrained.second_derivative_adjoint(theta, xi, w)
    assert float(adjoint @ eta) == pytest.approx(
        float((constrained.second_derivative(theta, xi, eta) * w).sum()), rel=1e-10
    )


def test_a_subspace_metric_refuses_a_network_that_leaves_the_subspace():
    stiffness, weights = _grid()
    network, constrained = _fixed_mass_network()
    with pytest.raises(ValueError, match="ConstrainedParametrization"):
        IncrementManifold(network, HMinusOneMetric(stiffness, weights))
    IncrementManifold(constrained, HMinusOneMetric(stiffness, weights))


def test_constrained_parametrization_bad_input():
    network, _ = _fixed_mass_network()
    with pytest.raises(TypeError, match="Parametrization"):
        ConstrainedParametrization(object(), torch.ones(N, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        ConstrainedParametrization(network, torch.ones(N - 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="singular"):
        ConstrainedParametrization(network, torch.ones(N, dtype=torch.float64), directions=torch.tensor([1.0, -1.0] * (N // 2), dtype=torch.float64))
    with pytest.raises(TypeError, match="constraints are torch.float32 on cpu, the network torch.float64"):
        ConstrainedParametrization(network, torch.ones(N, dtype=torch.float32))


# ------------------------------------------------------------------------------------------ Cahn-Hilliard


def _finite_difference_cahn_hilliard(u0, steps, tau, epsilon):
    """Implicit Euler for u_t = D(-eps^2 D u + u^3 - u), D the periodic 3-point Laplacian, by Newton (scipy)."""
    count = u0.size
    h = 1.0 / count
    laplacian = (np.roll(np.eye(count), 1, 0) + np.roll(np.eye(count), -1, 0) - 2 * np.eye(count)) / h**2
    states = [u0]
    for _ in range(steps):
        previous = states[-1]

        def equation(u, previous=previous):
            return u - previous - tau * laplacian @ (-(epsilon**2) * laplacian @ u + u**3 - u)

        def jacobian(u):
            return np.eye(count) - tau * laplacian @ (-(epsilon**2) * laplacian + np.diag(3 * u**2 - 1))

        solution = scipy.optimize.root(equation, previous, jac=jacobian, method="hybr", tol=1e-14)
        assert np.abs(equation(solution.x)).max() < 1e-12  # (hybr may report it cannot improve further)
        states.append(solution.x)
    return np.array(states)


def _h_minus_one_norm(difference):
    """||d||_{H^-1} = sqrt(sum_j |d_j|^2 / (N^2 k_j)) over the nonzero Fourier modes, k_j the eigenvalues of K."""
    count = difference.size
    coefficients = np.fft.fft(difference)[1:]
    eigenvalues = count * (2 - 2 * np.cos(2 * np.pi * np.arange(1, count) / count))
    return math.sqrt(float(np.sum(np.abs(coefficients) ** 2 / eigenvalues)) / count**3)


def test_cahn_hilliard_flow_conserves_mass_and_its_error_is_the_finite_difference_one():
    flow, theta0 = cahn_hilliard_flow()
    result = flow.run(theta0, 10, GaussNewton(max_iterations=15))
    weights = flow.metric.weights
    states = np.array([flow.parametrization.value(theta).squeeze(-1).numpy() for theta in result.thetas])
    references = np.array([state.squeeze(-1).numpy() for state in result.reference_states])
    masses = states @ weights.numpy()
    assert np.abs(masses - 0.1).max() < 1e-12 and np.abs(references @ weights.numpy() - 0.1).max() < 1e-12
    finite_difference = _finite_difference_cahn_hilliard(states[0], 10, flow.tau, 0.1)
    assert np.abs(references - finite_difference).max() < 1e-11  # the library's exact MMS is implicit Euler
    independent = np.array([_h_minus_one_norm(u - v) for u, v in zip(states, finite_difference)])
    assert np.abs(result.trajectory_error - independent).max() < 1e-10
    assert independent[1:].max() > 1e-9  # a nonzero error, measured
    assert result.certified
    assert (result.trajectory_error[1:] <= result.tracking_bound[1:]).all()
    assert np.all(np.diff(result.energy) < 0)


# ----------------------------------------------------------------------------- numerically singular metrics


class ApplyMatrix(Metric):
    """A user metric that applies a fixed node matrix."""

    def __init__(self, matrix):
        self.matrix = matrix

    def apply(self, v):
        return torch.einsum("ij,...jm->...im", self.matrix, v)


def _pinv_h_minus_one(count=N, dtype=torch.float64):
    stiffness, weights = _grid(count)
    weight_matrix = torch.diag(weights)
    return (weight_matrix @ torch.linalg.pinv(stiffness) @ weight_matrix).to(dtype)


def test_numerically_singular_matrix_metric_is_refused_at_construction():
    matrix = _pinv_h_minus_one()
    assert float(torch.linalg.eigvalsh(matrix)[0]) < 1e-16  # Cholesky succeeds on it
    assert int(torch.linalg.cholesky_ex(matrix)[1]) == 0
    with pytest.raises(ValueError, match=r"numerically singular.*condition number .* >= 1/\(4 n eps\)"):
        MatrixMetric(matrix)


def test_check_positive_definite_names_a_numerically_singular_metric():
    ok, reason = ApplyMatrix(_pinv_h_minus_one()).check_positive_definite((N, 1))
    assert not ok and "numerically singular" in reason
    network, constrained = _fixed_mass_network()
    with pytest.raises(ValueError, match="numerically singular"):
        IncrementManifold(network, ApplyMatrix(_pinv_h_minus_one()))
    stiffness, weights = _grid()
    with pytest.raises(ValueError, match="numerically singular"):  # not "tau is too large"
        MinimizingMovement(
            constrained, GinzburgLandau(0.1, stiffness, weights), ApplyMatrix(_pinv_h_minus_one()), 0.005
        )


def test_ill_conditioned_but_regular_metrics_are_accepted():
    count = 400
    weights = torch.full((count,), 1.0 / count, dtype=torch.float64)
    sobolev = SobolevMetric(weights, stiffness_1d(count, 0.0, 1.0, "dirichlet"), alpha=1.0)  # kappa ~ 6e5
    assert sobolev.check_positive_definite((count, 1)) == (True, None)
    diagonal = torch.logspace(0, -10, 50, dtype=torch.float64)  # kappa = 1e10 < 1/(4 n eps) = 2.3e13
    assert MatrixMetric(torch.diag(diagonal)).check_positive_definite((50, 1)) == (True, None)
    with pytest.raises(ValueError, match="numerically singular"):
        MatrixMetric(torch.diag(torch.logspace(0, -14, 50, dtype=torch.float64)))  # kappa = 1e14 >= 2.3e13


def test_singularity_is_judged_in_the_flow_dtype():
    diagonal = torch.logspace(0, -6, 20, dtype=torch.float64)  # regular in float64, singular in float32 (1/(4 n eps) = 1.0e5)
    assert MatrixMetric(torch.diag(diagonal)).check_positive_definite((20, 1)) == (True, None)
    ok, reason = MatrixMetric(torch.diag(diagonal)).check_positive_definite((20, 1), dtype=torch.float32)
    assert not ok and "numerically singular" in reason and "float32" in reason
