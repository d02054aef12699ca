r"""Subspace Gauss–Newton: each iteration solves the Gauss–Newton model exactly on a random block of parameters."""

from __future__ import annotations

import dataclasses

import torch

from .._checks import check_integer
from .._random import random_subset
from ..linalg import GramFactorization, LinearSolution, pseudo_inverse_rtol, singular_value_solve, thin_svd
from ..linalg.solution import Factorization
from ..subproblem import GaussNewtonModel, MMSSubproblem
from .base import InnerResult
from .gauss_newton import GaussNewton
from .state import SubspaceGaussNewtonState

__all__ = ["SubspaceFactorization", "SubspaceGaussNewton"]

class SubspaceFactorization(Factorization):
    r"""Solves with the Gauss–Newton matrix restricted to the parameters :math:`S`, padded with zeros to length :math:`p`.

    .. math:: x = P_S\,(A_{SS} + \lambda I_s)^{-1}P_S^\top b,\qquad A_{SS} = P_S^\top A P_S = J_S^\top W J_S,

    :math:`P_S` the ``(p, s)`` selection of the columns ``indices``. With ``directions`` :math:`Q_D` (``(p, q)``,
    orthonormal, zero on :math:`S`) the basis is :math:`V = [P_S, Q_D]` (orthonormal, ``(p, s + q)``) and
    :math:`x = V(V^\top AV + \lambda I)^{-1}V^\top b`: ``restricted`` then factorises :math:`V^\top AV`. ``restricted`` factorises :math:`A_{SS}` (an
    ``(s, s)`` Gram matrix, or its ``(Nm, Nm)`` kernel side) and solves every damped system by Cholesky. For
    :math:`\lambda = 0` the truncated pseudo-inverse of :math:`A_{SS}`: where ``whitened``
    :math:`B` (``(Nm, s)``, :math:`B^\top B = A_{SS}`) is given, from its thin SVD (computed once, as the
    dense mode's undamped solve, :func:`~mms_manifolds.linalg.singular_value_solve`), dropping
    :math:`\sigma^2 \le \max(\text{rtol}, q\varepsilon)\,\sigma_{\max}^2`, :math:`q = \min(Nm, s)`; else
    from ``restricted``'s eigendecomposition.

    Args:
        restricted: the factorisation of :math:`A_{SS}` (or of :math:`A_{SS}/c` for a model with scale :math:`c`).
        indices: :math:`S`, shape ``(s,)``, ascending.
        size: :math:`p`.
        whitened: :math:`B` with :math:`B^\top B` the matrix ``restricted`` factorises, or ``None``.
        directions: :math:`Q_D`, shape ``(p, q)``, or ``None`` (:math:`q = 0`).
    """

    mode = "subspace"

    def __init__(
        self,
        restricted: GramFactorization,
        indices: torch.Tensor,
        size: int,
        whitened: torch.Tensor | None = None,
        directions: torch.Tensor | None = None,
    ):
        self.restricted, self.indices, self.size, self.whitened = restricted, indices, size, whitened
        self.directions = directions
        self._svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _restricted_solve(self, rhs: torch.Tensor, damping: float, rtol: float | None) -> torch.Tensor:
        if damping > 0.0 or self.whitened is None:
            return self.restricted.solve(rhs, damping, rtol).value
        if self._svd is None:
            self._svd = thin_svd(self.whitened)
        own = pseudo_inverse_rtol(min(self.whitened.shape), self.whitened.dtype)
        return singular_value_solve(self._svd, rhs, 0.0, own if rtol is None else max(rtol, own))

    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        value = torch.zeros(self.size, dtype=rhs.dtype, device=rhs.device)
        if self.directions is None:
            value[self.indices] = self._restricted_solve(rhs[self.indices], damping, rtol)
            return LinearSolution(value=value, mode=self.mode)
        restricted = torch.cat([rhs[self.indices], self.directions.T @ rhs])
        solution = self._restricted_solve(restricted, damping, rtol)
        count = self.indices.numel()
        value[self.indices] = solution[:count]
        value += self.directions @ solution[count:]
        return LinearSolution(value=value, mode=self.mode)


