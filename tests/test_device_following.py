"""The large-scale benchmarks' paths create every tensor on the model's device: checked without a GPU.

Torch's default device is set to ``"meta"`` (:func:`no_implicit_device`) while a path runs on a model whose
parameters and nodes are on the CPU. A tensor that the library or a benchmark creates without ``device=``
then lands on the meta device, and the first operation that mixes it with the model's tensors raises (or a
check refuses it: meta tensors hold no values). On a GPU the same tensor would be made on the CPU and mix with
the model's CUDA tensors, which fails the same way; so each path that passes here follows its model's device.
The paths are those of ``benchmarks/scale.py``, ``scale_cpu.py``, ``subspace.py`` (the 2-D regression step:
every solve mode and solver they run), the jet energies of ``poisson_scale.py`` and ``poisson_5d.py`` (a
resampled run), and ``teng_side_by_side.py step`` (TENG's heat step).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import warnings

import numpy as np
import pytest
import torch

from benchmarks import curves, scale_cpu, teng_side_by_side, timing
from benchmarks.flows import STEP_TAU, regression_step_flow
from benchmarks.poisson_5d import cos_sum, cos_sum_source
from benchmarks.poisson_scale import pinn_problem
from mms_manifolds import LBFGS, Adam, GaussNewton, MinimizingMovement, SubspaceGaussNewton
from mms_manifolds.linalg import ConjugateGradientSolve, KernelSolve, LayerKernelSolve, NystromPreconditioning
from mms_manifolds.problems import mlp

DOUBLE = torch.float64


@contextlib.contextmanager
def no_implicit_device():
    """Torch's default device is ``"meta"`` inside the block; the one before is restored after it."""
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(previous)


def test_the_check_catches_a_tensor_made_without_a_device():
    """The check itself: a tensor made without ``device=`` and mixed with the model's fails, one made with it does not."""
    model = torch.ones(3, dtype=DOUBLE)
    with no_implicit_device():
        with pytest.raises(RuntimeError, match="meta"):
            _ = model + torch.ones(3, dtype=DOUBLE)
        assert torch.equal(model + torch.ones(3, dtype=DOUBLE, device=model.device), 2 * model)
    assert torch.get_default_device() == torch.device("cpu")


MODES = {
    "auto": "auto",  # the dense mode at this size
    "cg-nystrom": ConjugateGradientSolve(max_iterations=8, preconditioner=NystromPreconditioning(8), on_unconverged="ignore"),
    "layer-kernel": LayerKernelSolve(),
    "kernel": KernelSolve(),
}


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_the_regression_step_follows_the_models_device(mode):
    """``regression_step_flow`` and every solver of ``scale.py`` / ``subspace.py`` on it, built and solved with no implicit device."""
    solvers = {
        "gauss-newton": GaussNewton(max_iterations=2),
        "subspace": SubspaceGaussNewton(24, seed=0, max_iterations=2),
        "adam": Adam(lr=1e-2, max_iterations=3),
        "lbfgs": LBFGS(max_iterations=2),
    }
    with warnings.catch_warnings(), no_implicit_device():
        warnings.simplefilter("ignore")  # unconverged CG on this tiny step is not what is checked
        flow, _ = regression_step_flow((6, 6), 5, "cpu", solve_mode=MODES[mode])
        compared = curves.solver_runs(flow, solvers)
    assert flow.parametrization.initial_point().device.type == "cpu"
    runs = compared["runs"]
    assert set(runs) == set(solvers)
    assert runs["gauss-newton"]["best_relative_error"] < 0.5  # two GN iterations on a 61-parameter least-squares step
    assert all(math.isfinite(run["best_relative_error"]) for run in runs.values())


def test_the_cpu_time_runner_follows_the_models_device():
    """``scale_cpu.run_solver`` (its clock picked from the device) with no implicit device."""
    with no_implicit_device():
        flow, _ = regression_step_flow((6, 6), 5, "cpu")
        theta = flow.parametrization.initial_point()
        anchor = flow.parametrization.value(theta).detach()
        exact = (anchor + STEP_TAU * flow.energy.target) / (1 + STEP_TAU)
        initial = float(flow.metric.norm(anchor - exact))
        run = scale_cpu.run_solver(flow, GaussNewton(max_iterations=2), theta, exact, initial)
    assert timing.clock_name(theta.device) == "cpu" and timing.clock_name(torch.device("cuda")) == "wall"
    assert run["iterations"] == 2 and run["best_relative_error"] < 0.5
    assert run["cpu_seconds"] >= 0 and math.isfinite(run["final_residual"]["total"])


