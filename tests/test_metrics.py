"""Metrics: symmetry, positivity, solve and whitening consistent with apply; user metrics in one method."""

import pytest
import scipy.sparse
import torch

from mms_manifolds import IncrementManifold, L2Metric, MatrixMetric, Metric, SobolevMetric
from mms_manifolds.grids import stiffness_1d, trapezoid_weights

from cases import mlp_parametrization, random_spd


class ExponentialWeights(Metric):
    """A user metric written as one method: weights exp(i / N) on the nodes."""

    def apply(self, v):
        weights = torch.exp(torch.arange(v.shape[-2], dtype=v.dtype) / v.shape[-2])
        return weights.unsqueeze(-1) * v


def _metrics():
    count = 7
    weights = trapezoid_weights(count, 0.0, 1.0)
    stiffness = stiffness_1d(count, 0.0, (count - 1) / 6, "neumann")
    return {
        "l2": L2Metric(weights),
        "node-matrix": MatrixMetric(random_spd(count, 1)),
        "full-matrix": MatrixMetric(random_spd(2 * count, 2)),
        "scipy-sparse": MatrixMetric(scipy.sparse.csr_matrix(random_spd(count, 3).numpy())),
        "sobolev": SobolevMetric(weights, stiffness, alpha=0.5),
        "sobolev-sparse-stiffness": SobolevMetric(weights, scipy.sparse.csr_matrix(stiffness.numpy())),
        "user": ExponentialWeights(),
    }


@pytest.mark.parametrize("name", list(_metrics()))
def test_metric_identities(name):
    metric = _metrics()[name]
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(3, 7, 2, generator=generator, dtype=torch.float64), torch.randn(3, 7, 2, generator=generator, dtype=torch.float64)
    assert torch.allclose(metric.inner(u, v), metric.inner(v, u), atol=1e-12)
    assert bool((metric.inner(u, u) > 0).all())
    assert torch.allclose(metric.solve(metric.apply(u)), u, atol=1e-10)
    assert torch.allclose((metric.whiten(u) * metric.whiten(v)).sum(-1), metric.inner(u, v), atol=1e-10)
    assert torch.allclose(metric.apply(u)[1], metric.apply(u[1]), atol=1e-14)  # batch equals loop
    ok, reason = metric.check_positive_definite((7, 2))
    assert ok, reason


def test_user_metric_drives_a_manifold():
    phi = mlp_parametrization(0, count=7)
    manifold = IncrementManifold(phi, ExponentialWeights())
    theta = phi.initial_point()
    xi = manifold.random_tangent(theta, torch.Generator().manual_seed(1))
    assert torch.allclose(manifold.norm(theta, xi), torch.tensor(1.0, dtype=torch.float64))


def test_sobolev_matches_its_definition():
    weights = trapezoid_weights(5, 0.0, 1.0)
    stiffness = stiffness_1d(5, 0.0, 1.0, "neumann")
    metric = SobolevMetric(weights, stiffness, alpha=2.0)
    u = torch.randn(5, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = (weights * u[:, 0] ** 2).sum() + 2.0 * u[:, 0] @ stiffness @ u[:, 0]
    assert torch.allclose(metric.inner(u, u), expected)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: L2Metric(torch.tensor([1.0, 0.0], dtype=torch.float64)), "strictly positive"),
        (lambda: L2Metric(torch.tensor([1.0, float("inf")], dtype=torch.float64)), "non-finite"),
        (lambda: L2Metric(torch.ones(2, 2, dtype=torch.float64)), "1 dimension"),
        (lambda: MatrixMetric(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)), "not symmetric"),
        (lambda: MatrixMetric(torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)), "not positive definite"),
        (lambda: MatrixMetric(torch.ones(2, 3, dtype=torch.float64)), "square"),
        (lambda: SobolevMetric(torch.ones(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), alpha=-1.0), "alpha"),
    ],
)
def test_bad_metrics_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_indefinite_user_metric_is_rejected_by_the_manifold():
    class Indefinite(Metric):
        def apply(self, v):
            signs = torch.ones(v.shape[-2], 1, dtype=v.dtype)
            signs[0] = -1.0
            return signs * v

    with pytest.raises(ValueError, match="not positive definite"):
        IncrementManifold(mlp_parametrization(0, count=7), Indefinite())


def test_wrong_size_values_are_rejected():
    with pytest.raises(ValueError, match="nodes"):
        L2Metric(torch.ones(3, dtype=torch.float64)).apply(torch.ones(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not match"):
        MatrixMetric(torch.eye(3, dtype=torch.float64)).apply(torch.ones(4, 1, dtype=torch.float64))
