r"""TENG's 2-D periodic heat benchmark: the exact spectral reference and the time-discretisation error of each scheme.

The setting of TENG (Chen, McCarran, Vizcaino, Soljačić, Luo, "TENG: Time-Evolving Natural Gradient for
Solving PDEs With Deep Neural Nets Toward Machine Precision", ICML 2024): :math:`u_t = D\Delta u` with
:math:`D = 0.1` on the torus :math:`[0, 2\pi)^2`, a Fourier-series initial condition, time step
:math:`\Delta t = 0.005`, relative :math:`L^2` error against the exact solution. TENG's code is CC BY-NC-SA:
nothing of it is in this repository. Its initial condition is read **at run time** from TENG's own file
(``--teng-initial-condition PATH``: ``heat_equation_2d_spectral_fourier/T_0.npy`` of its repository, a
``fftshift``-ed square array of Fourier coefficients in ``numpy.fft``'s ``norm="forward"`` convention:
:math:`u(x) = \sum_k \hat u_k e^{ik\cdot x}`). Without it, a documented stand-in of the same form is used
(:func:`random_initial_condition`: 80 random real Fourier modes, not TENG's coefficients, which its text
does not list).

Exact in space: each Fourier mode :math:`\hat u_k` decays independently with :math:`\lambda_k = D|k|^2`, so

- the PDE: :math:`\hat u_k(t) = e^{-\lambda_k t}\hat u_k(0)`;
- implicit Euler (the minimizing movement): :math:`\hat u_k^{n+1} = \hat u_k^n/(1 + \Delta t\lambda_k)`;
- BDF2: :math:`(3 + 2\Delta t\lambda_k)\hat u_k^{n+1} = 4\hat u_k^n - \hat u_k^{n-1}`, started by one implicit Euler
  step or by Richardson's :math:`2E_{\Delta t/2}^2 - E_{\Delta t}` (:mod:`mms_manifolds.schemes`);
- Heun (TENG's default integrator, explicit RK2): :math:`\hat u_k^{n+1} = (1 - z + z^2/2)\hat u_k^n`, :math:`z = \Delta t\lambda_k`.

Relative :math:`L^2` errors follow from Parseval, mode by mode; no grid is involved. ::

    python -m benchmarks.teng                                   # the stand-in initial condition
    python -m benchmarks.teng --teng-initial-condition ~/teng/heat_equation_2d_spectral_fourier/T_0.npy

``--neural`` runs the library's neural flow in the same setting (:func:`neural_run`): TENG's network form
(:func:`~mms_manifolds.meshfree.periodic_mlp`, cos/sin features then ``tanh`` layers), the periodic
trapezoid grid of :math:`n \times n` nodes, the spectral Dirichlet energy
:math:`\tfrac D2\int|\nabla u|^2` of the grid values (exact for trigonometric polynomials of degree below
:math:`n/2`), the :math:`L^2` metric, and Gauss–Newton; the error is measured against the exact PDE
solution on the grid and against the exact iterates of the scheme. ::

    python -m benchmarks.teng --neural --scheme bdf2 --final-time 0.1 --nodes 32 --iterations 5
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

__all__ = [
    "DIFFUSIVITY",
    "SCHEMES",
    "grid_values",
    "neural_run",
    "random_initial_condition",
    "read_teng_initial_condition",
    "scheme_errors",
    "spectral_solution",
    "spectral_stiffness",
]

DIFFUSIVITY = 0.1
TIME_STEP = 0.005
TIMES = (0.025, 0.1, 1.0, 4.0)


def read_teng_initial_condition(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    r"""``(wavenumbers, coefficients)`` from TENG's ``T_0.npy``: the nonzero modes, shapes ``(n, 2)`` and ``(n,)`` complex.

    The file is an ``fftshift``-ed ``(2K + 1, 2K + 1)`` array in ``norm="forward"`` (index ``K`` is :math:`k = 0`).
    Entries below ``1e-12`` times the largest are rounding noise of the file's own transform (TENG's heat
    file has 140 coefficients above it and the rest, up to :math:`|k| = 48`, of size 1e-14 and less): they are
    dropped, since Heun is unstable on the highest of them (:math:`\Delta t D|k|^2 > 2`) and would report
    the noise's blow-up instead of the initial condition's error.

    Raises:
        ValueError: the array is not square with an odd side.
    """
    array = np.load(Path(path).expanduser(), allow_pickle=False)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] % 2 != 1:
        raise ValueError(f"{path}: expected a square array with an odd side (fftshift-ed coefficients), got {array.shape}")
    centre = array.shape[0] // 2
    rows, columns = np.nonzero(np.abs(array) > 1e-12 * np.abs(array).max())
    wavenumbers = np.stack([rows - centre, columns - centre], axis=-1)
    return wavenumbers, array[rows, columns].astype(np.complex128)


def random_initial_condition(modes: int = 80, highest: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""The stand-in: :math:`u_0 = \sum_{j=1}^{80} a_j\cos(k_j\cdot x) + b_j\sin(k_j\cdot x)`, as ``(wavenumbers, coefficients)``.

    The :math:`k_j` are ``modes`` distinct wavevectors with :math:`1 \le |k|_\infty \le` ``highest`` (one of each
    pair :math:`\pm k`), drawn from ``seed``; :math:`a_j, b_j \sim N(0, 1)\,e^{-|k_j|^2/5}`, a smooth series whose
    coefficients fall about as fast as those of TENG's file (a factor :math:`10^{-4}` from :math:`|k|^2 = 13` to
    :math:`45`). In exponential form each mode gives :math:`\hat u_{\pm k} = (a \mp ib)/2`, so ``2 * modes``
    coefficients are returned.
    """
    generator = np.random.default_rng(seed)
    candidates = [
        (k1, k2)
        for k1 in range(-highest, highest + 1)
        for k2 in range(-highest, highest + 1)
        if (k1, k2) > (0, 0)  # one of each pair +-k, k != 0
    ]
    chosen = [candidates[index] for index in generator.choice(len(candidates), size=modes, replace=False)]
    wavenumbers = np.array(chosen)
    scale = np.exp(-(wavenumbers**2).sum(-1) / 5)
    cosine, sine = generator.standard_normal(modes) * scale, generator.standard_normal(modes) * scale
    positive = (cosine - 1j * sine) / 2
    return np.concatenate([wavenumbers, -wavenumbers]), np.concatenate([positive, np.conj(positive)])


