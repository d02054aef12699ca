"""mms_manifolds: neural gradient flows as Riemannian optimisation on the increment manifold of a network."""

from .diagnostics import JacobianDiagnostics
from .manifold import Geodesic, IncrementManifold, default_relative_damping
from .metrics import L2Metric, MatrixMetric, Metric, SobolevMetric
from .parametrizations import (
    AutogradParametrization,
    FunctionParametrization,
    LinearParametrization,
    Parametrization,
    TorchParametrization,
)

__all__ = [
    # parametrisations
    "AutogradParametrization",
    "FunctionParametrization",
    "LinearParametrization",
    "Parametrization",
    "TorchParametrization",
    # metrics
    "L2Metric",
    "MatrixMetric",
    "Metric",
    "SobolevMetric",
    # geometry
    "Geodesic",
    "IncrementManifold",
    "JacobianDiagnostics",
    "default_relative_damping",
]
