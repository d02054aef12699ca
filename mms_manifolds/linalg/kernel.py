r"""Kernel-side solves for :math:`Nm < p`: Cholesky of the :math:`Nm \times Nm` kernel :math:`BB^\top = C^\top JJ^\top C`, no SVD.

With :math:`B = C^\top J` the whitened Jacobian (``(Nm, p)``, :math:`W = CC^\top`) and :math:`K = BB^\top`,
the Woodbury identity gives every damped solve from one Cholesky factorisation of :math:`K + \lambda I`,

.. math:: (B^\top B + \lambda I)^{-1} b = \tfrac1\lambda\big(b - B^\top(K + \lambda I)^{-1}Bb\big),

and the :math:`M`-orthogonal residual split from :math:`K` too: the whitened target :math:`t = C^\top v` splits
into :math:`P t` and :math:`t - Pt`, :math:`P` the projection onto :math:`\operatorname{range} B` spanned by the
eigenvectors of :math:`K` with eigenvalues above the library's cutoff
(:func:`~mms_manifolds.linalg.pseudo_inverse_rtol` of :math:`Nm`, the rule of
:meth:`~mms_manifolds.linalg.GramOperator.range_mask`). Where a pivoted Cholesky factorisation of :math:`K`
reaches the rounding level within a quarter of :math:`Nm` pivots, :math:`K` is rank-deficient and the kept
eigenpairs come from Rayleigh–Ritz on the pivoted columns (:math:`O((Nm)^2 r)` flops for :math:`r` pivots), or,
for a network of ``Linear`` layers in a metric with a diagonal whitening, from the pivoted columns alone, read
off the layer factors without forming :math:`K` (:meth:`KernelFactorization._low_rank_eigenpairs`). Else,
where :math:`K - c\,I` has a Cholesky factor for
:math:`c = \text{rtol}\cdot\operatorname{tr}K \ge \text{rtol}\,\lambda_{\max}(K)`, every eigenvalue is kept and
:math:`P = I` (one Cholesky, :math:`(Nm)^3/3` flops); otherwise the eigendecomposition of :math:`K` is taken
once (about :math:`9(Nm)^3` flops). :class:`~mms_manifolds.linalg.DenseSolve` instead takes the thin SVD of
:math:`B` for the split, :math:`O(Nm\,p\,Nm)` with a large constant and about six copies of :math:`J` in memory
(``docs/performance.md``): at :math:`p = 20601`, :math:`Nm = 4900` that alone is beyond a 4 GiB budget.

:math:`K` itself comes from the parametrisation's
:meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel` where it has one (a network of
``Linear`` layers: :math:`JJ^\top` from per-layer factors, :mod:`mms_manifolds.parametrizations.layer_kernel`),
whitened on both sides and checked by a JVP and a VJP; otherwise from :math:`B` by blocks
(:func:`kernel_gram_matrix`, :math:`(Nm)^2p` flops). At :math:`p = 20601`, :math:`Nm = 4900` the first took
3.6 s of CPU time per point against 13 s (one thread, shared machine); a residual split from the layer factors
alone 0.5-0.6 s at :math:`p = 8577`, :math:`Nm = 4900`, against 3 s with :math:`K` formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from .dense import GramFactorization
from .limits import check_fits_in_memory, pseudo_inverse_rtol
from .operator import GramOperator

if TYPE_CHECKING:
    from ..parametrizations.layer_kernel import LinearLayerFactors

__all__ = [
    "KernelFactorization",
    "KernelSolve",
    "kernel_gram_matrix",
    "pivoted_cholesky",
    "pivoted_cholesky_from_columns",
]


def kernel_gram_matrix(whitened: torch.Tensor, block_rows: int) -> torch.Tensor:
    r""":math:`K = BB^\top` (``(n, n)``) of ``whitened`` :math:`B` (``(n, p)``), exactly symmetric, in :math:`n^2p` flops.

    Each block of ``block_rows`` rows computes its part left of and on the diagonal,
    :math:`K_{I,\le I} = B_I B_{\le I}^\top`, and mirrors it above the diagonal: half the flops of
    :math:`BB^\top`, and no temporary larger than one block row of :math:`K`.
    """
    rows = whitened.shape[0]
    gram = torch.empty(rows, rows, dtype=whitened.dtype, device=whitened.device)
    for start in range(0, rows, block_rows):
        stop = min(start + block_rows, rows)
        gram[start:stop, :stop] = whitened[start:stop] @ whitened[:stop].T
        block = gram[start:stop, start:stop]
        block.copy_(0.5 * (block + block.T))
        gram[:start, start:stop] = gram[start:stop, :start].T
    return gram


def pivoted_cholesky(gram: torch.Tensor, tolerance: float, max_rank: int) -> torch.Tensor | None:
    r"""Columns :math:`L` (``(n, r)``) of the pivoted Cholesky factorisation of PSD ``gram``, or ``None`` if :math:`r` would exceed ``max_rank``.

    :func:`pivoted_cholesky_from_columns` with the diagonal and the columns of the formed matrix.
    """
    return pivoted_cholesky_from_columns(gram.diagonal(), lambda pivot: gram[:, pivot], tolerance, max_rank)


def pivoted_cholesky_from_columns(
    diagonal: torch.Tensor, column: Callable[[int], torch.Tensor], tolerance: float, max_rank: int
) -> torch.Tensor | None:
    r"""Columns :math:`L` (``(n, r)``) of the pivoted Cholesky factorisation of a PSD :math:`K` known by its ``diagonal`` (``(n,)``) and ``column`` (``j -> Ke_j``, ``(n,)``), or ``None`` if :math:`r` would exceed ``max_rank``.

    Greedy diagonal pivoting: each step takes the largest diagonal entry of the Schur complement
    :math:`R = K - LL^\top` and stops once it is at or below ``tolerance``, so that :math:`K = LL^\top + R` with
    :math:`R \succeq 0`, :math:`\max_i R_{ii} \le` ``tolerance``, :math:`R` zero in the pivoted rows and columns,
    and :math:`\operatorname{range}L = \operatorname{span}\{Ke_j : j \text{ pivoted}\}`. It reads :math:`K` only
    through its diagonal and the :math:`r` pivoted columns; cost :math:`O(n r^2)` besides them (one product with
    the columns so far per step).
    """
    size = diagonal.shape[0]
    remaining = diagonal.clone()
    factor = torch.zeros(size, min(size, max(1, max_rank)), dtype=diagonal.dtype, device=diagonal.device)
    rank = 0
    while True:
        pivot = int(torch.argmax(remaining))
        value = float(remaining[pivot])
        if not value > tolerance:
            return factor[:, :rank]
        if rank == factor.shape[1]:
            return None
        factor[:, rank] = (column(pivot) - factor[:, :rank] @ factor[pivot, :rank]) / value**0.5
        remaining -= factor[:, rank].square()
        remaining[pivot] = -math.inf
        rank += 1


class KernelFactorization(GramFactorization):
    r"""The factorisation of :meth:`KernelSolve`: Cholesky of :math:`K + \lambda I` per damping, :math:`K = BB^\top` (``(Nm, Nm)``).

    Damped solves and the undamped pseudo-inverse are those of :class:`GramFactorization` on the kernel side
    (the pseudo-inverse from the eigendecomposition of :math:`K`, :math:`x = B^\top Q_k\Lambda_k^{-2}Q_k^\top Bb`).
    The residual split and the dual tangential norm are exact (module docstring): from a pivoted Cholesky
    factorisation and Rayleigh–Ritz where :math:`K` has low numerical rank, else from a Cholesky certificate that
    it has full numerical rank or, failing it, from the eigendecomposition of :math:`K` (:meth:`_kept_eigenvectors`).

    Args:
        operator: the Gram operator; its whitened Jacobian :math:`B` is formed (once).
        block_rows: rows of :math:`B` per block product when forming :math:`K`.
    """

    #: Largest share of :math:`Nm` the pivoted Cholesky span may take before the split falls back to ``eigh``.
    RITZ_RANK_SHARE = 0.25

    #: Largest relative mismatch of the structured kernel's :math:`Kz` against :math:`B(B^\top z)` (:meth:`_structured_gram`).
    STRUCTURE_TOLERANCE = 1e-10

    def __init__(self, operator: GramOperator, block_rows: int):
        parametrization = operator.parametrization
        rows = parametrization.ambient_dimension
        self._check_memory(parametrization)
        self.operator, self.mode, self.block_rows = operator, KernelSolve.name, block_rows
        self._rtol = pseudo_inverse_rtol(rows, parametrization.dtype)
        self._cholesky = self._eigen = None
        self._gram: torch.Tensor | None = None
        self._full_rank: bool | None = None
        self._kept: tuple[torch.Tensor, torch.Tensor] | None = None
        self._range_known = False
        self._factors: LinearLayerFactors | None = None
        self._factors_known = self._factors_failed = False
        self.kernel_source: str | None = None
        """How :math:`K` was formed: ``"layers"`` (per-layer factors of the network), ``"jacobian"`` (:math:`BB^\top`), or ``None`` before (or never)."""
        self.split_source: str | None = None
        """What the residual split read: ``"layer factors"`` (the diagonal, pivoted columns and Rayleigh quotient of :math:`K` from the layers, :math:`K` never formed for it), ``"kernel"`` (the formed :math:`K`), or ``None`` before."""

    @staticmethod
    def _check_memory(parametrization: object) -> None:
        """Raise ``MemoryError`` where the peak of :meth:`KernelSolve.peak_numbers` does not fit the device."""
        rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
        check_fits_in_memory(
            KernelSolve.peak_numbers(columns, rows) * parametrization.dtype.itemsize,
            parametrization.device,
            f"the kernel solve (J and its whitened copy, {rows} x {columns}, and a {rows} x {rows} kernel)",
        )

    @property
    def factor(self) -> torch.Tensor:
        """:math:`B`, shape ``(Nm, p)``."""
        return self.operator.whitened_jacobian()

    @property
    def gram(self) -> torch.Tensor:
        r""":math:`K = BB^\top`, shape ``(Nm, Nm)``, formed at the first solve that needs it (``kernel_source`` says how)."""
        if self._gram is None:
            self._gram = self._structured_gram()
            self.kernel_source = "layers" if self._gram is not None else "jacobian"
            if self._gram is None:
                self._gram = kernel_gram_matrix(self.factor, self.block_rows)
        return self._gram

    def _structured_gram(self) -> torch.Tensor | None:
        r""":math:`C^\top(JJ^\top)C` from the parametrisation's layer factors (:meth:`_layer_factors`) or its :meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel`, checked; ``None`` where it has neither or they fail the check."""
        kernel = self._checked_layer_kernel()
        return None if kernel is None else self._whitened_on_both_sides(kernel)

    def _checked_layer_kernel(self) -> torch.Tensor | None:
        r""":math:`JJ^\top` (``(Nm, Nm)``) from the layer factors or :meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel`, checked by :meth:`_structure_holds`; ``None`` where there is neither or the check fails."""
        factors = self._layer_factors()
        if factors is not None:
            return factors.kernel()
        if self._factors_failed:
            return None
        operator = self.operator
        kernel = operator.parametrization.jacobian_kernel(operator.theta)
        if kernel is None or not self._structure_holds(lambda probe: kernel @ probe):
            return None
        return kernel

    def _whitened_on_both_sides(self, kernel: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top KC` (``(Nm, Nm)``, symmetrised) for :math:`K` = ``kernel``."""
        operator = self.operator
        rows, shape = kernel.shape[0], operator.parametrization.output_shape
        right = operator.weight.whiten(kernel.reshape(rows, *shape))  # K_J C
        gram = operator.weight.whiten(right.T.reshape(rows, *shape))  # C^T K_J C
        return 0.5 * (gram + gram.T)

    def _layer_factors(self) -> LinearLayerFactors | None:
        r"""The parametrisation's :meth:`~mms_manifolds.parametrizations.Parametrization.layer_factors` at the point, checked by :meth:`_structure_holds`; ``None`` where it has none or they fail; computed once."""
        if not self._factors_known:
            operator = self.operator
            factors = operator.parametrization.layer_factors(operator.theta)
            self._factors_failed = factors is not None and not self._structure_holds(
                lambda probe: factors.kernel_product(probe.unsqueeze(-1)).squeeze(-1)
            )
            self._factors, self._factors_known = (None if self._factors_failed else factors), True
        return self._factors

    def _structure_holds(self, product: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        r"""Whether ``product`` (:math:`z \mapsto (JJ^\top)z`, ``(Nm,) -> (Nm,)``) equals :math:`J(J^\top z)` for a fixed random :math:`z` to ``STRUCTURE_TOLERANCE`` relative.

        One VJP and one JVP, so that neither the check nor the structured kernel forms :math:`J` (the residual
        split at a new point needs neither :math:`J` nor, with layer factors and a diagonal whitening, :math:`K`).
        """
        operator = self.operator
        parametrization, theta = operator.parametrization, operator.theta
        rows = parametrization.ambient_dimension
        generator = torch.Generator(device=theta.device).manual_seed(0)
        probe = torch.randn(rows, generator=generator, dtype=theta.dtype, device=theta.device)
        pulled = parametrization.vjp(theta, probe.reshape(parametrization.output_shape))
        expected = parametrization.jvp(theta, pulled).reshape(-1)
        mismatch = float(torch.linalg.vector_norm(product(probe) - expected)) / max(
            float(torch.linalg.vector_norm(expected)), torch.finfo(theta.dtype).tiny
        )
        return mismatch <= self.STRUCTURE_TOLERANCE

    def full_rank(self) -> bool:
        r"""Whether every eigenvalue of :math:`K` is above ``rtol`` :math:`\cdot\operatorname{tr}K` (Cholesky of the shifted :math:`K`); computed once."""
        if self._full_rank is None:
            shift = self.rtol * float(torch.trace(self.gram))
            self._full_rank = int(torch.linalg.cholesky_ex(self._shifted(-shift))[1]) == 0
        return self._full_rank

    def _kept_eigenvectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        r"""Eigenvalues above ``rtol`` times the largest and their eigenvectors, ``((k,), (Nm, k))``, or ``None`` where all are (:math:`P = I`); computed once.

        First the pivoted Cholesky factorisation of :math:`K` (:meth:`_low_rank_eigenpairs`), stopped at the rounding
        level :math:`\tau = \varepsilon\max_i K_{ii}`, with at most ``RITZ_RANK_SHARE`` of :math:`Nm` pivots:
        :math:`K = LL^\top + R`, :math:`R \succeq 0`, :math:`\operatorname{tr}R \le Nm\,\tau`. Where it stops within
        that share, :math:`\lambda_{r+1}(K) \le \|R\| \le Nm\,\tau \le \text{rtol}\,\lambda_{\max}`, so :math:`K` is
        rank-deficient by the library's rule, and Rayleigh–Ritz on :math:`\operatorname{range}L` gives the kept pairs
        (the basis :math:`Q` (``(Nm, r)``), the eigenpairs :math:`(\vartheta, y)` of :math:`Q^\top KQ`, the vectors
        :math:`Qy`), or, with layer factors and a diagonal whitening, the eigenpairs of :math:`LL^\top` without
        :math:`K`. An eigenvector of :math:`K` with eigenvalue :math:`\lambda` lies in :math:`\operatorname{range}L`
        up to :math:`\|R\|/\lambda`: the directions far above the cutoff are those of the full eigendecomposition,
        those near it carry the Gram matrix's rounding either way (``docs/performance.md``). A smooth network's kernel
        has few: at :math:`p = 20601`, :math:`Nm = 4900` 105 pivots and 48 kept eigenvalues, 0.3 s against 32 s for
        ``eigh`` once :math:`K` is formed. Otherwise the Cholesky certificate of :meth:`full_rank`, and failing it ``eigh`` of :math:`K`.
        """
        if not self._range_known:
            pairs = self._low_rank_eigenpairs()
            if pairs is None and not self.full_rank():
                pairs = self.eigendecomposition()
            if pairs is not None:  # an empty span (K = 0 to rounding) keeps nothing
                eigenvalues, eigenvectors = pairs
                keep = eigenvalues > self.rtol * (eigenvalues[-1] if eigenvalues.numel() else 0.0)
                self._kept = (eigenvalues[keep], eigenvectors[:, keep])
            self._range_known = True
        return self._kept

    def _low_rank_eigenpairs(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        r"""Eigenpairs ``((r,), (Nm, r))``, ascending, of :math:`K` on the span of its pivoted Cholesky columns :math:`L`, or ``None`` where :math:`L` needs more than ``RITZ_RANK_SHARE`` of :math:`Nm` columns.

        Where the parametrisation has layer factors (:meth:`_layer_factors`) and the metric a diagonal whitening
        :math:`c` (:meth:`~mms_manifolds.metrics.Metric.diagonal_whitening`), :math:`K = \operatorname{diag}(c)\,JJ^\top
        \operatorname{diag}(c)` is never formed: its diagonal and the :math:`r` pivoted columns come from the layers
        (:meth:`~mms_manifolds.parametrizations.layer_kernel.LinearLayerFactors.columns`,
        :math:`O(Nm\,r\sum_l(d_{out} + d_{in}))` flops), and the pairs are those of :math:`LL^\top = K - R`, from the
        thin SVD of :math:`L` (Nyström's approximation on the pivots, :math:`O(Nm\,r^2)`): by Weyl's inequality its
        eigenvalues are within :math:`\|R\| \le \operatorname{tr}R \le Nm\,\tau \le \text{rtol}\,\lambda_{\max}` below
        those of :math:`K`, and an eigenvector with eigenvalue :math:`\lambda` and gap :math:`\delta` to the rest turns by at
        most :math:`\|R\|/\delta` (Davis–Kahan): the accuracy of Rayleigh–Ritz on :math:`\operatorname{range}L`, which would
        need :math:`KL`, :math:`r` products with :math:`K`. Otherwise Rayleigh–Ritz with the formed :math:`K` (:attr:`gram`):
        the eigenpairs of :math:`Q^\top KQ`, :math:`Q` an orthonormal basis of :math:`\operatorname{range}L`.
        """
        operator = self.operator
        rows = operator.parametrization.ambient_dimension
        max_rank = int(self.RITZ_RANK_SHARE * rows)
        eps = torch.finfo(operator.theta.dtype).eps
        factors = self._layer_factors()
        scale = None
        if factors is not None:
            scale = operator.weight.diagonal_whitening(
                operator.parametrization.output_shape, dtype=operator.theta.dtype, device=operator.theta.device
            )
        if factors is None or scale is None:
            self.split_source = "kernel"
            gram = self.gram
            columns = pivoted_cholesky(gram, eps * float(gram.diagonal().max()), max_rank)
            if columns is None:
                return None
            basis = torch.linalg.qr(columns).Q
            projected = basis.T @ (gram @ basis)
            ritz_values, ritz_vectors = torch.linalg.eigh(0.5 * (projected + projected.T))
            return ritz_values.clamp_min(0.0), basis @ ritz_vectors
        self.split_source = "layer factors"
        diagonal = scale.square() * factors.diagonal()

        def column(pivot: int) -> torch.Tensor:
            return scale * factors.columns(torch.tensor([pivot], device=scale.device)).squeeze(-1) * scale[pivot]

        columns = pivoted_cholesky_from_columns(diagonal, column, eps * float(diagonal.max()), max_rank)
        if columns is None:
            return None
        left, singular, _ = torch.linalg.svd(columns, full_matrices=False)
        return singular.square().flip(0), left.flip(1)

    def range_split_norms(self, v: torch.Tensor, damping: float) -> tuple[float, float]:
        r""":math:`(\|Pt\|, \|t - Pt\|)`, :math:`t = C^\top v`, :math:`P` the projection onto :math:`\operatorname{range} B` (``damping`` unused)."""
        target = self.operator.weight.whiten(v).reshape(-1)
        kept = self._kept_eigenvectors()
        if kept is None:
            return float(torch.linalg.vector_norm(target)), 0.0
        vectors = kept[1]
        tangential = vectors @ (vectors.T @ target)
        return float(torch.linalg.vector_norm(tangential)), float(torch.linalg.vector_norm(target - tangential))

    def dual_tangential_norm(self, egrad: torch.Tensor, damping: float) -> float:
        r""":math:`\|\Lambda_k^{-1}Q_k^\top B\,e\|` for ``egrad`` :math:`e = J^\top g` (``(p,)``): :math:`\|K^{-1}Be\|` at full rank."""
        projected = self.factor @ egrad
        kept = self._kept_eigenvectors()
        if kept is None:
            return float(torch.linalg.vector_norm(torch.linalg.solve(self.gram, projected)))
        values, vectors = kept
        return float(torch.linalg.vector_norm((vectors.T @ projected) / values))


@dataclass(frozen=True)
class KernelSolve:
    r"""Factor the kernel :math:`K = BB^\top` (``(Nm, Nm)``) by Cholesky, for :math:`Nm < p`; never an SVD.

    Cost per point: the Jacobian (:math:`Nm` reverse passes), :math:`(Nm)^2p` flops for :math:`K` (far fewer
    where the parametrisation forms :math:`JJ^\top` from its layers, :meth:`KernelFactorization.gram`), and
    :math:`(Nm)^3/3` per damping value; peak memory :meth:`peak_numbers` numbers. The automatic choice
    (:class:`~mms_manifolds.linalg.AutoSolve`) takes it beyond the dense SVD's size when it fits the memory
    budget and its time model says it is cheaper than CG (``docs/performance.md``).

    Args:
        block_rows: rows of :math:`B` per block product when forming :math:`K`. Default ``1024``.
    """

    block_rows: int = 1024
    name: str = "kernel"
    forms_jacobian: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if int(self.block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1, got {self.block_rows}")

    @staticmethod
    def peak_numbers(num_parameters: int, ambient_dimension: int) -> int:
        r"""Numbers held at the peak: :math:`J`, the whitened :math:`B` and one transient copy (:math:`3Nmp`); :math:`K`, the shifted :math:`K` and its factor, charged with one spare (:math:`4(Nm)^2`; the shift no longer forms an identity)."""
        return 3 * num_parameters * ambient_dimension + 4 * ambient_dimension**2

    def factorize(self, operator: GramOperator) -> KernelFactorization:
        if operator.parametrization.ambient_dimension >= operator.parametrization.num_parameters:
            raise ValueError(
                f"the kernel solve needs Nm < p, got Nm = {operator.parametrization.ambient_dimension}, "
                f"p = {operator.parametrization.num_parameters}: use solve_mode='dense' (the p x p side)"
            )
        return KernelFactorization(operator, int(self.block_rows))

    def factorize_weighted(self, operator: GramOperator) -> GramFactorization:
        r""":math:`J^\top WJ` for a weight without a whitening (the step's Hessian): assembled, ``(p, p)``, default cutoff."""
        return GramFactorization(operator.gram_matrix())
