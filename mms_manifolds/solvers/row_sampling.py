r"""Row-sampled Gauss–Newton models: the kernel-side model from a random subset of the residual rows (node mini-batches).

Where the step's Hessian is diagonal, :math:`W = \operatorname{diag}(d)`, :math:`d \ge 0` (mesh-free jet energies
with a jet metric), and :math:`Nm < p`, the Gauss–Newton model is solved on its kernel side from
:math:`K = BB^\top`, :math:`B = \operatorname{diag}(\sqrt d)J` (``(Nm, p)``;
:func:`~mms_manifolds.linalg.diagonal_weight_factorization`), and forming :math:`K` costs :math:`(Nm)^2p/2`
multiply-adds: most of an iteration at :math:`p = 9873`, :math:`Nm = 1020` (``docs/performance.md``). A
row-sampled model takes a uniformly random subset :math:`S` of :math:`n_S` of the :math:`n = Nm` rows (without
replacement) and the unbiased estimate of the model's matrix and gradient from those rows,

.. math:: A_S = \tfrac{n}{n_S}B_S^\top B_S, \qquad g_S = \tfrac{n}{n_S}B_S^\top s_S, \qquad
          \mathbb{E}[A_S] = A,\ \mathbb{E}[g_S] = g = B^\top s,

(:math:`B_S` the rows :math:`S` of :math:`B`, ``(n_S, p)``; :math:`s = \nabla F/\sqrt d`, ``(n,)``, the gradient
in range form), whose damped step is, by the push-through identity,

.. math:: \delta_S = -(A_S + \mu I)^{-1}g_S = -B_S^\top\big(K_S + \tfrac{n_S}{n}\mu I\big)^{-1}s_S,
          \qquad K_S = B_SB_S^\top\ (n_S \times n_S),

the minimum-norm Gauss–Newton step of the residual rows :math:`S` alone (at :math:`\mu = 0`). :math:`K_S` is a
principal submatrix of :math:`K` and costs :math:`(n_S/n)^2` of it. With a ``kernel_dtype`` of lower precision
(float32 from a float64 model) :math:`K_S` is formed from :math:`J_S` rounded to it (about half the time of a
float64 product on a CPU), then returned to the model's dtype; its eigenvalues below about
:math:`\varepsilon_k\operatorname{tr}K_S` are rounding, so the solver damps its steps by at least
:math:`\mu_{\min} = \varepsilon_k\operatorname{tr}(A_S)` (:attr:`RowSampledFactorization.damping_floor`,
:math:`\varepsilon_k` the machine epsilon of ``kernel_dtype``; in float64 below every damping the solver takes).
The geodesic acceleration is estimated from the same rows, :math:`a_S = -(A_S + \mu I)^{-1}\tfrac{n}{n_S}B_S^\top(\sqrt d\odot D^2\phi[\delta, \delta])_S`.
The model's ``gradient`` stays the exact :math:`g = J^\top\nabla F` (one product with the formed :math:`J`),
so that a line search judges :math:`\delta_S` by the full cost's slope :math:`g\cdot\delta_S`; its
``mean_eigenvalue`` is :math:`\operatorname{tr}(A_S)/p`. With :math:`S` all rows the model is the full one:
:math:`\delta_S = \delta` in exact arithmetic (``tests/test_row_sampling.py``, to 1e-10).

:class:`RowSampling` is :class:`~mms_manifolds.solvers.GaussNewton`'s option (``row_sampling=``): sampled models
while the line search's accepted lengths are short, then the full model. On KFAC's 2-D Poisson at :math:`p = 9873`
neither 768 of 1020 rows nor the float32 kernel pays on every seed (``docs/performance.md``, "Row-sampled
Gauss–Newton models on the plateau").
"""

from __future__ import annotations

import dataclasses

import torch

from .._checks import check_integer, check_positive_float
from .._random import random_subset
from ..linalg import DiagonalWeightFactorization, ScaledRows
from ..linalg.diagonal_weight import kernel_side_root, whitened_kernel
from ..linalg.limits import check_fits_in_memory
from ..subproblem import GaussNewtonModel, MMSSubproblem

__all__ = ["RowSampledFactorization", "RowSampling", "row_sampled_model", "sampled_rows"]


