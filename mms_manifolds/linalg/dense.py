r"""Dense solves with :math:`A = B^\top B`, :math:`B = C^\top J` the whitened Jacobian (``(Nm, p)``), factored on its smaller side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .limits import check_fits_in_memory, first_factorable_shift, pseudo_inverse_rtol, truncated_reciprocal
from .operator import GramOperator
from .solution import Factorization, LinearSolution

__all__ = ["DenseSolve", "GramFactorization", "WhitenedGramFactorization", "singular_value_solve"]


#: Where ``gram`` + :math:`\lambda I` has no Cholesky factor, the shifts tried next: :math:`\max(\lambda, \varepsilon\operatorname{tr})`
#: (times 4 where that is :math:`\lambda` itself) times ``DAMPING_SHIFT_GROWTH**k``, :math:`k = 0, \dots,` ``DAMPING_SHIFT_TRIES - 1``
#: (:meth:`GramFactorization.resolved_damping`, :func:`~mms_manifolds.linalg.limits.first_factorable_shift`).
DAMPING_SHIFT_GROWTH, DAMPING_SHIFT_TRIES = 4.0, 6


def _solve_rtol(own: float, requested: float | None) -> float:
    """The cutoff of one pseudo-inverse solve: the factorisation's own, or a larger one the caller asks for."""
    return own if requested is None else max(requested, own)