class SubspaceGaussNewton(GaussNewton):
    r"""Gauss–Newton whose every step moves only a random block :math:`S` of ``block_size`` parameters.

    Each iteration draws :math:`S \subset \{1, \dots, p\}`, :math:`|S| = s`, uniformly without replacement,
    forms only :math:`J_S = JP_S` (``(N, m, s)``,
    :meth:`~mms_manifolds.parametrizations.base.Parametrization.jacobian_columns`: batched JVPs with the unit
    vectors, or for a node-separable torch module per-layer factors; never the ``(N, m, p)`` Jacobian) and solves the Gauss–Newton model restricted to :math:`S` exactly,

    .. math:: \delta = P_S\,\delta_S,\qquad \delta_S = -(A_{SS} + \mu I_s)^{-1} g_S,\qquad
              A_{SS} = J_S^\top W J_S,\quad g_S = J_S^\top\nabla F_k(u),

    :math:`W = \nabla^2E(u) + M/\tau`: the minimiser of :math:`m(\delta) + \tfrac\mu2|\delta|^2` over the steps
    supported on :math:`S` (with :math:`\mu = 0` the minimum-norm one, :math:`-A_{SS}^+ g_S`). :math:`A_{SS}` is
    factorised from the ``(s, s)`` Gram matrix, or, where :math:`W = cM` with :math:`M` positive definite and
    :math:`Nm < s`, from its ``(Nm, Nm)`` kernel side :math:`BB^\top`, :math:`B = C^\top J_S` (:math:`M = CC^\top`);
    there the undamped pseudo-inverse comes from the thin SVD of :math:`B`, as in the dense mode
    (:class:`SubspaceFactorization`).
    The step is then accepted by :class:`GaussNewton`'s rules unchanged (line search or
    Levenberg–Marquardt, damping relative to :math:`\operatorname{tr}(A_{SS})/s`, geodesic acceleration
    restricted to :math:`S`, no accepted step raises the cost). One iteration costs the columns (:math:`s` JVPs,
    or one forward and :math:`m` backward passes and :math:`O(Nms)` products from layer factors) and an
    :math:`O(Nms^2 + s^3)` factorisation instead of :math:`J` and an :math:`O(Nm\,p\min(Nm, p))` one. With
    :math:`s \ge p` every step is :class:`GaussNewton`'s (its dense-mode model, formed from the columns).

    With ``memory`` :math:`q > 0` the subspace of an iteration also holds the solve's last :math:`q` steps
    :math:`\theta_j - \theta_{j-1}` (momentum, as SPRING and sketch-and-project with memory carry the previous
    direction): their parts off :math:`S`, orthonormalised, :math:`Q_D` (``(p, q)``), so the basis
    :math:`V = [P_S, Q_D]` is orthonormal and the step is the minimiser of the damped model over
    :math:`\operatorname{range} V`, :math:`\delta = -V(V^\top AV + \mu I)^{-1}V^\top g`; the columns :math:`JQ_D` cost
    one JVP each. On a (nearly) linear least-squares step the steps so far span a Krylov-like space that the
    random blocks alone would refill each iteration (``docs/performance.md``: TENG's heat step).

    The draws are reproducible: draw :math:`d` (counted over the solver's solves, from 1) comes from a
    generator seeded from ``(seed, d)`` (:meth:`block`), and the count of the next draw is the ``next_draw`` entry of
    ``InnerResult.state`` (:class:`~mms_manifolds.solvers.state.SubspaceGaussNewtonState`), which the driver hands to the next step and checkpoints, so a resumed flow draws
    the same blocks as an uninterrupted one. The tangential residual the solve ends with (and, with
    ``tolerance > 0``, its stopping test) is the manifold's, in the manifold's solve mode: pick the
    matrix-free mode for a flow whose Jacobian must never be formed.

    Args:
        block_size: :math:`s \ge 1`, the parameters moved per iteration (all of them where :math:`s \ge p`).
        seed: seed of the draws, an integer ``>= 0``. Default ``0``.
        memory: :math:`q \ge 0`, how many of the solve's last steps join each block. Default ``0`` (the block alone).
        settings: :class:`GaussNewton`'s keyword settings (``max_iterations``, ``tolerance``, ``globalization``,
            ``line_search``, ``armijo``, ``max_halvings``, ``initial_damping``, ``max_retries``,
            ``geodesic_acceleration``, ``step_cutoff``), all but ``solve_mode``.

    References:
        R. M. Gower, P. Richtárik, "Randomized iterative methods for linear systems", SIAM J. Matrix Anal.
        Appl. 36(4), 2015 (sketch-and-project; a block of coordinates is its coordinate sketch).
    """

    name = "subspace-gauss-newton"
    state_type = SubspaceGaussNewtonState

    def __init__(self, block_size: int, seed: int = 0, memory: int = 0, **settings: object):
        if "solve_mode" in settings:
            raise TypeError("SubspaceGaussNewton solves its restricted model itself: solve_mode is not one of its settings")
        super().__init__(**settings)
        self.block_size = check_integer("block_size", block_size, minimum=1)
        self.seed = check_integer("seed", seed, minimum=0)
        self.memory = check_integer("memory", memory, minimum=0)
        self._next_draw = 1  # the draw counter of the solve in progress (from its state)
        self._points: list[torch.Tensor] = []  # the solve's last memory + 1 distinct points, oldest first

    def initial_state(self) -> SubspaceGaussNewtonState:
        """:meth:`GaussNewton.initial_state` and ``next_draw`` 1: the state of a cold start."""
        return self.state_type(step_length=self.fresh_step_length, relative_damping=self.initial_damping, next_draw=1)

    def block(self, draw: int, size: int, device: torch.device) -> torch.Tensor:
        r"""The parameters :math:`S` of draw ``draw`` among ``size``, ascending, shape ``(min(s, size),)``: all of them where :math:`s \ge` ``size``.

        A uniform draw without replacement, the same on every device (:func:`~mms_manifolds._random.random_subset`,
        draw ``draw`` of the stream ``seed``).
        """
        if self.block_size >= size:
            return torch.arange(size, device=device)
        return random_subset(self.block_size, size, device=device, seed=self.seed, draw=draw)

    def subspace_model(
        self,
        subproblem: MMSSubproblem,
        theta: torch.Tensor,
        indices: torch.Tensor,
        directions: torch.Tensor | None = None,
    ) -> GaussNewtonModel:
        r"""The Gauss–Newton model at ``theta`` restricted to the parameters ``indices`` (:math:`S`, shape ``(s,)``, ascending) and ``directions``.

        Its ``gradient`` is :math:`VV^\top g` (shape ``(p,)``; :math:`P_Sg_S`, zero off :math:`S`, without
        directions), its factorisation a :class:`SubspaceFactorization` of :math:`V^\top AV/c`, ``scale`` :math:`c`
        where :math:`\nabla^2E = cM` (else 1), ``mean_eigenvalue`` :math:`\operatorname{tr}(V^\top AV)/(s + q)`,
        ``proximal_share`` :math:`\operatorname{tr}(J_V^\top MJ_V)/(\tau\operatorname{tr}(V^\top AV))`. So ``step`` and
        ``predicted_decrease`` are those of the model over :math:`\operatorname{range} V` (:class:`GaussNewtonModel`).
        ``directions`` (``(q, p)`` rows, or ``None``) become :math:`Q_D`: their parts off :math:`S`, orthonormalised
        (those that add less than :math:`\sqrt\varepsilon` of their length dropped), :math:`V = [P_S, Q_D]`.
        """
        theta = subproblem.manifold.check_point(theta)
        manifold, parametrization = subproblem.manifold, subproblem.manifold.parametrization
        u = subproblem.node_values(theta)
        function_gradient = subproblem.function_gradient(u)
        cost = float(subproblem.objective(u))
        columns = parametrization.jacobian_columns(theta, indices).movedim(-1, 0)  # (s, N, m)
        basis = None if directions is None else self._orthonormal_directions(directions, indices)
        if basis is not None:  # J Q_D: one JVP per direction
            images = torch.stack([parametrization.jvp(theta, column) for column in basis.T])
            columns = torch.cat([columns, images.to(columns.dtype)])
        flat = columns.reshape(columns.shape[0], -1)
        restricted_gradient = flat @ function_gradient.reshape(-1)
        gradient = torch.zeros(manifold.dim, dtype=theta.dtype, device=theta.device)
        gradient[indices] = restricted_gradient[: indices.numel()]
        if basis is not None:
            gradient += basis @ restricted_gradient[indices.numel() :]
        weight = subproblem.step_hessian(u)
        multiple = weight.multiple_of(manifold.metric)
        metric_columns = manifold.metric.apply(columns).reshape(flat.shape)
        metric_trace = float((flat * metric_columns).sum())
        if multiple is not None:  # W = cM: factorise J_S^T M J_S, the model's scale c
            whitened = None
            if manifold.metric.positive_definite:
                whitened = manifold.metric.whiten(columns).T  # B = C^T J_S, (Nm, s)
            if whitened is None:
                restricted = GramFactorization(flat @ metric_columns.T, mode="subspace")
            elif whitened.shape[0] < whitened.shape[1]:
                restricted = GramFactorization(whitened @ whitened.T, factor=whitened, mode="subspace")
            else:
                restricted = GramFactorization(whitened.T @ whitened, mode="subspace")
            factorization = SubspaceFactorization(restricted, indices, manifold.dim, whitened, basis)
            mean = multiple * metric_trace / flat.shape[0]
            return GaussNewtonModel(cost, gradient, factorization, multiple, mean, 1 / (subproblem.tau * multiple))
        gram = flat @ weight.apply(columns).reshape(flat.shape).T
        trace = float(torch.trace(gram))
        factorization = SubspaceFactorization(GramFactorization(gram, mode="subspace"), indices, manifold.dim, None, basis)
        share = metric_trace / (subproblem.tau * trace) if trace > 0 else 1.0
        return GaussNewtonModel(cost, gradient, factorization, 1.0, trace / flat.shape[0], share)

    @staticmethod
    def _orthonormal_directions(directions: torch.Tensor, indices: torch.Tensor) -> torch.Tensor | None:
        r""":math:`Q_D` (``(p, q')``, :math:`q' \le q`): the rows of ``directions`` with their entries on :math:`S` zeroed, orthonormalised by Gram–Schmidt twice; ``None`` if none is left."""
        kept = []
        for direction in directions:
            vector = direction.clone()
            vector[indices] = 0.0
            length = float(vector.norm())
            for _ in range(2):
                for earlier in kept:
                    vector -= (earlier @ vector) * earlier
            if length == 0.0 or float(vector.norm()) <= torch.finfo(vector.dtype).eps ** 0.5 * length:
                continue
            kept.append(vector / vector.norm())
        return torch.stack(kept, dim=1) if kept else None

    def _model(self, subproblem: MMSSubproblem, theta: torch.Tensor) -> GaussNewtonModel:
        indices = self.block(self._next_draw, subproblem.manifold.dim, theta.device)
        self._next_draw += 1
        directions = None
        if self.memory:
            if not self._points or not torch.equal(self._points[-1], theta):
                self._points = [*self._points, theta.detach().clone()][-(self.memory + 1) :]
            if len(self._points) > 1:
                directions = torch.stack([b - a for a, b in zip(self._points, self._points[1:])][::-1])  # newest first
        return self.subspace_model(subproblem, theta, indices, directions)

    def _solve(
        self, subproblem: MMSSubproblem, theta0: torch.Tensor, tolerance: float, state: SubspaceGaussNewtonState
    ) -> InnerResult:
        self._next_draw = state.next_draw
        self._points = []
        try:
            result = super()._solve(subproblem, theta0, tolerance, state)
        finally:
            self._points = []
        result.state = dataclasses.replace(result.state, next_draw=self._next_draw)
        return result
