r"""The experiments behind the paper's claim and the field's standard test cases, each with an exact MMS reference.

Every builder returns an :class:`Experiment`: a flow (:class:`~mms_manifolds.MinimizingMovement`),
its initial parameters, the number of steps, and the exact MMS iterates :math:`v_k` on the grid (or
``None`` when the driver computes them on the fly from :math:`v_0 = u_0` with the energy's exact prox).
``size="quick"`` gives the small version used by ``--quick`` and the tests. Seeds are fixed.

1. ``regression``: :math:`E = \|u - g\|^2/2`, :math:`g = |x| + 0.3\sin 5x` on [-1, 1], tanh MLP.
2. ``latent_diffusion``: the DDPM denoising loss on PCA latents of scikit-learn's 8x8 digits, an
   L2-regression energy on the sampled nodes :math:`(z_t, t)` with target :math:`\varepsilon`.
3. ``heat_1d``: :math:`u_t = u_{xx}/4` on [0, 1], zero boundary values, :math:`u_0 = \sin\pi x`:
   :math:`v_k = (1 + \tau\lambda_h)^{-k}u_0` with the grid eigenvalue :math:`\lambda_h`.
4. ``heat_2d``: the same on the unit square with :math:`u_0 = \sin\pi x\sin\pi y`.
5. ``allen_cahn``: the Ginzburg–Landau flow (:math:`\varepsilon = 0.1`, semi-convex, :math:`\tau < 1`)
   on [-1, 1], reference by Newton on the grid.
6. ``known_minimizer``: :math:`E(v) = \int \tfrac12 v'^2 + \tfrac14 v^4 - fv` on [-1, 1] (Neumann),
   :math:`f = \pi^2\cos\pi x + \cos^3\pi x`, minimiser :math:`\cos\pi x`; evaluated by the distance
   to :math:`\cos\pi x`, to the grid minimiser :math:`v^*`, and :math:`\delta = \min_\theta\|\phi(\theta) - v^*\|_M`
   (approximated by a long L2 fit), the size of the neighbourhood the iterates can reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..energies import DirichletEnergy, GinzburgLandau, L2Regression, QuarticEnergy
from ..grids import grid_2d, grid_spacing, stiffness_1d, stiffness_2d, trapezoid_weights, uniform_nodes
from ..metrics import L2Metric
from ..mms import MinimizingMovement, exact_trajectory
from ..parametrizations import TorchParametrization
from ..problems import mlp, regression_flow
from ..solvers import GaussNewton

__all__ = ["EXPERIMENTS", "Experiment", "build"]

DOUBLE = {"dtype": torch.float64}
UNIT_SQUARE = (0.0, 1.0, 0.0, 1.0)


@dataclass
class Experiment:
    """A flow with its start, length and exact reference, plus experiment-specific evaluations."""

    name: str
    flow: MinimizingMovement
    theta0: torch.Tensor
    steps: int
    reference: torch.Tensor | None = None
    evaluations: dict[str, Callable[[torch.Tensor], float]] = field(default_factory=dict)
    description: str = ""


class Bubble(torch.nn.Module):
    r""":math:`\prod_k x_k(1 - x_k)` times a network: zero on the boundary of the unit box."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return (points * (1 - points)).prod(-1, keepdim=True) * self.net(points)


def fit(parametrization: TorchParametrization, metric: L2Metric, target: torch.Tensor) -> torch.Tensor:
    """Parameters fitted to ``target`` by the L2-regression flow with a long step (the start of the PDE flows)."""
    flow = MinimizingMovement(parametrization, L2Regression(target, metric), metric, tau=1e4)
    return flow.run(parametrization.initial_point(), steps=3, solver=GaussNewton(max_iterations=15)).thetas[-1]


def regression(size: str) -> Experiment:
    nodes, width, steps = (64, 8, 4) if size == "quick" else (128, 12, 12)
    flow = regression_flow(nodes, (1, width, width, 1), seed=0, tau=0.2)
    theta0 = flow.parametrization.initial_point()
    return Experiment("regression", flow, theta0, steps, description=f"1-{width}-{width}-1")


def digits_latents(dimension: int = 4) -> torch.Tensor:
    """PCA latents of scikit-learn's bundled 8x8 digits (1797 images), whitened, shape ``(1797, dimension)``."""
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(np.float64)
    centred = images - images.mean(0)
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    latents = centred @ right[:dimension].T / (singular[:dimension] / math.sqrt(len(images) - 1))
    return torch.tensor(latents, **DOUBLE)


