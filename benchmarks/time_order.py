r"""The neural flow's order and adaptive steps against the continuous heat 2-D flow.

The heat 2-D flow of ``docs/results.md``: :math:`u_t = \Delta u/4` on the unit square, zero boundary values, on
the :math:`n \times n` interior grid (:math:`n = 14`, finite differences, lumped mass :math:`h^2`), final time
:math:`T = 0.2`. The reference is the **continuous** (space-discrete) flow :math:`u(t) = e^{-tM^{-1}K}u_0` from
the network's own initial state :math:`u_0 = \phi(\theta_0)`, exact through the eigendecomposition of
:math:`M^{-1}K`, whose eigenvectors on this grid are the sampled modes :math:`\sin k\pi x\sin l\pi y`.

Three models, each run by :class:`~mms_manifolds.MinimizingMovement` with :class:`~mms_manifolds.GaussNewton`:

- ``eigenmodes``: linear in its parameters, :math:`\phi(\theta) = \Phi\theta` with the nine modes
  :math:`k, l \le 3` (:math:`p = 9`), :math:`u_0 = \varphi_{11} + 0.3\varphi_{23}`. Its image is invariant under the
  flow, so every step problem's minimiser lies in it: the neural flow is the exact scheme up to the inner solve.
- ``sines``: a nonlinear network :math:`\sum_i a_i\sin(w_ix)\sin(v_iy)` with trainable amplitudes and
  frequencies (:math:`p = 27`, frequencies started at :math:`\pi(k, l)`, :math:`k, l \le 3`), fitted to the same
  :math:`u_0`: its image contains the modes, and Gauss–Newton works on the nonlinear chart.
- ``standard``: the heat 2-D network of ``docs/results.md`` (``reproduce.experiments.heat_2d``, full size:
  bubble times a 2-12-1 ``tanh`` network, :math:`p = 49`, :math:`u_0` its fit to :math:`\sin\pi x\sin\pi y`, relative
  fit error 2.1e-5): its approximation error is the floor.

Measured (:func:`order_table`, :func:`adaptive_run`):

- **order**: implicit Euler and BDF2 (Richardson start) with :math:`T/K` steps, :math:`K = 10 \dots 160` (Gauss–Newton
  at 4 iterations per solve for ``eigenmodes``, 5 for ``sines``, 5 and 10 for ``standard``): the
  relative error against the continuous flow at :math:`T`, the tracking error against the scheme's exact
  iterates (the inner solves' part), and the slopes :math:`\log_2(e_K/e_{2K})`;
- **adaptive steps**: ``run(..., time_tolerance=tol, final_time=T)`` for BDF2 and implicit Euler; the steps
  taken and rejected, the relative error at :math:`T`, the fewest fixed implicit Euler steps with at most that
  error (exact implicit Euler mode by mode, :func:`fixed_euler_steps`; the order table shows the neural one
  equal to it on ``eigenmodes`` and ``sines``), and per step the estimate over the **true local error**
  (:func:`true_local_errors`): the scheme's exact step from the exact solution through the computed state
  :math:`u_k` against that solution at :math:`t_{k+1}`; the controller judges the estimate's time part, the
  estimate less its roughness estimate (:func:`noise_estimates`), and the ratios are reported on all steps
  (the first steps' estimates read from the first window of computed states, ``TimeScheme.start_estimates``),
  from the first step whose estimate's window holds neither :math:`u_0` nor BDF2's start, and at the first
  estimates, beside Milne's estimate from the window with :math:`u_0`;
- **other fits** (``--seeds``, :func:`fit_distribution`): the standard network's adaptive BDF2 run (tolerance 2.5e-8,
  ``--iterations`` Gauss–Newton iterations per solve, default 20) on the network initialised with each seed and fitted
  by ``--fit-steps`` regression steps (:func:`seeded_standard_model`), with each fit's error; the JSON keeps one run
  per iteration count, fit length and seed.

Run from the repository's root (one torch thread; CPU seconds)::

    python -m benchmarks.time_order                 # writes benchmarks/results/time_order.json
    python -m benchmarks.time_order --quick         # K = 10 ... 40, the eigenmode model's adaptive runs only
    python -m benchmarks.time_order --adaptive-only # the adaptive runs again, the order tables kept from the JSON
    python -m benchmarks.time_order --seeds 1 2 3 4 5 6 [--fit-steps 12] [--iterations 20]  # other fits
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mms_manifolds import (
    DirichletEnergy,
    GaussNewton,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.grids import grid_2d, grid_spacing, stiffness_2d
from mms_manifolds.parametrizations.base import Parametrization
from mms_manifolds.problems import mlp
from mms_manifolds.reproduce.experiments import Bubble, build, fit
from mms_manifolds.results import estimate_floors
from mms_manifolds.schemes import BDF2, ImplicitEuler, TimeScheme

from . import RESULTS
from .timing import Stopwatch, conditions, use_threads

__all__ = [
    "FINAL_TIME",
    "HeatGrid",
    "Model",
    "SineProducts",
    "adaptive_run",
    "eigenmode_model",
    "fit_distribution",
    "fixed_euler_steps",
    "heat_grid",
    "noise_estimates",
    "order_table",
    "seeded_standard_model",
    "sine_model",
    "standard_model",
    "true_local_errors",
]

FINAL_TIME = 0.2
UNIT_SQUARE = (0.0, 1.0, 0.0, 1.0)
MODES = tuple((k, j) for k in (1, 2, 3) for j in (1, 2, 3))  # (k, l) of sin k pi x sin l pi y


@dataclass(frozen=True)
class HeatGrid:
    r"""The heat 2-D grid: nodes, :math:`M = h^2I`, :math:`E(u) = \tfrac12 u\cdot Ku` with :math:`K/4` of the 5-point stencil.

    Attributes:
        points: the interior nodes, shape ``(n*n, 2)``.
        metric: :math:`M`.
        energy: the Dirichlet energy.
        eigenvalues: those of :math:`A = M^{-1}K`, shape ``(n*n,)``.
        eigenvectors: orthonormal (Euclidean) eigenvectors of :math:`A`, shape ``(n*n, n*n)`` (:math:`M` is a multiple of :math:`I`).
    """

    points: torch.Tensor
    metric: L2Metric
    energy: DirichletEnergy
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor

    def mode(self, k: int, j: int) -> torch.Tensor:
        r""":math:`\sin k\pi x\sin j\pi y` on the nodes, shape ``(n*n, 1)``: an eigenvector of :math:`A`."""
        x, y = self.points[:, :1], self.points[:, 1:]
        return torch.sin(k * math.pi * x) * torch.sin(j * math.pi * y)

    def flow(self, u: torch.Tensor, t: float) -> torch.Tensor:
        r"""The continuous flow :math:`e^{-tA}u`, shape of ``u``; ``t < 0`` runs it backwards (only for smooth ``u``)."""
        vectors = self.eigenvectors
        return vectors @ (torch.exp(-t * self.eigenvalues).unsqueeze(-1) * (vectors.T @ u))

    def euler(self, u: torch.Tensor, t: float, steps: int) -> torch.Tensor:
        r"""``steps`` exact implicit Euler steps of :math:`t/\text{steps}` from ``u``: :math:`(I + tA/\text{steps})^{-\text{steps}}u`, mode by mode."""
        factors = (1 + t * self.eigenvalues / steps).pow(-steps)
        return self.eigenvectors @ (factors.unsqueeze(-1) * (self.eigenvectors.T @ u))

    def relative(self, u: torch.Tensor, exact: torch.Tensor) -> float:
        r""":math:`\|u - \text{exact}\|_M/\|\text{exact}\|_M`."""
        return float(self.metric.norm(u - exact) / self.metric.norm(exact))


def heat_grid(count: int = 14) -> HeatGrid:
    """The heat 2-D grid of ``docs/results.md`` (``count`` nodes per axis, float64)."""
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    points = grid_2d(count, count, UNIT_SQUARE, "dirichlet")
    metric = L2Metric(torch.full((count * count,), spacing**2, dtype=torch.float64))
    stiffness = 0.25 * stiffness_2d(count, count, UNIT_SQUARE, "dirichlet")
    eigenvalues, eigenvectors = torch.linalg.eigh(stiffness / spacing**2)
    return HeatGrid(points, metric, DirichletEnergy(stiffness), eigenvalues, eigenvectors)


@dataclass(frozen=True)
class Model:
    """A parametrization on the grid with its initial parameters; ``u0`` is :math:`\\phi(\\theta_0)`."""

    name: str
    parametrization: Parametrization
    theta0: torch.Tensor
    description: str

    @property
    def u0(self) -> torch.Tensor:
        return self.parametrization.value(self.theta0)


def two_modes(grid: HeatGrid) -> torch.Tensor:
    r""":math:`\varphi_{11} + 0.3\varphi_{23}`, the initial condition of the ``eigenmodes`` and ``sines`` models."""
    return grid.mode(1, 1) + 0.3 * grid.mode(2, 3)


def eigenmode_model(grid: HeatGrid) -> Model:
    r"""``eigenmodes``: :math:`\Phi\theta` with the modes :math:`k, l \le 3`, :math:`\theta_0` the coordinates of :func:`two_modes`."""
    basis = torch.cat([grid.mode(k, j) for k, j in MODES], dim=1)
    theta0 = torch.linalg.lstsq(basis, two_modes(grid)).solution.squeeze(-1)
    return Model("eigenmodes", LinearParametrization(basis), theta0, f"linear in theta, {len(MODES)} eigenmodes")


class SineProducts(torch.nn.Module):
    r""":math:`u(x, y) = \sum_i a_i\sin(w_ix)\sin(v_iy)`, amplitudes :math:`a` and frequencies :math:`(w, v)` trained.

    Started at :math:`a = 0`, :math:`(w_i, v_i) = \pi(k_i, l_i)` for the modes :math:`k, l \le 3` (float64).
    """

    def __init__(self):
        super().__init__()
        self.frequencies = torch.nn.Parameter(math.pi * torch.tensor(MODES, dtype=torch.float64))
        self.amplitudes = torch.nn.Parameter(torch.zeros(len(MODES), dtype=torch.float64))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = torch.sin(points[:, :1] * self.frequencies[:, 0]) * torch.sin(points[:, 1:] * self.frequencies[:, 1])
        return features @ self.amplitudes.unsqueeze(-1)


def sine_model(grid: HeatGrid) -> Model:
    """``sines``: :class:`SineProducts` fitted to :func:`two_modes` (``reproduce.experiments.fit``)."""
    parametrization = TorchParametrization(SineProducts(), grid.points)
    theta0 = fit(parametrization, grid.metric, two_modes(grid))
    return Model("sines", parametrization, theta0, "sum of 9 sine products, trained frequencies")


def standard_model() -> Model:
    """``standard``: the full heat 2-D experiment's network and fitted parameters (its grid is :func:`heat_grid`'s)."""
    experiment = build("heat_2d", "full")
    return Model("standard", experiment.flow.parametrization, experiment.theta0, experiment.description)


def seeded_standard_model(grid: HeatGrid, seed: int, fit_steps: int = 12) -> Model:
    r"""The standard network's architecture from ``seed``, fitted to :math:`\sin\pi x\sin\pi y` in ``fit_steps`` steps.

    Bubble times ``mlp((2, 12, 1), seed)`` (``standard_model`` is seed 4) on :func:`heat_grid`'s nodes; the fit is
    ``reproduce.experiments.fit``'s L2-regression flow (:math:`\tau = 10^4`, Gauss–Newton at 15 iterations a step) with
    ``fit_steps`` steps instead of its 3: after 3 the relative fit error depends on the seed from 4.5e-6 to 6.7e-2
    (most of them still falling), after 12 six of seeds 0–7 sit at 3.9e-6 – 4.8e-5 and two (0, 7) in a local minimum
    at 2.4e-2 and 3.4e-2.
    """
    target = torch.sin(math.pi * grid.points[:, :1]) * torch.sin(math.pi * grid.points[:, 1:])
    parametrization = TorchParametrization(Bubble(mlp((2, 12, 1), seed)), grid.points)
    regression = MinimizingMovement(parametrization, L2Regression(target, grid.metric), grid.metric, tau=1e4)
    theta0 = regression.run(parametrization.initial_point(), fit_steps, GaussNewton(max_iterations=15)).thetas[-1]
    error = grid.relative(parametrization.value(theta0), target)
    description = f"bubble 2-12-1, seed {seed}, {fit_steps} fit steps, fit error {error:.2g}"
    return Model(f"standard seed {seed}", parametrization, theta0, description)


def fit_distribution(
    grid: HeatGrid, seeds: Sequence[int], fit_steps: int = 12, tolerance: float = 2.5e-8, iterations: int = 20
) -> list[dict[str, object]]:
    r"""The standard network's adaptive BDF2 run (:func:`adaptive_run`, truth from :math:`u_0`, ``iterations`` Gauss–Newton
    iterations per solve, recorded as ``"iterations"``) on the fit of each seed.

    Per fit (:func:`seeded_standard_model`): its relative fit error to :math:`\sin\pi x\sin\pi y` (``fit_error``) and
    :func:`adaptive_run`'s results, among them the steps, rejections, error at :math:`T`, the fixed implicit Euler steps
    for that error and the steps whose estimate is outside :math:`[1/3, 3]` of the truth.
    """
    runs = []
    target = torch.sin(math.pi * grid.points[:, :1]) * torch.sin(math.pi * grid.points[:, 1:])
    for seed in seeds:
        model = seeded_standard_model(grid, seed, fit_steps)
        run = adaptive_run(grid, model, BDF2(), tolerance, iterations, through_computed=False)
        runs.append({"seed": seed, "fit_steps": fit_steps, "fit_error": grid.relative(model.u0, target), **run})
    return runs


def _flow(grid: HeatGrid, model: Model, tau: float, scheme: TimeScheme) -> MinimizingMovement:
    return MinimizingMovement(model.parametrization, grid.energy, grid.metric, tau, scheme=scheme)


def order_table(
    grid: HeatGrid, model: Model, scheme: TimeScheme, counts: Sequence[int], iterations: int
) -> dict[str, object]:
    r"""Fixed steps :math:`T/K` for each ``K`` in ``counts``: errors at :math:`T` (relative, :math:`M`-norm) and slopes.

    Each row: ``steps``, ``error`` against the continuous flow from :math:`u_0`, ``tracking_error`` against the
    scheme's exact iterates (the driver's ``trajectory_error``), ``tracking_bound`` (both relative), ``cpu_seconds``.
    """
    exact = grid.flow(model.u0, FINAL_TIME)
    scale = float(grid.metric.norm(exact))
    rows = []
    for count in counts:
        with Stopwatch() as clock:
            result = _flow(grid, model, FINAL_TIME / count, scheme).run(
                model.theta0, count, GaussNewton(max_iterations=iterations)
            )
        final = model.parametrization.value(result.thetas[-1])
        rows.append(
            {
                "steps": count,
                "error": grid.relative(final, exact),
                "tracking_error": float(result.trajectory_error[-1]) / scale,
                "tracking_bound": float(result.tracking_bound[-1]) / scale,
                "cpu_seconds": clock.cpu,
            }
        )
    errors = [row["error"] for row in rows]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    return {"model": model.name, "scheme": repr(scheme), "iterations": iterations, "rows": rows, "slopes": slopes}


def true_local_errors(
    grid: HeatGrid,
    scheme: TimeScheme,
    states: Sequence[torch.Tensor],
    time_steps: Sequence[float],
    through_computed: bool = True,
) -> list[float]:
    r"""Per step :math:`k + 1`: :math:`\|\Phi(w(t_{k-1}), w(t_k)) - w(t_{k+1})\|_M`, the scheme's local error on an exact solution :math:`w`.

    ``through_computed``: :math:`w(t) = e^{-(t - t_k)A}u_k`, the exact solution through the computed state
    :math:`u_k` (implicit Euler uses :math:`w(t_k) = u_k` only; BDF2 also :math:`w(t_{k-1}) = e^{\tau_kA}u_k`, the flow
    run backwards, accurate only when :math:`u_k` has no high modes: the ``eigenmodes`` and ``sines`` models).
    Otherwise :math:`w(t) = e^{-tA}u_0`, the flow from the start (for the ``standard`` network, whose states carry
    high modes at its approximation error). :math:`\Phi` is the scheme's exact step; ``states`` holds
    :math:`u_0, \dots, u_K`.
    """
    times = [0.0]
    for tau in time_steps:
        times.append(times[-1] + tau)
    errors = []
    for k, tau in enumerate(time_steps):
        current = states[k] if through_computed else grid.flow(states[0], times[k])
        history = [current] if k == 0 or scheme.history == 1 else [grid.flow(current, -time_steps[k - 1]), current]
        step = scheme.exact_step(grid.energy, grid.metric, history, list(time_steps[:k])[-1:], tau)
        errors.append(float(grid.metric.norm(step - grid.flow(current, tau))))
    return errors


def fixed_euler_steps(grid: HeatGrid, u0: torch.Tensor, error: float) -> int:
    """The fewest fixed implicit Euler steps to :math:`T` whose relative error against the continuous flow is at most
    ``error`` (exact implicit Euler, mode by mode; its error falls monotonically with the count)."""
    exact = grid.flow(u0, FINAL_TIME)
    low, high = 1, 2
    while grid.relative(grid.euler(u0, FINAL_TIME, high), exact) > error:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        if grid.relative(grid.euler(u0, FINAL_TIME, middle), exact) > error:
            low = middle
        else:
            high = middle
    return high


def noise_estimates(scheme: TimeScheme, states: Sequence[torch.Tensor], time_steps: Sequence[float], metric) -> list[float]:
    r"""Per step :math:`k + 1` the noise estimate :math:`\nu` the controller saw (:meth:`~mms_manifolds.schemes.TimeScheme.noise_estimate`
    of the accepted step; ``nan`` where too few states precede it); ``states`` holds :math:`u_0, \dots, u_K`."""
    return [scheme.noise_estimate(states[: k + 2], time_steps[: k + 1], metric) for k in range(len(time_steps))]


def adaptive_run(
    grid: HeatGrid,
    model: Model,
    scheme: TimeScheme,
    tolerance: float,
    iterations: int,
    first_step: float = 1e-3,
    max_steps: int = 20_000,
    through_computed: bool = True,
    final_time: float = FINAL_TIME,
) -> dict[str, object]:
    r"""Adaptive steps to ``final_time`` with ``time_tolerance`` :math:`= \text{tolerance}\cdot\|u_0\|_M`.

    Returns the steps taken and rejected, the relative error at the final time, the fixed implicit Euler steps
    for that error (at :math:`T` only), the range of the estimate over the true local error
    (:func:`true_local_errors`) on the steps with an estimate, on the steps the controller judged (those with a
    noise estimate :math:`\nu`, :func:`noise_estimates`: the controller steps on :math:`\max(\eta - \nu, 0)`), on
    the first estimates, which it did not judge, and from the first step whose estimate's window holds neither
    :math:`u_0` nor BDF2's Richardson start :math:`u_1` (``first_step_after_start``); separately on the steps where the estimate is above twice its
    inexactness floor :math:`\pi` (:func:`~mms_manifolds.results.estimate_floors`: a bound on the part of the estimate
    the inner solves can make), how many steps are at that floor (and where it is unknown: the first BDF2 estimate
    of a run whose certification was withdrawn, as variable-step BDF2 is, lacks the Richardson start's bound), the
    range of :math:`\nu` over the estimate, and the CPU seconds. ``steps_without_estimate_or_beyond_3x`` lists the steps
    (from 1) with no estimate or one outside :math:`[1/3, 3]` of the truth; ``estimate_over_truth_start`` the first
    ``estimate_history`` steps' ratios (their estimates come from step ``estimate_history + 1``'s,
    :meth:`~mms_manifolds.schemes.TimeScheme.start_estimates`), ``milne_with_u0_over_truth`` the ratio of Milne's estimate of
    step ``estimate_history`` from its window with :math:`u_0` (what the record held before).
    """
    time_tolerance = tolerance * float(grid.metric.norm(model.u0))
    with Stopwatch() as clock:
        result = _flow(grid, model, first_step, scheme).run(
            model.theta0,
            max_steps,
            GaussNewton(max_iterations=iterations),
            time_tolerance=time_tolerance,
            final_time=final_time,
        )
    record = result.metadata["scheme_record"]
    steps, estimates = record["time_steps"], record["local_error_estimate"]
    states = [model.parametrization.value(theta) for theta in result.thetas]
    error = grid.relative(states[-1], grid.flow(model.u0, final_time))
    truth = true_local_errors(grid, scheme, states, steps, through_computed)
    floors = estimate_floors(result, scheme)
    noises = noise_estimates(scheme, states, steps, grid.metric)
    ratios = [estimate / true for estimate, true in zip(estimates, truth) if estimate is not None]
    judged = [e / t for e, t, n in zip(estimates, truth, noises) if e is not None and not math.isnan(n)]
    unjudged = [e / t for e, t, n in zip(estimates, truth, noises) if e is not None and math.isnan(n)]
    first = scheme.estimate_history + 1 + (isinstance(scheme, BDF2) and scheme.start == "richardson")
    after_start = [e / t for e, t in list(zip(estimates, truth))[first - 1 :] if e is not None]
    beyond = [k + 1 for k, (e, t) in enumerate(zip(estimates, truth)) if e is None or not 1 / 3 <= e / t <= 3]
    window = scheme.estimate_history
    with_start = [  # Milne's estimate of step m, whose window holds u_0 (what the record kept before start_estimates)
        scheme.local_error_estimate(states[: window + 1], steps[:window], grid.metric) / truth[window - 1]
    ] if len(steps) >= window else []
    shares = [n / e for e, n in zip(estimates, noises) if e is not None and not math.isnan(n)]
    measured = [(e, t, f) for e, t, f in zip(estimates, truth, floors) if e is not None and not math.isnan(f)]
    resolved = [e / t for e, t, f in measured if e > 2 * f]
    return {
        "model": model.name,
        "scheme": repr(scheme),
        "tolerance_relative": tolerance,
        "iterations": iterations,
        "steps": len(steps),
        "rejected": record["rejected_steps"],
        "reached_time": math.fsum(steps),
        "error": error,
        "fixed_euler_steps": fixed_euler_steps(grid, model.u0, error) if final_time == FINAL_TIME else None,
        "estimate_over_truth": [min(ratios), max(ratios)] if ratios else None,
        "estimate_over_truth_judged": [min(judged), max(judged)] if judged else None,
        "estimate_over_truth_after_start": [min(after_start), max(after_start)] if after_start else None,
        "first_step_after_start": first,
        "steps_beyond_3x_after_start": sum(not 1 / 3 <= ratio <= 3 for ratio in after_start),
        "steps_after_start": len(after_start),
        "steps_judged": len(judged),
        "estimate_over_truth_unjudged": unjudged,
        "steps_without_estimate_or_beyond_3x": beyond,
        "estimate_over_truth_start": [e / t for e, t in list(zip(estimates, truth))[:window] if e is not None],
        "milne_with_u0_over_truth": with_start,
        "noise_over_estimate": [min(shares), max(shares)] if shares else None,
        "steps_noise_dominated": sum(share >= 0.5 for share in shares),
        "estimate_over_truth_above_floor": [min(resolved), max(resolved)] if resolved else None,
        "steps_above_floor": len(resolved),
        "steps_at_floor": len(measured) - len(resolved),
        "steps_floor_unknown": len(ratios) - len(measured),
        "largest_floor_over_estimate": max((f / e for e, _, f in measured), default=math.nan),
        "smallest_step": min(steps),
        "largest_step": max(steps),
        "tracking_error": float(result.trajectory_error[-1]) / float(grid.metric.norm(model.u0)),
        "cpu_seconds": clock.cpu,
    }


def _print_order(table: dict) -> None:
    print(f"{table['model']}, {table['scheme']}, Gauss-Newton {table['iterations']} iterations per step")
    for row, slope in zip(table["rows"], [*table["slopes"], math.nan]):
        print(
            f"  K = {row['steps']:4d}  error {row['error']:.3e}  tracking {row['tracking_error']:.2e}  "
            f"bound {row['tracking_bound']:.2e}  slope to next {slope:5.2f}  {row['cpu_seconds']:.1f} s CPU"
        )


def _print_adaptive(run: dict) -> None:
    ratios, resolved = run["estimate_over_truth"], run["estimate_over_truth_above_floor"] or [math.nan] * 2
    judged, shares = run["estimate_over_truth_judged"] or [math.nan] * 2, run["noise_over_estimate"] or [math.nan] * 2
    fixed = run["fixed_euler_steps"]
    versus = "" if fixed is None else f"; fixed implicit Euler needs {fixed} ({fixed / run['steps']:.1f}x)"
    print(
        f"{run['model']}, {run['scheme']}, Gauss-Newton {run['iterations']}, tol {run['tolerance_relative']:.2g} |u0|: "
        f"{run['steps']} steps ({run['rejected']} rejected) to t = {run['reached_time']:.6g}, error {run['error']:.3e}"
        f"{versus}; estimate/truth {ratios[0]:.2f} .. {ratios[1]:.2f}, on the {run['steps_judged']} judged steps "
        f"{judged[0]:.2f} .. {judged[1]:.2f}, unjudged {[round(r, 2) for r in run['estimate_over_truth_unjudged']]}; "
        f"steps without an estimate or beyond 3x {run['steps_without_estimate_or_beyond_3x']}; "
        f"Milne's with u_0 {[round(r, 2) for r in run['milne_with_u0_over_truth']]}; "
        f"nu/estimate {shares[0]:.2g} .. {shares[1]:.2g} ({run['steps_noise_dominated']} steps >= 1/2); "
        f"{resolved[0]:.2f} .. {resolved[1]:.2f} on the {run['steps_above_floor']} steps above twice the floor pi, "
        f"{run['steps_at_floor']} at it, {run['steps_floor_unknown']} unknown; {run['cpu_seconds']:.1f} s CPU"
    )


def _fit_key(run: dict) -> tuple[int, int, int]:
    """A fit run's place in the JSON: one run per Gauss–Newton iteration count, fit length and seed."""
    return run["iterations"], run["fit_steps"], run["seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 10 ... 40 and the eigenmode model's adaptive runs")
    parser.add_argument("--json", default=str(RESULTS / "time_order.json"), help="where the results go")
    parser.add_argument(
        "--adaptive-only", action="store_true", help="rerun the adaptive runs only, keeping the order tables in --json"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="only the standard network's adaptive run on each seed's fit (kept in --json)"
    )
    parser.add_argument("--fit-steps", type=int, default=12, help="regression steps of each seed's fit (with --seeds)")
    parser.add_argument(
        "--iterations", type=int, default=20, help="Gauss-Newton iterations per solve of each seed's run (with --seeds)"
    )
    arguments = parser.parse_args()
    use_threads(1)
    grid = heat_grid()
    if arguments.seeds:
        with open(arguments.json) as handle:
            kept = json.load(handle)
        fits = fit_distribution(grid, arguments.seeds, arguments.fit_steps, iterations=arguments.iterations)
        for run in fits:
            print(f"fit error {run['fit_error']:.2g}: ", end="")
            _print_adaptive(run)
        replaced = {_fit_key(run) for run in fits}
        others = [run for run in kept.get("fits", []) if _fit_key(run) not in replaced]
        kept["fits"] = sorted(others + fits, key=_fit_key)
        kept["fits_conditions"] = conditions()
        with open(arguments.json, "w") as handle:
            json.dump(kept, handle, indent=1)
        return
    counts = (10, 20, 40) if arguments.quick else (10, 20, 40, 80, 160)
    models = [eigenmode_model(grid), sine_model(grid), standard_model()]
    iterations = {"eigenmodes": 4, "sines": 5, "standard": 5}
    output: dict[str, object] = {"conditions": conditions(), "final_time": FINAL_TIME, "order": [], "adaptive": []}
    runs = [(model, iterations[model.name]) for model in models]
    if not arguments.quick:  # does the standard network's floor move with more inner iterations?
        runs.append((models[-1], 10))
    if arguments.adaptive_only:
        with open(arguments.json) as handle:
            kept = json.load(handle)
        output["order"], output["order_conditions"], runs = kept["order"], kept.get("order_conditions", kept["conditions"]), []
        output.update({key: kept[key] for key in ("fits", "fits_conditions") if key in kept})  # --seeds' runs
    for model, count in runs:
        print(f"{model.name}: {model.description}, p = {model.parametrization.num_parameters}")
        for scheme in (ImplicitEuler(), BDF2()):
            table = order_table(grid, model, scheme, counts, count)
            _print_order(table)
            output["order"].append(table)
    adaptive = [("eigenmodes", BDF2(), 7e-8, 4), ("eigenmodes", ImplicitEuler(), 1e-7, 4)]
    if not arguments.quick:  # the standard network at 5 iterations shows the inner solves in the estimate
        adaptive += [
            ("sines", BDF2(), 7e-8, 5),
            ("sines", ImplicitEuler(), 1e-7, 5),
            ("standard", BDF2(), 1e-6, 5),
            ("standard", BDF2(), 2.5e-8, 10),
            ("standard", BDF2(), 2.5e-8, 20),  # fewer steps off by more than 3x with the start's solves tighter?
        ]
    by_name = {model.name: model for model in models}
    for name, scheme, tolerance, count in adaptive:
        run = adaptive_run(grid, by_name[name], scheme, tolerance, count, through_computed=name != "standard")
        _print_adaptive(run)
        output["adaptive"].append(run)
    with open(arguments.json, "w") as handle:
        json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
