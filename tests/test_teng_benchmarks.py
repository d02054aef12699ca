"""benchmarks.teng_side_by_side and benchmarks.teng_allen_cahn: their energy, network, Jacobian and reference against exact ones."""

import importlib
import math

import numpy as np
import pytest
import torch

from mms_manifolds import FunctionParametrization, L2Metric


def _load(name):
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(scope="module")
def side():
    return _load("teng_side_by_side")


@pytest.fixture(scope="module")
def allen_cahn():
    return _load("teng_allen_cahn")


def test_fft_dirichlet_energy_is_the_dense_spectral_stiffness_and_its_prox_exact(side):
    nodes, tau = 8, 0.3
    teng = _load("teng")
    stiffness = teng.spectral_stiffness(nodes).to(torch.float64)
    energy = side.spectral_dirichlet_energy(nodes)
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(nodes * nodes, 1, generator=generator, dtype=torch.float64)
    assert torch.allclose(energy.gradient(u), stiffness @ u, rtol=1e-12, atol=1e-14)
    assert float(energy.value(u)) == pytest.approx(0.5 * float(u[:, 0] @ stiffness @ u[:, 0]), rel=1e-12)
    spacing_squared = (2 * math.pi / nodes) ** 2
    metric = L2Metric(torch.full((nodes * nodes,), spacing_squared, dtype=torch.float64))
    step = energy.prox(u, tau, metric)
    assert torch.allclose(spacing_squared * step + tau * stiffness @ step, spacing_squared * u, rtol=1e-12, atol=1e-13)
    eigenvalues = torch.linalg.eigvalsh(stiffness) / spacing_squared  # K relative to M = h^2 I
    assert energy.convexity(metric) == 0.0 and abs(float(eigenvalues.min())) < 1e-12


def test_teng_network_has_p_8361_and_the_module_and_its_columns_are_the_function_and_its_jacobian(side):
    """teng_module equals teng_network (kernels transposed), and its layer-factor columns J_S are J's to 1e-12."""
    assert side.parameter_count() == 8361
    assert sum(p.numel() for p in side.teng_module().parameters()) == 8361
    width, depth = 6, 4
    points = torch.tensor(side.grid_points(4), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    theta = torch.randn(side.parameter_count(width, depth), generator=generator, dtype=torch.float64)
    assert side.teng_network(theta, points, width, depth).shape == (16,)
    network = side.teng_parametrization(points, theta, width, depth)
    start = network.initial_point()
    assert torch.equal(start, side.module_parameters(theta, width, depth))
    assert torch.allclose(network.value(start)[:, 0], side.teng_network(theta, points, width, depth), rtol=1e-13, atol=1e-14)
    generic = FunctionParametrization(lambda t: side.teng_network(t, points, width, depth), theta)
    order = side.module_parameters(torch.arange(theta.numel(), dtype=torch.float64), width, depth).long()
    assert torch.allclose(network.jacobian(start), generic.jacobian(theta)[:, :, order], rtol=1e-12, atol=1e-14)
    indices = torch.tensor([0, 5, 40, 41, 70, start.numel() - 1])  # first layer, a kernel, a bias, the output
    columns = network.jacobian_columns(start, indices)
    assert torch.allclose(columns, network.jacobian(start)[:, :, indices], rtol=1e-12, atol=1e-14)
    # the periodic embedding: the network is 2 pi-periodic in each coordinate
    shifted = points + torch.tensor([2 * math.pi, -2 * math.pi], dtype=torch.float64)
    values = side.teng_network(theta, points, width, depth)
    assert torch.allclose(side.teng_network(theta, shifted, width, depth), values, rtol=1e-12, atol=1e-12)


def test_allen_cahn_implicit_step_solves_its_equation_and_bdf2_is_second_order(allen_cahn):
    nodes = 24
    axis = 2 * np.pi * np.arange(nodes) / nodes
    x, y = np.meshgrid(axis, axis, indexing="ij")
    u0 = (0.4 * np.cos(x) + 0.3 * np.sin(2 * y) + 0.1 * np.cos(x + y)).astype(np.float64)
    tau = 0.05
    u = allen_cahn._implicit_step(u0, tau)
    residual = u - tau * allen_cahn._rhs(u) - u0
    assert np.linalg.norm(residual) <= 1e-12 * np.linalg.norm(u0)
    final = 0.4
    exact = allen_cahn.reference(u0, (final,), 1e-3)[final]
    assert allen_cahn.relative(allen_cahn.reference(u0, (final,), 5e-4)[final], exact) < 1e-12
    errors = {}
    for step in (0.04, 0.02):
        iterates = allen_cahn.schemes(u0, step, (final,))
        errors[step] = {name: allen_cahn.relative(values[final], exact) for name, values in iterates.items()}
    slope = {name: math.log2(errors[0.04][name] / errors[0.02][name]) for name in errors[0.04]}
    assert slope["BDF2, Richardson start"] > 1.8 and slope["Heun (TENG's default)"] > 1.8
    assert 0.8 < slope["implicit Euler"] < 1.2


def test_explicit_euler_step_multiplies_each_fourier_mode(side):
    """The exact explicit Euler step of a grid mode cos(k . x) is (1 - dt D |k|^2) cos(k . x)."""
    points = side.grid_points(16)
    mode = np.cos(3 * points[:, 0] - 2 * points[:, 1])
    step = side.explicit_euler_step(mode, 0.01, nodes=16)
    assert np.allclose(step, (1 - 0.01 * side.DIFFUSIVITY * 13) * mode, rtol=0, atol=1e-13)


def test_a_resumed_teng_run_chains_its_save_folders(side, tmp_path):
    """--resume A: A's saved steps come first, then the new folder's; a folder without saved steps is refused."""
    for name, count in (("first", 3), ("second", 2)):
        (tmp_path / "results" / name).mkdir(parents=True)
        for step in range(count):
            (tmp_path / "results" / name / f"var_state_new_{step}.pickle").write_bytes(b"")
    assert side.saved_step_count(tmp_path, "first") == 3
    assert side.resumed_save_dirs(tmp_path, ["first"], "second") == ["first", "second"]
    assert side.resumed_save_dirs(tmp_path, None, "first") == ["first"]
    with pytest.raises(ValueError, match="no saved step"):
        side.resumed_save_dirs(tmp_path, ["missing"], "second")
