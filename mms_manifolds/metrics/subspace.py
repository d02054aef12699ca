r"""Metrics defined on a linear subspace :math:`V = \{v : C^\top v = 0\}` only, such as :math:`H^{-1}` on zero-mean functions.

A flow that conserves linear quantities (mass :math:`\sum_i w_i u_i` for Cahn–Hilliard) moves in the affine
space :math:`u_0 + V`, and its metric need only be defined on :math:`V`. The :math:`H^{-1}` metric
:math:`\|v\|^2 = (Wv)\cdot K^+(Wv)` is semi-definite on :math:`H_N` (zero on constants) and positive definite
on the zero-mean functions. ``docs/constrained_metrics.md`` derives the step and its exact reference.
"""

from __future__ import annotations

import torch

from .._checks import check_real_tensor
from .matrix import MatrixMetric, _to_torch_matrix

__all__ = ["HMinusOneMetric", "SubspaceMetric"]


class SubspaceMetric(MatrixMetric):
    r"""The metric :math:`\langle u, v\rangle_M = u\cdot Av` on the subspace :math:`V = \ker C^\top` of :math:`H_N`.

    :math:`A` (symmetric positive semi-definite, positive definite on :math:`V`) is stored as the SPD
    matrix

    .. math:: \tilde A = A + s\,QQ^\top,\qquad Q = \text{orthonormal basis of } \operatorname{range} C,\quad
              s = \operatorname{tr}(A)/(n - r),

    which equals :math:`A` on :math:`V` (:math:`Q^\top v = 0` there, so :math:`\tilde Av = Av`) and is
    positive definite on :math:`H_N`: ``apply``, ``inner``, ``whiten`` and the geometry use it, and on the
    increments of a flow in :math:`u_0 + V` it is :math:`A`. :meth:`solve` is the Riesz map of :math:`V`:
    for a dual vector :math:`g` it returns the :math:`r \in V` with :math:`\langle r, v\rangle_M = g\cdot v` for
    all :math:`v \in V` (what the residual :math:`M^{-1}\nabla F_k` of a step in :math:`V` is).

    The flow's network must map into :math:`u_0 + V` (:class:`~mms_manifolds.parametrizations.ConstrainedParametrization`);
    :meth:`check_increments` refuses one that does not. The energies' exact steps and convexity moduli
    are taken over :math:`V` (:meth:`subspace_basis`).

    Like :class:`MatrixMetric`, a node matrix (``(N, N)``, constraints ``(N, r)``) acts on each output
    component, :math:`V = \{v : C^\top v_{:, j} = 0 \ \forall j\}`; a full one (``(Nm, Nm)``, constraints
    ``(Nm, r)``) on the flattened values.

    Args:
        matrix: :math:`A`, shape ``(n, n)``, symmetric (dense or sparse).
        constraints: :math:`C`, shape ``(n, r)`` or ``(n,)`` (one constraint), full column rank, :math:`r < n`.

    Raises:
        TypeError: ``constraints`` is not a real floating tensor.
        ValueError: shapes disagree, :math:`C` is rank deficient, or :math:`A` is not positive definite on
            :math:`V` (then :math:`\tilde A` is not SPD, or numerically singular).

    Examples:
        >>> import torch
        >>> weights = torch.full((4,), 0.25, dtype=torch.float64)
        >>> metric = SubspaceMetric(torch.eye(4, dtype=torch.float64), weights)  # L2 on zero-mean functions
        >>> v = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]], dtype=torch.float64)
        >>> float(metric.inner(v, v)), metric.subspace_basis((4, 1), dtype=torch.float64, device="cpu").shape
        (10.0, torch.Size([4, 3]))
    """

    def __init__(self, matrix: object, constraints: torch.Tensor):
        matrix = _to_torch_matrix(matrix)
        dense = matrix.to_dense() if matrix.layout != torch.strided else matrix
        check_real_tensor("matrix", dense, ndim=2)
        check_real_tensor("constraints", constraints, ndim=(1, 2))
        constraints = constraints.unsqueeze(-1) if constraints.ndim == 1 else constraints
        size, count = constraints.shape
        if dense.shape != (size, size):
            raise ValueError(f"constraints have shape {tuple(constraints.shape)}, the matrix {tuple(dense.shape)}")
        if count >= size:
            raise ValueError(f"{count} constraints on {size} values leave no subspace")
        constraints = constraints.to(dense.dtype)
        basis, triangle = torch.linalg.qr(constraints)
        diagonal = triangle.diagonal().abs()
        if float(diagonal.min()) <= size * torch.finfo(dense.dtype).eps * float(diagonal.max()):
            raise ValueError("constraints must have full column rank (linearly independent columns)")
        self.constraints = constraints
        self.constraint_basis = basis
        self.semidefinite_matrix = dense
        scale = float(torch.trace(dense)) / (size - count)
        super().__init__(dense + scale * (basis @ basis.T))

    def _constraint_solve(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`Z = \tilde A^{-1}Q` (``(n, r)``) and :math:`S = Q^\top Z` (``(r, r)``), the pieces of the Riesz map of :math:`V`."""
        cache = self.__dict__.setdefault("_riesz_cache", {})
        if (dtype, device) not in cache:
            basis = self.constraint_basis.to(dtype=dtype, device=device)
            solved = torch.cholesky_solve(basis, self._factor(dtype, device))
            cache[(dtype, device)] = (solved, basis.T @ solved)
        return cache[(dtype, device)]

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        r"""The Riesz representative in :math:`V`: :math:`r = y - Z S^{-1}Q^\top y`, :math:`y = \tilde A^{-1}g`.

        :math:`r` solves :math:`Ar + Cs = g`, :math:`C^\top r = 0` (the saddle-point system of the Riesz map
        on :math:`V`); for :math:`g = Av` with :math:`v \in V` it returns :math:`v`.
        """
        columns, per_node = self._flat(v)
        factor = self._factor(v.dtype, v.device)
        solved, schur = self._constraint_solve(v.dtype, v.device)
        basis = self.constraint_basis.to(dtype=v.dtype, device=v.device)
        ambient = torch.cholesky_solve(columns, factor)
        riesz = ambient - solved @ torch.linalg.solve(schur, basis.T @ ambient)
        return self._unflat(riesz, v, per_node)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        r"""The :math:`M`-orthogonal projection onto :math:`V`, :math:`v - Z S^{-1}Q^\top v`, shape ``(..., N, m)``."""
        columns, per_node = self._flat(v)
        solved, schur = self._constraint_solve(v.dtype, v.device)
        basis = self.constraint_basis.to(dtype=v.dtype, device=v.device)
        return self._unflat(columns - solved @ torch.linalg.solve(schur, basis.T @ columns), v, per_node)

    def constraint_values(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top v`: shape ``(..., r, m)`` for a node matrix, ``(..., r)`` for a full one."""
        columns, per_node = self._flat(v)
        values = self.constraints.to(dtype=v.dtype, device=v.device).T @ columns
        if per_node:
            return values.reshape(values.shape[0], *v.shape[:-2], v.shape[-1]).movedim(0, -2)
        return values.T.reshape(*v.shape[:-2], -1)

    def subspace_basis(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        r"""An orthonormal basis of :math:`V` in flattened values, shape ``(Nm, Nm - rm)`` (node matrix) or ``(Nm, Nm - r)``."""
        basis = self.constraint_basis.to(dtype=dtype, device=device)
        complement = torch.linalg.svd(basis, full_matrices=True)[0][:, basis.shape[1] :].contiguous()
        if self.size == shape[0] * shape[1]:
            return complement
        return torch.kron(complement, torch.eye(shape[1], dtype=dtype, device=device))

    def check_increments(self, parametrization: object) -> None:
        r"""Raise unless the network's increments lie in :math:`V`: :math:`|C^\top J\xi| \le 10^3\varepsilon\,|C|\,|J\xi|` for a random :math:`\xi`.

        Outside :math:`V` the metric is the augmentation :math:`\tilde A`, not :math:`A`, and the flow, its
        exact reference and the bound would be those of another problem.

        Raises:
            ValueError: the parametrization moves off :math:`V` (wrap it in
                :class:`~mms_manifolds.parametrizations.ConstrainedParametrization`).
        """
        theta = parametrization.initial_point()
        generator = torch.Generator(device=theta.device).manual_seed(0)
        direction = torch.randn(theta.shape, generator=generator, dtype=theta.dtype, device=theta.device)
        image = parametrization.jvp(theta, direction)
        leak = float(torch.linalg.vector_norm(self.constraint_values(image)))
        scale = float(torch.linalg.matrix_norm(self.constraints.to(image.dtype), 2)) * float(
            torch.linalg.vector_norm(image)
        )
        if leak > 1e3 * torch.finfo(image.dtype).eps * scale:
            raise ValueError(
                f"{type(self).__name__} is defined on the subspace C^T v = 0 only, but the network's increments "
                f"leave it (|C^T J xi| = {leak:.3g} for a random xi, |C| |J xi| = {scale:.3g}): wrap the "
                "parametrization in ConstrainedParametrization so that it keeps C^T u fixed"
            )


class HMinusOneMetric(SubspaceMetric):
    r"""The :math:`H^{-1}` metric on zero-mean functions: :math:`\|v\|^2_{H^{-1}} = (Wv)\cdot K^+(Wv)` on :math:`V = \{\sum_i w_iv_i = 0\}`.

    With :math:`W = \operatorname{diag}(w)` and a stiffness :math:`K` whose kernel is the constants
    (periodic or Neumann grids), :math:`\|v\|_{H^{-1}} = \|\nabla\psi\|`, :math:`-\Delta\psi = v`:
    :math:`K\psi = Wv` is solvable exactly when :math:`v` has zero mean. The matrix is
    :math:`A = W(K + \alpha\,\mathbf 1\mathbf 1^\top)^{-1}W`, :math:`\alpha = \operatorname{tr}(K)/N^2`, which equals
    :math:`WK^+W` on :math:`V` (for :math:`Wv \perp \mathbf 1`, :math:`y = K^+Wv` solves
    :math:`(K + \alpha\mathbf 1\mathbf 1^\top)y = Wv`) and needs no pseudo-inverse. Its gradient flow of
    an energy :math:`E` is :math:`u_t = \Delta(W^{-1}\nabla E)` discretely: Cahn–Hilliard for Ginzburg–Landau.

    Args:
        stiffness: :math:`K`, shape ``(N, N)``, symmetric positive semi-definite with kernel the constants.
        weights: quadrature weights :math:`w`, shape ``(N,)``, positive.

    Raises:
        ValueError: shapes disagree, weights not positive, or :math:`K\mathbf 1 \ne 0` (then the zero-mean
            functions are not the subspace where :math:`K^+` inverts :math:`K`).
    """

    def __init__(self, stiffness: object, weights: torch.Tensor):
        check_real_tensor("weights", weights, ndim=1)
        stiffness = _to_torch_matrix(stiffness)
        stiffness = stiffness.to_dense() if stiffness.layout != torch.strided else stiffness
        check_real_tensor("stiffness", stiffness, ndim=2)
        count = weights.shape[0]
        if stiffness.shape != (count, count):
            raise ValueError(f"stiffness has shape {tuple(stiffness.shape)}, expected {(count, count)}")
        if bool((weights <= 0).any()):
            raise ValueError("weights must be strictly positive")
        stiffness = stiffness.to(weights.dtype)
        ones = torch.ones(count, dtype=weights.dtype, device=weights.device)
        scale = float(stiffness.abs().max())
        if float((stiffness @ ones).abs().max()) > 1e3 * count * torch.finfo(weights.dtype).eps * scale:
            raise ValueError(
                "the stiffness must have the constants as kernel (K 1 = 0: periodic or Neumann boundaries) for "
                "H^-1 on zero-mean functions"
            )
        self.stiffness, self.weights = stiffness, weights
        shifted = stiffness + float(torch.trace(stiffness)) / count**2 * torch.outer(ones, ones)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(shifted))
        matrix = weights.unsqueeze(-1) * inverse * weights
        super().__init__(0.5 * (matrix + matrix.T), weights)
