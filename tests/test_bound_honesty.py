"""A certified bound must hold as stated: moduli checked, NaN never certified, rounding allowed for, inputs sane."""

import math
import warnings

import numpy as np
import pytest
import torch

from mms_manifolds import (
    Adam,
    CallableEnergy,
    DirichletEnergy,
    Energy,
    GaussNewton,
    GinzburgLandau,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.grids import stiffness_1d, trapezoid_weights

from cases import mlp

COUNT = 32


def _regression(dtype=torch.float64, tau=0.2, energy=None):
    x = torch.linspace(-1.0, 1.0, COUNT, dtype=dtype).unsqueeze(-1)
    metric = L2Metric(trapezoid_weights(COUNT, -1.0, 1.0, dtype=dtype))
    target = x.abs() + 0.3 * torch.sin(5 * x)
    energy = L2Regression(target, metric) if energy is None else energy(target, metric)
    return MinimizingMovement(TorchParametrization(mlp((1, 8, 1), 0).to(dtype), x), energy, metric, tau)


def _assert_withdrawn(result, step):
    """Withdrawn at ``step``: not certified, and every bound and bound part nan, from the first row on."""
    assert not result.certified
    assert result.metadata["certification_withdrawn"]["step"] == step
    for column in (result.tracking_bound, result.bound_inexactness, result.bound_approximation, result.bound_rounding):
        assert np.all(np.isnan(column))


def _assert_honest(result):
    """Never certified beside a non-finite bound, and a certified bound holds for every step."""
    if result.certified:
        assert np.all(np.isfinite(result.tracking_bound))
        finite = np.isfinite(result.trajectory_error)
        assert np.all(result.trajectory_error[finite] <= result.tracking_bound[finite])


@pytest.mark.parametrize("modulus", [math.inf, -math.inf, math.nan])
def test_non_finite_moduli_are_refused(modulus):
    with pytest.raises(ValueError, match="convexity must be finite"):
        CallableEnergy(lambda u: (u**2).sum(), convexity=modulus)

    class Declared(L2Regression):
        def convexity(self, metric):
            return modulus

    with pytest.raises(ValueError, match="a convexity modulus must be finite"):
        _regression(energy=Declared)


def _l2_with_modulus(declared):
    def build(target, metric):
        return CallableEnergy(lambda u: 0.5 * metric.inner(u - target, u - target), convexity=declared)

    return build


def test_a_modulus_larger_than_the_truth_withdraws_certification():
    """L2 regression has modulus 1; declared 50, the first step's curvature (1) contradicts it."""
    flow = _regression(energy=_l2_with_modulus(50.0))
    with pytest.warns(RuntimeWarning, match="certification withdrawn at MMS step 1: the declared convexity modulus 50"):
        result = flow.run(flow.parametrization.initial_point(), 4, GaussNewton(max_iterations=3))
    assert not result.certified and np.all(np.isnan(result.tracking_bound))
    assert result.metadata["certification_withdrawn"]["step"] == 1
    assert any("certification withdrawn" in note for note in result.metadata["notes"])
    honest = _regression(energy=_l2_with_modulus(1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the true modulus never trips the check
        result = honest.run(honest.parametrization.initial_point(), 4, GaussNewton(max_iterations=3))
    assert result.certified
    _assert_honest(result)


def test_a_semi_convex_energy_declared_convex_is_caught():
    """Ginzburg-Landau has modulus about -1 in the L2 metric; declared 5, a step's curvature shows less."""
    x = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1)
    weights = trapezoid_weights(COUNT, -1.0, 1.0)
    metric = L2Metric(weights)

    class Overstated(GinzburgLandau):
        def convexity(self, metric):
            return 5.0

    energy = Overstated(0.1, stiffness_1d(COUNT, -1.0, 1.0, "neumann"), weights)
    network = mlp((1, 8, 1), 0)
    with torch.no_grad():
        network[2].weight.mul_(0.1)  # start near u = 0, where the double well is concave
    flow = MinimizingMovement(TorchParametrization(network, x), energy, metric, 0.1)
    with pytest.warns(RuntimeWarning, match="declared convexity modulus 5 exceeds the curvature seen"):
        result = flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=3))
    _assert_withdrawn(result, result.metadata["certification_withdrawn"]["step"])
    assert "declared convexity modulus 5" in result.metadata["certification_withdrawn"]["reason"]


