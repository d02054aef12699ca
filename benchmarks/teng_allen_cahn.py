r"""TENG's 2-D Allen–Cahn benchmark: an exact spectral reference computed here, each scheme's time error, BDF2's bound.

TENG's setting (``teng.py --equation allen_cahn --D 0.005``): :math:`u_t = D\Delta u + u - u^3`, :math:`D = 0.005`, on the torus
:math:`[0, 2\pi)^2`, its initial condition ``allen_cahn_equation_2d_spectral_fourier/T_0.npy`` (read at run time
from the user's clone of TENG, never shipped: 140 Fourier coefficients above 1e-12 of the largest,
:math:`|k|_\infty \le 16`, the heat benchmark's :math:`u_0`), :math:`\Delta t = 0.005`. The diffusivity is read off TENG's own
reference files (``teng.py``'s default ``--D 0.1`` is the heat equation's): the least-squares fit of the difference
quotient :math:`(u(0.005) - u_0)/0.005` of its ``T_0.005.npy`` by :math:`D\Delta u_0 + a u_0 + b u_0^3` gives
:math:`D = 0.00504`, :math:`a = 1.002`, :math:`b = -1.008`, and with :math:`D = 0.005` this reference agrees with TENG's
files (``teng_reference_difference``). It is the :math:`L^2` gradient flow of
:math:`E(u) = \int \tfrac D2|\nabla u|^2 + \tfrac14(u^2 - 1)^2`, whose convexity modulus in :math:`L^2` is
:math:`\lambda = -1` (the constant mode of :math:`-D\Delta + 3u^2 - 1 \succeq -1`).

- **Reference** (:func:`reference`): pseudo-spectral on the :math:`n \times n` grid, dealiased by the 2/3 rule
  (:func:`_nonlinear_hat`), ETDRK4 (Cox & Matthews 2002,
  coefficients by the contour integral of Kassam & Trefethen 2005) with a step far below TENG's; its
  convergence is checked by halving the step and doubling the grid (:func:`convergence`), and it is compared
  with TENG's own reference files at the times they exist.
- **Schemes** (:func:`scheme_errors`), exact in space on the same grid: Heun (TENG's default), implicit
  Euler, BDF2 with the Richardson start, each nonlinear step solved by the FFT fixed point
  :math:`\hat u \leftarrow \widehat{(a + \tau'(u - u^3))}/(1 + \tau'D|k|^2)` to 1e-14 (a contraction with factor
  :math:`\le 2\tau'` while :math:`|u| \le 1`).
- **Bound** (:func:`bdf2_bound_check`): BDF2's semi-convex tracking bound (``docs/theory.md``, section 7;
  valid for :math:`4\tau|\lambda| < 1`, here :math:`0.02`) on perturbed exact BDF2 steps of the same flow on a
  coarse grid (16 x 16: the library's ``GinzburgLandau`` steps are dense Newton solves) with the library's
  ``GinzburgLandau``: every error below its bound, and the ratio. ::

    python -m benchmarks.teng_allen_cahn --teng-dir ~/teng --json allen_cahn.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .teng import read_teng_initial_condition

DIFFUSIVITY = 0.005
TIME_STEP = 0.005
TIMES = (0.025, 0.05, 0.5, 1.0)
AC_FILE = "allen_cahn_equation_2d_spectral_fourier"


def initial_grid(teng_dir: Path, nodes: int) -> np.ndarray:
    r""":math:`u_0` on the :math:`n \times n` grid (first coordinate slowest), from TENG's coefficients (``norm="forward"``)."""
    wavenumbers, coefficients = read_teng_initial_condition(teng_dir / AC_FILE / "T_0.npy")
    spectrum = np.zeros((nodes, nodes), dtype=np.complex128)
    if np.abs(wavenumbers).max() >= nodes // 2:
        raise ValueError(f"{nodes} nodes per axis do not resolve |k| = {np.abs(wavenumbers).max()}")
    spectrum[wavenumbers[:, 0] % nodes, wavenumbers[:, 1] % nodes] = coefficients
    values = np.fft.ifft2(spectrum, norm="forward")
    return values.real


