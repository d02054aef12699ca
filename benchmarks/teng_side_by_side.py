r"""TENG's published code beside the library's BDF2 flow on TENG's 2-D heat benchmark, CPU seconds, one thread each.

The problem is :mod:`benchmarks.teng`'s: :math:`u_t = 0.1\Delta u` on :math:`[0, 2\pi)^2`, TENG's initial condition
(its ``heat_equation_2d_spectral_fourier/T_0.npy``), :math:`\Delta t = 0.005`, relative :math:`L^2` error at
:math:`T` against the exact solution :math:`\hat u_k(T) = e^{-0.1|k|^2T}\hat u_k(0)`, measured on the
:math:`128 \times 128` periodic grid (TENG's 16,384 quadrature nodes). TENG's code (CC BY-NC-SA) is run from
the user's own clone and never copied here. Three steps, each its own command:

1. ``teng`` -- run with **TENG's** Python environment (jax, flax; the versions its README names): imports
   ``teng.py`` from ``--teng-dir`` and runs its ``main`` unchanged (``--equation heat --integrator heun --dt
   0.005 --nb_samples 16384``), timing each of its step functions with ``time.process_time``; then
   evaluates every saved network on the grid (``teng_values.npz``) and exports TENG's fitted initial network
   (``init_model_state.pickle``) as ``teng_initial_parameters.npz``. ``--evaluate-only`` skips the run.
2. ``ours`` -- with this library's environment: TENG's network form (:class:`TengNetwork`, :math:`p = 8{,}361`)
   started from TENG's exported initial parameters, the spectral Dirichlet energy
   (:class:`SpectralDirichletEnergy`) in :math:`L^2`, ``BDF2()`` (Richardson start) and
   ``SubspaceGaussNewton``, ``certify=False`` (TENG certifies nothing either; the full residual split would
   cost a least-squares solve with the :math:`16384 \times 8361` Jacobian per step).
3. ``report`` -- both runs' errors against the exact solution at every step and their CPU seconds.

Set ``XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'`` and ``taskset -c 0``
for TENG; ``ours`` sets one torch thread itself. ::

    PYTHONPATH=~/teng XLA_FLAGS=... taskset -c 0 ~/teng-venv/bin/python -m benchmarks.teng_side_by_side teng --teng-dir ~/teng --out runs/teng --steps 20
    python -m benchmarks.teng_side_by_side ours --teng-dir ~/teng --out runs/teng --time-step 0.005 --final-time 0.1
    python -m benchmarks.teng_side_by_side report --teng-dir ~/teng --out runs/teng

(from this repository's root; ``teng`` needs TENG's clone on ``PYTHONPATH``, where its own ``teng.py`` and
``src`` are imported from). TENG's environment has no torch, so ``teng`` times its steps with the standard
library's clocks (CPU seconds, :func:`time.process_time`, and :func:`time.monotonic` wall seconds) rather than
:mod:`benchmarks.timing`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .teng import DIFFUSIVITY, grid_values, read_teng_initial_condition, spectral_solution

NODES = 128
"""Grid nodes per axis: TENG's ``--nb_samples 16384``."""
WIDTH, DEPTH = 40, 7
"""TENG's ``SimplePDENet3(width=40, depth=7)``."""
HEAT_FILE = "heat_equation_2d_spectral_fourier/T_0.npy"
PARAMETER_NAMES = ["PeriodicLinear2_0/a", "PeriodicLinear2_0/phi", "PeriodicLinear2_0/c"] + [
    f"Dense_{i}/{kind}" for i in range(DEPTH - 1) for kind in ("kernel", "bias")
]


def grid_points(nodes: int = NODES) -> np.ndarray:
    r"""The periodic grid :math:`x_{ij} = 2\pi(i, j)/n`, first coordinate slowest, shape ``(n^2, 2)`` (TENG's ``meshgrid(..., indexing='ij')``)."""
    axis = 2 * np.pi * np.arange(nodes) / nodes
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


def exact_values(heat_file: Path, time_: float, points: np.ndarray) -> np.ndarray:
    """The exact solution at ``time_`` on ``points``, shape ``(N,)``, from TENG's initial coefficients."""
    wavenumbers, coefficients = read_teng_initial_condition(heat_file)
    return grid_values(wavenumbers, spectral_solution(wavenumbers, coefficients, time_), points)[:, 0]


