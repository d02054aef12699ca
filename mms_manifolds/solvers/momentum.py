r"""SPRING's momentum for the damped Gauss–Newton step (``GaussNewton(momentum=...)``).

SPRING (Goldshlager, Abrahamsen, Lin 2024; for PINNs Guzmán-Cordero, Dangel, Goldshlager, Zeinhofer 2025) keeps
the last direction :math:`\phi_{k-1}` and solves for the next one on the kernel side,

.. math:: \phi_k = \beta\phi_{k-1} + B^\top(BB^\top + \lambda I)^{-1}(-s - \beta B\phi_{k-1}),

where :math:`B` is the whitened Jacobian of the residuals and :math:`s` the whitened residual (the library's
model: :math:`A = B^\top B`, :math:`g = B^\top s`), :math:`\lambda > 0` the damping, :math:`\beta \in [0, 1)` the
momentum (the published code's ``momentum``, the paper's :math:`\mu`); the parameters move by a line search's
:math:`\eta\phi_k`, and :math:`\phi_k` itself, not :math:`\eta\phi_k`, is carried to the next iteration. With the
push-through identity :math:`B^\top(BB^\top + \lambda I)^{-1}B = (A + \lambda I)^{-1}A` this is

.. math:: \phi_k = (A + \lambda I)^{-1}(-g + \beta\lambda\phi_{k-1})
          = \delta_k + \beta\lambda(A + \lambda I)^{-1}\phi_{k-1},\qquad \delta_k = -(A + \lambda I)^{-1}g,

the minimiser of the Gauss–Newton model plus :math:`\tfrac\lambda2\|\phi - \beta\phi_{k-1}\|^2`: the Tikhonov step
whose damping pulls towards :math:`\beta\phi_{k-1}` instead of towards 0. It is written for the library's whole
model, :math:`A = J^\top(\nabla^2E + M/\tau)J` and :math:`g = \nabla_\theta f` (the proximal term included, so
:math:`A` need not be a Gram of residual Jacobians), and solved with the model's factorisation of
:math:`A + \lambda I` (:meth:`~mms_manifolds.subproblem.GaussNewtonModel.solve`), which serves the kernel side as
well. Along eigenvectors of :math:`A` with eigenvalue :math:`\sigma \gg \lambda` the direction is the Gauss–Newton
step; for :math:`\sigma \ll \lambda` it is :math:`-g/\lambda + \beta\phi_{k-1}`, a heavy-ball gradient step that
averages the gradients of successive (resampled) batches. :math:`\beta = 0` is :math:`\delta_k`.

The model decrease of :math:`\phi_k` follows from :math:`(A + \lambda I)\phi_k = -g + \beta\lambda\phi_{k-1}`:

.. math:: m(0) - m(\phi_k) = -g\cdot\phi_k - \tfrac12\phi_k\cdot A\phi_k
          = \tfrac12\big(-g\cdot\phi_k + \lambda\,\phi_k\cdot\phi_k - \beta\lambda\,\phi_{k-1}\cdot\phi_k\big).

The published code (rla-pinns' ``SPRING``) takes an absolute :math:`\lambda`, no bias correction and a grid line
search along :math:`\phi_k` (its ``RNGD`` with ``momentum`` divides the step by :math:`\sqrt{1 - \beta^{2(k+1)}}`);
here :math:`\lambda` is the step's damping as the solver computes it (relative to :math:`\operatorname{tr}(A)/p` under
``step_damping``, absolute with ``absolute_damping=True``), no bias correction is applied, and the search is the
solver's own (``line_search="logarithmic-grid", grid_largest=1`` is the published grid).
"""

from __future__ import annotations

import torch

from ..subproblem import GaussNewtonModel

__all__ = ["momentum_direction", "momentum_predicted_decrease"]


def momentum_direction(
    model: GaussNewtonModel,
    step: torch.Tensor,
    damping: float,
    previous: torch.Tensor,
    momentum: float,
) -> torch.Tensor:
    r""":math:`\phi_k = \delta_k + \beta\lambda(A + \lambda I)^{-1}\phi_{k-1}`, shape ``(p,)``.

    Args:
        model: the Gauss–Newton model at the current point.
        step: :math:`\delta_k = -(A + \lambda I)^{-1}g` (:meth:`GaussNewtonModel.step` with ``damping``).
        damping: :math:`\lambda > 0`, absolute.
        previous: :math:`\phi_{k-1}`, shape ``(p,)``, on the model's device and dtype.
        momentum: :math:`\beta \in [0, 1)`; 0 returns ``step`` itself.
    """
    if momentum == 0.0:
        return step
    return step + (momentum * damping) * model.solve(previous, damping)


def momentum_predicted_decrease(
    model: GaussNewtonModel, direction: torch.Tensor, damping: float, previous: torch.Tensor, momentum: float
) -> float:
    r""":math:`m(0) - m(\phi_k) = \tfrac12(-g\cdot\phi_k + \lambda\phi_k\cdot\phi_k - \beta\lambda\phi_{k-1}\cdot\phi_k)` (module docstring)."""
    return model.predicted_decrease(direction, damping) - 0.5 * momentum * damping * float(previous @ direction)