def _decay_rates(wavenumbers: np.ndarray) -> np.ndarray:
    return DIFFUSIVITY * (wavenumbers**2).sum(-1)


def spectral_solution(wavenumbers: np.ndarray, coefficients: np.ndarray, time: float) -> np.ndarray:
    r"""The exact PDE solution's coefficients :math:`e^{-D|k|^2 t}\hat u_k(0)`."""
    return np.exp(-_decay_rates(wavenumbers) * time) * coefficients


def _euler(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + z)


def _heun(z: np.ndarray) -> np.ndarray:
    return 1 - z + z**2 / 2


def _bdf2(start: str):
    def iterate(z: np.ndarray, steps: int, coefficients: np.ndarray) -> np.ndarray:
        previous = coefficients
        if start == "richardson":
            current = (2 * _euler(z / 2) ** 2 - _euler(z)) * coefficients
        else:
            current = _euler(z) * coefficients
        for _ in range(steps - 1):
            previous, current = current, (4 * current - previous) / (3 + 2 * z)
        return current

    return iterate


def _one_step(factor):
    def iterate(z: np.ndarray, steps: int, coefficients: np.ndarray) -> np.ndarray:
        return factor(z) ** steps * coefficients

    return iterate


SCHEMES = {
    "implicit Euler": _one_step(_euler),
    "Heun (TENG's default)": _one_step(_heun),
    "BDF2, implicit Euler start": _bdf2("euler"),
    "BDF2, Richardson start": _bdf2("richardson"),
}