def _symbol(nodes: int) -> np.ndarray:
    frequencies = np.fft.fftfreq(nodes, 1 / nodes)
    return -DIFFUSIVITY * (frequencies[:, None] ** 2 + frequencies[None, :] ** 2)


def _nonlinear(u: np.ndarray) -> np.ndarray:
    return u - u**3


def _nonlinear_hat(u: np.ndarray) -> np.ndarray:
    r"""The Fourier coefficients of :math:`u - u^3`, dealiased: modes with :math:`|k_i| \ge n/3` removed (Orszag's 2/3 rule).

    Every state then keeps :math:`|k_i| < n/3` (Heun's right-hand side is masked the same way, so rounding in
    the removed modes is never amplified).
    """
    nodes = u.shape[0]
    frequencies = np.abs(np.fft.fftfreq(nodes, 1 / nodes))
    mask = (frequencies[:, None] < nodes / 3) & (frequencies[None, :] < nodes / 3)
    return mask * np.fft.fft2(_nonlinear(u))


def reference(u0: np.ndarray, times: tuple[float, ...], step: float) -> dict[float, np.ndarray]:
    r"""ETDRK4 from ``u0`` to each of ``times`` (multiples of ``step``): :math:`\hat u_t = L\hat u + \widehat{N(u)}`, :math:`L = -D|k|^2`."""
    nodes = u0.shape[0]
    linear = _symbol(nodes)
    e, e2 = np.exp(step * linear), np.exp(step * linear / 2)
    roots = np.exp(1j * np.pi * (np.arange(1, 33) - 0.5) / 32)
    lr = step * linear[..., None] + roots
    q = step * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=-1))
    f1 = step * np.real(np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=-1))
    f2 = step * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=-1))
    f3 = step * np.real(np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=-1))

    def n_hat(v_hat):
        return _nonlinear_hat(np.real(np.fft.ifft2(v_hat)))

    v = np.fft.fft2(u0)
    out, done = {}, 0
    for target in sorted(times):
        count = round(target / step)
        if not math.isclose(count * step, target, rel_tol=1e-9, abs_tol=1e-14):
            raise ValueError(f"time {target} is not a multiple of the step {step}")
        for _ in range(count - done):
            nv = n_hat(v)
            a = e2 * v + q * nv
            na = n_hat(a)
            b = e2 * v + q * na
            nb = n_hat(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = n_hat(c)
            v = e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3
        done = count
        out[target] = np.real(np.fft.ifft2(v))
    return out


def relative(u: np.ndarray, v: np.ndarray) -> float:
    """Relative L2 difference on the grid (equal weights)."""
    return float(np.linalg.norm(u - v) / np.linalg.norm(v))


def _coarsen(u: np.ndarray, nodes: int) -> np.ndarray:
    """A fine-grid field at the coarse grid's nodes (every ``fine/coarse``-th node: the coarse grid is a subgrid)."""
    return u[:: u.shape[0] // nodes, :: u.shape[1] // nodes]


def convergence(teng_dir: Path, nodes: int, step: float, times: tuple[float, ...]) -> dict:
    """The reference against itself with half the step and with twice the nodes, and against TENG's files."""
    u0 = initial_grid(teng_dir, nodes)
    base = reference(u0, times, step)
    halved = reference(u0, times, step / 2)
    finer = reference(initial_grid(teng_dir, 2 * nodes), times, step)
    teng = {}
    for time_ in times:
        path = teng_dir / AC_FILE / f"T_{time_:g}.npy"
        if path.exists():  # fftshift-ed, norm="forward": entry centre + k is the mode k
            shifted = np.load(path)
            centre = shifted.shape[0] // 2
            k = np.fft.fftfreq(nodes, 1 / nodes).astype(int)
            spectrum = shifted[np.ix_(centre + k, centre + k)]
            teng[f"{time_:g}"] = relative(np.real(np.fft.ifft2(spectrum, norm="forward")), base[time_])
    return {
        "nodes": nodes,
        "step": step,
        "half_step_difference": {f"{t:g}": relative(base[t], halved[t]) for t in times},
        "double_nodes_difference": {f"{t:g}": relative(base[t], _coarsen(finer[t], nodes)) for t in times},
        "teng_reference_difference": teng,
        "reference": base,
    }


def _implicit_step(anchor: np.ndarray, tau: float, tolerance: float = 1e-14, max_iterations: int = 200) -> np.ndarray:
    r"""Solve :math:`u - \tau(D\Delta u + u - u^3) = a` by the FFT fixed point (module docstring)."""
    denominator = 1 - tau * _symbol(anchor.shape[0])
    u = anchor.copy()
    for _ in range(max_iterations):
        new = np.real(np.fft.ifft2((np.fft.fft2(anchor) + tau * _nonlinear_hat(u)) / denominator))
        change = np.linalg.norm(new - u) / np.linalg.norm(new)
        u = new
        if change < tolerance:
            return u
    raise RuntimeError(f"the implicit step did not converge in {max_iterations} iterations (change {change:.2e})")


def _rhs(u: np.ndarray) -> np.ndarray:
    nodes = u.shape[0]
    frequencies = np.abs(np.fft.fftfreq(nodes, 1 / nodes))
    mask = (frequencies[:, None] < nodes / 3) & (frequencies[None, :] < nodes / 3)
    return np.real(np.fft.ifft2(mask * _symbol(nodes) * np.fft.fft2(u) + _nonlinear_hat(u)))


def schemes(u0: np.ndarray, step: float, times: tuple[float, ...]) -> dict[str, dict[float, np.ndarray]]:
    """Heun, implicit Euler and BDF2 (Richardson start) iterates at ``times``, exact in space."""
    count = {t: round(t / step) for t in times}
    last = max(count.values())
    heun, euler = [u0], [u0]
    for _ in range(last):
        u = heun[-1]
        predictor = u + step * _rhs(u)
        heun.append(u + step / 2 * (_rhs(u) + _rhs(predictor)))
        euler.append(_implicit_step(euler[-1], step))
    half = _implicit_step(_implicit_step(u0, step / 2), step / 2)
    bdf2 = [u0, 2 * half - euler[1]]
    for _ in range(last - 1):
        bdf2.append(_implicit_step((4 * bdf2[-1] - bdf2[-2]) / 3, 2 * step / 3))
    return {
        "Heun (TENG's default)": {t: heun[count[t]] for t in times},
        "implicit Euler": {t: euler[count[t]] for t in times},
        "BDF2, Richardson start": {t: bdf2[count[t]] for t in times},
    }


def bdf2_bound_check(u0_values: np.ndarray, steps: int = 20, size: float = 1e-4, seeds: int = 3) -> dict:
    r"""BDF2's semi-convex bound on perturbed exact BDF2 steps of TENG's Allen–Cahn flow on an :math:`n \times n` grid.

    ``GinzburgLandau`` with the spectral stiffness :math:`K = D_{\text{heat}}h^2(-\Delta)` of :mod:`benchmarks.teng`
    and :math:`\varepsilon^2 = D/D_{\text{heat}}` in :math:`L^2(h^2)`: its flow is :math:`u_t = D\Delta u + u - u^3`. Each exact step (Newton, the library's ``prox``) gets a
    perturbation ``size * N(0, 1)`` times a smooth mode; the ledger gets the step's residual, as the driver books it.
    ``u0_values``: :math:`u_0` at the coarse grid's nodes, shape ``(n, n)``.
    """
    import torch
    from teng import DIFFUSIVITY as HEAT_DIFFUSIVITY
    from teng import spectral_stiffness

    from mms_manifolds import GinzburgLandau, L2Metric
    from mms_manifolds.ledger import BDF2Ledger, BoundParts, TrackingLedger
    from mms_manifolds.schemes import BDF2
    from mms_manifolds.step_constants import StepConstants
    from mms_manifolds.subproblem import Residual

    nodes = u0_values.shape[0]
    u0 = torch.tensor(u0_values.reshape(-1, 1), dtype=torch.float64)
    weights = torch.full((nodes * nodes,), (2 * math.pi / nodes) ** 2, dtype=torch.float64)
    metric = L2Metric(weights)
    energy = GinzburgLandau(math.sqrt(DIFFUSIVITY / HEAT_DIFFUSIVITY), spectral_stiffness(nodes), weights)
    convexity = energy.convexity(metric)
    axis = 2 * math.pi * torch.arange(nodes, dtype=torch.float64) / nodes
    mode = (torch.cos(axis)[:, None] + torch.sin(2 * axis)[None, :]).reshape(-1, 1)
    scheme = BDF2(start="euler")
    exact = scheme.exact_trajectory(energy, metric, u0, [TIME_STEP] * steps)
    ratios, violations = [], 0
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        ledger = BDF2Ledger(convexity, TIME_STEP, metric, torch.float64, u0.numel())
        euler = TrackingLedger(StepConstants.of(TIME_STEP, convexity), metric, torch.float64, u0.numel())
        states, bounds, errors, g, anchor = [u0], [0.0], [], None, None
        for k in range(steps):
            plan = scheme.plan(states, [TIME_STEP] * (len(states) - 1), TIME_STEP)
            new = energy.prox(plan.anchor, plan.tau, metric) + size * float(torch.randn((), generator=generator, dtype=torch.float64)) * mode
            rho = float(metric.norm(energy.gradient(new) / weights.unsqueeze(-1) + (new - plan.anchor) / plan.tau))
            residual = Residual(rho, rho, 0.0)
            if k == 0:
                first = euler.step(BoundParts.start(0.0), residual, new, states[-1])
                g, bound, anchor = ledger.start(first, BoundParts.start(0.0)), first, 4 * first.tracking_bound
            else:
                g, bound, anchor = ledger.step(g, residual, new, states[-1], (bounds[-1], bounds[-2], anchor))
            states.append(new)
            bounds.append(bound.tracking_bound)
            errors.append(float(metric.norm(new - exact[k + 1])))
        violations += sum(error > bound for error, bound in zip(errors, bounds[1:]))
        ratios.append(max(bounds[1:]) / max(errors))
    return {"nodes": nodes, "convexity": convexity, "four_tau_lambda": 4 * TIME_STEP * abs(convexity), "steps": steps,
            "seeds": seeds, "violations": violations, "max_bound_over_max_error": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teng-dir", required=True, help="a clone of TENG's repository (its Allen-Cahn T_0.npy is read)")
    parser.add_argument("--nodes", type=int, default=128)
    parser.add_argument("--reference-step", type=float, default=5e-4)
    parser.add_argument("--json", help="write the results here")
    arguments = parser.parse_args()
    teng_dir = Path(arguments.teng_dir).expanduser()
    check = convergence(teng_dir, arguments.nodes, arguments.reference_step, TIMES)
    base = check.pop("reference")
    print(json.dumps(check, indent=1))
    iterates = schemes(initial_grid(teng_dir, arguments.nodes), TIME_STEP, TIMES)
    table = {name: {f"{t:g}": relative(values[t], base[t]) for t in TIMES} for name, values in iterates.items()}
    print(f"relative L2 error against the reference, dt = {TIME_STEP}")
    print(f"{'scheme':28s}" + "".join(f"{'T = ' + format(t, 'g'):>12s}" for t in TIMES))
    for name, row in table.items():
        print(f"{name:28s}" + "".join(f"{row[f'{t:g}']:12.2e}" for t in TIMES))
    bound = bdf2_bound_check(initial_grid(teng_dir, 64)[::4, ::4])  # u_0 at the 16 x 16 nodes (dense Newton steps)
    print(json.dumps(bound, indent=1))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"convergence": check, "schemes": table, "bdf2_bound": bound}, indent=1))


if __name__ == "__main__":
    main()
