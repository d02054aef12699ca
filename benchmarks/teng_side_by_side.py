r"""TENG's published code beside the library's BDF2 flow on TENG's 2-D heat benchmark, CPU seconds, one thread each.

The problem is :mod:`benchmarks.teng`'s: :math:`u_t = 0.1\Delta u` on :math:`[0, 2\pi)^2`, TENG's initial condition
(its ``heat_equation_2d_spectral_fourier/T_0.npy``), :math:`\Delta t = 0.005`, relative :math:`L^2` error at
:math:`T` against the exact solution :math:`\hat u_k(T) = e^{-0.1|k|^2T}\hat u_k(0)`, measured on the
:math:`128 \times 128` periodic grid (TENG's 16,384 quadrature nodes). TENG's code (CC BY-NC-SA) is run from
the user's own clone and never copied here. Four modes, each its own command:

1. ``teng`` -- run with **TENG's** Python environment (jax, flax; the versions its README names): imports
   ``teng.py`` from ``--teng-dir`` and runs its ``main`` unchanged (``--equation heat --integrator heun --dt
   0.005 --nb_samples 16384``; ``--integrator euler`` for its explicit Euler step), timing each of its step
   functions with ``time.process_time``; then evaluates every saved network on the grid (``teng_values.npz``)
   and exports TENG's fitted initial network (``init_model_state.pickle``) as ``teng_initial_parameters.npz``.
   ``--evaluate-only`` skips the run; ``--resume A`` continues an earlier run saved in ``results/A`` from its
   last network (:func:`resumed_save_dirs`).
2. ``ours`` -- with this library's environment: TENG's network form (:func:`teng_module`, :math:`p = 8{,}361`)
   started from TENG's exported initial parameters, the spectral Dirichlet energy
   (:func:`spectral_dirichlet_energy`) in :math:`L^2`, ``BDF2()`` (Richardson start) and
   ``SubspaceGaussNewton`` (``--block``, ``--memory``, ``--no-acceleration``), ``certify=False`` (TENG certifies
   nothing either; the full residual split would cost a least-squares solve with the :math:`16384 \times 8361`
   Jacobian per step).
3. ``step`` -- one implicit Euler step from TENG's initial network, the error against its exact step (the FFT
   prox) after every Gauss–Newton iteration against CPU seconds (:func:`run_step`).
4. ``report`` -- both runs' errors against the exact solution at every step and their CPU seconds, TENG's
   explicit Euler step's error against its own exact step, and every ``ours*.json`` and ``step*.json``.

Set ``XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'`` and ``taskset -c 0``
for TENG; ``ours`` sets one torch thread itself. ::

    PYTHONPATH=~/teng XLA_FLAGS=... taskset -c 0 ~/teng-venv/bin/python -m benchmarks.teng_side_by_side teng --teng-dir ~/teng --out runs/teng --steps 20
    python -m benchmarks.teng_side_by_side ours --teng-dir ~/teng --out runs/teng --time-step 0.005 --final-time 0.1
    python -m benchmarks.teng_side_by_side step --teng-dir ~/teng --out runs/teng --block 256 --iterations 12 --no-acceleration
    python -m benchmarks.teng_side_by_side step --out runs/teng --device cuda --name step-cuda   # on a GPU
    python -m benchmarks.teng_side_by_side report --teng-dir ~/teng --out runs/teng

(from this repository's root; ``teng`` needs TENG's clone on ``PYTHONPATH``, where its own ``teng.py`` and
``src`` are imported from; ``step`` needs only ``teng_initial_parameters.npz`` in ``--out``). ``ours`` and ``step``
take ``--device`` (default ``cpu``): the network, grid and FFT energy are built there, and ``step`` then times
wall seconds synchronised on CUDA. TENG's environment has no torch, so ``teng`` times its steps with the standard
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


def teng_module(width: int = WIDTH, depth: int = DEPTH, device="cpu"):
    r""":func:`teng_network` as a ``torch.nn.Module`` (float64, on ``device``): TENG's periodic first layer, then ``torch.nn.Linear`` layers.

    ``TengPeriodicLayer`` holds :math:`a, \varphi, c` (``(m, 2)`` each) and maps ``(N, 2)`` points to the ``(N, width)``
    features :math:`a_{ji}\cos(x_i + \varphi_{ji}) + c_{ji}` (feature :math:`2j + i`); then ``tanh`` and the dense
    layers. Its flat parameters are :func:`teng_network`'s with each kernel transposed (``torch.nn.Linear`` stores
    ``(out, in)``; :func:`module_parameters` converts), and its dense layers give
    :meth:`~mms_manifolds.TorchParametrization.jacobian_columns` their per-layer factors.
    """
    import torch

    half = width // 2

    class TengPeriodicLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            options = {"dtype": torch.float64, "device": device}
            self.a, self.phi, self.c = (torch.nn.Parameter(torch.zeros(half, 2, **options)) for _ in range(3))

        def forward(self, points):
            return (self.a * torch.cos(points[:, None, :] + self.phi) + self.c).reshape(points.shape[0], width)

    layers = [TengPeriodicLayer(), torch.nn.Tanh()]
    for layer in range(depth - 1):
        out = 1 if layer == depth - 2 else width
        layers.append(torch.nn.Linear(width, out, dtype=torch.float64, device=device))
        if layer < depth - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def module_parameters(theta, width: int = WIDTH, depth: int = DEPTH):
    """:func:`teng_network`'s flat parameters (``(p,)``, TENG's order) in :func:`teng_module`'s order: each ``(in, out)`` kernel transposed."""
    import torch

    pieces, offset = [theta[: 3 * width]], 3 * width
    for layer in range(depth - 1):
        out = 1 if layer == depth - 2 else width
        kernel = theta[offset : offset + width * out].reshape(width, out)
        pieces += [kernel.T.reshape(-1), theta[offset + width * out : offset + width * out + out]]
        offset += width * out + out
    return torch.cat(pieces)