def test_nan_is_never_certified():
    flow = _regression()

    class NaNProx(L2Regression):
        def prox(self, u, tau, metric):
            return u * math.nan

    broken = MinimizingMovement(flow.parametrization, NaNProx(flow.energy.target, flow.metric), flow.metric, flow.tau)
    with pytest.raises(ValueError, match=r"NaNProx\.prox returned non-finite values at MMS step 1"):
        broken.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))

    class NaNGradient(L2Regression):
        calls = 0

        def gradient(self, u):
            NaNGradient.calls += 1
            return super().gradient(u) * (math.nan if NaNGradient.calls > 3 else 1.0)

    flaky = MinimizingMovement(
        flow.parametrization, NaNGradient(flow.energy.target, flow.metric), flow.metric, flow.tau
    )
    with pytest.warns(RuntimeWarning, match="certification withdrawn at MMS step 1: the residual is not finite"):
        result = flaky.run(flow.parametrization.initial_point(), 2, Adam(lr=1e-2, max_iterations=3), max_retries=0)
    _assert_withdrawn(result, 1)


@pytest.mark.parametrize(("dtype", "tau"), [(torch.float64, 1e-12), (torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_the_rounding_allowance_makes_tiny_steps_hold(dtype, tau):
    """At these tau the residual term sinks below rounding: without the allowance e_k > B_k in the 6th digit."""
    flow = _regression(dtype=dtype, tau=tau)
    result = flow.run(flow.parametrization.initial_point(), 6, GaussNewton(max_iterations=3))
    assert result.certified
    _assert_honest(result)
    assert np.all(result.bound_rounding[1:] > 0)
    assert np.all(result.bound_rounding[1:] <= 0.25 * result.tracking_bound[1:])  # an allowance, not the bound


def test_a_non_symmetric_stiffness_is_refused():
    stiffness = stiffness_1d(8, 0.0, 1.0, "dirichlet")
    stiffness[0, 1] += 1.0
    with pytest.raises(ValueError, match="stiffness must be symmetric"):
        DirichletEnergy(stiffness)
    with pytest.raises(ValueError, match="stiffness must be symmetric"):
        GinzburgLandau(0.1, stiffness, torch.full((8,), 0.1, dtype=torch.float64))


@pytest.mark.parametrize("layer", [torch.nn.Dropout(0.2), torch.nn.BatchNorm1d(6)], ids=["dropout", "batchnorm"])
def test_random_or_stateful_layers_in_training_mode_are_refused_and_the_module_never_changes(layer):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(1, 6, dtype=torch.float64), layer, torch.nn.Tanh(), torch.nn.Linear(6, 1, dtype=torch.float64)).double()
    x = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1)
    with pytest.raises(ValueError, match=r"training mode .*call module\.eval\(\)"):
        TorchParametrization(network, x)
    network.eval()
    state = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    metric = L2Metric(trapezoid_weights(COUNT, -1.0, 1.0))
    flow = MinimizingMovement(TorchParametrization(network, x), L2Regression(torch.sin(3 * x), metric), metric, 0.2)
    first = flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    second = flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert all(torch.equal(a, b) for a, b in zip(first.thetas, second.thetas))  # a function of its parameters
    assert all(torch.equal(state[name], tensor) for name, tensor in network.state_dict().items())
    assert network.training is False


def test_energy_subclasses_keep_working_with_the_checks():
    class Quadratic(Energy):
        def value(self, u):
            return 0.5 * (u**2).sum()

    flow = _regression(energy=lambda target, metric: Quadratic())
    result = flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert not result.certified and np.all(np.isnan(result.tracking_bound))
