r"""The benchmark problems, defined once: every script that runs one of them imports it from here.

- :func:`regression_flow` (and :func:`regression_subproblem`, its first MMS step): the regression flow at a
  given size, a 1-w-w-1 tanh MLP of about ``parameters`` parameters on ``nodes`` points of :math:`[-1, 1]`
  (``run.py``, ``floors.py``, ``crossovers.py``);
- :func:`regression_step_flow`: the 2-D regression step, an MLP 2-h-...-h-1 on a side x side grid of
  :math:`[-1, 1]^2`, whose exact step is known (``scale.py``, ``subspace.py``);
- :func:`poisson` and :func:`nonlinear`: the two energy natural gradient (ENGD) problems of Müller &
  Zeinhofer (ICML 2023), set up from the paper's description (``peers.py``, ``floors.py``);
- :func:`pymanopt_fixed_step_descent`: the pymanopt optimiser the adapters are timed with (``run.py``, ``floors.py``).
"""

from __future__ import annotations

import math

import numpy
import torch

from mms_manifolds import L2Metric, L2Regression, MinimizingMovement, TorchParametrization, problems
from mms_manifolds.meshfree import (
    JetMetric,
    JetParametrization,
    NodeSet,
    PoissonLeastSquares,
    RitzEnergy,
    box_boundary_grid,
    box_interior_grid,
)
from mms_manifolds.problems import mlp

from .timing import Stopwatch

__all__ = [
    "CG_CAP",
    "ENGD_TAU",
    "MEMORY_CG_CAP",
    "NONLINEAR_NODES",
    "STEP_TAU",
    "NonlinearRitz",
    "nonlinear",
    "poisson",
    "pymanopt_fixed_step_descent",
    "regression_flow",
    "regression_step_flow",
    "regression_subproblem",
    "width_for",
]

CG_CAP = 50  # CG iterations per solve in the size grid (reported; the default is 500)
MEMORY_CG_CAP = 5  # CG iterations per solve in the p = N = 1e5 memory cell (memory does not grow with it)
STEP_TAU = 0.2  # the time step of the 2-D regression step
ENGD_TAU = 1e12  # one MMS step with this time step is the minimisation of the energy
NONLINEAR_NODES = 2000  # Gauss-Legendre: the quadrature error of the discrete minimiser is far below 1e-8


def width_for(parameters: int) -> int:
    """Width w of a 1-w-w-1 MLP with about ``parameters`` parameters (p = w^2 + 4w + 1)."""
    return max(2, round(-2 + math.sqrt(3 + parameters)))


def regression_flow(
    parameters: int,
    nodes: int,
    solve_mode: object = "auto",
    seed: int = 0,
    damping: float | str = "auto",
    device: torch.device | str = "cpu",
) -> MinimizingMovement:
    """The regression flow (tau 0.2, uniform weights 2/N) on ``nodes`` points with a 1-w-w-1 tanh MLP of about ``parameters``."""
    widths = (1, width_for(parameters), width_for(parameters), 1)
    options = {"weights": "uniform", "device": device, "damping": damping, "solve_mode": solve_mode}
    return problems.regression_flow(nodes, widths, seed, 0.2, **options)


def regression_subproblem(
    parameters: int, nodes: int, solve_mode: object = "auto", seed: int = 0, damping: float | str = "auto"
):
    """The first MMS step of :func:`regression_flow`: ``(network, subproblem, theta)``."""
    flow = regression_flow(parameters, nodes, solve_mode, seed, damping)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    return flow.parametrization.module, subproblem, theta


def regression_step_flow(
    hidden: tuple[int, ...], side: int, device: str, solve_mode: object = "auto"
) -> tuple[MinimizingMovement, float]:
    r"""The 2-D regression flow and the seconds its construction took.

    An MLP 2-``hidden``-1 (tanh, ``torch.manual_seed(0)``) on a ``side`` x ``side`` grid of :math:`[-1, 1]^2`
    (weights :math:`4/N`), :math:`E(u) = \tfrac12\|u - g\|_M^2` with :math:`g = |x_1| + |x_2| + 0.3\sin(5x_1)`,
    :math:`\tau` = ``STEP_TAU``; the exact step from :math:`u_0` is :math:`(u_0 + \tau g)/(1 + \tau)`. The network's
    initial parameters are drawn on the CPU (in float32, then cast), so every ``device`` starts from the same network.
    """
    torch.manual_seed(0)
    options = {"dtype": torch.float64, "device": device}
    grid = torch.linspace(-1.0, 1.0, side, **options)
    nodes = torch.cartesian_prod(grid, grid)
    widths = (2, *hidden, 1)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):  # drawn on the CPU: the same network on every device
        layers += [torch.nn.Linear(fan_in, fan_out, device="cpu"), torch.nn.Tanh()]
    network = torch.nn.Sequential(*layers[:-1]).to(**options)
    metric = L2Metric(torch.full((side * side,), 4.0 / (side * side), **options))
    target = nodes.abs().sum(-1, keepdim=True) + 0.3 * torch.sin(5 * nodes[:, :1])
    with Stopwatch(device) as clock:
        flow = MinimizingMovement(
            TorchParametrization(network, nodes), L2Regression(target, metric), metric, STEP_TAU, solve_mode=solve_mode
        )
    return flow, clock.wall


