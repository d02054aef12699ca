r"""The kernel side without the Jacobian: :math:`K = C^\top JJ^\top C` from a network's layers, :math:`B` by JVPs and VJPs.

Where the parametrisation forms :math:`JJ^\top` from per-layer factors
(:meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel`), the kernel mode needs :math:`B = C^\top J`
(``(Nm, p)``) only through products: every damped solve is

.. math:: (B^\top B + \lambda I)^{-1} b = \tfrac1\lambda\big(b - B^\top(K + \lambda I)^{-1}Bb\big),

with :math:`Bb = C^\top(Jb)` one JVP and :math:`B^\top y = J^\top(Cy)` one VJP (:math:`Cy` the adjoint of the
whitening, by autograd), and the residual split reads :math:`K` alone (:class:`~mms_manifolds.linalg.KernelFactorization`).
Nothing of size :math:`Nm \times p` is formed: the memory is that of :math:`K`, its shifted copy and its Cholesky
factor, :math:`3(Nm)^2` numbers, after the layer kernel's assembly at :math:`4(Nm)^2` (:meth:`LayerKernelSolve.peak_numbers`), against :math:`3Nm\,p + 4(Nm)^2` for
:class:`~mms_manifolds.linalg.KernelSolve`; the time per point is the layer kernel's flops, the Cholesky
factorisations, and one JVP and one VJP per solve instead of :math:`Nm` reverse passes for :math:`J`. A
parametrisation without a layer kernel (or one failing its check) falls back to :math:`B` formed, where it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..metrics.l2 import L2Metric
from .cg import ConjugateGradientSolve
from .kernel import KernelFactorization, kernel_gram_matrix
from .limits import check_fits_in_memory
from .operator import GramOperator
from .solution import Factorization

__all__ = ["LayerKernelFactorization", "LayerKernelSolve", "WhitenedJacobianProducts"]


class WhitenedJacobianProducts:
    r""":math:`B = C^\top J` (``(Nm, p)``) as products, never formed: ``B @ x`` is one JVP, ``B.T @ y`` one VJP.

    ``B @ x`` (``x`` of shape ``(p,)``) is :math:`C^\top(Jx)`, shape ``(Nm,)``; ``B.T @ y`` (``y`` of shape
    ``(Nm,)``) is :math:`J^\top(Cy)`, shape ``(p,)``, with :math:`Cy` the adjoint of the metric's whitening
    :math:`v \mapsto C^\top v` taken by autograd (the whitening is linear).
    """

    def __init__(self, operator: GramOperator, transposed: bool = False):
        self.operator, self.transposed = operator, transposed

    @property
    def T(self) -> WhitenedJacobianProducts:
        """:math:`B^\\top` as products."""
        return WhitenedJacobianProducts(self.operator, not self.transposed)

    def __matmul__(self, vector: torch.Tensor) -> torch.Tensor:
        operator = self.operator
        parametrization, theta, weight = operator.parametrization, operator.theta, operator.weight
        if not self.transposed:
            return weight.whiten(parametrization.jvp(theta, vector))
        zero = torch.zeros(parametrization.output_shape, dtype=vector.dtype, device=vector.device)
        _, adjoint = torch.func.vjp(weight.whiten, zero)
        (unwhitened,) = adjoint(vector)
        return parametrization.vjp(theta, unwhitened)


class LayerKernelFactorization(KernelFactorization):
    r"""The kernel factorisation with :math:`K` from the layers and :math:`B` as products (module docstring).

    The damped Cholesky factorisations and the full-rank certificate shift a copy of :math:`K` on its diagonal
    (:class:`~mms_manifolds.linalg.GramFactorization`'s, no identity matrix formed), and :math:`K` is whitened in place where the metric is an
    :class:`~mms_manifolds.metrics.L2Metric`, so the peak is :math:`3(Nm)^2` numbers after the layer kernel's own
    (:mod:`~mms_manifolds.parametrizations.layer_kernel`). Where the layer kernel is missing or fails its check,
    :math:`B` is formed (:class:`~mms_manifolds.linalg.KernelFactorization`'s path) if it fits, and
    ``kernel_source`` says ``"jacobian"``.
    """

    #: Rows per block of the in-place symmetrisation of the whitened kernel.
    SYMMETRIZE_BLOCK_ROWS = 1024

    def __init__(self, operator: GramOperator, block_rows: int):
        super().__init__(operator, block_rows)
        self._formed_factor = False

    @staticmethod
    def _check_memory(parametrization: object) -> None:
        rows = parametrization.ambient_dimension
        check_fits_in_memory(
            LayerKernelSolve.peak_numbers(parametrization.num_parameters, rows) * parametrization.dtype.itemsize,
            parametrization.device,
            f"the layer-kernel solve (a {rows} x {rows} kernel, its assembly's temporaries, its Cholesky factor)",
        )

    @property
    def factor(self) -> torch.Tensor | WhitenedJacobianProducts:
        r""":math:`B`: as products where :math:`K` came from the layers, else the formed ``(Nm, p)`` tensor."""
        if self._formed_factor:
            return self.operator.whitened_jacobian()
        return WhitenedJacobianProducts(self.operator)

    @property
    def gram(self) -> torch.Tensor:
        r""":math:`K`, shape ``(Nm, Nm)``: from the layers, or from the formed :math:`B` where they give none."""
        if self._gram is None:
            self._gram = self._structured_gram()
            self.kernel_source = "layers" if self._gram is not None else "jacobian"
            if self._gram is None:
                KernelFactorization._check_memory(self.operator.parametrization)
                self._formed_factor = True
                self._gram = kernel_gram_matrix(self.factor, self.block_rows)
        return self._gram

    def _whitened_on_both_sides(self, kernel: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top KC`; in place for an L2 metric (:math:`C = \operatorname{diag}(\sqrt w)`), symmetrised by blocks."""
        weight = self.operator.weight
        if not (isinstance(weight, L2Metric) and type(weight).whiten is L2Metric.whiten):
            return super()._whitened_on_both_sides(kernel)
        outputs = self.operator.parametrization.output_shape[1]
        root = weight.weights.sqrt().repeat_interleave(outputs)
        kernel.mul_(root.unsqueeze(1)).mul_(root.unsqueeze(0))
        size, block = kernel.shape[0], self.SYMMETRIZE_BLOCK_ROWS
        for start in range(0, size, block):
            stop = min(start + block, size)
            mean = 0.5 * (kernel[start:stop] + kernel[:, start:stop].T)
            kernel[start:stop] = mean
            kernel[:, start:stop] = mean.T
        return kernel

    def known_trace(self) -> float:
        r""":math:`\operatorname{tr}(B^\top B) = \operatorname{tr}K`, exact (the solves need :math:`K` anyway); Hutchinson's estimate is not needed."""
        return float(torch.trace(self.gram))


@dataclass(frozen=True)
class LayerKernelSolve:
    r"""The kernel side for :math:`Nm < p` without the Jacobian: :math:`K` from the network's layers, :math:`B` by JVP and VJP.

    The mode :class:`~mms_manifolds.linalg.AutoSolve` takes on the kernel side where the parametrisation has a
    layer kernel and :math:`4(Nm)^2` numbers fit (module docstring; ``docs/performance.md``). The step Hessian of a
    non-quadratic energy (:meth:`factorize_weighted`) is solved matrix-free by CG, as in the ``"cg"`` mode.

    Args:
        block_rows: rows of :math:`B` per block product where :math:`K` has to come from a formed :math:`B`.
    """

    block_rows: int = 1024
    name: str = "layer-kernel"
    forms_jacobian: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if int(self.block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1, got {self.block_rows}")

    @staticmethod
    def peak_numbers(num_parameters: int, ambient_dimension: int) -> int:
        r"""Numbers held at the peak, :math:`4(Nm)^2` and a few vectors: the layer kernel's assembly (:math:`K`, one layer's two factors' products, :math:`(K + K^\top)/2`); later :math:`K`, its shifted copy and its Cholesky factor.

        Measured: 3.72 GiB resident at :math:`Nm = 10^4`, :math:`p = 99901`, where :math:`4(Nm)^2` numbers are
        2.98 GiB (``docs/performance.md``).
        """
        return 4 * ambient_dimension**2 + 8 * (ambient_dimension + num_parameters)

    def factorize(self, operator: GramOperator) -> LayerKernelFactorization:
        parametrization = operator.parametrization
        if parametrization.ambient_dimension >= parametrization.num_parameters:
            raise ValueError(
                f"the layer-kernel solve needs Nm < p, got Nm = {parametrization.ambient_dimension}, "
                f"p = {parametrization.num_parameters}: use solve_mode='dense' or 'cg'"
            )
        return LayerKernelFactorization(operator, int(self.block_rows))

    def factorize_weighted(self, operator: GramOperator) -> Factorization:
        r""":math:`J^\top WJ` for a weight without a whitening (the step's Hessian): matrix-free CG."""
        return ConjugateGradientSolve().factorize_weighted(operator)

