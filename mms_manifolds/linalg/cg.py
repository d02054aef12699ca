r"""Matrix-free conjugate gradients: one JVP and one VJP per iteration, memory :math:`O(Nm + p)`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from .._checks import check_positive_float
from .._random import rademacher_probes
from .nystrom import NystromApproximation, NystromPreconditioning, nystrom_approximation
from .operator import GramOperator
from .solution import Factorization, LinearSolution
from .unconverged import UnconvergedSolveError, UnconvergedSolveWarning

__all__ = ["CertifiedDecrease", "ConjugateGradientSolve", "certified_decrease_fraction", "conjugate_gradient"]


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    *,
    tolerance: float,
    max_iterations: int,
    preconditioner: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    decrease_fraction: float | None = None,
    shift: float = 0.0,
    forcing: float = math.inf,
) -> tuple[torch.Tensor, int, float]:
    r"""(Preconditioned) conjugate gradients for an SPD operator: solve :math:`Ax = b` from :math:`x_0 = 0`.

    Stops when :math:`\|b - Ax_k\| \le \text{tolerance}\,\|b\|` or after ``max_iterations``. With a
    preconditioner :math:`P^{-1}` (a diagonal :math:`\operatorname{diag}(q)` or any SPD map, such as the
    Nyström preconditioner of :mod:`mms_manifolds.linalg.nystrom`), the search directions are
    :math:`P^{-1}`-conjugate (standard PCG); the stopping test stays on the unpreconditioned residual.

    Args:
        matvec: :math:`x \mapsto Ax`, shape ``(p,) -> (p,)``.
        rhs: :math:`b`, shape ``(p,)``.
        tolerance: relative residual target.
        max_iterations: iteration cap.
        preconditioner: :math:`q > 0`, shape ``(p,)``, the inverse of a diagonal approximation of
            :math:`A`; or a callable :math:`r \mapsto P^{-1}r`, ``(p,) -> (p,)``, SPD; ``None`` for plain CG.
        decrease_fraction: :math:`\vartheta \in (0, 1)`: stop also at the first iterate certified to achieve
            :math:`\vartheta` of the exact decrease of :math:`q(x) = \tfrac12 x\cdot Ax - b\cdot x`
            (:func:`certified_decrease_fraction`, with ``shift`` :math:`\le \lambda_{\min}(A)`) whose relative
            residual is also at most ``forcing``; ``None``: no such test.
        shift: a certified lower bound on :math:`\lambda_{\min}(A)` (the damping of a damped Gram operator).
        forcing: :math:`\eta`, the relative residual an iterate stopped by ``decrease_fraction`` must also reach
            (an inexact-Newton forcing term, :mod:`~mms_manifolds.linalg.forcing`); default no such bound.

    Returns:
        ``(x, iterations, relative_residual)``.
    """
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    rhs_norm = float(torch.linalg.vector_norm(rhs))
    if rhs_norm == 0.0:
        return solution, 0, 0.0
    precondition = _preconditioning(preconditioner)
    scaled = precondition(residual)
    direction = scaled.clone()
    residual_dot = residual @ scaled
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        product = matvec(direction)
        curvature = direction @ product
        if curvature <= 0:
            raise ValueError("conjugate gradients met non-positive curvature: the operator is not positive definite")
        step = residual_dot / curvature
        solution = solution + step * direction
        residual = residual - step * product
        residual_norm = float(torch.linalg.vector_norm(residual))
        if residual_norm <= tolerance * rhs_norm:
            break
        if decrease_fraction is not None and residual_norm <= forcing * rhs_norm:
            achieved = float(rhs @ solution)
            if certified_decrease_fraction(achieved, residual_norm, shift) >= decrease_fraction:
                break
        scaled = precondition(residual)
        new_residual_dot = residual @ scaled
        direction = scaled + (new_residual_dot / residual_dot) * direction
        residual_dot = new_residual_dot
    return solution, iterations, float(torch.linalg.vector_norm(residual)) / rhs_norm


def certified_decrease_fraction(rhs_dot_solution: float, residual_norm: float, shift: float) -> float:
    r"""A certified lower bound on :math:`(q(0) - q(x_k))/(q(0) - q(x^*))` for a CG iterate :math:`x_k` of :math:`Ax = b`.

    CG's iterates satisfy the Galerkin condition :math:`x_k\cdot r_k = 0`, so the decrease they achieve is
    :math:`q(0) - q(x_k) = \tfrac12 b\cdot x_k`, and what is left is
    :math:`q(x_k) - q(x^*) = \tfrac12 r_k\cdot A^{-1}r_k \le \tfrac12\|r_k\|^2/\sigma` for any
    :math:`\sigma \le \lambda_{\min}(A)` (the damping :math:`\lambda` of :math:`J^\top WJ + \lambda I`). The
    fraction is therefore at least :math:`b\cdot x_k / (b\cdot x_k + \|r_k\|^2/\sigma)`. For the Gauss–Newton model
    :math:`m(\delta) = f + g\cdot\delta + \tfrac12\delta\cdot(A + \mu I)\delta` with :math:`\delta = -x`, :math:`b = g`, it is
    the fraction of the exact damped step's predicted decrease that the CG step achieves.
    """
    if not shift > 0:
        return 0.0 if residual_norm > 0 else 1.0
    achieved = max(rhs_dot_solution, 0.0)
    remaining = residual_norm**2 / shift
    return achieved / (achieved + remaining) if achieved + remaining > 0 else 1.0


@dataclass(frozen=True)
class CertifiedDecrease:
    r"""A CG stopping rule tied to what a Gauss–Newton step needs: a certified share of the exact damped model decrease.

    An inexact-Newton forcing rule: instead of one relative residual for every solve, each damped solve
    stops at the first iterate whose decrease of the quadratic model is certified to be at least
    ``fraction`` of the exact solution's (:func:`certified_decrease_fraction`, with the damping as the
    lower bound on the spectrum), or at ``relative_tolerance``, whichever comes first. A step taken from
    such a solve decreases the Gauss–Newton model by at least ``fraction`` times what the exact (dense)
    step with the same damping would. A solve that reaches neither by ``max_iterations`` is reported as
    unconverged (``on_unconverged``), with the fraction it reached. Residual splits solved so stay honest:
    the normal part of :math:`v - J x_k` is an upper bound on the exact one for every :math:`x_k`, and the
    tangential part is then that of a damped least-squares fit achieving ``fraction`` of its decrease.

    Args:
        fraction: :math:`artheta \in (0, 1)`. Default ``0.9``.
        relative_tolerance: the relative residual at which a solve stops in any case. Default ``1e-10``.
    """

    fraction: float = 0.9
    relative_tolerance: float = 1e-10

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ValueError(f"the certified decrease fraction must be in (0, 1), got {self.fraction}")
        check_positive_float("relative_tolerance", self.relative_tolerance)


def _preconditioning(
    preconditioner: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:math:`r \\mapsto P^{-1}r` for a diagonal (a tensor), a callable, or none (the identity, no copy)."""
    if preconditioner is None:
        return lambda residual: residual
    if isinstance(preconditioner, torch.Tensor):
        return lambda residual: preconditioner * residual
    return preconditioner


