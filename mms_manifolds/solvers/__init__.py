"""Inner solvers for one MMS step, all with ``solve(subproblem, theta0, tolerance=None) -> InnerResult``."""

from .base import InnerResult, InnerSolver, StopReason
from .gauss_newton import GaussNewton
from .riemannian_gradient_descent import RiemannianGradientDescent
from .row_sampling import RowSampling
from .state import GaussNewtonState, MomentumGaussNewtonState, NoState, SolverState, SubspaceGaussNewtonState
from .subspace_gauss_newton import SubspaceGaussNewton
from .torch_optimizers import LBFGS, SGD, Adam, TorchOptimizerSolver

__all__ = [
    "LBFGS",
    "SGD",
    "Adam",
    "GaussNewton",
    "GaussNewtonState",
    "InnerResult",
    "InnerSolver",
    "MomentumGaussNewtonState",
    "NoState",
    "RiemannianGradientDescent",
    "RowSampling",
    "SolverState",
    "StopReason",
    "SubspaceGaussNewton",
    "SubspaceGaussNewtonState",
    "TorchOptimizerSolver",
]
