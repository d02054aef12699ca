r"""Mesh-free problems: node sets, jets of the network (value, input gradient, Laplacian), jet energies and metrics.

The stacked jets :math:`\phi(\theta) = (u, \nabla u, \Delta u)` at the nodes are one more
:class:`~mms_manifolds.Parametrization`, so the whole geometry, every inner solver and the MMS driver
work on them as they are. See ``docs/meshfree.md``.
"""

from .energies import GinzburgLandauJet, PoissonLeastSquares, RitzEnergy
from .jets import Jet, JetBlock, JetLayout, JetParametrization
from .metrics import JetMetric
from .nodes import (
    DERIVATIVES,
    NodeSet,
    box_boundary_grid,
    box_boundary_monte_carlo,
    box_interior_grid,
    box_interior_monte_carlo,
    box_interior_sobol,
    box_midpoint_grid,
)
from .periodic import PeriodicEmbedding, periodic_mlp, torus_grid, torus_monte_carlo

__all__ = [
    "DERIVATIVES",
    "GinzburgLandauJet",
    "Jet",
    "JetBlock",
    "JetLayout",
    "JetMetric",
    "JetParametrization",
    "NodeSet",
    "PeriodicEmbedding",
    "PoissonLeastSquares",
    "RitzEnergy",
    "box_boundary_grid",
    "box_boundary_monte_carlo",
    "box_interior_grid",
    "box_interior_monte_carlo",
    "box_interior_sobol",
    "box_midpoint_grid",
    "periodic_mlp",
    "torus_grid",
    "torus_monte_carlo",
]
