"""Linear algebra of the pullback metric: the Gram operator and its solve modes."""

from .auto import AutoSolve, SolveChoice, SolveMode, make_solve_mode, resolve_solve_mode
from .cg import CertifiedDecrease, ConjugateGradientSolve, certified_decrease_fraction, conjugate_gradient
from .composite import OperatorSum, ScaledOperator, diagonal_of, multiple_of
from .dense import DenseSolve, GramFactorization, WhitenedGramFactorization, singular_value_solve
from .diagonal_weight import DiagonalWeightFactorization, ScaledRows, diagonal_weight_factorization
from .forcing import EisenstatWalker, ForcingSequence
from .kernel import KernelFactorization, KernelSolve
from .layer_kernel_solve import LayerKernelFactorization, LayerKernelSolve, WhitenedJacobianProducts
from .limits import pseudo_inverse_rtol, range_mask
from .linearization import MetricLinearization
from .nystrom import NystromApproximation, NystromPreconditioning, nystrom_approximation
from .operator import GramOperator, SymmetricOperator, thin_svd
from .solution import Factorization, LinearSolution
from .unconverged import UnconvergedSolveCount, UnconvergedSolveError, UnconvergedSolveWarning
from .woodbury import WoodburySolve

__all__ = [
    "AutoSolve",
    "CertifiedDecrease",
    "ConjugateGradientSolve",
    "DenseSolve",
    "DiagonalWeightFactorization",
    "EisenstatWalker",
    "ForcingSequence",
    "Factorization",
    "GramFactorization",
    "GramOperator",
    "KernelFactorization",
    "KernelSolve",
    "LayerKernelFactorization",
    "LayerKernelSolve",
    "NystromApproximation",
    "NystromPreconditioning",
    "MetricLinearization",
    "OperatorSum",
    "ScaledOperator",
    "ScaledRows",
    "SolveChoice",
    "SolveMode",
    "SymmetricOperator",
    "LinearSolution",
    "UnconvergedSolveCount",
    "UnconvergedSolveError",
    "UnconvergedSolveWarning",
    "WhitenedGramFactorization",
    "WhitenedJacobianProducts",
    "WoodburySolve",
    "certified_decrease_fraction",
    "conjugate_gradient",
    "diagonal_of",
    "diagonal_weight_factorization",
    "make_solve_mode",
    "multiple_of",
    "nystrom_approximation",
    "pseudo_inverse_rtol",
    "range_mask",
    "resolve_solve_mode",
    "singular_value_solve",
    "thin_svd",
]