def relative_error(values: np.ndarray, exact: np.ndarray) -> float:
    r""":math:`\|u - u^*\|/\|u^*\|` on the grid (equal weights: the trapezoid rule of the torus)."""
    return float(np.linalg.norm(values - exact) / np.linalg.norm(exact))


# ---------------------------------------------------------------- ours (torch)


def teng_network(theta, points, width: int = WIDTH, depth: int = DEPTH):
    r"""TENG's network form as a pure function of the flat parameters ``theta`` (``(p,)``) at ``points`` (``(N, 2)``), shape ``(N,)``.

    From TENG's paper and README: the first layer maps :math:`x \in [0, 2\pi)^2` to the :math:`m = \text{width}/2`
    features per coordinate :math:`a_{ji}\cos(x_i + \varphi_{ji}) + c_{ji}` (``(m, 2)`` arrays :math:`a, \varphi, c`;
    feature index :math:`2j + i`), then ``tanh``, ``depth - 2`` dense layers of ``width`` with ``tanh``, a dense
    output. Parameter order: :math:`a, \varphi, c`, then each dense layer's kernel ``(in, out)`` and bias, as
    :data:`PARAMETER_NAMES`; :math:`p = 3 \cdot 40 + 5 \cdot 1640 + 41 = 8361`.
    """
    import torch

    half = width // 2
    offset = 0

    def take(*shape):
        nonlocal offset
        size = math.prod(shape)
        block = theta[offset : offset + size].reshape(shape)
        offset += size
        return block

    a, phi, c = take(half, 2), take(half, 2), take(half, 2)
    hidden = (a * torch.cos(points[:, None, :] + phi) + c).reshape(points.shape[0], width)
    hidden = torch.tanh(hidden)
    for layer in range(depth - 1):
        out = 1 if layer == depth - 2 else width
        kernel, bias = take(width, out), take(out)
        hidden = hidden @ kernel + bias
        if layer < depth - 2:
            hidden = torch.tanh(hidden)
    return hidden[:, 0]


def parameter_count(width: int = WIDTH, depth: int = DEPTH) -> int:
    """:math:`p` of :func:`teng_network`."""
    return 3 * width + (depth - 2) * (width * width + width) + width + 1