@dataclasses.dataclass(frozen=True)
class RowSampling:
    r"""Gauss–Newton models from ``rows`` random residual rows at the first iterations of a solve (module docstring).

    Iteration :math:`k` (counted from 0 in each solve) draws its rows :math:`S_k` with
    :func:`~mms_manifolds._random.random_subset`, draw :math:`k` of the stream ``seed``: deterministic given ``seed``,
    the same rows on every device. The solver uses sampled models until the first of: an accepted step length at or
    above ``until_length``; a sampled step the line search rejects (no length lowers the cost enough,
    :math:`g\cdot\delta_S \ge 0`, or a step at the cost's rounding level that does not lower the residual), where
    the same iteration is redone with the full model (and the same forcing term); ``max_sampled`` sampled iterations. From then on
    every model of the solve is the full one. Where ``rows`` is at least the number of residual rows (or ``None``)
    every row is taken: without a ``kernel_dtype`` that is the full model itself; where the model is not of the
    kernel-side kind (:func:`row_sampled_model` gives ``None``) the full model is used.

    Args:
        rows: :math:`n_S \ge 1`, the residual rows of each sampled model; ``None``: every row. Default ``None``.
        until_length: accepted length at or above which the solver switches to the full model, in :math:`(0, 1]`.
            Default ``1`` (a full step).
        max_sampled: most sampled iterations per solve (``None``: no limit). Default ``None``.
        seed: seed of the first iteration's rows. Default ``0``.
        kernel_dtype: the floating dtype :math:`K_S` is formed in (``torch.float32``: half the multiply time, steps
            damped by at least :attr:`RowSampledFactorization.damping_floor`); ``None`` (default): the model's dtype.
            Needs ``GaussNewton(step_filter="tikhonov")``.
    """

    rows: int | None = None
    until_length: float = 1.0
    max_sampled: int | None = None
    seed: int = 0
    kernel_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.rows is not None:
            check_integer("rows", self.rows, minimum=1)
        if self.kernel_dtype is not None and not (
            isinstance(self.kernel_dtype, torch.dtype) and self.kernel_dtype.is_floating_point
        ):
            raise TypeError(f"kernel_dtype must be a floating torch.dtype or None, got {self.kernel_dtype!r}")
        check_positive_float("until_length", self.until_length)
        if not self.until_length <= 1:
            raise ValueError(f"until_length must be in (0, 1], got {self.until_length}")
        if self.max_sampled is not None:
            check_integer("max_sampled", self.max_sampled, minimum=0)
        check_integer("seed", self.seed, minimum=0)


class RowSampledFactorization(DiagonalWeightFactorization):
    r"""The kernel side of :math:`A_S = \tfrac{n}{n_S}B_S^\top B_S` (module docstring) for the rows ``rows`` of :math:`n`.

    A :class:`~mms_manifolds.linalg.DiagonalWeightFactorization` of the ``(n_S, p)`` factor
    :math:`\sqrt{n/n_S}\,B_S`, whose :meth:`range_form` and :meth:`whiten` take covectors and vectors of all
    :math:`n` rows and keep the rows :math:`S`, scaled by :math:`\sqrt{n/n_S}`: so ``factor.T @ range_form(v)`` is
    :math:`g_S = \tfrac{n}{n_S}B_S^\top(v/\sqrt d)_S` and ``factor.T @ whiten(c)`` is
    :math:`\tfrac{n}{n_S}B_S^\top(\sqrt d\odot c)_S`.

    Args:
        gram: :math:`\tfrac{n}{n_S}K_S`, ``(n_S, n_S)``.
        whitened: :math:`\sqrt{n/n_S}\,B_S` as :class:`~mms_manifolds.linalg.ScaledRows` of :math:`J_S`.
        root: :math:`\sqrt d` of all :math:`n` rows, ``(n,)``.
        rows: the sampled row indices :math:`S`, ``(n_S,)``, increasing.
        kernel_dtype: the dtype ``gram`` was formed in (``None``: its own).

    Attributes:
        damping_floor: :math:`\varepsilon_k\operatorname{tr}(A_S)`, the smallest damping whose shifted kernel is
            resolved above the rounding of ``kernel_dtype`` (machine epsilon :math:`\varepsilon_k`).
    """

    def __init__(
        self,
        gram: torch.Tensor,
        whitened: ScaledRows,
        root: torch.Tensor,
        rows: torch.Tensor,
        kernel_dtype: torch.dtype | None = None,
    ):
        self.rows, self.weight = rows, (root.numel() / rows.numel()) ** 0.5
        super().__init__(gram, whitened, self.weight * root[rows])
        self.damping_floor = torch.finfo(kernel_dtype or gram.dtype).eps * float(torch.trace(gram))

    def range_form(self, covector: torch.Tensor) -> torch.Tensor | None:
        r""":math:`\sqrt{n/n_S}\,(v/\sqrt d)_S` (``(n_S,)``) for ``covector`` :math:`v` (``(N, m)``); ``None`` where :math:`v \ne 0` at some :math:`d = 0` of the rows :math:`S`."""
        ranged = super().range_form(covector.reshape(-1)[self.rows])  # v_S / (sqrt(n/n_S) sqrt(d_S))
        return None if ranged is None else self.weight**2 * ranged

    def whiten(self, vector: torch.Tensor) -> torch.Tensor:
        r""":math:`\sqrt{n/n_S}\,(\sqrt d\odot c)_S` (``(n_S,)``) for ``vector`` :math:`c` (``(N, m)``)."""
        return self.root * vector.reshape(-1)[self.rows]


