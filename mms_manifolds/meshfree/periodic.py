r"""Periodic domains: node sets on the torus :math:`[0, P)^d` and a periodic input embedding for networks.

On a periodic domain the equispaced grid :math:`x_j = P j/n` with equal weights :math:`(P/n)^d` is the
trapezoid rule, exact for every trigonometric polynomial of degree below :math:`n` per axis (spectrally
accurate for smooth periodic integrands); Monte Carlo points are uniform on the torus. A network is made
periodic by its first layer: :class:`PeriodicEmbedding` maps :math:`x \mapsto (\cos(2\pi x_i/P), \sin(2\pi x_i/P))_i`,
so every function of the features is :math:`P`-periodic in each coordinate, with all its input
derivatives (the jets of :class:`~mms_manifolds.meshfree.JetParametrization` see a smooth function).
:func:`periodic_mlp` is the network of TENG's benchmarks in this form: the embedding, then ``tanh``
layers (TENG's first layer :math:`a\cos(x + \varphi) + c` is a linear map of these features,
:math:`a\cos\varphi\cos x - a\sin\varphi\sin x + c`, restricted to one coordinate per unit).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_integer, check_positive_float
from ..parametrizations.networks import mlp
from .nodes import NodeSet, box_interior_monte_carlo

__all__ = ["PeriodicEmbedding", "periodic_mlp", "torus_grid", "torus_monte_carlo"]


def torus_grid(
    points_per_axis: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    period: float = 2 * math.pi,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""The grid :math:`x = P j/n`, :math:`j = 0..n-1` per axis (:math:`P \equiv 0`), weights :math:`(P/n)^d`: the periodic trapezoid rule."""
    count = check_integer("points_per_axis", points_per_axis, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    period = check_positive_float("period", period)
    axis = period * torch.arange(count, dtype=dtype, device=device) / count
    points = torch.cartesian_prod(*([axis] * dimension)).reshape(-1, dimension)
    weights = torch.full((points.shape[0],), (period / count) ** dimension, dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def torus_monte_carlo(
    count: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    generator: torch.Generator,
    period: float = 2 * math.pi,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""``count`` uniform random points on the torus :math:`[0, P)^d`, weights :math:`P^d/N`: Monte Carlo in the box :math:`[0, P)^d`."""
    period = check_positive_float("period", period)
    options = {"generator": generator, "low": 0.0, "high": period, "dtype": dtype, "device": device}
    return box_interior_monte_carlo(count, dimension, derivatives, **options)


class PeriodicEmbedding(torch.nn.Module):
    r""":math:`x \mapsto (\cos(2\pi x_1/P), \dots, \cos(2\pi x_d/P), \sin(2\pi x_1/P), \dots, \sin(2\pi x_d/P))`, shape ``(N, d) -> (N, 2d)``.

    Args:
        period: :math:`P > 0`, the same for every coordinate.
    """

    def __init__(self, period: float = 2 * math.pi):
        super().__init__()
        self.period = check_positive_float("period", period)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        angles = (2 * math.pi / self.period) * points
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def extra_repr(self) -> str:
        return f"period={self.period}"


def periodic_mlp(
    dimension: int,
    widths: tuple[int, ...],
    seed: int,
    *,
    period: float = 2 * math.pi,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.nn.Sequential:
    r"""``PeriodicEmbedding`` then an MLP ``2d -> widths[0] -> ... -> widths[-1]`` with ``tanh`` between layers.

    TENG's network (width 40, depth 7) is ``periodic_mlp(2, (40,) * 6 + (1,), seed)``. The weights are
    torch's default initialisation drawn in float64 from ``seed`` (as :func:`mms_manifolds.parametrizations.networks.mlp`).
    """
    dimension = check_integer("dimension", dimension, minimum=1)
    layers = mlp((2 * dimension, *widths), seed, dtype, device=device)
    return torch.nn.Sequential(PeriodicEmbedding(period), *layers)