def pointwise_parametrization(points, theta0, width: int = WIDTH, depth: int = DEPTH):
    r"""The library's :class:`~mms_manifolds.FunctionParametrization` of :func:`teng_network`, with its Jacobian formed point by point.

    Each output depends on its own point only, so :math:`J` (``(N, 1, p)``) is ``vmap`` over the points of the
    parameter gradient of one point's value: :math:`N` reverse passes through one point, instead of the
    :math:`p` forward-mode passes through all points of the generic dense Jacobian. ``jacobian_columns``
    takes columns of it.
    """
    import torch
    from torch.func import grad, vmap

    from mms_manifolds import FunctionParametrization

    def single(theta, point):
        return teng_network(theta, point[None, :], width, depth)[0]

    class PointwiseTengNetwork(FunctionParametrization):
        def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
            return vmap(grad(single), in_dims=(None, 0))(theta, points).unsqueeze(1)

        def jacobian_columns(self, theta: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            return self.jacobian(theta)[:, :, indices]

    return PointwiseTengNetwork(lambda theta: teng_network(theta, points, width, depth), theta0)


def spectral_dirichlet_energy(nodes: int, diffusivity: float = DIFFUSIVITY):
    r""":math:`E(u) = \tfrac D2\int|\nabla u|^2` of grid values on the periodic :math:`n \times n` grid, by FFT.

    :math:`\nabla E(u) = Ku`, :math:`K = Dh^2\,\mathcal F^{-1}\operatorname{diag}(|k|^2)\mathcal F` (the Nyquist mode
    takes :math:`(n/2)^2`, as :func:`benchmarks.teng.spectral_stiffness`, which is this matrix formed densely);
    :math:`\lambda = 0` in :math:`L^2(h^2)` (the constant mode); exact step
    :math:`\hat u_{k+1} = \hat a_k/(1 + \tau D|k|^2)` per Fourier mode. Values ``(n^2, 1)``, first coordinate slowest.
    """
    import torch

    from mms_manifolds.energies import Energy

    frequencies = torch.fft.fftfreq(nodes, 1 / nodes, dtype=torch.float64)
    symbol = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    spacing_squared = (2 * math.pi / nodes) ** 2

    def apply(values, factor):
        grid = values.reshape(nodes, nodes)
        return torch.fft.ifft2(factor.to(values.dtype) * torch.fft.fft2(grid)).real.reshape(values.shape)

    class SpectralDirichletEnergy(Energy):
        def value(self, u):
            return 0.5 * (u * self.gradient(u)).sum()

        def gradient(self, u):
            return diffusivity * spacing_squared * apply(u, symbol)

        def hessian_matvec(self, u, v):
            return self.gradient(v)

        def convexity(self, metric):
            return 0.0

        def prox(self, u, tau, metric):
            return apply(u, 1 / (1 + tau * diffusivity * symbol))

    return SpectralDirichletEnergy()


def run_ours(arguments: argparse.Namespace) -> dict:
    """The library's flow from TENG's initial network; errors against the exact solution per step and CPU seconds."""
    import torch

    from mms_manifolds import L2Metric, MinimizingMovement, SubspaceGaussNewton
    from mms_manifolds.meshfree import torus_grid
    from mms_manifolds.schemes import BDF2, ImplicitEuler

    from .timing import Stopwatch, use_threads

    threads = use_threads(1)
    grid = torus_grid(NODES, 2, dtype=torch.float64)
    points = grid.points
    if not np.array_equal(points.numpy(), grid_points()):
        raise ValueError("torus_grid's node order differs from TENG's grid")
    stored = np.load(Path(arguments.out) / "teng_initial_parameters.npz")
    theta0 = torch.tensor(np.concatenate([stored[name].astype(np.float64).ravel() for name in PARAMETER_NAMES]), dtype=torch.float64)
    if theta0.numel() != parameter_count():
        raise ValueError(f"expected {parameter_count()} parameters, got {theta0.numel()}")
    parametrization = pointwise_parametrization(points, theta0)
    metric = L2Metric(grid.weights)
    energy = spectral_dirichlet_energy(NODES)
    scheme = BDF2() if arguments.scheme == "bdf2" else ImplicitEuler()
    flow = MinimizingMovement(
        parametrization, energy, metric, arguments.time_step, scheme=scheme, solve_mode=arguments.solve_mode
    )
    steps = round(arguments.final_time / arguments.time_step)
    solver = SubspaceGaussNewton(arguments.block, seed=0, max_iterations=arguments.iterations)
    heat_file = Path(arguments.teng_dir).expanduser() / HEAT_FILE
    with Stopwatch() as clock:
        result = flow.run(theta0, steps, solver, certify=False, progress=True)
    cpu, wall = clock.cpu, clock.wall
    errors = []
    for step, theta in enumerate(result.thetas):
        values = parametrization.value(theta).detach().numpy()[:, 0]
        exact = exact_values(heat_file, step * arguments.time_step, points.numpy())
        errors.append(relative_error(values, exact))
    return {
        "scheme": repr(scheme),
        "solver": f"SubspaceGaussNewton(block_size={arguments.block}, max_iterations={arguments.iterations})",
        "solve_mode": arguments.solve_mode,
        "time_step": arguments.time_step,
        "steps": steps,
        "parameters": parametrization.num_parameters,
        "nodes": points.shape[0],
        "relative_error_against_the_pde": errors,
        "relative_error_against_the_exact_scheme": [
            float(e) / float(np.linalg.norm(exact_values(heat_file, k * arguments.time_step, points.numpy())) * (2 * math.pi / NODES))
            for k, e in enumerate(result.trajectory_error)
        ],
        "inner_iterations": int(result.inner_iterations.sum()),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_seconds_per_step": cpu / steps,
        "torch_threads": threads,
    }


# ---------------------------------------------------------------- TENG (run with TENG's environment)


def run_teng(arguments: argparse.Namespace) -> None:
    """TENG's ``teng.main`` unchanged, its step functions timed in CPU seconds; then its saved networks on the grid."""
    import os
    import pickle

    teng_dir = Path(arguments.teng_dir).expanduser().resolve()
    out = Path(arguments.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(teng_dir)
    import teng as published  # TENG's own teng.py, from its clone on PYTHONPATH

    save_dir = arguments.save_dir
    if not arguments.evaluate_only:
        log = (out / "teng_steps.jsonl").open("w")

        def timed(step_function):
            def step(config, fiters, T, index, *rest):
                cpu, wall = time.process_time(), time.monotonic()
                losses = step_function(config, fiters, T, index, *rest)
                record = {"step": index, "T": str(T), "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall}
                log.write(json.dumps(record) + "\n")
                log.flush()
                return losses

            return step

        published.heun_step, published.euler_step = timed(published.heun_step), timed(published.euler_step)
        sys.argv = ["teng.py", "--equation", "heat", "--integrator", "heun", "--dt", "0.005", "--nb_samples",
                    str(NODES * NODES), "--nb_steps", str(arguments.steps), "--save_dir", save_dir]
        published.main()
    import jax.numpy as jnp
    from src.model import SimplePDENet3

    net = SimplePDENet3(width=WIDTH, depth=DEPTH, period=jnp.pi * 2)
    points = jnp.asarray(grid_points())
    with open(teng_dir / "init_model_state.pickle", "rb") as handle:
        initial = pickle.load(handle)
    np.savez(out / "teng_initial_parameters.npz", **{name: np.asarray(initial["params"][name.split("/")[0]][name.split("/")[1]]) for name in PARAMETER_NAMES})
    values = [np.asarray(net.apply(initial, points))]
    for step in range(arguments.steps):
        path = teng_dir / "results" / save_dir / f"var_state_new_{step}.pickle"
        if not path.exists():
            break
        with open(path, "rb") as handle:
            values.append(np.asarray(net.apply(pickle.load(handle), points)))
    np.savez(out / "teng_values.npz", values=np.stack(values))


def report(arguments: argparse.Namespace) -> dict:
    """TENG's errors per step from its values on the grid, its CPU seconds, and ours (``ours.json``) beside them."""
    out = Path(arguments.out)
    heat_file = Path(arguments.teng_dir).expanduser() / HEAT_FILE
    points = grid_points()
    values = np.load(out / "teng_values.npz")["values"]
    steps = [json.loads(line) for line in (out / "teng_steps.jsonl").read_text().splitlines() if line.strip()]
    teng_errors = [relative_error(v, exact_values(heat_file, k * 0.005, points)) for k, v in enumerate(values)]
    summary = {
        "teng_heun": {
            "time_step": 0.005,
            "relative_error_against_the_pde": teng_errors,
            "cpu_seconds_per_step": [s["cpu_s"] for s in steps],
            "wall_seconds_per_step": [s["wall_s"] for s in steps],
        }
    }
    for path in sorted(out.glob("ours*.json")):
        summary[path.stem] = json.loads(path.read_text())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("teng", "ours", "report"))
    parser.add_argument("--teng-dir", required=True, help="a clone of TENG's repository (read, never copied)")
    parser.add_argument("--out", required=True, help="folder for the runs' files")
    parser.add_argument("--steps", type=int, default=20, help="teng: Heun steps of 0.005")
    parser.add_argument("--evaluate-only", action="store_true", help="teng: evaluate the saved networks only")
    parser.add_argument("--save-dir", default="side_by_side_heun", help="teng: TENG's --save_dir (under its results/)")
    parser.add_argument("--scheme", choices=("bdf2", "euler"), default="bdf2")
    parser.add_argument("--time-step", type=float, default=0.005)
    parser.add_argument("--final-time", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=5, help="ours: inner iterations per step")
    parser.add_argument("--block", type=int, default=1536, help="ours: SubspaceGaussNewton block (TENG: 1536 / 1024)")
    parser.add_argument(
        "--solve-mode", default="cg", help="ours: the manifold's solve mode, used for the tangential residual each solve "
        "reports (matrix-free CG: the dense one forms the (p, p) Gram matrix of the 16384 x 8361 Jacobian)"
    )
    parser.add_argument("--name", default="ours", help="ours: the result file's name (NAME.json)")
    arguments = parser.parse_args()
    if arguments.mode == "teng":
        run_teng(arguments)
    elif arguments.mode == "ours":
        result = run_ours(arguments)
        Path(arguments.out, f"{arguments.name}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=1))
        print("relative error against the PDE per step:", " ".join(f"{e:.2e}" for e in result["relative_error_against_the_pde"]))
    else:
        print(json.dumps(report(arguments), indent=1))


if __name__ == "__main__":
    main()