def scheme_errors(
    wavenumbers: np.ndarray, coefficients: np.ndarray, time_step: float = TIME_STEP, times: tuple[float, ...] = TIMES
) -> dict[str, list[float]]:
    r"""Relative :math:`L^2` error against the PDE of each scheme's exact-in-space iterates, at each time (a multiple of the step)."""
    z = _decay_rates(wavenumbers) * time_step
    table = {}
    for name, iterate in SCHEMES.items():
        row = []
        for time in times:
            steps = round(time / time_step)
            if not math.isclose(steps * time_step, time, rel_tol=1e-12):
                raise ValueError(f"time {time} is not a multiple of the step {time_step}")
            exact = spectral_solution(wavenumbers, coefficients, time)
            row.append(float(np.linalg.norm(iterate(z, steps, coefficients) - exact) / np.linalg.norm(exact)))
        table[name] = row
    return table


def spectral_stiffness(nodes: int):
    r"""The Dirichlet energy :math:`\tfrac D2\int|\nabla u|^2` of grid values on the periodic :math:`n \times n` grid, as :math:`\tfrac12u\cdot Ku`.

    :math:`K = D h^2 (S \otimes I + I \otimes S)` with :math:`S` the spectral :math:`-\partial^2` on :math:`n` periodic
    points (:math:`h = 2\pi/n`; the Nyquist mode takes :math:`(n/2)^2`), in the x-major order of
    :func:`~mms_manifolds.meshfree.torus_grid`. A ``torch`` float64 tensor of shape ``(n^2, n^2)``.
    """
    import torch

    frequencies = np.fft.fftfreq(nodes, 1 / nodes)
    second = np.real(np.fft.ifft(frequencies[:, None] ** 2 * np.fft.fft(np.eye(nodes), axis=0), axis=0))
    second = 0.5 * (second + second.T)
    identity = np.eye(nodes)
    laplacian = np.kron(second, identity) + np.kron(identity, second)
    return torch.tensor(DIFFUSIVITY * (2 * np.pi / nodes) ** 2 * laplacian)


def grid_values(wavenumbers: np.ndarray, coefficients: np.ndarray, points: np.ndarray) -> np.ndarray:
    r""":math:`u(x) = \operatorname{Re}\sum_k \hat u_k e^{ik\cdot x}` at ``points`` of shape ``(N, 2)``, shape ``(N, 1)``."""
    phases = np.exp(1j * points @ wavenumbers.T.astype(np.float64))
    return np.real(phases @ coefficients)[:, None]


