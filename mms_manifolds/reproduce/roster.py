"""The inner solvers compared in every experiment, at a given budget of inner iterations per MMS step.

Riemannian gradient descent integrates each exp-map step to a relative tolerance of 1e-4 (1e-6 gave
the same trajectory errors on the regression flow at 30x the time). Fixed-rate methods are given a small grid of rates; the runner keeps the best rate per budget and
reports the grid. The Riemannian solvers run on our manifold through their own libraries' code
(pymanopt, geoopt); the raw-parameter baselines are torch's optimisers.
"""

from __future__ import annotations

from collections.abc import Callable

from ..solvers import LBFGS, SGD, Adam, GaussNewton, InnerSolver, RiemannianGradientDescent

__all__ = ["RATE_GRIDS", "SOLVERS", "solver_variants"]

RATE_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": (3e-3, 1e-2, 3e-2),
    "sgd": (1e-2, 3e-2, 1e-1),
    "geoopt-rsgd": (0.05, 0.1, 0.2),
    "geoopt-radam": (3e-3, 1e-2, 3e-2),
}
"""Learning rates searched for each fixed-rate solver (the best per budget is reported)."""


def _pymanopt(optimizer_name: str, budget: int) -> InnerSolver:
    import pymanopt

    from ..adapters.pymanopt import PymanoptSolver

    # pymanopt's optimisers as pymanopt ships them: None radii are TrustRegions' own defaults.
    shipped_radii = {"run_options": {"Delta_bar": None, "Delta0": None}}
    options = shipped_radii if optimizer_name == "TrustRegions" else {"min_step_size": 0.0}
    return PymanoptSolver(getattr(pymanopt.optimizers, optimizer_name), max_iterations=budget, **options)


def _geoopt(class_name: str, budget: int, rate: float) -> InnerSolver:
    import geoopt

    from ..adapters.geoopt import GeooptSolver

    return GeooptSolver(getattr(geoopt.optim, class_name), max_iterations=budget, lr=rate, check_every=budget)


SOLVERS: dict[str, Callable[[int, float | None], InnerSolver]] = {
    "gauss-newton": lambda n, rate: GaussNewton(max_iterations=n),
    "rgd-exp": lambda n, rate: RiemannianGradientDescent(max_iterations=n, use_exp=True, exp_rtol=1e-4),
    "pymanopt-sd": lambda n, rate: _pymanopt("SteepestDescent", n),
    "pymanopt-cg": lambda n, rate: _pymanopt("ConjugateGradient", n),
    "pymanopt-tr": lambda n, rate: _pymanopt("TrustRegions", n),
    "geoopt-rsgd": lambda n, rate: _geoopt("RiemannianSGD", n, rate),
    "geoopt-radam": lambda n, rate: _geoopt("RiemannianAdam", n, rate),
    "adam": lambda n, rate: Adam(lr=rate, max_iterations=n, check_every=n),
    "sgd": lambda n, rate: SGD(lr=rate, max_iterations=n, check_every=n),
    "lbfgs": lambda n, rate: LBFGS(max_iterations=n, check_every=n),
}
"""Solver name -> ``(budget, rate) -> solver``."""


def solver_variants(name: str, budget: int) -> list[tuple[float | None, InnerSolver]]:
    """The solvers to try for ``name`` at ``budget``: one per rate in its grid, or one."""
    rates = RATE_GRIDS.get(name, (None,))
    return [(rate, SOLVERS[name](budget, rate)) for rate in rates]
