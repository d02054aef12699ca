r"""Metrics given by an explicit SPD matrix (dense or sparse), and the Sobolev :math:`H^1` metric."""

from __future__ import annotations

import numpy as np
import torch

from .._checks import check_positive_float, check_real_tensor
from .base import Metric, numerical_singularity

__all__ = ["MatrixMetric", "SobolevMetric"]

_MAX_DENSE_CHECK = 6000


def _to_torch_matrix(matrix: object, name: str = "matrix") -> torch.Tensor:
    """Accept a torch tensor (dense or sparse) or a scipy sparse matrix; return a torch matrix."""
    if isinstance(matrix, torch.Tensor):
        if matrix.device.type == "meta":
            raise ValueError(f"{name} is on the meta device and holds no values")
        return matrix
    if hasattr(matrix, "tocoo"):
        coo = matrix.tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        values = torch.as_tensor(coo.data, dtype=torch.float64)
        return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()
    try:
        return torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a tensor, an array or a scipy sparse matrix, got {type(matrix).__name__}"
        ) from error


class MatrixMetric(Metric):
    r"""The metric of an explicit SPD matrix :math:`A`.

    A node matrix of shape ``(N, N)`` acts on each output component, :math:`M = A \otimes I_m`
    (mass or stiffness-plus-mass matrices); a full matrix of shape ``(Nm, Nm)`` acts on the
    flattened values.

    A sparse matrix is applied sparsely; :meth:`solve` and :meth:`whiten` factor a dense copy
    (Cholesky, once per dtype and device), which limits them to sizes of a few thousand.

    Args:
        matrix: :math:`A`, dense or sparse (torch sparse COO/CSR, or any scipy sparse matrix), square.

    Raises:
        ValueError: ``matrix`` is not square, has non-finite entries, is not symmetric, or (for sizes
            up to 6000) is not positive definite or is numerically singular (condition number at least
            :math:`1/(4n\varepsilon)`, :func:`~mms_manifolds.metrics.base.numerical_singularity`: a semi-definite
            matrix such as ``W @ pinv(K) @ W`` whose zero eigenvalue came out as rounding noise). Larger
            matrices are checked for symmetry only.
    """

    def __init__(self, matrix: object):
        matrix = _to_torch_matrix(matrix)
        self.is_sparse = matrix.layout != torch.strided
        dense = check_real_tensor("matrix", matrix.to_dense() if self.is_sparse else matrix, ndim=2)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        scale = float(dense.abs().max())
        if float((dense - dense.T).abs().max()) > 1e-10 * max(scale, 1.0):
            raise ValueError("matrix is not symmetric: a metric must be symmetric positive definite")
        if matrix.shape[0] <= _MAX_DENSE_CHECK:
            factor, info = torch.linalg.cholesky_ex(dense)
            if int(info) != 0:
                raise ValueError("matrix is not positive definite (Cholesky failed): a metric must be SPD")
            singular = numerical_singularity(dense, factor)
            if singular is not None:
                raise ValueError(f"{type(self).__name__}: {singular}")
        self._dense = dense

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    def _flat(self, v: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Return the columns the matrix acts on, shape ``(size, batch)``, and whether it acts per node."""
        if v.ndim < 2:
            raise ValueError(f"values must have shape (..., N, m), got {tuple(v.shape)}")
        nodes, outputs = v.shape[-2], v.shape[-1]
        if self.size == nodes:
            return v.movedim(-2, 0).reshape(nodes, -1), True
        if self.size == nodes * outputs:
            return v.reshape(-1, nodes * outputs).T, False
        raise ValueError(f"metric matrix of size {self.size} does not match values of shape {tuple(v.shape)}")

    def _unflat(self, columns: torch.Tensor, like: torch.Tensor, per_node: bool) -> torch.Tensor:
        if per_node:
            moved_shape = (like.shape[-2], *like.shape[:-2], like.shape[-1])
            return columns.reshape(moved_shape).movedim(0, -2)
        return columns.T.reshape(like.shape)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        columns, per_node = self._flat(v)
        matrix = self.matrix.to(dtype=v.dtype, device=v.device)
        return self._unflat(matrix @ columns, v, per_node)

    def _factor(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Cholesky factor of the ``(size, size)`` matrix (per node when it acts per node), in the metric's one cache."""
        return self._cached_cholesky(("matrix", dtype, device), lambda: self._dense.to(dtype=dtype, device=device))

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        columns, per_node = self._flat(v)
        return self._unflat(torch.cholesky_solve(columns, self._factor(v.dtype, v.device)), v, per_node)

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        columns, per_node = self._flat(v)
        whitened = self._unflat(self._factor(v.dtype, v.device).T @ columns, v, per_node)
        return whitened.reshape(*v.shape[:-2], -1)


class SobolevMetric(MatrixMetric):
    r"""Discrete :math:`H^1` metric :math:`M = \operatorname{diag}(w) + \alpha K`, acting on each output component.

    .. math:: \langle u, v\rangle_M = \sum_i w_i u_i v_i + \alpha\, u \cdot K v
              \approx \int u v \,dx + \alpha \int \nabla u \cdot \nabla v \,dx

    Args:
        weights: quadrature weights :math:`w`, shape ``(N,)``, strictly positive.
        stiffness: :math:`K`, shape ``(N, N)``, symmetric positive semidefinite (dense or sparse),
            e.g. from :func:`mms_manifolds.grids.stiffness_1d`.
        alpha: :math:`\alpha > 0`, weight of the gradient term. Default ``1.0``.

    Raises:
        ValueError: shapes disagree, ``alpha <= 0``, weights not positive, or :math:`M` not SPD.
    """

    def __init__(self, weights: torch.Tensor, stiffness: object, alpha: float = 1.0):
        stiffness = _to_torch_matrix(stiffness, "stiffness")
        check_real_tensor("weights", weights, ndim=1)
        if stiffness.shape != (weights.shape[0], weights.shape[0]):
            raise ValueError(f"stiffness has shape {tuple(stiffness.shape)}, expected {(weights.shape[0],) * 2}")
        alpha = check_positive_float("alpha", alpha)
        if bool((weights <= 0).any()):
            raise ValueError("weights must be strictly positive")
        self.weights, self.stiffness, self.alpha = weights, stiffness, alpha
        dense_stiffness = stiffness.to_dense() if stiffness.layout != torch.strided else stiffness
        super().__init__(torch.diag(weights) + self.alpha * dense_stiffness.to(weights.dtype))