def neural_run(
    wavenumbers: np.ndarray,
    coefficients: np.ndarray,
    scheme: str = "bdf2",
    final_time: float = 0.1,
    time_step: float = TIME_STEP,
    nodes: int = 32,
    widths: tuple[int, ...] = (40,) * 6 + (1,),
    iterations: int = 5,
    fit_iterations: int = 60,
    seed: int = 0,
) -> dict:
    """The library's neural flow on TENG's heat benchmark; returns errors, times and iteration counts (one torch thread)."""
    import torch

    from mms_manifolds import (
        DirichletEnergy,
        GaussNewton,
        L2Metric,
        L2Regression,
        MinimizingMovement,
        TorchParametrization,
    )
    from mms_manifolds.meshfree import periodic_mlp, torus_grid
    from mms_manifolds.schemes import BDF2, ImplicitEuler

    from .timing import Stopwatch, use_threads

    use_threads(1)
    grid = torus_grid(nodes, 2)
    points = grid.points
    metric = L2Metric(grid.weights)
    energy = DirichletEnergy(spectral_stiffness(nodes))
    u0 = torch.tensor(grid_values(wavenumbers, coefficients, points.numpy()))
    parametrization = TorchParametrization(periodic_mlp(2, widths, seed), points)
    with Stopwatch() as fit_clock:
        fit = MinimizingMovement(parametrization, L2Regression(u0, metric), metric, tau=1e4)
        theta0 = fit.run(parametrization.initial_point(), 1, GaussNewton(max_iterations=fit_iterations)).thetas[-1]
    chosen = BDF2() if scheme == "bdf2" else ImplicitEuler()
    flow = MinimizingMovement(parametrization, energy, metric, time_step, scheme=chosen)
    steps = round(final_time / time_step)
    with Stopwatch() as flow_clock:
        result = flow.run(theta0, steps, GaussNewton(max_iterations=iterations))
    exact = torch.tensor(grid_values(wavenumbers, spectral_solution(wavenumbers, coefficients, final_time), points.numpy()))
    final = parametrization.value(result.thetas[-1])
    return {
        "scheme": repr(chosen),
        "parameters": parametrization.num_parameters,
        "nodes": nodes * nodes,
        "initial_fit_relative_error": float(metric.norm(parametrization.value(theta0) - u0) / metric.norm(u0)),
        "relative_error_against_the_pde": float(metric.norm(final - exact) / metric.norm(exact)),
        "relative_error_against_the_exact_scheme": float(result.trajectory_error[-1] / metric.norm(exact)),
        "tracking_bound": float(result.tracking_bound[-1]),
        "inner_iterations": int(result.inner_iterations.sum()),
        "fit_seconds": fit_clock.wall,
        "flow_seconds": flow_clock.wall,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teng-initial-condition", help="path to TENG's heat_equation_2d_spectral_fourier/T_0.npy")
    parser.add_argument("--time-step", type=float, default=TIME_STEP)
    parser.add_argument("--json", help="write the table here as JSON")
    parser.add_argument("--neural", action="store_true", help="also run the library's neural flow (neural_run)")
    parser.add_argument("--scheme", choices=("bdf2", "euler"), default="bdf2")
    parser.add_argument("--final-time", type=float, default=0.1)
    parser.add_argument("--nodes", type=int, default=32, help="grid nodes per axis")
    parser.add_argument("--widths", type=int, nargs="+", default=[40] * 6 + [1], help="hidden widths, then 1")
    parser.add_argument("--iterations", type=int, default=5, help="Gauss-Newton iterations per step")
    parser.add_argument("--fit-iterations", type=int, default=60)
    arguments = parser.parse_args()
    if arguments.teng_initial_condition:
        wavenumbers, coefficients = read_teng_initial_condition(arguments.teng_initial_condition)
        source = f"TENG's initial condition ({len(coefficients)} coefficients, read at run time)"
    else:
        wavenumbers, coefficients = random_initial_condition()
        source = "the stand-in initial condition (80 random real modes, seed 0; not TENG's coefficients)"
    table = scheme_errors(wavenumbers, coefficients, arguments.time_step)
    print(f"u_t = {DIFFUSIVITY} Lap u on [0, 2pi)^2, dt = {arguments.time_step}, {source}")
    print("relative L2 error against the PDE, exact in space (per Fourier mode)")
    print(f"{'scheme':32s}" + "".join(f"{'T = ' + format(t, 'g'):>12s}" for t in TIMES))
    for name, row in table.items():
        print(f"{name:32s}" + "".join(f"{value:12.2e}" for value in row))
    output = {"source": source, "times": TIMES, "errors": table}
    if arguments.neural:
        output["neural"] = neural_run(
            wavenumbers,
            coefficients,
            arguments.scheme,
            arguments.final_time,
            arguments.time_step,
            arguments.nodes,
            tuple(arguments.widths),
            arguments.iterations,
            arguments.fit_iterations,
        )
        print(json.dumps(output["neural"], indent=1))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
