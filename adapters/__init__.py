"""Adapters: the increment manifold inside pymanopt and geoopt (``mms_manifolds.adapters``)."""

from .geoopt import GeooptIncrementManifold, GeooptNetwork, GeooptSolver, network_parameter
from .pymanopt import PymanoptIncrementManifold, PymanoptSolver, make_problem

__all__ = [
    "GeooptIncrementManifold",
    "GeooptNetwork",
    "GeooptSolver",
    "PymanoptIncrementManifold",
    "PymanoptSolver",
    "make_problem",
    "network_parameter",
]