@dataclass(frozen=True)
class NoiseSchedule:
    r"""DDPM schedule :math:`\beta_t` linear on ``[beta_1, beta_T]``, :math:`\bar\alpha_t = \prod_{s\le t}(1 - \beta_s)`."""

    steps: int = 40
    beta_first: float = 1e-3
    beta_last: float = 0.2

    def betas(self) -> torch.Tensor:
        return torch.linspace(self.beta_first, self.beta_last, self.steps, **DOUBLE)

    def alpha_bars(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas(), 0)


def ddpm_sample(
    denoiser: Callable[[torch.Tensor], torch.Tensor], schedule: NoiseSchedule, count: int, dimension: int, seed: int
) -> torch.Tensor:
    r"""Ancestral DDPM sampling with :math:`\varepsilon_\theta(z_t, t/T)`; returns ``(count, dimension)`` latents."""
    generator = torch.Generator().manual_seed(seed)
    betas, alpha_bars = schedule.betas(), schedule.alpha_bars()
    z = torch.randn(count, dimension, generator=generator, **DOUBLE)
    for t in reversed(range(schedule.steps)):
        times = torch.full((count, 1), (t + 1) / schedule.steps, **DOUBLE)
        eps = denoiser(torch.cat([z, times], dim=-1))
        z = (z - betas[t] / torch.sqrt(1 - alpha_bars[t]) * eps) / torch.sqrt(1 - betas[t])
        if t > 0:
            z = z + torch.sqrt(betas[t]) * torch.randn(count, dimension, generator=generator, **DOUBLE)
    return z


def energy_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    r"""Energy distance :math:`2E|X - Y| - E|X - X'| - E|Y - Y'|` between two samples (0 iff equal laws)."""
    return float(
        2 * torch.cdist(first, second).mean() - torch.cdist(first, first).mean() - torch.cdist(second, second).mean()
    )


def latent_diffusion(size: str) -> Experiment:
    dimension = 4
    # full: Nm = 3072 scalar targets for p = 280 parameters. An earlier full size (512 nodes, width 32:
    # p = 1380 for Nm = 2048) cost 2 s per SVD, and there GN, which follows the exact flow of the
    # sampled loss most closely, gave the worst samples; here it gives the best.
    nodes, width, steps = (128, 12, 4) if size == "quick" else (768, 12, 8)
    schedule = NoiseSchedule()
    latents = digits_latents(dimension)
    generator = torch.Generator().manual_seed(1)
    clean = latents[torch.randint(0, len(latents), (nodes,), generator=generator)]
    times = torch.randint(1, schedule.steps + 1, (nodes, 1), generator=generator)
    noise = torch.randn(nodes, dimension, generator=generator, **DOUBLE)
    alpha_bar = schedule.alpha_bars()[times - 1]
    noisy = torch.sqrt(alpha_bar) * clean + torch.sqrt(1 - alpha_bar) * noise
    inputs = torch.cat([noisy, times.to(torch.float64) / schedule.steps], dim=-1)
    network = mlp((dimension + 1, width, width, dimension), 2)
    parametrization = TorchParametrization(network, inputs)
    metric = L2Metric(torch.full((nodes,), 1 / nodes, **DOUBLE))
    flow = MinimizingMovement(parametrization, L2Regression(noise, metric), metric, tau=0.5)
    data = latents[torch.randperm(len(latents), generator=generator)[:500]]

    def sample_quality(theta: torch.Tensor) -> float:
        parameters = parametrization.unflatten(theta)
        with torch.no_grad():
            samples = ddpm_sample(
                lambda z: torch.func.functional_call(network, parameters, (z,)), schedule, 500, dimension, seed=3
            )
        return energy_distance(samples, data)

    return Experiment(
        "latent_diffusion",
        flow,
        parametrization.initial_point(),
        steps,
        evaluations={"energy_distance": sample_quality},
        description=f"digits PCA-{dimension}, {nodes} nodes (z_t, t), {dimension + 1}-{width}-{width}-{dimension}",
    )