class _ConjugateGradientFactorization(Factorization):
    mode = "cg"
    pseudo_inverts = False

    def __init__(self, operator: GramOperator, settings: ConjugateGradientSolve):
        self.operator = operator
        self.settings = settings
        self._diagonal: torch.Tensor | None = None
        self._sketch: NystromApproximation | None = None
        self.linear_iterations = 0

    def diagonal(self) -> torch.Tensor:
        r"""Hutchinson's estimate of :math:`\operatorname{diag}(J^\top WJ)`, shape ``(p,)``; computed once per point.

        :math:`\frac1s\sum_j z_j \odot (J^\top W J z_j)` over ``s`` Rademacher probes from a generator
        seeded with 0 (``s`` matrix-free products, no Jacobian), clamped below at ``1e-3`` times its mean
        so that the preconditioner stays positive where the estimate is noisy.
        """
        if self._diagonal is None:
            theta, probes = self.operator.theta, self.settings.diagonal_probes
            signs = rademacher_probes(probes, self.operator.size, dtype=theta.dtype, device=theta.device)
            estimate = sum(probe * self.operator.matvec(probe) for probe in signs) / probes
            self._diagonal = estimate.clamp_min(1e-3 * float(estimate.abs().mean()))
        return self._diagonal

    def sketch(self) -> NystromApproximation:
        r"""The Nyström approximation of :math:`J^\top WJ` (:mod:`~mms_manifolds.linalg.nystrom`); computed once per point."""
        if self._sketch is None:
            theta, settings = self.operator.theta, self.settings.preconditioner
            settings = settings if isinstance(settings, NystromPreconditioning) else NystromPreconditioning()
            rank = min(settings.rank, self.operator.size)
            self._sketch = nystrom_approximation(
                self.operator.matvec, self.operator.size, rank, dtype=theta.dtype, device=theta.device
            )
        return self._sketch

    def _preconditioner(self, damping: float) -> torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None:
        kind = self.settings.preconditioner
        if kind == "jacobi":
            return 1 / (self.diagonal() + damping)
        if kind == "nystrom" or isinstance(kind, NystromPreconditioning):
            return self.sketch().preconditioner(damping)
        return None

    def range_split_norms(self, v: torch.Tensor, damping: float) -> tuple[float, float]:
        r"""Matrix-free: :math:`P_T` replaced by the damped :math:`JG^{-1}J^\top M`, whose normal part bounds the exact one from above."""
        parametrization, theta, metric = self.operator.parametrization, self.operator.theta, self.operator.weight
        xi = self.solve(parametrization.vjp(theta, metric.apply(v)), damping).value
        image = parametrization.jvp(theta, xi)
        return float(metric.norm(image)), float(metric.norm(v - image))

    def dual_tangential_norm(self, egrad: torch.Tensor, damping: float) -> float:
        r"""Matrix-free: the damped :math:`\|JG^{-1}J^\top g\|_M`."""
        parametrization, theta = self.operator.parametrization, self.operator.theta
        image = parametrization.jvp(theta, self.solve(egrad, damping).value)
        return float(self.operator.weight.norm(image))

    def solve(self, rhs: torch.Tensor, damping: float, rtol: float | None = None) -> LinearSolution:
        del rtol  # no pseudo-inverse here: CG solves the damped system
        rule = self.settings.tolerance
        if isinstance(rule, CertifiedDecrease):
            return self._solve(rhs, damping, rule.relative_tolerance, rule.fraction, math.inf)
        return self._solve(rhs, damping, rule, None, math.inf)

    def solve_inexact(self, rhs: torch.Tensor, damping: float, forcing: float, fraction: float) -> LinearSolution:
        r"""Stop at relative residual ``forcing`` once ``fraction`` of the exact damped model decrease is certified.

        Or at the mode's own tolerance (its ``relative_tolerance`` where it is a :class:`CertifiedDecrease`),
        whichever comes first; a solve that reaches neither by the cap is unconverged (``on_unconverged``).
        """
        rule = self.settings.tolerance
        target = rule.relative_tolerance if isinstance(rule, CertifiedDecrease) else rule
        return self._solve(rhs, damping, target, fraction, forcing)

    def _solve(
        self, rhs: torch.Tensor, damping: float, target: float, fraction: float | None, forcing: float
    ) -> LinearSolution:
        def matvec(xi: torch.Tensor) -> torch.Tensor:
            return self.operator.matvec(xi) + damping * xi

        value, iterations, relative = conjugate_gradient(
            matvec,
            rhs,
            tolerance=target,
            max_iterations=self.settings.max_iterations,
            preconditioner=self._preconditioner(damping),
            decrease_fraction=fraction,
            shift=damping,
            forcing=forcing,
        )
        self.linear_iterations += iterations
        certified = certified_decrease_fraction(
            float(rhs @ value), relative * float(torch.linalg.vector_norm(rhs)), damping
        )
        converged = relative <= target
        reached = ""
        if fraction is not None and not converged:
            converged = certified >= fraction and relative <= forcing
            bound = "" if math.isinf(forcing) else f" at relative residual <= {forcing:.2e}"
            reached = f" and a certified {certified:.3f} of the exact model decrease (< {fraction}{bound})"
        if not converged and self.settings.on_unconverged != "ignore":
            message = (
                f"conjugate gradients stopped at their cap of {iterations} iterations with relative residual "
                f"{relative:.2e} > tolerance {target:.1e}{reached}: the solve is inexact (raise "
                "ConjugateGradientSolve.max_iterations, or the damping)"
            )
            if self.settings.on_unconverged == "raise":
                raise UnconvergedSolveError(message)
            warnings.warn(message, UnconvergedSolveWarning, stacklevel=4)
        return LinearSolution(
            value=value,
            mode=self.mode,
            iterations=iterations,
            relative_residual=relative,
            converged=converged,
            certified_fraction=certified,
        )


