"""Linear algebra of the pullback metric: the Gram operator and its three solve modes."""

from .auto import AutoSolve, make_solve_mode
from .cg import ConjugateGradientSolve, conjugate_gradient
from .dense import DenseSolve, EigenFactorization
from .operator import GramOperator
from .solution import Factorization, LinearSolution
from .woodbury import WoodburySolve

__all__ = [
    "AutoSolve",
    "ConjugateGradientSolve",
    "DenseSolve",
    "EigenFactorization",
    "Factorization",
    "GramOperator",
    "LinearSolution",
    "WoodburySolve",
    "conjugate_gradient",
    "make_solve_mode",
]