def heat_1d(size: str) -> Experiment:
    count, steps, tau = (24, 4, 0.05) if size == "quick" else (48, 12, 0.05)
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    x = uniform_nodes(count, 0.0, 1.0, "dirichlet").unsqueeze(-1)
    parametrization = TorchParametrization(Bubble(mlp((1, 10, 1), 3)), x)
    metric = L2Metric(torch.full((count,), spacing, **DOUBLE))
    energy = DirichletEnergy(0.25 * stiffness_1d(count, 0.0, 1.0, "dirichlet"))
    u0 = torch.sin(math.pi * x)
    flow = MinimizingMovement(parametrization, energy, metric, tau)
    reference = exact_trajectory(energy, metric, u0, tau, steps)
    return Experiment("heat_1d", flow, fit(parametrization, metric, u0), steps, reference, description="bubble 1-10-1")


def heat_2d(size: str) -> Experiment:
    count, steps, tau = (8, 4, 0.02) if size == "quick" else (14, 10, 0.02)
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    points = grid_2d(count, count, UNIT_SQUARE, "dirichlet")
    parametrization = TorchParametrization(Bubble(mlp((2, 12, 1), 4)), points)
    metric = L2Metric(torch.full((count * count,), spacing**2, **DOUBLE))
    energy = DirichletEnergy(0.25 * stiffness_2d(count, count, UNIT_SQUARE, "dirichlet"))
    u0 = torch.sin(math.pi * points[:, :1]) * torch.sin(math.pi * points[:, 1:])
    flow = MinimizingMovement(parametrization, energy, metric, tau)
    reference = exact_trajectory(energy, metric, u0, tau, steps)
    return Experiment("heat_2d", flow, fit(parametrization, metric, u0), steps, reference, description="bubble 2-12-1")


def allen_cahn(size: str) -> Experiment:
    count, steps, tau = (32, 4, 0.1) if size == "quick" else (80, 12, 0.1)
    x = uniform_nodes(count, -1.0, 1.0, "neumann").unsqueeze(-1)
    weights = trapezoid_weights(count, -1.0, 1.0)
    parametrization = TorchParametrization(mlp((1, 12, 12, 1), 5), x)
    metric = L2Metric(weights)
    energy = GinzburgLandau(0.1, stiffness_1d(count, -1.0, 1.0, "neumann"), weights)
    theta0 = fit(parametrization, metric, 0.6 * torch.sin(2.5 * math.pi * x) + 0.2 * x)
    flow = MinimizingMovement(parametrization, energy, metric, tau)
    return Experiment("allen_cahn", flow, theta0, steps, description="1-12-12-1, eps = 0.1")


def known_minimizer(size: str) -> Experiment:
    count, steps, tau = (32, 4, 0.5) if size == "quick" else (80, 15, 0.5)
    x = uniform_nodes(count, -1.0, 1.0, "neumann").unsqueeze(-1)
    weights = trapezoid_weights(count, -1.0, 1.0)
    source = math.pi**2 * torch.cos(math.pi * x) + torch.cos(math.pi * x) ** 3
    energy = QuarticEnergy(stiffness_1d(count, -1.0, 1.0, "neumann"), weights, source)
    metric = L2Metric(weights)
    parametrization = TorchParametrization(mlp((1, 12, 12, 1), 6), x)
    flow = MinimizingMovement(parametrization, energy, metric, tau)
    minimiser = torch.cos(math.pi * x)
    # the grid minimiser: the prox with an infinite step, by Newton from cos(pi x)
    grid_minimiser = energy.prox(minimiser, 1e12, metric)
    # delta: how close the network can get to it (its best L2 fit), the scale of the neighbourhood reached
    delta = float(metric.norm(parametrization.value(fit(parametrization, metric, grid_minimiser)) - grid_minimiser))

    def distance(target: torch.Tensor) -> Callable[[torch.Tensor], float]:
        return lambda theta: float(metric.norm(parametrization.value(theta) - target))

    return Experiment(
        "known_minimizer",
        flow,
        parametrization.initial_point(),
        steps,
        evaluations={
            "distance_to_cos": distance(minimiser),
            "distance_to_grid_minimiser": distance(grid_minimiser),
            "delta": lambda theta: delta,
        },
        description="1-12-12-1",
    )


EXPERIMENTS: dict[str, Callable[[str], Experiment]] = {
    "regression": regression,
    "latent_diffusion": latent_diffusion,
    "heat_1d": heat_1d,
    "heat_2d": heat_2d,
    "allen_cahn": allen_cahn,
    "known_minimizer": known_minimizer,
}


def build(name: str, size: str = "full") -> Experiment:
    """The experiment ``name`` at ``size`` (``"quick"`` or ``"full"``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    if size not in ("quick", "full"):
        raise ValueError(f"size must be 'quick' or 'full', got {size!r}")
    return EXPERIMENTS[name](size)
