"""Exactness tests against closed forms: a linear model (flat), a circle and a sphere in H_N."""

import math

import numpy as np
import pytest
import torch

from mms_manifolds import FunctionParametrization, IncrementManifold, L2Metric, LinearParametrization, MatrixMetric

from cases import mlp_parametrization, random_spd


def _m_orthonormal(metric_matrix, count, seed):
    """Columns e_1..e_count of R^N that are orthonormal in <u, v> = u . M v (Gram–Schmidt)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(metric_matrix.shape[0], count, generator=generator, dtype=torch.float64)
    basis = []
    for column in vectors.T:
        for previous in basis:
            column = column - (previous @ metric_matrix @ column) * previous
        basis.append(column / torch.sqrt(column @ metric_matrix @ column))
    return torch.stack(basis, dim=1)


@pytest.fixture
def linear_manifold():
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(15, 4, generator=generator, dtype=torch.float64)
    metric = MatrixMetric(random_spd(15, 1))
    return IncrementManifold(LinearParametrization(basis), metric, damping=0.0), basis


def test_linear_model_exp_is_straight_line(linear_manifold):
    manifold, _ = linear_manifold
    theta = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    xi = torch.tensor([1.0, 2.0, -0.5, 0.1], dtype=torch.float64)
    assert torch.allclose(manifold.exp(theta, xi), theta + xi, atol=1e-14)
    assert torch.allclose(manifold.retract_second_order(theta, xi), theta + xi, atol=1e-14)
    assert torch.allclose(manifold.retract_projective(theta, xi), theta + xi, atol=1e-12)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        manifold.retract_projective(theta, xi, 0)


def test_linear_model_rgrad_is_m_least_squares_projection(linear_manifold):
    manifold, basis = linear_manifold
    theta = torch.zeros(4, dtype=torch.float64)
    function_gradient = torch.randn(15, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # grad F in H_N (dual)
    egrad = basis.T @ function_gradient[:, 0]
    rgrad = manifold.egrad2rgrad(theta, egrad)
    # Independent reference: argmin_xi ||Phi xi - M^{-1} grad F||_M by numpy least squares on whitened data.
    matrix = manifold.metric.matrix.numpy()
    factor = np.linalg.cholesky(matrix)
    target = np.linalg.solve(matrix, function_gradient.numpy()[:, 0])
    reference, *_ = np.linalg.lstsq(factor.T @ basis.numpy(), factor.T @ target, rcond=None)
    assert np.allclose(rgrad.numpy(), reference, atol=1e-12)


def test_linear_model_projection_transport_is_identity(linear_manifold):
    manifold, _ = linear_manifold
    theta1, theta2 = torch.zeros(4, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    xi = torch.tensor([0.2, 0.1, -0.3, 1.0], dtype=torch.float64)
    assert torch.allclose(manifold.transport(theta1, theta2, xi), xi, atol=1e-12)
    assert torch.equal(manifold.transport(theta1, theta2, xi, kind="identity"), xi)


def _circle(radius, metric_matrix):
    basis = _m_orthonormal(metric_matrix, 2, seed=4)

    def function(theta):
        return radius * (torch.cos(theta[0]) * basis[:, 0] + torch.sin(theta[0]) * basis[:, 1])

    return FunctionParametrization(function, torch.tensor([0.4], dtype=torch.float64))


def test_circle_exp_is_great_circle_and_dist_is_chord():
    radius, metric_matrix = 1.7, random_spd(6, 2)
    manifold = IncrementManifold(_circle(radius, metric_matrix), MatrixMetric(metric_matrix), damping=0.0)
    theta, xi = torch.tensor([0.4], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64)
    start = manifold.parametrization.value(theta)
    velocity = manifold.to_ambient(theta, xi)
    speed = float(manifold.metric.norm(velocity))
    arc = speed / radius
    expected = math.cos(arc) * start + math.sin(arc) * radius * velocity / speed
    end = manifold.parametrization.value(manifold.exp(theta, xi))
    assert float((end - expected).abs().max()) < 1e-8
    assert float(manifold.dist(theta, theta + xi)) == pytest.approx(2 * radius * math.sin(0.9 / 2), rel=1e-12)


def test_sphere_exp_is_great_circle():
    """A 2-sphere of radius r in H_N through latitude/longitude: the chart metric varies, Gamma != 0."""
    radius, metric_matrix = 2.0, random_spd(7, 5)
    basis = _m_orthonormal(metric_matrix, 3, seed=6)

    def function(theta):
        latitude, longitude = theta[0], theta[1]
        return radius * (
            torch.cos(latitude) * torch.cos(longitude) * basis[:, 0]
            + torch.cos(latitude) * torch.sin(longitude) * basis[:, 1]
            + torch.sin(latitude) * basis[:, 2]
        )

    phi = FunctionParametrization(function, torch.tensor([0.3, 0.2], dtype=torch.float64))
    manifold = IncrementManifold(phi, MatrixMetric(metric_matrix), damping=0.0)
    theta, xi = torch.tensor([0.3, 0.2], dtype=torch.float64), torch.tensor([0.4, 0.7], dtype=torch.float64)
    start = phi.value(theta)
    velocity = manifold.to_ambient(theta, xi)
    speed = float(manifold.metric.norm(velocity))
    expected = math.cos(speed / radius) * start + math.sin(speed / radius) * radius * velocity / speed
    geodesic = manifold.geodesic(theta, xi)
    assert float((phi.value(geodesic.point) - expected).abs().max()) < 1e-8
    assert float(manifold.norm(geodesic.point, geodesic.velocity)) == pytest.approx(speed, rel=1e-9)
    assert geodesic.error_estimate < 1e-8
    # Straight-line chart retraction is not the geodesic on a curved chart.
    assert float((phi.value(theta + xi) - expected).abs().max()) > 1e-3


def test_diagnostics_report_rank_deficiency_of_duplicated_units():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 2, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(2, 1, dtype=torch.float64)).double()
    with torch.no_grad():
        net[0].weight[1] = net[0].weight[0]
        net[0].bias[1] = net[0].bias[0]
        net[2].weight[0, 1] = net[2].weight[0, 0]
    from mms_manifolds import TorchParametrization

    phi = TorchParametrization(net, torch.linspace(-1, 1, 20, dtype=torch.float64).unsqueeze(-1))
    manifold = IncrementManifold(phi, L2Metric(torch.full((20,), 0.1, dtype=torch.float64)))
    report = manifold.diagnostics(phi.initial_point())
    assert not report.full_column_rank
    assert report.numerical_rank <= phi.num_parameters - 3  # duplicated unit removes at least 3 directions
    assert report.damping > 0 and math.isfinite(report.damped_condition_number)
    assert "rank deficient" in str(report)
    # The damped metric still solves: geometry keeps working.
    g = torch.ones(phi.num_parameters, dtype=torch.float64)
    assert torch.isfinite(manifold.egrad2rgrad(phi.initial_point(), g)).all()


def test_diagnostics_of_full_rank_linear_model(linear_manifold):
    manifold, _ = linear_manifold
    report = manifold.diagnostics(torch.zeros(4, dtype=torch.float64))
    assert report.full_column_rank and report.numerical_rank == 4
    assert report.condition_number == pytest.approx(report.sigma_max / report.sigma_min)


def test_bad_input_raises_clear_errors():
    phi = mlp_parametrization(0)
    metric = L2Metric(torch.full((12,), 1 / 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="damping"):
        IncrementManifold(phi, metric, damping=-1.0)
    with pytest.raises(ValueError, match="solve_mode"):
        IncrementManifold(phi, metric, solve_mode="magic")
    manifold = IncrementManifold(phi, metric)
    theta = phi.initial_point()
    with pytest.raises(ValueError, match="theta contains"):
        manifold.egrad2rgrad(torch.full_like(theta, float("nan")), theta)
    with pytest.raises(ValueError, match="egrad has shape"):
        manifold.egrad2rgrad(theta, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="v has shape"):
        manifold.project(theta, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="transport_kind must be one of"):
        manifold.transport(theta, theta, theta, kind="parallel")
    # the undamped kernel solve is the minimum-norm pseudo-inverse, as the dense mode's (up to the squared
    # conditioning of the kernel Gram matrix that the dense mode's SVD avoids)
    kernel = IncrementManifold(phi, metric, damping=0.0, solve_mode="woodbury").egrad2rgrad(theta, theta)
    dense = IncrementManifold(phi, metric, damping=0.0, solve_mode="dense").egrad2rgrad(theta, theta)
    assert torch.allclose(phi.jvp(theta, kernel), phi.jvp(theta, dense), rtol=1e-6, atol=1e-8)
