r"""Node sets for mesh-free problems: points :math:`x_i \in \mathbb{R}^d` with quadrature weights :math:`w_i`.

A node set carries what a mesh-free energy or metric needs to integrate over one part of the domain,
:math:`\int_\Omega g \approx \sum_i w_i\, g(x_i)`, and which derivatives of the network it needs there
(the *jet*: value, input gradient, Laplacian). Constructors cover the usual choices on the box
:math:`[a, b]^d`: tensor grids, Monte Carlo and scrambled Sobol points in the interior, and grid or
Monte Carlo points on the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_integer, check_real_tensor

__all__ = [
    "DERIVATIVES",
    "NodeSet",
    "box_boundary_grid",
    "box_boundary_monte_carlo",
    "box_interior_grid",
    "box_interior_monte_carlo",
    "box_midpoint_grid",
    "box_interior_sobol",
]

DERIVATIVES = ("value", "gradient", "laplacian")
"""The jet components a node set may ask for, in the order they are stacked."""


@dataclass(frozen=True)
class NodeSet:
    r"""Points, quadrature weights and the derivatives of the network needed at them.

    Attributes:
        points: :math:`x_i`, shape ``(N, d)``.
        weights: :math:`w_i > 0`, shape ``(N,)``, so that :math:`\sum_i w_i g(x_i) \approx \int g`.
        derivatives: which jet components to evaluate, a non-empty subset of
            ``("value", "gradient", "laplacian")``; stored in that order.

    Raises:
        ValueError: points not a finite floating ``(N, d)`` tensor with ``N >= 1``, weights not
            ``(N,)``, finite and positive in the same dtype and device, or unknown derivatives.
    """

    points: torch.Tensor
    weights: torch.Tensor
    derivatives: tuple[str, ...] = ("value",)

    def __post_init__(self) -> None:
        points = check_real_tensor("points", self.points, ndim=2)
        weights = check_real_tensor("weights", self.weights, ndim=1)
        if points.shape[0] == 0 or points.shape[1] == 0:
            raise ValueError(f"points must have shape (N, d) with N, d >= 1, got {tuple(points.shape)}")
        if weights.shape[0] != points.shape[0]:
            raise ValueError(f"weights have shape {tuple(weights.shape)}, expected ({points.shape[0]},)")
        if weights.dtype != points.dtype or weights.device != points.device:
            raise ValueError(
                f"weights ({weights.dtype} on {weights.device}) must match points ({points.dtype} on {points.device})"
            )
        if not bool((weights > 0).all()):
            raise ValueError(f"weights must be positive; {int((weights <= 0).sum())} entries are <= 0")
        derivatives = (self.derivatives,) if isinstance(self.derivatives, str) else tuple(self.derivatives)
        unknown = sorted(set(derivatives) - set(DERIVATIVES))
        if unknown or not derivatives:
            raise ValueError(f"derivatives must be a non-empty subset of {DERIVATIVES}, got {derivatives!r}")
        object.__setattr__(self, "derivatives", tuple(name for name in DERIVATIVES if name in derivatives))

    @property
    def count(self) -> int:
        """:math:`N`, the number of points."""
        return self.points.shape[0]

    @property
    def dimension(self) -> int:
        """:math:`d`, the input dimension."""
        return self.points.shape[1]


def _box(low: float, high: float) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not high > low:
        raise ValueError(f"the box needs low < high, got [{low}, {high}]")
    return low, high


def box_interior_grid(
    points_per_axis: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""The tensor grid of ``n`` interior points per axis, :math:`x = a + (b - a)\,j/(n + 1)`, :math:`j = 1..n`.

    Weights :math:`(b - a)^d / n^d`: equal weights, the rule published mesh-free codes use (a first-order
    rule; :func:`box_midpoint_grid` is second order).
    """
    count = check_integer("points_per_axis", points_per_axis, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    low, high = _box(low, high)
    axis = torch.linspace(low, high, count + 2, dtype=dtype, device=device)[1:-1]
    points = torch.cartesian_prod(*([axis] * dimension)).reshape(-1, dimension)
    weights = torch.full((points.shape[0],), (high - low) ** dimension / points.shape[0], dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def box_midpoint_grid(
    cells_per_axis: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""The midpoint rule on ``n`` cells per axis: :math:`x = a + (b - a)(j + 	frac12)/n`, :math:`j = 0..n-1`, weights :math:`((b - a)/n)^d`.

    Second-order accurate for smooth integrands (error :math:`O(n^{-2})`), unlike the equal-weight interior grid.
    """
    count = check_integer("cells_per_axis", cells_per_axis, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    low, high = _box(low, high)
    width = (high - low) / count
    axis = low + width * (torch.arange(count, dtype=dtype, device=device) + 0.5)
    points = torch.cartesian_prod(*([axis] * dimension)).reshape(-1, dimension)
    weights = torch.full((points.shape[0],), width**dimension, dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def box_boundary_grid(
    points_per_side: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""``n`` equispaced points on each of the four sides of the square :math:`[a, b]^2`, corners once.

    Each side holds :math:`x = a + (b - a)j/n`, :math:`j = 0..n-1`, walking the boundary
    counter-clockwise, so the :math:`4n` points are distinct; weights :math:`4(b - a)/(4n)`.
    """
    count = check_integer("points_per_side", points_per_side, minimum=1)
    low, high = _box(low, high)
    steps = torch.linspace(low, high, count + 1, dtype=dtype, device=device)[:-1]
    reverse = torch.flip(torch.linspace(low, high, count + 1, dtype=dtype, device=device)[1:], dims=(0,))
    constant = torch.full_like(steps, low), torch.full_like(steps, high)
    sides = [
        torch.stack([steps, constant[0]], dim=-1),
        torch.stack([constant[1], steps], dim=-1),
        torch.stack([reverse, constant[1]], dim=-1),
        torch.stack([constant[0], reverse], dim=-1),
    ]
    points = torch.cat(sides)
    weights = torch.full((points.shape[0],), 4 * (high - low) / points.shape[0], dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def box_interior_monte_carlo(
    count: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    generator: torch.Generator,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""``count`` uniform random points in :math:`[a, b]^d`, weights :math:`(b - a)^d/N` (Monte Carlo)."""
    count = check_integer("count", count, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    low, high = _box(low, high)
    points = low + (high - low) * torch.rand(count, dimension, generator=generator, dtype=dtype, device=device)
    weights = torch.full((count,), (high - low) ** dimension / count, dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def box_interior_sobol(
    count: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    seed: int = 0,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""The first ``count`` points of a scrambled Sobol sequence in :math:`[a, b]^d`, weights :math:`(b - a)^d/N` (quasi-Monte Carlo)."""
    count = check_integer("count", count, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    low, high = _box(low, high)
    engine = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=check_integer("seed", seed, minimum=0))
    points = low + (high - low) * engine.draw(count, dtype=dtype).to(device)
    weights = torch.full((count,), (high - low) ** dimension / count, dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)


def box_boundary_monte_carlo(
    count: int,
    dimension: int,
    derivatives: tuple[str, ...] = ("value",),
    *,
    generator: torch.Generator,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> NodeSet:
    r"""``count`` uniform random points on the boundary of :math:`[a, b]^d`, weights :math:`2d(b - a)^{d-1}/N`.

    Each point picks one of the :math:`2d` faces uniformly (they have equal area), then a uniform point
    on it.
    """
    count = check_integer("count", count, minimum=1)
    dimension = check_integer("dimension", dimension, minimum=1)
    low, high = _box(low, high)
    points = low + (high - low) * torch.rand(count, dimension, generator=generator, dtype=dtype, device=device)
    faces = torch.randint(0, 2 * dimension, (count,), generator=generator, device=device)
    rows = torch.arange(count, device=device)
    points[rows, faces // 2] = torch.where(faces % 2 == 0, low, high).to(dtype)
    area = 2 * dimension * (high - low) ** (dimension - 1)
    weights = torch.full((count,), area / count, dtype=dtype, device=device)
    return NodeSet(points, weights, derivatives)
