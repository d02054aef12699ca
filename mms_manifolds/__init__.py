"""mms_manifolds: neural gradient flows as Riemannian optimisation on the increment manifold of a network."""

from .budget import TrajectoryBudget
from .diagnostics import JacobianDiagnostics
from .energies import CallableEnergy, DirichletEnergy, Energy, GinzburgLandau, L2Regression, QuarticEnergy
from .manifold import Geodesic, IncrementManifold, default_relative_damping
from .metrics import HMinusOneMetric, L2Metric, MatrixMetric, Metric, SobolevMetric, SubspaceMetric
from .mms import MinimizingMovement, MMSDivergenceError, exact_trajectory
from .parametrizations import (
    AutogradParametrization,
    ConstrainedParametrization,
    FunctionParametrization,
    LinearParametrization,
    Parametrization,
    TorchParametrization,
)
from .results import MMSResult, ResultFileError, StepRecord
from .solvers import (
    LBFGS,
    SGD,
    Adam,
    GaussNewton,
    InnerResult,
    InnerSolver,
    RiemannianGradientDescent,
    SolverState,
    StopReason,
    SubspaceGaussNewton,
)
from .step_constants import StepConstants, lipschitz_constant
from .subproblem import MMSSubproblem, Residual

__all__ = [
    # parametrisations
    "AutogradParametrization",
    "ConstrainedParametrization",
    "FunctionParametrization",
    "LinearParametrization",
    "Parametrization",
    "TorchParametrization",
    # metrics
    "HMinusOneMetric",
    "L2Metric",
    "MatrixMetric",
    "Metric",
    "SobolevMetric",
    "SubspaceMetric",
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
    "SolverState",
    "StopReason",
    "SubspaceGaussNewton",
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