def row_sampled_model(
    subproblem: MMSSubproblem, theta: torch.Tensor, rows: torch.Tensor, kernel_dtype: torch.dtype | None = None
) -> GaussNewtonModel | None:
    r"""The Gauss–Newton model at ``theta`` whose matrix is the row-sampled :math:`A_S` of the rows ``rows`` (module docstring), or ``None``.

    ``None`` where the kernel side does not apply: :math:`Nm \ge p`, the step's Hessian not diagonal or with a
    negative entry, :math:`\nabla F` nonzero where :math:`d = 0` in a row of :math:`S`, or :math:`\nabla^2E = cM` (the regression
    model reuses the metric's factorisation). The Jacobian :math:`J` (``(Nm, p)``) is the manifold's, formed once
    per point; the gradient :math:`g = J^\top\nabla F` and the proximal share are exact.

    Args:
        subproblem: the MMS step.
        theta: the point, shape ``(p,)``.
        rows: increasing row indices :math:`S` into the :math:`Nm` residual rows, shape ``(n_S,)``.
        kernel_dtype: the dtype :math:`K_S` is formed in (module docstring); ``None``: the model's.
    """
    manifold = subproblem.manifold
    theta = manifold.check_point(theta)
    parametrization = manifold.parametrization
    total, columns = parametrization.ambient_dimension, parametrization.num_parameters
    if total >= columns:
        return None
    u = subproblem.node_values(theta)
    weight = subproblem.step_hessian(u)
    if weight.multiple_of(manifold.metric) is not None:
        return None
    root = kernel_side_root(parametrization, weight)
    if root is None:
        return None
    check_fits_in_memory(
        (total * columns + 3 * rows.numel() ** 2) * parametrization.dtype.itemsize,
        parametrization.device,
        f"the row-sampled Gauss-Newton model (J, {total} x {columns}, and a {rows.numel()} x {rows.numel()} kernel)",
    )
    function_gradient = subproblem.function_gradient(u)
    operator = manifold.gram_operator(theta)
    jacobian = operator.jacobian().reshape(total, columns)
    share = total / rows.numel()
    sampled = jacobian if rows.numel() == total else jacobian[rows]  # distinct rows: all of them, in order
    sampled_root = root[rows]
    gram = whitened_kernel(sampled, sampled_root, kernel_dtype).mul_(share)
    whitened = ScaledRows(share**0.5 * sampled_root, sampled)
    factorization = RowSampledFactorization(gram, whitened, root, rows, kernel_dtype)
    range_gradient = factorization.range_form(function_gradient)
    if range_gradient is None:
        return None
    trace = float(torch.trace(gram))
    metric_trace = operator.trace(exact=True)
    return GaussNewtonModel(
        float(subproblem.objective(u)),
        jacobian.T @ function_gradient.reshape(-1),
        factorization,
        1.0,
        trace / columns,
        metric_trace / (subproblem.tau * trace) if trace > 0 else 1.0,
        range_gradient,
    )


def sampled_rows(sampling: RowSampling, total: int, iteration: int, device: torch.device) -> torch.Tensor:
    r"""The rows :math:`S_k` of iteration ``iteration`` (from 0): ``sampling.rows`` of ``total``, increasing, shape ``(n_S,)``; every row where ``rows`` is ``None`` or at least ``total``."""
    if sampling.rows is None or sampling.rows >= total:
        return torch.arange(total, device=device)
    return random_subset(sampling.rows, total, device=device, seed=sampling.seed, draw=iteration)
