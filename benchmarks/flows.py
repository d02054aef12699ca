"""The benchmark problems: the regression flow at a given size, its first MMS step, peak memory."""

from __future__ import annotations

import math
import resource

import torch

from mms_manifolds import MinimizingMovement, problems

__all__ = ["CG_CAP", "MEMORY_CG_CAP", "peak_rss_bytes", "regression_flow", "regression_subproblem", "width_for"]

CG_CAP = 50  # CG iterations per solve in the size grid (reported; the default is 500)
MEMORY_CG_CAP = 5  # CG iterations per solve in the p = N = 1e5 memory cell (memory does not grow with it)


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


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
