"""mms_manifolds: neural gradient flows as Riemannian optimisation on the increment manifold of a network."""

from .budget import TrajectoryBudget
from .diagnostics import JacobianDiagnostics
from .energies import CallableEnergy, DirichletEnergy, Energy, GinzburgLandau, L2Regression, QuarticEnergy
from .manifold import Geodesic, IncrementManifold, default_relative_damping
from .metrics import L2Metric, MatrixMetric, Metric, SobolevMetric
from .mms import MinimizingMovement, MMSDivergenceError, exact_trajectory
from .parametrizations import (
    AutogradParametrization,
    FunctionParametrization,
    LinearParametrization,
    Parametrization,
    TorchParametrization,
)
from .results import MMSResult, ResultFileError, StepRecord
from .solvers import LBFGS, SGD, Adam, GaussNewton, InnerResult, InnerSolver, RiemannianGradientDescent, StopReason
from .step_constants import StepConstants, lipschitz_constant
from .subproblem import MMSSubproblem, Residual

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
    # energies and the MMS step
    "CallableEnergy",
    "DirichletEnergy",
    "Energy",
    "GinzburgLandau",
    "L2Regression",
    "MMSSubproblem",
    "QuarticEnergy",
    "Residual",
    # inner solvers
    "LBFGS",
    "SGD",
    "Adam",
    "GaussNewton",
    "InnerResult",
    "InnerSolver",
    "RiemannianGradientDescent",
    "StopReason",
    # the driver
    "MMSDivergenceError",
    "MMSResult",
    "MinimizingMovement",
    "ResultFileError",
    "StepConstants",
    "StepRecord",
    "TrajectoryBudget",
    "exact_trajectory",
    "lipschitz_constant",
]