def teng_parametrization(points, theta0, width: int = WIDTH, depth: int = DEPTH):
    r"""The library's :class:`~mms_manifolds.TorchParametrization` of :func:`teng_module` at ``points``, started at ``theta0`` (TENG's order).

    The module is built on ``points``' device; ``theta0`` must lie there too.

    Node-separable (each output depends on its own point only), so ``jacobian_columns`` forms :math:`J_S` from
    the dense layers' factors (:func:`~mms_manifolds.parametrizations.layer_kernel.linear_layer_columns`) and the
    120 first-layer parameters' per-node gradients, never :math:`J` (``(16384, 1, 8361)``, 1.1 GB).
    """
    from torch.nn.utils import vector_to_parameters

    from mms_manifolds import TorchParametrization

    module = teng_module(width, depth, points.device)
    vector_to_parameters(module_parameters(theta0, width, depth), module.parameters())
    return TorchParametrization(module, points, node_separable=True)


def spectral_dirichlet_energy(nodes: int, diffusivity: float = DIFFUSIVITY, device="cpu"):
    r""":math:`E(u) = \tfrac D2\int|\nabla u|^2` of grid values on the periodic :math:`n \times n` grid, by FFT.

    :math:`\nabla E(u) = Ku`, :math:`K = Dh^2\,\mathcal F^{-1}\operatorname{diag}(|k|^2)\mathcal F` (the Nyquist mode
    takes :math:`(n/2)^2`, as :func:`benchmarks.teng.spectral_stiffness`, which is this matrix formed densely);
    :math:`\lambda = 0` in :math:`L^2(h^2)` (the constant mode); exact step
    :math:`\hat u_{k+1} = \hat a_k/(1 + \tau D|k|^2)` per Fourier mode. Values ``(n^2, 1)``, first coordinate slowest,
    on ``device`` (where the symbol :math:`|k|^2` is kept).
    """
    import torch

    from mms_manifolds.energies import Energy

    frequencies = torch.fft.fftfreq(nodes, 1 / nodes, dtype=torch.float64, device=device)
    symbol = (frequencies[:, None] ** 2 + frequencies[None, :] ** 2)[:, : nodes // 2 + 1]  # the real FFT's half
    spacing_squared = (2 * math.pi / nodes) ** 2

    def apply(values, factor):  # real FFTs: the symbol is real and even, so F^-1 diag F maps real grids to real ones
        grid = values.reshape(nodes, nodes)
        product = factor.to(values.dtype) * torch.fft.rfft2(grid)
        return torch.fft.irfft2(product, s=(nodes, nodes)).reshape(values.shape)

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


def heat_flow(arguments: argparse.Namespace):
    r"""TENG's heat problem in the library: ``(flow, points)``, the flow started from TENG's exported initial network.

    :func:`teng_parametrization` on the :math:`128 \times 128` grid, :class:`~mms_manifolds.L2Metric` with the
    trapezoid weights, :func:`spectral_dirichlet_energy`, ``BDF2()`` (Richardson start) or ``ImplicitEuler()``
    (``--scheme``), step ``--time-step``. The manifold's solve mode (for the tangential residual each solve ends
    with; no step is solved with it) is matrix-free CG capped at ``--residual-cg-iterations``: with the cap
    below convergence that residual is a lower estimate, which ``certify=False`` runs may report. Every tensor
    lies on ``--device``.
    """
    import torch

    from mms_manifolds import L2Metric, MinimizingMovement
    from mms_manifolds.linalg import ConjugateGradientSolve
    from mms_manifolds.meshfree import torus_grid
    from mms_manifolds.schemes import BDF2, ImplicitEuler

    grid = torus_grid(NODES, 2, dtype=torch.float64, device=arguments.device)
    points = grid.points
    if not np.allclose(points.cpu().numpy(), grid_points(), rtol=0.0, atol=1e-12):  # equal on the CPU; to rounding elsewhere
        raise ValueError("torus_grid's node order differs from TENG's grid")
    stored = np.load(Path(arguments.out) / "teng_initial_parameters.npz")
    flat = np.concatenate([stored[name].astype(np.float64).ravel() for name in PARAMETER_NAMES])
    theta0 = torch.tensor(flat, dtype=torch.float64, device=points.device)
    if theta0.numel() != parameter_count():
        raise ValueError(f"expected {parameter_count()} parameters, got {theta0.numel()}")
    parametrization = teng_parametrization(points, theta0)
    scheme = BDF2() if arguments.scheme == "bdf2" else ImplicitEuler()
    mode = ConjugateGradientSolve(max_iterations=arguments.residual_cg_iterations, on_unconverged="ignore")
    flow = MinimizingMovement(
        parametrization, spectral_dirichlet_energy(NODES, device=points.device), L2Metric(grid.weights), arguments.time_step,
        scheme=scheme, solve_mode=mode,
    )
    return flow, points


def subspace_solver(arguments: argparse.Namespace, iterations: int):
    """``SubspaceGaussNewton(--block, seed 0, --memory)`` with ``iterations`` iterations, ``--damping`` its initial damping."""
    from mms_manifolds import SubspaceGaussNewton

    return SubspaceGaussNewton(
        arguments.block, seed=0, memory=arguments.memory, max_iterations=iterations, initial_damping=arguments.damping,
        geodesic_acceleration=not arguments.no_acceleration,
    )


def run_ours(arguments: argparse.Namespace) -> dict:
    """The library's flow from TENG's initial network; errors against the exact solution per step and CPU seconds (and wall seconds, synchronised on CUDA)."""
    from .timing import Stopwatch, use_threads

    threads = use_threads(1)
    flow, points = heat_flow(arguments)
    parametrization = flow.parametrization
    steps = round(arguments.final_time / arguments.time_step)
    solver = subspace_solver(arguments, arguments.iterations)
    heat_file = Path(arguments.teng_dir).expanduser() / HEAT_FILE
    with Stopwatch(arguments.device) as clock:
        result = flow.run(
            parametrization.initial_point(), steps, solver, certify=False, progress=True, checkpoint=arguments.checkpoint
        )
    cpu, wall = clock.cpu, clock.wall
    errors = []
    for step, theta in enumerate(result.thetas):
        values = parametrization.value(theta).detach().cpu().numpy()[:, 0]
        exact = exact_values(heat_file, step * arguments.time_step, points.cpu().numpy())
        errors.append(relative_error(values, exact))
    return {
        "scheme": repr(flow.scheme),
        "solver": repr(solver),
        "residual_cg_iterations": arguments.residual_cg_iterations,
        "time_step": arguments.time_step,
        "steps": steps,
        "parameters": parametrization.num_parameters,
        "nodes": points.shape[0],
        "relative_error_against_the_pde": errors,
        "relative_error_against_the_exact_scheme": [
            float(e) / float(np.linalg.norm(exact_values(heat_file, k * arguments.time_step, points.cpu().numpy())) * (2 * math.pi / NODES))
            for k, e in enumerate(result.trajectory_error)
        ],
        "inner_iterations": int(result.inner_iterations.sum()),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_seconds_per_step": cpu / steps,
        "torch_threads": threads,
        "device": str(points.device),
    }


def run_step(arguments: argparse.Namespace) -> dict:
    r"""One implicit Euler step of ``--time-step`` from TENG's initial network: error against its exact step per iteration, CPU seconds.

    The step problem :math:`\min_\theta E(u_\theta) + \|u_\theta - u_0\|_M^2/(2\tau)` (:math:`u_0` the initial
    network's grid values), whose exact minimiser over grid functions is the FFT prox
    :math:`\hat u^*_k = \hat u_{0,k}/(1 + \tau D|k|^2)`; the error is :math:`\|u_\theta - u^*\|_M/\|u^*\|_M` after
    each Gauss–Newton iteration (:class:`benchmarks.curves.ErrorCurve`, the process's CPU seconds, the errors' own
    time left out). This is the exact time-discrete step TENG's explicit Euler step is measured against in its
    own way (its target :math:`u_0 + \tau D\Delta u_0`). On ``--device cuda`` the clock is the solver's wall
    seconds instead (CPU seconds do not count the GPU's work), the whole solve synchronised at both ends; the
    record's ``clock`` says which.
    """

    import torch

    from .curves import ErrorCurve, recording
    from .timing import Stopwatch, clock_name, use_threads

    threads = use_threads(1)
    flow, points = heat_flow(arguments)
    theta = flow.parametrization.initial_point()
    anchor = flow.parametrization.value(theta).detach()
    exact = flow.energy.prox(anchor, arguments.time_step, flow.metric)
    scale = float(flow.metric.norm(exact))
    kind = clock_name(points.device)
    curve = ErrorCurve(flow, exact, scale, clock=kind)
    solver = subspace_solver(arguments, arguments.iterations)
    with recording(curve), Stopwatch(points.device) as clock:
        curve.start()
        result = solver.solve(flow.step_problem(anchor), theta)
    with torch.no_grad():
        final = float(flow.metric.norm(flow.parametrization.value(result.point) - exact)) / scale
    seconds = clock.cpu if kind == "cpu" else clock.wall
    return {
        "problem": "one implicit Euler step from TENG's initial network, exact target the FFT prox",
        "solver": repr(solver),
        "block": arguments.block,
        "memory": arguments.memory,
        "geodesic_acceleration": not arguments.no_acceleration,
        "damping": arguments.damping,
        "residual_cg_iterations": arguments.residual_cg_iterations,
        "time_step": arguments.time_step,
        "parameters": flow.parametrization.num_parameters,
        "nodes": points.shape[0],
        "initial_relative_error": float(flow.metric.norm(anchor - exact)) / scale,
        "curve": curve.points,
        "final_relative_error": final,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason.name.lower(),
        "device": str(points.device),
        "clock": "time.process_time (CPU seconds)" if kind == "cpu" else "wall seconds, synchronised at the solve's ends",
        "solve_cpu_seconds": clock.cpu - curve.overhead,
        "solve_seconds": seconds - curve.overhead,
        "solve_seconds_after_the_last_iteration": seconds - curve.overhead - (curve.points[-1]["seconds"] if curve.points else 0.0),
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

    save_dirs = resumed_save_dirs(teng_dir, arguments.resume, arguments.save_dir)
    first_step = sum(saved_step_count(teng_dir, name) for name in save_dirs[:-1])
    if not arguments.evaluate_only:
        log_name = "teng_steps.jsonl" if arguments.integrator == "heun" else f"teng_{arguments.integrator}_steps.jsonl"
        log = (out / log_name).open("a" if arguments.resume else "w")

        def timed(step_function):
            def step(config, fiters, T, index, *rest):
                cpu, wall = time.process_time(), time.monotonic()
                losses = step_function(config, fiters, T, index, *rest)
                record = {"step": first_step + index, "T": f"{(first_step + index + 1) * 0.005:.3f}",
                          "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall, "losses": losses}
                log.write(json.dumps(record) + "\n")
                log.flush()
                return losses

            return step

        published.heun_step, published.euler_step = timed(published.heun_step), timed(published.euler_step)
        start = "init_model_state.pickle"
        if arguments.resume:
            start = str(Path("results") / save_dirs[-2] / f"var_state_new_{saved_step_count(teng_dir, save_dirs[-2]) - 1}.pickle")
        sys.argv = ["teng.py", "--equation", "heat", "--integrator", arguments.integrator, "--dt", "0.005",
                    "--nb_samples", str(NODES * NODES), "--nb_steps", str(arguments.steps - first_step),
                    "--save_dir", save_dirs[-1], "--load_model_state_from", start]  # TENG prepends ./results/
        published.main()
    import jax.numpy as jnp
    from src.model import SimplePDENet3

    net = SimplePDENet3(width=WIDTH, depth=DEPTH, period=jnp.pi * 2)
    points = jnp.asarray(grid_points())
    with open(teng_dir / "init_model_state.pickle", "rb") as handle:
        initial = pickle.load(handle)
    np.savez(out / "teng_initial_parameters.npz", **{name: np.asarray(initial["params"][name.split("/")[0]][name.split("/")[1]]) for name in PARAMETER_NAMES})
    values = [np.asarray(net.apply(initial, points))]
    for name in save_dirs:
        for step in range(saved_step_count(teng_dir, name)):
            with open(teng_dir / "results" / name / f"var_state_new_{step}.pickle", "rb") as handle:
                values.append(np.asarray(net.apply(pickle.load(handle), points)))
    values_name = "teng_values.npz" if arguments.integrator == "heun" else f"teng_{arguments.integrator}_values.npz"
    np.savez(out / values_name, values=np.stack(values))


def saved_step_count(teng_dir: Path, save_dir: str) -> int:
    """How many consecutive steps TENG saved in ``results/save_dir`` (``var_state_new_0.pickle``, ``..._1``, ...)."""
    count = 0
    while (teng_dir / "results" / save_dir / f"var_state_new_{count}.pickle").exists():
        count += 1
    return count


def resumed_save_dirs(teng_dir: Path, resume: list[str] | None, save_dir: str) -> list[str]:
    r"""The chain of TENG's save folders (under its ``results/``) whose steps follow each other, ending with ``save_dir``.

    ``--resume A B`` continues from the last network saved in ``B``, which continued ``A``: the steps are ``A``'s,
    then ``B``'s, then ``save_dir``'s. TENG's ``teng.py`` starts each run from ``--load_model_state_from`` with its
    random parameter blocks drawn afresh from its seeds, so a resumed run draws other blocks than an
    uninterrupted one would (the same distribution; TENG's grid, its sampler, is deterministic).
    """
    chain = [*(resume or []), save_dir]
    for name in chain[:-1]:
        if saved_step_count(teng_dir, name) == 0:
            raise ValueError(f"{teng_dir / 'results' / name} holds no saved step (var_state_new_0.pickle) to resume from")
    return chain


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
    euler_log, euler_values = out / "teng_euler_steps.jsonl", out / "teng_euler_values.npz"
    if euler_log.exists() and euler_values.exists():
        before, after = np.load(euler_values)["values"][:2]
        summary["teng_euler_step"] = {
            "time_step": 0.005,
            "cpu_seconds": [json.loads(line)["cpu_s"] for line in euler_log.read_text().splitlines() if line.strip()],
            "relative_error_against_its_exact_step": relative_error(after, explicit_euler_step(before, 0.005)),
        }
    for path in sorted([*out.glob("ours*.json"), *out.glob("step*.json")]):
        summary[path.stem] = json.loads(path.read_text())
    return summary


def explicit_euler_step(values: np.ndarray, time_step: float, nodes: int = NODES) -> np.ndarray:
    r"""The exact explicit Euler step of grid values, :math:`\hat u_k(1 - \Delta t D|k|^2)` per Fourier mode of the :math:`n \times n` grid, shape ``(n^2,)``.

    What TENG's explicit Euler step fits (its target :math:`u + \Delta t D\Delta u`, with the network's Laplacian),
    here with the grid's spectral Laplacian.
    """
    frequencies = np.fft.fftfreq(nodes, 1 / nodes)
    symbol = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    spectrum = np.fft.fft2(values.reshape(nodes, nodes)) * (1 - time_step * DIFFUSIVITY * symbol)
    return np.fft.ifft2(spectrum).real.reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("teng", "ours", "step", "report"))
    parser.add_argument("--teng-dir", help="a clone of TENG's repository (read, never copied); every mode but step")
    parser.add_argument("--out", required=True, help="folder for the runs' files")
    parser.add_argument("--steps", type=int, default=20, help="teng: Heun steps of 0.005")
    parser.add_argument("--evaluate-only", action="store_true", help="teng: evaluate the saved networks only")
    parser.add_argument("--save-dir", default="side_by_side_heun", help="teng: TENG's --save_dir (under its results/)")
    parser.add_argument("--integrator", choices=("heun", "euler"), default="heun", help="teng: TENG's --integrator")
    parser.add_argument(
        "--resume", nargs="+", metavar="SAVE_DIR", help="teng: earlier runs' save folders (under results/, in order) to "
        "continue from the last network of the last one; --steps counts all steps"
    )
    parser.add_argument("--device", default="cpu", help="ours, step: the torch device of the network, grid and energy")
    parser.add_argument("--scheme", choices=("bdf2", "euler"), default="bdf2")
    parser.add_argument("--time-step", type=float, default=0.005)
    parser.add_argument("--final-time", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=5, help="ours: inner iterations per step")
    parser.add_argument("--block", type=int, default=1536, help="ours: SubspaceGaussNewton block (TENG: 1536 / 1024)")
    parser.add_argument("--damping", type=float, default=1e-3, help="ours, step: SubspaceGaussNewton's initial_damping")
    parser.add_argument("--memory", type=int, default=0, help="ours, step: SubspaceGaussNewton's memory (last steps per block)")
    parser.add_argument("--no-acceleration", action="store_true", help="ours, step: no geodesic acceleration")
    parser.add_argument(
        "--residual-cg-iterations", type=int, default=500, help="ours, step: CG cap of the manifold's matrix-free mode, "
        "used only for the tangential residual each solve reports (never the step; no Jacobian of 16384 x 8361 formed)"
    )
    parser.add_argument("--name", default="ours", help="ours: the result file's name (NAME.json)")
    parser.add_argument(
        "--checkpoint", help="ours: the flow's checkpoint file (written after every step; a rerun resumes from it, and "
        "with --final-time at its last step only reports)"
    )
    arguments = parser.parse_args()
    if arguments.teng_dir is None and arguments.mode != "step":
        parser.error(f"{arguments.mode} needs --teng-dir")
    if arguments.mode == "teng":
        run_teng(arguments)
    elif arguments.mode == "step":
        result = run_step(arguments)
        Path(arguments.out, f"{arguments.name}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
        print("\n".join(f"{p['iteration']:3d} {p['seconds']:8.2f} s {p['relative_error']:.3e}" for p in result["curve"]))
    elif arguments.mode == "ours":
        result = run_ours(arguments)
        Path(arguments.out, f"{arguments.name}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=1))
        print("relative error against the PDE per step:", " ".join(f"{e:.2e}" for e in result["relative_error_against_the_pde"]))
    else:
        print(json.dumps(report(arguments), indent=1))


if __name__ == "__main__":
    main()
