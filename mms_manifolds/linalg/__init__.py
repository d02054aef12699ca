"""Linear algebra of the pullback metric: the Gram operator and its three solve modes."""

from .auto import AutoSolve, make_solve_mode
from .cg import CertifiedDecrease, ConjugateGradientSolve, certified_decrease_fraction, conjugate_gradient
from .dense import DenseSolve, GramFactorization, WhitenedGramFactorization
from .kernel import KernelFactorization, KernelSolve
from .linearization import MetricLinearization
from .nystrom import NystromApproximation, NystromPreconditioning, nystrom_approximation
from .operator import GramOperator, SymmetricOperator
from .solution import (
    Factorization,
    LinearSolution,
    UnconvergedSolveCount,
    UnconvergedSolveError,
    UnconvergedSolveWarning,
    pseudo_inverse_rtol,
)
from .woodbury import WoodburySolve

__all__ = [
    "AutoSolve",
    "CertifiedDecrease",
    "ConjugateGradientSolve",
    "DenseSolve",
    "Factorization",
    "GramFactorization",
    "GramOperator",
    "KernelFactorization",
    "KernelSolve",
    "NystromApproximation",
    "NystromPreconditioning",
    "MetricLinearization",
    "SymmetricOperator",
    "LinearSolution",
    "UnconvergedSolveCount",
    "UnconvergedSolveError",
    "UnconvergedSolveWarning",
    "WhitenedGramFactorization",
    "WoodburySolve",
    "certified_decrease_fraction",
    "conjugate_gradient",
    "make_solve_mode",
    "nystrom_approximation",
    "pseudo_inverse_rtol",
]
