r"""The metric interface: an SPD operator :math:`M` on discretised functions :math:`H_N = \mathbb{R}^{N \times m}`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

__all__ = ["Metric", "numerical_singularity"]

SINGULARITY_FACTOR = 4
r"""A metric is numerically singular when :math:`\lambda_{\min} \le 4n\varepsilon\,\lambda_{\max}` (:func:`numerical_singularity`)."""

_ESTIMATE_ITERATIONS = 30


def numerical_singularity(matrix: torch.Tensor, factor: torch.Tensor) -> str | None:
    r"""Why the SPD ``matrix`` (shape ``(n, n)``) is numerically singular, or ``None`` if it is not.

    It is when :math:`\lambda_{\min} \le 4n\varepsilon\,\lambda_{\max}` (condition number
    :math:`\kappa = \lambda_{\max}/\lambda_{\min} \ge 1/(4n\varepsilon)`, :math:`\varepsilon` the dtype's machine
    epsilon): rounding the entries to :math:`\varepsilon` moves the eigenvalues by up to about
    :math:`n\varepsilon\lambda_{\max}` (the numerical-rank tolerance of ``numpy.linalg.matrix_rank``), so such a
    smallest eigenvalue is rounding noise of a matrix that is semi-definite in truth (``W @ pinv(K) @ W``
    for a periodic stiffness :math:`K`: :math:`\lambda_{\min}/\lambda_{\max} = 1.9n\varepsilon` at :math:`n = 64`),
    and :math:`M^{-1}` is noise in that direction. A Cholesky factorisation succeeds on such matrices.

    Both eigenvalues are estimated from ``factor`` (the Cholesky factor, :math:`M = LL^\top`) in
    :math:`O(n^2)` per iteration: power iteration for :math:`\lambda_{\max}` and inverse iteration for
    :math:`\lambda_{\min}`, 30 each from a fixed start. Rayleigh quotients under-estimate :math:`\lambda_{\max}` and
    over-estimate :math:`\lambda_{\min}`, so the estimated ratio is never below the true one: a matrix refused
    here is singular at this tolerance.
    """
    size = matrix.shape[0]
    generator = torch.Generator(device=matrix.device).manual_seed(0)
    start = torch.randn(size, 1, generator=generator, dtype=matrix.dtype, device=matrix.device)
    start = start / torch.linalg.vector_norm(start)
    largest, smallest = start, start
    for _ in range(_ESTIMATE_ITERATIONS):
        largest = matrix @ largest
        largest = largest / torch.linalg.vector_norm(largest)
        smallest = torch.cholesky_solve(smallest, factor)
        smallest = smallest / torch.linalg.vector_norm(smallest)
    lambda_max = float(largest.T @ matrix @ largest)
    lambda_min = float(smallest.T @ matrix @ smallest)
    epsilon = torch.finfo(matrix.dtype).eps
    tolerance = SINGULARITY_FACTOR * size * epsilon
    if lambda_min > tolerance * lambda_max:
        return None
    condition = lambda_max / lambda_min if lambda_min > 0 else math.inf
    return (
        f"the metric matrix is numerically singular: smallest eigenvalue {lambda_min:.3g}, largest {lambda_max:.3g}, "
        f"condition number {condition:.3g} >= 1/(4 n eps) = {1 / tolerance:.3g} for n = {size} in {matrix.dtype} "
        f"(eps = {epsilon:.3g}), so M^-1 is rounding noise; a metric on a subspace (zero-mean functions for H^-1) "
        "is a SubspaceMetric"
    )


class Metric(ABC):
    r"""A symmetric positive definite operator :math:`M` on :math:`H_N`, :math:`\langle u, v\rangle_M = u \cdot Mv`.

    A new metric is a subclass with one method, :meth:`apply`. Everything else has a default:
    inner products and norms follow from :meth:`apply`; :meth:`solve` and :meth:`whiten` factor the
    dense matrix once per shape (Cholesky, :math:`O((Nm)^3)`), which built-in metrics replace with
    cheaper closed forms.

    Function values are tensors of shape ``(..., N, m)``: the leading dimensions are a batch (for
    example the :math:`p` columns of a Jacobian), and :meth:`apply` must act on each batch entry.

    Examples:
        >>> import torch
        >>> class Doubled(Metric):
        ...     def apply(self, v):
        ...         return 2.0 * v
        >>> Doubled().inner(torch.ones(3, 1), torch.ones(3, 1))
        tensor(6.)
    """

    positive_definite: bool = True
    r"""Whether :math:`M` is positive definite on :math:`H_N`.

    A metric that is only positive semi-definite (a mesh-free metric that weights some jet entries
    only, :class:`~mms_manifolds.meshfree.JetMetric`) sets it to ``False``: the geometry still works
    through the damped pullback metric :math:`J^\top MJ + \lambda I` and :meth:`whiten`, but :math:`M^{-1}`,
    and with it the function-space residual and the tracking bound, does not exist.
    """

    @abstractmethod
    def apply(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`Mv` for ``v`` of shape ``(..., N, m)``; result has the same shape."""

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\langle u, v\rangle_M = u \cdot Mv`, summed over the last two dimensions."""
        return (u * self.apply(v)).sum(dim=(-2, -1))

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\|v\|_M = \sqrt{v \cdot Mv}` over the last two dimensions."""
        return self.inner(v, v).clamp_min(0.0).sqrt()

    def to_dense(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        r"""The matrix of :math:`M` on flattened values, shape ``(Nm, Nm)``, built by applying it to a basis."""
        size = shape[0] * shape[1]
        basis = torch.eye(size, dtype=dtype, device=device).reshape(size, *shape)
        return self.apply(basis).reshape(size, size).T.contiguous()

    def _cached_cholesky(self, key: tuple, matrix: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The Cholesky factor of ``matrix()``, computed once per ``key``: every metric's one factor cache.

        The cache lives in ``_cholesky_cache`` (created on first use, so subclasses need not call an
        ``__init__``); a lazily filled cache, it is not part of the metric's identity.

        Raises:
            ValueError: the matrix is not positive definite.
        """
        cache = self.__dict__.setdefault("_cholesky_cache", {})
        if key not in cache:
            factor, info = torch.linalg.cholesky_ex(matrix())
            if int(info) != 0:
                raise ValueError(
                    f"{type(self).__name__} is not positive definite (Cholesky failed): a metric must be SPD"
                )
            cache[key] = factor
        return cache[key]

    def solve_condition(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> float:
        r""":math:`\kappa(M) = \lambda_{\max}/\lambda_{\min}`, by how much a solve with :math:`M` can amplify rounding.

        A backward-stable Cholesky solve returns :math:`(M + \Delta M)^{-1}g` with :math:`\|\Delta M\| \lesssim
        \varepsilon\|M\|`, an error of up to :math:`\kappa(M)\varepsilon` relative in the :math:`M`-norm; the tracking
        bound's rounding allowance (:mod:`mms_manifolds.ledger`) scales with it. Computed once per shape, dtype
        and device from the dense matrix (``inf`` if it is not positive definite). Metrics whose solve divides
        entry by entry (:class:`L2Metric`) return 1.
        """
        cache = self.__dict__.setdefault("_condition_cache", {})
        key = (tuple(shape), dtype, device)
        if key not in cache:
            eigenvalues = torch.linalg.eigvalsh(self.to_dense(shape, dtype=dtype, device=device))
            smallest, largest = float(eigenvalues.min()), float(eigenvalues.max())
            cache[key] = largest / smallest if smallest > 0 else math.inf
        return cache[key]

    def _cholesky(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._cached_cholesky((shape, dtype, device), lambda: self.to_dense(shape, dtype=dtype, device=device))

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`M^{-1}v` for ``v`` of shape ``(..., N, m)``."""
        shape = (v.shape[-2], v.shape[-1])
        factor = self._cholesky(shape, v.dtype, v.device)
        flat = v.reshape(-1, shape[0] * shape[1]).T
        return torch.cholesky_solve(flat, factor).T.reshape(v.shape)

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top v` with :math:`M = CC^\top`, flattened: ``(..., N, m) -> (..., Nm)``.

        Then :math:`\langle u, v\rangle_M = (C^\top u)\cdot(C^\top v)`: whitened vectors carry the metric
        as the Euclidean inner product. The Woodbury solve and the Jacobian diagnostics use it.
        """
        shape = (v.shape[-2], v.shape[-1])
        factor = self._cholesky(shape, v.dtype, v.device)
        return v.reshape(*v.shape[:-2], shape[0] * shape[1]) @ factor

    def diagonal_whitening(
        self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        r"""The diagonal :math:`c` (``(Nm,)``) of a diagonal whitening, :meth:`whiten` ``(v)`` :math:`= c\circ v` flattened, or ``None`` where it is not diagonal.

        Then :math:`C^\top KC` has the diagonal :math:`c^2\circ\operatorname{diag}K` and the columns
        :math:`c\circ Ke_jc_j`, which the kernel solve's residual split reads without forming :math:`C^\top KC`
        (:class:`~mms_manifolds.linalg.KernelFactorization`). The default: ``None``.
        """
        return None

    def subspace_basis(
        self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        r"""An orthonormal basis ``(Nm, d)`` of the subspace :math:`V` the metric is defined on, or ``None`` for all of :math:`H_N`.

        A flow in such a metric moves in :math:`u_0 + V` (:class:`~mms_manifolds.metrics.SubspaceMetric`): the
        energies' exact steps and convexity moduli are taken over :math:`V`.
        """
        return None

    def check_increments(self, parametrization: object) -> None:
        """Raise ``ValueError`` unless the parametrization's increments lie where the metric is defined (all of :math:`H_N` here)."""
        return None

    def check_fits(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> None:
        r"""Raise unless :math:`M` maps values of ``shape`` ``(N, m)`` in ``dtype`` on ``device`` to the same.

        The parametrization's output shape, dtype and device are what a metric must fit; a metric built on
        another node count, or whose data are in another dtype (so its products are promoted), is
        refused here, where the user built it, rather than deep in the first solve.

        Raises:
            ValueError: the metric cannot be applied to such values, or returns another shape or device.
            TypeError: it returns another dtype.
        """
        probe = torch.ones(shape, dtype=dtype, device=device)
        try:
            image = self.apply(probe)
        except (ValueError, RuntimeError, IndexError) as error:
            raise ValueError(
                f"the metric does not fit the parametrization's {shape[0]} nodes (values of shape {shape}): {error}"
            ) from error
        if not isinstance(image, torch.Tensor) or image.shape != probe.shape:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{type(self).__name__}.apply must return values of shape {shape}, got {got}")
        if image.dtype != dtype:
            raise TypeError(
                f"{type(self).__name__} computes in {image.dtype} (the dtype of its data), the parametrization in "
                f"{dtype}: build the metric's data in {dtype}"
            )
        if image.device != device:
            raise ValueError(
                f"{type(self).__name__} returns values on {image.device}, the parametrization is on {device}"
            )

    def check_positive_definite(
        self, shape: tuple[int, int], *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> tuple[bool, str | None]:
        """Whether the dense matrix on ``shape`` is symmetric and positive definite in ``dtype``: ``(ok, reason)``.

        Positive definite means Cholesky-factorable and not numerically singular (:func:`numerical_singularity`:
        condition number below :math:`1/(4n\varepsilon)`).
        """
        matrix = self.to_dense(shape, dtype=dtype, device=torch.device(device))
        asymmetry = float((matrix - matrix.T).abs().max())
        scale = float(matrix.abs().max())
        if not torch.isfinite(matrix).all():
            return False, "the metric matrix has non-finite entries"
        if asymmetry > 1e-10 * max(scale, 1.0):
            return False, f"the metric matrix is not symmetric (max |M - M^T| = {asymmetry:.3g})"
        factor, info = torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            return False, "the metric matrix is not positive definite (Cholesky failed)"
        singular = numerical_singularity(matrix, factor)
        return (False, singular) if singular is not None else (True, None)

    def assert_positive_definite(
        self, shape: tuple[int, int], *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> None:
        """Raise ``ValueError`` with the reason unless :meth:`check_positive_definite` passes."""
        ok, reason = self.check_positive_definite(shape, dtype=dtype, device=device)
        if not ok:
            raise ValueError(f"{type(self).__name__}: {reason}")