class NonlinearRitz(RitzEnergy):
    r""":math:`E(u) = \int \tfrac12|u'|^2 - fu + \tfrac14 u^4`: the Ritz energy plus a quartic reaction term."""

    def value(self, u: torch.Tensor) -> torch.Tensor:
        inside = self.layout.split(u)[self.interior]
        return super().value(u) + 0.25 * (self._weights(self.interior) * inside.value.squeeze(-1) ** 4).sum()


def poisson(seed: int, device: torch.device | str = "cpu", tau: float = ENGD_TAU):
    r"""The 2-D Poisson least-squares problem on ``device``, one MMS step of length ``tau``: (flow, network, L2 error function).

    :math:`-\Delta u = 2\pi^2\sin(\pi x)\sin(\pi y)` on :math:`(0, 1)^2`, :math:`u = 0` on the boundary, least
    squares (PINN) energy, a [2, 32, 1] tanh network, a 28 x 28 interior grid and 29 nodes per boundary side;
    L2 error on a 200 x 200 interior grid.
    """
    network = mlp((2, 32, 1), seed).to(device)
    node_sets = {
        "interior": box_interior_grid(28, 2, ("value", "laplacian"), device=device),
        "boundary": box_boundary_grid(29, device=device),
    }
    jets = JetParametrization(network, node_sets)

    def source(points: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi**2 * torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])

    energy = PoissonLeastSquares(jets, source, boundary="boundary", penalty=1.0)
    flow = MinimizingMovement(jets, energy, JetMetric(jets, value={"interior": 1.0}), tau=tau)
    test = box_interior_grid(200, 2, device=device).points
    exact = torch.sin(math.pi * test[:, 0]) * torch.sin(math.pi * test[:, 1])
    return flow, network, lambda: float((network(test).squeeze(-1) - exact).square().mean().sqrt())


def nonlinear(seed: int, device: torch.device | str = "cpu", tau: float = ENGD_TAU):
    r"""The 1-D nonlinear Ritz problem on ``device``, one MMS step of length ``tau``: (flow, network, L2 error function).

    :math:`\int_{-1}^1 \tfrac12|u'|^2 + \tfrac14u^4 - fu` with :math:`f = \pi^2\cos(\pi x) + \cos^3(\pi x)`,
    minimiser :math:`\cos(\pi x)` (natural boundary conditions), a [1, 32, 1] tanh network, ``NONLINEAR_NODES``
    Gauss–Legendre nodes; L2 error on 20001 points.
    """
    network = mlp((1, 32, 1), seed).to(device)
    points, weights = numpy.polynomial.legendre.leggauss(NONLINEAR_NODES)
    options = {"dtype": torch.float64, "device": device}
    interior = NodeSet(torch.as_tensor(points, **options).unsqueeze(-1), torch.as_tensor(weights, **options))
    node_sets = {"interior": NodeSet(interior.points, interior.weights, ("value", "gradient"))}
    jets = JetParametrization(network, node_sets)

    def source(points: torch.Tensor) -> torch.Tensor:
        solution = torch.cos(math.pi * points[:, 0])
        return math.pi**2 * solution + solution**3

    energy = NonlinearRitz(jets, source)
    flow = MinimizingMovement(jets, energy, JetMetric(jets, value={"interior": 1.0}), tau=tau)
    test = torch.linspace(-1, 1, 20001, **options).unsqueeze(-1)
    exact = torch.cos(math.pi * test[:, 0])
    return flow, network, lambda: float(((network(test).squeeze(-1) - exact).square().mean() * 2).sqrt())


def pymanopt_fixed_step_descent(step: float, iterations: int):
    """pymanopt's ``SteepestDescent`` taking ``iterations`` steps of the fixed length ``step`` (no line search, no stopping test)."""
    import pymanopt  # an optional extra of the library (``[pymanopt]``)

    class FixedStep(pymanopt.optimizers.line_search.BackTrackingLineSearcher):
        def search(self, objective, manifold, x, d, f0, df0):
            return step, manifold.retraction(x, step * d)

    options = {"min_gradient_norm": 0, "min_step_size": 0, "verbosity": 0, "line_searcher": FixedStep()}
    return pymanopt.optimizers.SteepestDescent(max_iterations=iterations, **options)
