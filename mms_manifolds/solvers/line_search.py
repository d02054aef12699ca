r"""A line search over a fixed logarithmic grid of step lengths: the globalization of the published ENGD code.

Along a search curve :math:`\eta \mapsto c(\eta)` (the cost at :math:`\theta + \eta\delta + \tfrac{\eta^2}2a`)
the search evaluates every length of the grid :math:`\eta_k = \eta_{\max}2^{-k}`, :math:`k = 0, \dots, n-1`,
and keeps the one of least cost, :math:`\eta^* = \operatorname{argmin}_k c(\eta_k)`, provided it lies
strictly below the cost at the start; no sufficient-decrease test, no memory of the last length.

Müller & Zeinhofer's energy natural gradient (ICML 2023) steps along :math:`-G^+\nabla L` with its loss
:math:`L = 2f` and Gramian :math:`G = A`, i.e. along twice the Gauss–Newton step
:math:`\delta = -A^+ g`, and searches the 31 lengths :math:`2^{-k}`, :math:`k = 0..30`, of that direction:
in Gauss–Newton units :math:`\eta_{\max} = 2` and :math:`n = 31` (:data:`ENGD_LARGEST_LENGTH`,
:data:`ENGD_GRID_SIZE`). ``GaussNewton(line_search="logarithmic-grid")`` uses it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from .._checks import check_integer, check_positive_float

__all__ = ["ENGD_GRID_SIZE", "ENGD_LARGEST_LENGTH", "GridPoint", "grid_minimiser", "logarithmic_grid"]

#: The largest length of ENGD's grid in Gauss–Newton units (length 1 of the natural gradient, twice the step).
ENGD_LARGEST_LENGTH = 2.0
#: The number of lengths of ENGD's grid (:math:`2^{-k}`, :math:`k = 0..30`).
ENGD_GRID_SIZE = 31


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """The grid's best length and the cost there."""

    length: float
    cost: float


def logarithmic_grid(largest: float = ENGD_LARGEST_LENGTH, count: int = ENGD_GRID_SIZE) -> tuple[float, ...]:
    r"""The lengths :math:`\eta_{\max}2^{-k}`, :math:`k = 0, \dots, n - 1`, largest first (``largest`` :math:`= \eta_{\max}`, ``count`` :math:`= n`)."""
    largest = check_positive_float("largest", largest)
    count = check_integer("count", count, minimum=1)
    return tuple(math.ldexp(largest, -k) for k in range(count))


def grid_minimiser(
    cost_along: Callable[[float], float], lengths: Sequence[float], start_cost: float
) -> GridPoint | None:
    r"""The length of ``lengths`` with the least ``cost_along(length)`` below ``start_cost``, or ``None`` if no finite cost is below it.

    Every length is evaluated once, in the order given; of equal costs the first is kept. Non-finite costs
    (a trial point where the network overflows) are skipped.
    """
    best: GridPoint | None = None
    for length in lengths:
        cost = cost_along(length)
        if math.isfinite(cost) and cost < start_cost and (best is None or cost < best.cost):
            best = GridPoint(length, cost)
    return best