@dataclass(frozen=True)
class ConjugateGradientSolve:
    r"""Matrix-free CG on :math:`(J^\top W J + \lambda I)x = b`; the Jacobian is never formed.

    Each iteration costs one JVP, one application of :math:`W` and one VJP. Convergence depends on
    the condition number of the damped operator, so it needs :math:`\lambda > 0` on a smooth network.
    Plain CG is the default: the spectrum of a smooth network's damped Gram matrix is a few large
    eigenvalues and a cluster at :math:`\lambda`, which CG resolves in about as many iterations as there
    are large eigenvalues (11 at p = 1021, N = 1000). The Jacobi preconditioner
    :math:`(\operatorname{diag}(J^\top WJ) + \lambda I)^{-1}`, with the diagonal estimated once per point by
    ``diagonal_probes`` matrix-free products, evens out the scales of layers but breaks that cluster;
    on the benchmark problem it hit the iteration cap (``docs/performance.md``). It is there for
    operators without such a cluster.

    Args:
        tolerance: relative residual target, default ``1e-10``; or a :class:`CertifiedDecrease`, which stops
            each solve once the step it gives is certified to achieve a share of the exact damped model
            decrease (an inexact-Newton forcing rule: far fewer iterations where the damping is not tiny).
        max_iterations: iteration cap per solve. Default ``500``.
        preconditioner: ``"none"`` (default), ``"jacobi"``, ``"nystrom"`` (the randomized Nyström
            preconditioner of :mod:`mms_manifolds.linalg.nystrom` with the default
            :class:`~mms_manifolds.linalg.NystromPreconditioning`: one sketch of 64 products per point,
            serving every damping) or a :class:`~mms_manifolds.linalg.NystromPreconditioning` with its rank.
        diagonal_probes: Hutchinson probes for the diagonal. Default ``16``.
        on_unconverged: what a solve that stops at ``max_iterations`` above ``tolerance`` does:
            ``"warn"`` (default, an :class:`~mms_manifolds.linalg.UnconvergedSolveWarning` naming the residual
            reached, counted per MMS step into ``InnerResult.unconverged_solves`` and the result's
            ``unconverged_solves`` column), ``"raise"``
            (:class:`~mms_manifolds.linalg.UnconvergedSolveError`) or ``"ignore"``; the
            :class:`LinearSolution` says ``converged=False`` in every case. Before, such a solve returned
            silently, and every Riemannian gradient or residual built on it was inexact with no record.
    """

    tolerance: float | CertifiedDecrease = 1e-10
    max_iterations: int = 500
    preconditioner: str | NystromPreconditioning = "none"
    diagonal_probes: int = 16
    on_unconverged: str = "warn"
    name: str = "cg"
    forms_jacobian: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not isinstance(self.tolerance, CertifiedDecrease):
            check_positive_float("tolerance", self.tolerance)
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not isinstance(self.preconditioner, NystromPreconditioning) and self.preconditioner not in (
            "jacobi",
            "none",
            "nystrom",
        ):
            raise ValueError(
                f"preconditioner must be 'jacobi', 'nystrom', 'none' or a NystromPreconditioning, got {self.preconditioner!r}"
            )
        if int(self.diagonal_probes) < 1:
            raise ValueError(f"diagonal_probes must be >= 1, got {self.diagonal_probes}")
        if self.on_unconverged not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_unconverged must be 'warn', 'raise' or 'ignore', got {self.on_unconverged!r}")

    def factorize(self, operator: GramOperator) -> Factorization:
        return _ConjugateGradientFactorization(operator, self)

    def factorize_weighted(self, operator: GramOperator) -> Factorization:
        r""":math:`J^\top WJ` for any weight :math:`W`: matrix-free as always."""
        return self.factorize(operator)