class GramFactorization(Factorization):
    r"""Solve :math:`(A + \lambda I)x = b` from an explicit Gram matrix, for any :math:`\lambda \ge 0`.

    Either :math:`A` itself is given (``factor=None``, ``gram`` is :math:`A`, ``(p, p)``), or its kernel
    side (``gram`` :math:`= BB^\top`, ``(n, n)``, with ``factor`` :math:`B`, ``(n, p)``, :math:`n < p`):

    .. math:: (B^\top B + \lambda I)^{-1} b = \tfrac1\lambda\big(b - B^\top(BB^\top + \lambda I)^{-1}Bb\big).

    - :math:`\lambda > 0`: one Cholesky factorisation of ``gram`` :math:`+ \lambda I` per damping value
      (the last one is kept, so repeated solves at one damping factor once). If rounding makes the
      shifted matrix indefinite, the eigendecomposition below is used instead.
    - :math:`\lambda = 0`: the truncated pseudo-inverse from the eigendecomposition
      ``gram`` :math:`= Q\Lambda Q^\top` (computed once), dropping eigenvalues at or below
      ``rtol`` :math:`\cdot\lambda_{\max}`: :math:`x = Q_k\Lambda_k^{-1}Q_k^\top b`, or on the kernel side
      :math:`x = B^\top Q_k\Lambda_k^{-2}Q_k^\top Bb` (the minimum-norm least-squares solution).

    Forming the Gram matrix squares the condition number that an SVD of :math:`B` would see: eigenvalues
    below about :math:`\varepsilon\lambda_{\max}` are rounding noise. The default cutoff
    ``n * eps`` (:func:`pseudo_inverse_rtol`, the rule of LAPACK's and numpy's least-squares drivers)
    stays above that noise, and Cholesky needs :math:`\lambda` well above it; in exchange a
    factorisation costs :math:`O(n^3/3)` (Cholesky) rather than the :math:`O(Nm\,p\,\min(Nm, p))` of an SVD,
    which is 10-50 times slower on a CPU and 100-500 times slower on a GPU.

    Args:
        gram: symmetric positive semi-definite, shape ``(n, n)``.
        factor: :math:`B` with ``gram`` :math:`= BB^\top`, shape ``(n, p)``, or ``None``.
        rtol: relative eigenvalue cutoff of the pseudo-inverse; ``None`` for ``n * eps``.
        mode: the solve mode's name reported in :class:`LinearSolution`.
        operator: the Gram operator ``gram`` was formed from, where this factorises the metric's (its exact
            residual split, :meth:`Factorization.range_split_norms`, reads the operator's SVD).
    """

    def __init__(
        self,
        gram: torch.Tensor,
        factor: torch.Tensor | None = None,
        rtol: float | None = None,
        mode: str = "dense",
        operator: GramOperator | None = None,
    ):
        self.operator = operator
        self._gram: torch.Tensor | None = 0.5 * (gram + gram.T)
        self._factor = factor
        self._rtol = pseudo_inverse_rtol(gram.shape[0], gram.dtype) if rtol is None else rtol
        self.mode = mode
        self._cholesky: tuple[float, torch.Tensor] | None = None
        self._eigen: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def gram(self) -> torch.Tensor:
        """The symmetrised Gram matrix, shape ``(n, n)``."""
        return self._gram

    @property
    def factor(self) -> torch.Tensor | None:
        r""":math:`B` with ``gram`` :math:`= BB^\top` on the kernel side, else ``None``."""
        return self._factor

    @property
    def rtol(self) -> float:
        """Relative eigenvalue cutoff of the pseudo-inverse."""
        return self._rtol

    def eigendecomposition(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(eigenvalues, eigenvectors)`` of ``gram``, ascending, eigenvalues clamped at 0; computed once."""
        if self._eigen is None:
            eigenvalues, eigenvectors = torch.linalg.eigh(self.gram)
            self._eigen = (eigenvalues.clamp_min(0.0), eigenvectors)
        return self._eigen

    def _shifted(self, shift: float) -> torch.Tensor:
        """A copy of ``gram`` with ``shift`` added to its diagonal (no identity matrix formed)."""
        shifted = self.gram.clone()
        shifted.diagonal().add_(shift)
        return shifted

    def resolved_damping(self, damping: float) -> float:
        r"""The smallest of :math:`\lambda` and :math:`\lambda_k = \max(\lambda, \varepsilon\operatorname{tr}G)\,4^k`, :math:`k = 0, \dots, 5`, at which :math:`G + \lambda_kI` has a Cholesky factor (kept for the solve, so it is factored once); :math:`\lambda` where none has.

        :math:`G` is ``gram`` as computed, whose eigenvalues carry rounding of a few :math:`\varepsilon\operatorname{tr}G`
        (:math:`\varepsilon` the machine epsilon of its dtype): with a damping below that, :math:`G + \lambda I` can be
        indefinite, whether it has a Cholesky factor is decided by rounding, and where it has none its solve falls back to
        the eigendecomposition with the eigenvalues clamped at 0 (about 27 times the flops of the Cholesky
        factorisation). Where no shift factors either, the refusal at :math:`\lambda` is kept, so the solve goes to the
        eigendecomposition without another try. On the 5-D Poisson's kernel (``3500 x 3500``, ``docs/performance.md``)
        448 computed eigenvalues were negative, down to :math:`-7.4\cdot10^{-11} = -2.6\,\varepsilon\operatorname{tr}G`,
        under Woodbury-ENGD's :math:`\lambda = 3.17\cdot10^{-12}`. A :math:`\lambda \le 0` is returned as it is.
        """
        if damping <= 0.0 or self._shifted_cholesky(damping) is not None:
            return damping
        start = max(damping, torch.finfo(self.gram.dtype).eps * float(torch.trace(self.gram)))
        if start == damping:
            start *= DAMPING_SHIFT_GROWTH
        found = first_factorable_shift(self._shifted_cholesky, start, DAMPING_SHIFT_GROWTH, DAMPING_SHIFT_TRIES)
        if found is None:
            self._cholesky = (damping, None)  # the solve at damping goes to the eigendecomposition at once
            return damping
        return found[0]

    def _shifted_cholesky(self, damping: float) -> torch.Tensor | None:
        if self._cholesky is None or self._cholesky[0] != damping:
            self._cholesky = None  # release the last factor before the next is formed
            lower, info = torch.linalg.cholesky_ex(self._shifted(damping))
            self._cholesky = (damping, lower if int(info) == 0 else None)
        return self._cholesky[1]

    def _gram_solve(self, rhs: torch.Tensor, damping: float, rtol: float) -> torch.Tensor:
        r""":math:`(\text{gram} + \lambda I)^{-1}` rhs for :math:`\lambda > 0`, or the truncated pseudo-inverse (squared on the kernel side, cutoff ``rtol``) for 0."""
        if damping > 0.0:
            lower = self._shifted_cholesky(damping)
            if lower is not None:
                return torch.cholesky_solve(rhs.unsqueeze(-1), lower).squeeze(-1)
            eigenvalues, eigenvectors = self.eigendecomposition()
            return eigenvectors @ ((eigenvectors.T @ rhs) / (eigenvalues + damping))
        eigenvalues, eigenvectors = self.eigendecomposition()
        keep = eigenvalues > rtol * eigenvalues[-1]
        power = 1 if self.factor is None else 2
        inverse = truncated_reciprocal(eigenvalues, keep, power)
        return eigenvectors @ (inverse * (eigenvectors.T @ rhs))

    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        rtol = _solve_rtol(self.rtol, rtol)
        if self.factor is None:
            return LinearSolution(value=self._gram_solve(rhs, damping, rtol), mode=self.mode)
        projected = self._gram_solve(self.factor @ rhs, damping, rtol)
        if damping > 0.0:
            value = (rhs - self.factor.T @ projected) / damping
        else:
            value = self.factor.T @ projected
        return LinearSolution(value=value, mode=self.mode)


def singular_value_solve(
    svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rhs: torch.Tensor, damping: float, rtol: float
) -> torch.Tensor:
    r"""Solve with :math:`B^\top B + \lambda I` from a thin SVD ``svd`` :math:`= (U, \Sigma, V^\top)` of :math:`B` (``(n, q)``); ``rhs`` shape ``(q,)``.

    :math:`x = V(\Sigma^2 + \lambda I)^{-1}V^\top b + \tfrac1\lambda(I - VV^\top)b`; for :math:`\lambda = 0` the
    truncated pseudo-inverse :math:`V\Sigma_k^{-2}V^\top b`, dropping :math:`\sigma^2 \le` ``rtol`` :math:`\sigma_{\max}^2`.
    """
    _, singular_values, right_transposed = svd
    squares = singular_values.square()
    if damping == 0.0:
        keep = squares > rtol * float(squares.max())
        inverse = truncated_reciprocal(squares, keep)
    else:
        inverse = 1.0 / (squares + damping)
    coefficients = right_transposed @ rhs
    value = right_transposed.T @ (inverse * coefficients)
    if damping > 0.0 and right_transposed.shape[0] < right_transposed.shape[1]:
        value = value + (rhs - right_transposed.T @ coefficients) / damping
    return value


class _SingularValueFactorization(Factorization):
    mode = "dense"

    def __init__(self, operator: GramOperator, rtol: float):
        self.operator, self.rtol = operator, rtol

    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        rtol = _solve_rtol(self.rtol, rtol)
        return LinearSolution(value=singular_value_solve(self.operator.whitened_svd(), rhs, damping, rtol), mode=self.mode)


class WhitenedGramFactorization(GramFactorization):
    r""":class:`GramFactorization` of :math:`B^\top B` or :math:`BB^\top` whose pseudo-inverse (:math:`\lambda = 0`) comes from the SVD of :math:`B`.

    Damped solves use Cholesky; the undamped metric (exact geometry, projections) gets the SVD's
    accuracy in the small singular directions, computed once per point and shared with the residual
    split and the diagnostics.

    Args:
        operator: the Gram operator; its whitened Jacobian :math:`B` is formed (once).
        rtol: relative eigenvalue cutoff of the pseudo-inverse; ``None`` for
            :func:`pseudo_inverse_rtol` of :math:`\min(p, Nm)`.
        kernel_side: factor :math:`BB^\top` (``(Nm, Nm)``) instead of :math:`B^\top B` (``(p, p)``).
        mode: the solve mode's name.
    """

    def __init__(self, operator: GramOperator, rtol: float | None, kernel_side: bool, mode: str):
        parametrization = operator.parametrization
        rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
        size = rows if kernel_side else columns
        check_fits_in_memory(
            (2 * rows * columns + 2 * size * size) * parametrization.dtype.itemsize,
            parametrization.device,
            f"the {mode} solve (J and its whitened copy, {rows} x {columns}, and a {size} x {size} Gram matrix)",
        )
        self.operator, self.kernel_side, self.mode = operator, kernel_side, mode
        self._rtol = rtol
        self._cholesky = self._eigen = None
        self._gram = None  # formed by the ``gram`` property at the first solve that needs it

    @property
    def factor(self) -> torch.Tensor | None:
        """:math:`B` on the kernel side, else ``None``."""
        return self.operator.whitened_jacobian() if self.kernel_side else None

    @property
    def gram(self) -> torch.Tensor:
        r""":math:`BB^\top` or :math:`B^\top B`, formed at the first solve that needs it (not for :math:`\lambda = 0`)."""
        if self._gram is None:
            whitened = self.operator.whitened_jacobian()
            gram = whitened @ whitened.T if self.kernel_side else whitened.T @ whitened
            self._gram = 0.5 * (gram + gram.T)
        return self._gram

    @property
    def rtol(self) -> float:
        """Relative eigenvalue cutoff of the pseudo-inverse."""
        if self._rtol is not None:
            return self._rtol
        return pseudo_inverse_rtol(min(self.operator.whitened_jacobian().shape), self.operator.theta.dtype)

    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        if damping > 0.0:
            return super().solve(rhs, damping)
        rtol = _solve_rtol(self.rtol, rtol)
        return LinearSolution(value=singular_value_solve(self.operator.whitened_svd(), rhs, 0.0, rtol), mode=self.mode)


@dataclass(frozen=True)
class DenseSolve:
    r"""Materialise :math:`B = C^\top J` and factor :math:`A + \lambda I = B^\top B + \lambda I` densely.

    - ``method="cholesky"`` (default): :class:`GramFactorization` of the smaller Gram side,
      :math:`B^\top B` (``(p, p)``) when :math:`p \le Nm`, else :math:`BB^\top` (``(Nm, Nm)``) with the
      kernel identity. One Cholesky per damping value, :math:`O(Nm\,p\,n + n^3/3)` with
      :math:`n = \min(p, Nm)`. Only :math:`\lambda = 0` (the undamped pseudo-inverse) takes the SVD of
      :math:`B`, once per point, for its accuracy in the small singular directions.
    - ``method="svd"``: thin SVD :math:`B = U\Sigma V^\top`,
      :math:`(B^\top B + \lambda I)^{-1} b = V(\Sigma^2 + \lambda I)^{-1}V^\top b + \tfrac1\lambda(I - VV^\top)b`,
      accurate in the small singular directions that the Gram matrix loses to rounding, at 10-50 times
      the cost (``docs/performance.md``).

    With :math:`\lambda = 0` both give the truncated pseudo-inverse: eigenvalues of :math:`A` (squared
    singular values of :math:`B`) at or below ``pseudo_inverse_rtol`` times the largest are dropped.

    Args:
        method: ``"cholesky"`` or ``"svd"``.
        pseudo_inverse_rtol: relative eigenvalue cutoff for :math:`\lambda = 0`; ``None`` means
            :func:`~mms_manifolds.linalg.pseudo_inverse_rtol` of the factored size.
    """

    method: str = "cholesky"
    pseudo_inverse_rtol: float | None = None
    name: str = "dense"
    forms_jacobian: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.method not in ("cholesky", "svd"):
            raise ValueError(f"method must be 'cholesky' or 'svd', got {self.method!r}")

    def factorize(self, operator: GramOperator) -> Factorization:
        if self.method == "cholesky":
            rows, columns = operator.parametrization.ambient_dimension, operator.parametrization.num_parameters
            return WhitenedGramFactorization(operator, self.pseudo_inverse_rtol, columns > rows, self.name)
        rtol = self.pseudo_inverse_rtol
        if rtol is None:
            rtol = pseudo_inverse_rtol(min(operator.whitened_jacobian().shape), operator.theta.dtype)
        return _SingularValueFactorization(operator, rtol)

    def factorize_weighted(self, operator: GramOperator) -> GramFactorization:
        r""":math:`J^\top WJ` for a weight without a whitening (the step's Hessian): assembled, ``(p, p)``, with this mode's cutoff."""
        return GramFactorization(operator.gram_matrix(), rtol=self.pseudo_inverse_rtol)