def _pinn_problem(network: torch.nn.Module, inside: torch.Tensor, edge: torch.Tensor):
    """The PINN loss of ``poisson_scale.py`` with ``poisson_5d.py``'s solution, the sum of cosines (any dimension)."""
    return pinn_problem(network, inside, edge, source=cos_sum_source, solution=cos_sum)


def _point_sets(dimension: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(dimension)
    sets = []
    for _ in range(count):
        inside = torch.rand(24, dimension, generator=generator, dtype=DOUBLE)
        edge = torch.rand(10, dimension, generator=generator, dtype=DOUBLE)
        edge[:, 0] = torch.randint(0, 2, (10,), generator=generator).to(DOUBLE)
        sets.append((inside, edge))
    return sets


@pytest.mark.parametrize(
    "solver",
    [
        GaussNewton(max_iterations=2),
        GaussNewton(max_iterations=2, step_filter="tikhonov"),
        GaussNewton(max_iterations=2, step_filter="tikhonov", step_damping=1e-8, geodesic_acceleration=True),
    ],
    ids=["defaults", "tikhonov", "tikhonov-acceleration"],
)
def test_the_2d_poisson_jets_follow_the_models_device(solver):
    """The kernel-side solves of the 2-D PINN step (``poisson_scale.py``'s solvers) with no implicit device."""
    network = mlp((2, 8, 8, 1), 1)
    (inside, edge), = _point_sets(2, 1)
    with no_implicit_device():
        flow = MinimizingMovement(*_pinn_problem(network, inside, edge), tau=1e12)
        theta = flow.parametrization.initial_point()
        result = solver.solve(flow.subproblem(theta), theta)
    assert result.iterations == 2 and result.cost_history[-1] < result.cost_history[0]


def test_a_resampled_5d_poisson_run_follows_the_models_device():
    """``poisson_5d.py``'s run: each step on fresh points (``resample=``), one Tikhonov GN iteration, with no implicit device."""
    network = mlp((5, 8, 8, 1), 1)
    batches = _point_sets(5, 4)

    def problem(step: int):
        return _pinn_problem(network, *batches[step - 1])

    solver = GaussNewton(max_iterations=1, step_filter="tikhonov", step_damping=1e-8, final_residual=False)
    with no_implicit_device():
        flow = MinimizingMovement(*problem(1), tau=1e12)
        result = flow.run(flow.parametrization.initial_point(), 3, solver, certify=False, resample=problem)
    assert len(result.thetas) == 4 and all(theta.device.type == "cpu" for theta in result.thetas)


def test_tengs_heat_step_follows_the_models_device(tmp_path):
    """``teng_side_by_side step`` (TENG's network form on the 128 x 128 grid, the FFT energy, subspace GN) with no implicit device."""
    generator = np.random.default_rng(0)
    theta = generator.normal(scale=0.3, size=teng_side_by_side.parameter_count())
    module = teng_side_by_side.teng_module()
    shapes = [parameter.shape for parameter in module.parameters()]
    stored, offset = {}, 0
    for name, shape in zip(teng_side_by_side.PARAMETER_NAMES, shapes):  # TENG's order: each kernel (in, out)
        shape = tuple(shape) if name.startswith("Periodic") or name.endswith("bias") else tuple(shape)[::-1]
        size = math.prod(shape)
        stored[name], offset = theta[offset : offset + size].reshape(shape), offset + size
    np.savez(tmp_path / "teng_initial_parameters.npz", **stored)
    arguments = argparse.Namespace(
        out=str(tmp_path), device="cpu", scheme="euler", time_step=0.005, block=32, memory=0, damping=1e-3,
        no_acceleration=True, residual_cg_iterations=1, iterations=2,
    )
    with no_implicit_device():
        record = teng_side_by_side.run_step(arguments)
    assert record["device"] == "cpu" and record["clock"].startswith("time.process_time")
    assert record["iterations"] == 2 and record["final_relative_error"] < record["initial_relative_error"]
