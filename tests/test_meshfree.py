"""Mesh-free jets, node sets, jet energies and metrics, and node resampling in the driver."""

from __future__ import annotations

import math

import pytest
import torch

from mms_manifolds import (
    DirichletEnergy,
    GaussNewton,
    IncrementManifold,
    L2Metric,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.grids import grid_2d, grid_spacing, stiffness_1d, stiffness_2d, uniform_nodes
from mms_manifolds.meshfree import (
    GinzburgLandauJet,
    JetMetric,
    JetParametrization,
    NodeSet,
    PoissonLeastSquares,
    RitzEnergy,
    box_boundary_grid,
    box_boundary_monte_carlo,
    box_interior_grid,
    box_interior_monte_carlo,
    box_interior_sobol,
    box_midpoint_grid,
)
from mms_manifolds.reproduce.experiments import Bubble
from mms_manifolds.subproblem import MMSSubproblem

from cases import mlp


def _finite_difference_jet(network, x: torch.Tensor, step: float = 1e-4):
    """Value, central-difference gradient and Laplacian of ``network`` at one point ``x`` (shape (d,))."""
    d = x.shape[0]

    def f(y):
        return network(y.unsqueeze(0)).squeeze(0)

    value = f(x)
    gradient, laplacian = [], torch.zeros_like(value)
    for k in range(d):
        e = torch.zeros(d, dtype=x.dtype)
        e[k] = step
        gradient.append((f(x + e) - f(x - e)) / (2 * step))
        laplacian = laplacian + (f(x + e) - 2 * value + f(x - e)) / step**2
    return value, torch.stack(gradient, dim=-1), laplacian


@pytest.mark.parametrize("dimension, outputs", [(1, 1), (2, 1), (3, 2)])
def test_jets_match_finite_differences(dimension, outputs):
    net = mlp((dimension, 6, outputs), seed=dimension)
    generator = torch.Generator().manual_seed(0)
    nodes = {
        "interior": box_interior_monte_carlo(5, dimension, ("value", "gradient", "laplacian"), generator=generator),
        "edge": box_boundary_monte_carlo(3, dimension, ("value",), generator=generator),
    }
    jets = JetParametrization(net, nodes)
    split = jets.jets(jets.initial_point())
    assert jets.output_shape == (5 * outputs * (2 + dimension) + 3 * outputs, 1)
    with torch.no_grad():
        for i, x in enumerate(nodes["interior"].points):
            value, gradient, laplacian = _finite_difference_jet(net, x)
            torch.testing.assert_close(split["interior"].value[i], value, rtol=0, atol=1e-12)
            torch.testing.assert_close(split["interior"].gradient[i], gradient, rtol=0, atol=1e-7)
            torch.testing.assert_close(split["interior"].laplacian[i], laplacian, rtol=0, atol=1e-5)
        torch.testing.assert_close(split["edge"].value, net(nodes["edge"].points), rtol=0, atol=1e-12)
    assert split["edge"].gradient is None and split["edge"].laplacian is None


def test_hutchinson_laplacian_is_the_probe_average_of_the_hessian_and_exact_over_all_signs():
    net = mlp((3, 5, 1), seed=4)
    nodes = {"interior": box_interior_sobol(4, 3, ("laplacian",), seed=1)}
    exact = JetParametrization(net, nodes).jets(JetParametrization(net, nodes).initial_point())["interior"].laplacian
    estimated = JetParametrization(net, nodes, laplacian_probes=7, seed=3)
    theta = estimated.initial_point()
    probes = estimated._probes
    for i, x in enumerate(nodes["interior"].points):
        hessian = torch.func.hessian(lambda y: net(y.unsqueeze(0)).squeeze())(x)
        expected = torch.einsum("sd,de,se->", probes, hessian, probes) / probes.shape[0]
        torch.testing.assert_close(estimated.jets(theta)["interior"].laplacian[i, 0], expected)
    all_signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 3)
    estimated._probes = all_signs  # the full sign set cancels the off-diagonal terms exactly
    torch.testing.assert_close(estimated.jets(theta)["interior"].laplacian, exact)


