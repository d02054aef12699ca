r"""Matrix-free conjugate gradients: one JVP and one VJP per iteration, memory :math:`O(Nm + p)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import check_positive_float
from .operator import GramOperator
from .solution import Factorization, LinearSolution

__all__ = ["ConjugateGradientSolve", "conjugate_gradient"]


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, *, tolerance: float, max_iterations: int
) -> tuple[torch.Tensor, int, float]:
    r"""Conjugate gradients for an SPD operator: solve :math:`Ax = b` from :math:`x_0 = 0`.

    Stops when :math:`\|b - Ax_k\| \le \text{tolerance}\,\|b\|` or after ``max_iterations``.

    Args:
        matvec: :math:`x \mapsto Ax`, shape ``(p,) -> (p,)``.
        rhs: :math:`b`, shape ``(p,)``.
        tolerance: relative residual target.
        max_iterations: iteration cap.

    Returns:
        ``(x, iterations, relative_residual)``.
    """
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    rhs_norm = float(torch.linalg.vector_norm(rhs))
    if rhs_norm == 0.0:
        return solution, 0, 0.0
    direction = residual.clone()
    residual_square = residual @ residual
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        product = matvec(direction)
        curvature = direction @ product
        if curvature <= 0:
            raise ValueError("conjugate gradients met non-positive curvature: the operator is not positive definite")
        step = residual_square / curvature
        solution = solution + step * direction
        residual = residual - step * product
        new_residual_square = residual @ residual
        if float(new_residual_square.sqrt()) <= tolerance * rhs_norm:
            residual_square = new_residual_square
            break
        direction = residual + (new_residual_square / residual_square) * direction
        residual_square = new_residual_square
    return solution, iterations, float(residual_square.sqrt()) / rhs_norm


class _ConjugateGradientFactorization(Factorization):
    mode = "cg"

    def __init__(self, operator: GramOperator, tolerance: float, max_iterations: int):
        self.operator = operator
        self.tolerance = tolerance
        self.max_iterations = max_iterations

    def solve(self, rhs: torch.Tensor, damping: float) -> LinearSolution:
        def matvec(xi: torch.Tensor) -> torch.Tensor:
            return self.operator.matvec(xi) + damping * xi

        value, iterations, relative = conjugate_gradient(
            matvec, rhs, tolerance=self.tolerance, max_iterations=self.max_iterations
        )
        return LinearSolution(value=value, mode=self.mode, iterations=iterations, relative_residual=relative)


@dataclass(frozen=True)
class ConjugateGradientSolve:
    r"""Matrix-free CG on :math:`(J^\top W J + \lambda I)x = b`; the Jacobian is never formed.

    Each iteration costs one JVP, one application of :math:`W` and one VJP. Convergence depends on
    the condition number of the damped operator, so it needs :math:`\lambda > 0` on a smooth network.

    Args:
        tolerance: relative residual target. Default ``1e-10``.
        max_iterations: iteration cap per solve. Default ``500``.
    """

    tolerance: float = 1e-10
    max_iterations: int = 500
    name: str = "cg"

    def __post_init__(self) -> None:
        check_positive_float("tolerance", self.tolerance)
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")

    def factorize(self, operator: GramOperator) -> Factorization:
        return _ConjugateGradientFactorization(operator, self.tolerance, self.max_iterations)