def test_node_set_constructors_integrate_constants_and_validate():
    generator = torch.Generator().manual_seed(0)
    for node_set, measure in [
        (box_interior_grid(4, 3, low=-1.0, high=1.0), 8.0),
        (box_interior_monte_carlo(10, 4, generator=generator), 1.0),
        (box_interior_sobol(16, 2), 1.0),
        (box_midpoint_grid(3, 2, low=-1.0, high=2.0), 9.0),
        (box_boundary_grid(5), 4.0),
        (box_boundary_monte_carlo(50, 3, generator=generator), 6.0),
    ]:
        assert math.isclose(float(node_set.weights.sum()), measure, rel_tol=1e-12)
    square = box_boundary_grid(6).points
    assert len({tuple(point.tolist()) for point in square}) == 24
    on_boundary = ((square == 0) | (square == 1)).any(-1)
    assert bool(on_boundary.all())
    faces = box_boundary_monte_carlo(20, 4, generator=generator).points
    assert bool(((faces == 0) | (faces == 1)).any(-1).all())
    points = torch.rand(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive"):
        NodeSet(points, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        NodeSet(points, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="subset"):
        NodeSet(points, torch.ones(3, dtype=torch.float64), ("value", "hessian"))
    with pytest.raises(ValueError, match="low < high"):
        box_interior_grid(3, 2, low=1.0, high=0.0)


def test_bad_node_sets_energies_and_metrics_are_named():
    net = mlp((2, 3, 1), seed=0)
    interior = box_interior_grid(2, 2, ("value", "gradient"))
    with pytest.raises(ValueError, match="non-empty"):
        JetParametrization(net, {})
    with pytest.raises(ValueError, match="dimension"):
        JetParametrization(net, {"a": interior, "b": box_interior_grid(2, 3)})
    jets = JetParametrization(net, {"interior": interior, "boundary": box_boundary_grid(2)})
    with pytest.raises(ValueError, match="unknown node set 'inside'"):
        RitzEnergy(jets, interior="inside")
    with pytest.raises(ValueError, match="laplacian"):
        PoissonLeastSquares(jets)
    with pytest.raises(ValueError, match="carries no gradient"):
        JetMetric(jets, gradient={"boundary": 1.0})
    with pytest.raises(ValueError, match="zero"):
        JetMetric(jets)
    with pytest.raises(ValueError, match="non-finite"):
        RitzEnergy(jets, lambda x: x[:, 0] / 0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 20, 1\)"):
        jets.layout.split(torch.zeros(5, 1, dtype=torch.float64))


def test_semidefinite_metric_gives_the_tangential_residual_and_no_total():
    net = mlp((2, 4, 1), seed=1)
    jets = JetParametrization(net, {"interior": box_interior_grid(3, 2, ("value", "gradient"))})
    energy = RitzEnergy(jets, lambda x: torch.ones_like(x[:, 0]))
    semidefinite = JetMetric(jets, value={"interior": 1.0})
    definite = JetMetric(jets, value={"interior": 1.0}, gradient={"interior": 1.0})
    assert not semidefinite.positive_definite and definite.positive_definite
    theta = jets.initial_point() * 0.9
    anchor = jets.value(jets.initial_point())
    for metric in (semidefinite, definite):
        subproblem = MMSSubproblem(IncrementManifold(jets, metric), energy, 0.1, anchor)
        residual = subproblem.residual(theta)
        assert residual.tangential > 0
        if metric.positive_definite:
            # the dual formula equals the split of M^{-1} grad F
            assert math.isfinite(residual.total)
            gradient = subproblem.function_gradient(subproblem.node_values(theta))
            dual = subproblem.manifold.dual_tangential_norm(theta, gradient)
            assert math.isclose(dual, residual.tangential, rel_tol=1e-8)
        else:
            assert math.isnan(residual.total) and math.isnan(residual.normal)
    with pytest.raises(ValueError, match="semi-definite"):
        semidefinite.solve(anchor)


def _heat_flows_1d(count: int):
    """u_t = u_xx/4 on (0, 1), zero boundary values: finite differences and jets, same bubble network."""
    net = Bubble(mlp((1, 6, 1), seed=2))
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    x = uniform_nodes(count, 0.0, 1.0, "dirichlet").unsqueeze(-1)
    grid_metric = L2Metric(torch.full((count,), spacing, dtype=torch.float64))
    grid_flow = MinimizingMovement(
        TorchParametrization(net, x),
        DirichletEnergy(0.25 * stiffness_1d(count, 0.0, 1.0, "dirichlet")),
        grid_metric,
        tau=0.02,
    )
    # the midpoints of the grid's count + 1 intervals: the quadrature behind the FD stiffness
    jets = JetParametrization(net, {"interior": box_midpoint_grid(count + 1, 1, ("value", "gradient"))})
    jet_flow = MinimizingMovement(
        jets, RitzEnergy(jets, diffusion=0.25), JetMetric(jets, value={"interior": 1.0}), tau=0.02
    )
    return grid_flow, jet_flow


def test_meshfree_dirichlet_matches_finite_differences_1d_energy_and_trajectory():
    errors = []
    for count in (16, 32):
        grid_flow, jet_flow = _heat_flows_1d(count)
        theta = grid_flow.parametrization.initial_point()
        grid_energy = float(grid_flow.energy.value(grid_flow.parametrization.value(theta)))
        jet_energy = float(jet_flow.energy.value(jet_flow.parametrization.value(theta)))
        errors.append(abs(grid_energy - jet_energy) / abs(grid_energy))
    assert errors[0] < 5e-2 and errors[1] < errors[0] / 3  # second order in h

    grid_flow, jet_flow = _heat_flows_1d(32)
    theta0 = grid_flow.parametrization.initial_point()
    solver = GaussNewton(max_iterations=8)
    grid_result = grid_flow.run(theta0, steps=3, solver=solver)
    jet_result = jet_flow.run(theta0, steps=3, solver=solver)
    for k in range(1, 4):
        grid_values = grid_flow.parametrization.value(grid_result.thetas[k])
        jet_values = grid_flow.parametrization.value(jet_result.thetas[k])
        change = float(grid_flow.metric.norm(grid_flow.parametrization.value(theta0) - grid_values))
        assert float(grid_flow.metric.norm(grid_values - jet_values)) < 0.05 * change
    assert jet_result.metadata["certified"] is False
    assert any("semi-definite" in note for note in jet_result.metadata["notes"])
    assert bool(torch.isnan(torch.as_tensor(jet_result.tracking_bound[1:], dtype=torch.float64)).all())


def test_meshfree_dirichlet_matches_finite_differences_2d():
    net = Bubble(mlp((2, 5, 1), seed=3))
    errors = []
    for count in (8, 16):
        points = grid_2d(count, count, (0.0, 1.0, 0.0, 1.0), "dirichlet")
        with torch.no_grad():
            grid_values = net(points)
        grid_energy = float(
            DirichletEnergy(stiffness_2d(count, count, (0.0, 1.0, 0.0, 1.0), "dirichlet")).value(grid_values)
        )
        jets = JetParametrization(net, {"interior": box_midpoint_grid(count + 1, 2, ("gradient",))})
        jet_energy = float(RitzEnergy(jets).value(jets.value(jets.initial_point())))
        errors.append(abs(grid_energy - jet_energy) / grid_energy)
    assert errors[0] < 0.1 and errors[1] < errors[0] / 2.5


def test_meshfree_heat_flow_matches_finite_differences_2d():
    """Two MMS steps of u_t = Lap u / 4 on the unit square: grid flow and mesh-free flow, same network."""
    count, tau = 10, 0.01
    net = Bubble(mlp((2, 5, 1), seed=7))
    points, spacing = (
        grid_2d(count, count, (0.0, 1.0, 0.0, 1.0), "dirichlet"),
        grid_spacing(count, 0.0, 1.0, "dirichlet"),
    )
    grid = TorchParametrization(net, points)
    grid_metric = L2Metric(torch.full((count * count,), spacing**2, dtype=torch.float64))
    grid_energy = DirichletEnergy(0.25 * stiffness_2d(count, count, (0.0, 1.0, 0.0, 1.0), "dirichlet"))
    jets = JetParametrization(net, {"interior": box_midpoint_grid(count + 1, 2, ("value", "gradient"))})
    solver = GaussNewton(max_iterations=6)
    theta0 = grid.initial_point()
    grid_result = MinimizingMovement(grid, grid_energy, grid_metric, tau).run(theta0, 2, solver)
    jet_flow = MinimizingMovement(jets, RitzEnergy(jets, diffusion=0.25), JetMetric(jets, value={"interior": 1.0}), tau)
    jet_result = jet_flow.run(theta0, 2, solver)
    for k in (1, 2):
        on_grid, meshfree = grid.value(grid_result.thetas[k]), grid.value(jet_result.thetas[k])
        change = float(grid_metric.norm(grid.value(theta0) - on_grid))
        assert float(grid_metric.norm(on_grid - meshfree)) < 0.1 * change


def test_ginzburg_landau_and_least_squares_energies_match_their_formulas():
    net = mlp((2, 4, 1), seed=5)
    nodes = {
        "interior": box_interior_grid(3, 2, ("value", "gradient", "laplacian")),
        "boundary": box_boundary_grid(2),
    }
    jets = JetParametrization(net, nodes)
    u = jets.value(jets.initial_point())
    split = jets.layout.split(u)
    w, wb = nodes["interior"].weights, nodes["boundary"].weights
    inside, edge = split["interior"], split["boundary"]
    f = lambda x: x[:, 0] + 2 * x[:, 1]  # noqa: E731
    fx = f(nodes["interior"].points)
    gl = GinzburgLandauJet(jets, 0.3, boundary="boundary", penalty=2.0)
    expected = (w * (0.045 * inside.gradient.square().sum((-2, -1)) + 0.25 * (inside.value[:, 0] ** 2 - 1) ** 2)).sum()
    expected = expected + (wb * edge.value[:, 0] ** 2).sum()
    torch.testing.assert_close(gl.value(u), expected)
    lsq = PoissonLeastSquares(jets, f, penalty=3.0)
    expected = 0.5 * (w * (inside.laplacian[:, 0] + fx) ** 2).sum() + 1.5 * (wb * edge.value[:, 0] ** 2).sum()
    torch.testing.assert_close(lsq.value(u), expected)
    ritz = RitzEnergy(jets, f, diffusion=2.0, boundary="boundary", penalty=4.0, boundary_values=lambda x: x[:, 0])
    g = nodes["boundary"].points[:, 0]
    expected = (w * (inside.gradient.square().sum((-2, -1)) - fx * inside.value[:, 0])).sum()
    expected = expected + 2.0 * (wb * (edge.value[:, 0] - g) ** 2).sum()
    torch.testing.assert_close(ritz.value(u), expected)
    for energy in (gl, lsq, ritz):
        assert energy.convexity(JetMetric(jets, value={"interior": 1.0})) is None


def _resampled_problem(step: int, net: torch.nn.Module):
    generator = torch.Generator().manual_seed(1000 + step)
    nodes = {"interior": box_interior_monte_carlo(40, 2, ("value", "gradient"), generator=generator)}
    jets = JetParametrization(net, nodes)
    return jets, RitzEnergy(jets, lambda x: 10 * torch.ones_like(x[:, 0])), JetMetric(jets, value={"interior": 1.0})


def test_resampling_runs_with_fresh_nodes_resumes_exactly_and_certifies_nothing(tmp_path):
    net = Bubble(mlp((2, 5, 1), seed=6))
    jets, energy, metric = _resampled_problem(0, net)
    flow = MinimizingMovement(jets, energy, metric, tau=0.1)
    seen = []

    def resample(step):
        seen.append(step)
        return _resampled_problem(step, net)

    solver = GaussNewton(max_iterations=3)
    result = flow.run(jets.initial_point(), steps=3, solver=solver, resample=resample)
    assert seen == [1, 2, 3]
    assert result.metadata["resampled"] and not result.metadata["certified"]
    assert any("resampled" in note for note in result.metadata["notes"])
    assert bool(torch.isnan(torch.as_tensor(result.tracking_bound, dtype=torch.float64)).all())
    assert all(math.isfinite(value) for value in result.residual_tangential[1:])
    assert result.energy[-1] < result.energy[0]

    checkpoint = tmp_path / "run.npz"

    def interrupted(step):
        if step == 3:
            raise KeyboardInterrupt
        return _resampled_problem(step, net)

    with pytest.raises(KeyboardInterrupt):
        flow.run(jets.initial_point(), steps=3, solver=solver, resample=interrupted, checkpoint=checkpoint)
    resumed = flow.run(jets.initial_point(), steps=3, solver=solver, resample=resample, checkpoint=checkpoint)
    assert seen[-2:] == [2, 3] and len(seen) == 5  # step 2's nodes redrawn to prove the resume, step 3 solved
    torch.testing.assert_close(resumed.thetas[-1], result.thetas[-1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="resample cannot be combined"):
        flow.run(jets.initial_point(), steps=1, solver=solver, resample=resample, reference=torch.zeros(2, 120, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="same network"):
        flow.run(
            jets.initial_point(), steps=1, solver=solver, resample=lambda k: _resampled_problem(k, mlp((2, 3, 1), 0))
        )


class _SoftplusResidual(torch.nn.Module):
    """A deeper architecture with a skip connection and a non-tanh activation."""

    def __init__(self, dimension: int, outputs: int):
        super().__init__()
        torch.manual_seed(7)
        self.inner = torch.nn.Linear(dimension, 7, dtype=torch.float64)
        self.middle = torch.nn.Linear(7, 7, dtype=torch.float64)
        self.outer = torch.nn.Linear(7, outputs, dtype=torch.float64)

    def forward(self, points):
        hidden = torch.nn.functional.softplus(self.inner(points))
        return self.outer(hidden + torch.sin(self.middle(hidden)))


@pytest.mark.parametrize("probes", [None, 3])
@pytest.mark.parametrize(
    "network, dimension, derivatives",
    [
        (mlp((2, 8, 1), seed=1), 2, ("value", "laplacian")),
        (mlp((3, 5, 5, 2), seed=2), 3, ("value", "gradient", "laplacian")),
        (_SoftplusResidual(2, 2), 2, ("gradient", "laplacian")),
    ],
    ids=["tanh-2d-poisson", "deep-3d-two-outputs", "softplus-skip"],
)
def test_node_wise_jet_jacobian_equals_the_batched_jvp_path(network, dimension, derivatives, probes):
    """The fast Jacobian (vmap over nodes of jacrev over parameters of one node's jet) against p batched JVPs."""
    network = network.double()
    generator = torch.Generator().manual_seed(5)
    node_sets = {
        "interior": NodeSet(torch.rand(9, dimension, generator=generator, dtype=torch.float64), torch.full((9,), 1 / 9, dtype=torch.float64), derivatives),
        "boundary": NodeSet(torch.rand(4, dimension, generator=generator, dtype=torch.float64), torch.full((4,), 1 / 4, dtype=torch.float64), ("value",)),
    }
    jets = JetParametrization(network, node_sets, laplacian_probes=probes)
    theta = jets.initial_point() + 0.1 * torch.randn(jets.num_parameters, generator=generator, dtype=torch.float64)
    fast = jets.jacobian(theta)
    reference = super(TorchParametrization, jets).jacobian(theta)  # FunctionParametrization: batched JVPs
    assert fast.shape == reference.shape == (*jets.output_shape, jets.num_parameters)
    assert torch.allclose(fast, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))


def test_an_adaptive_run_on_a_semidefinite_metric_keeps_its_first_step():
    """No M^{-1} exists, so no first step from the tolerance: the run starts at its tau and adapts from there."""
    _, jet_flow = _heat_flows_1d(16)
    theta0 = jet_flow.parametrization.initial_point()
    result = jet_flow.run(theta0, steps=3, solver=GaussNewton(max_iterations=4), time_tolerance=1e-3)
    steps = result.metadata["scheme_record"]["time_steps"]
    assert steps[0] == jet_flow.tau and len(steps) >= 3
