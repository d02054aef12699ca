r"""Mesh-free :math:`L^2` and :math:`H^1` metrics on stacked jets.

On the jet space :math:`\mathbb{R}^K` (see :mod:`mms_manifolds.meshfree.jets`) the metric

.. math:: \langle u, v\rangle_M = \sum_s \sum_{x_i \in S_s} w_i\big(a_s\, u(x_i)\cdot v(x_i)
          + b_s\, \nabla u(x_i) : \nabla v(x_i)\big)

is diagonal, :math:`M = \operatorname{diag}(c)` with :math:`c \ge 0`: quadrature weights times the value
coefficient :math:`a_s` on value entries, times the gradient coefficient :math:`b_s` on gradient entries,
and zero on Laplacian entries (and on whatever a coefficient leaves out). The :math:`L^2` metric of
a flow takes values on the interior only; :math:`H^1` adds gradients.

Such a metric is usually only *semi*-definite on the jet space: the jet entries it does not weight
are derivatives of the same function, not independent directions. The pullback metric
:math:`J^\top MJ + \lambda I` is still positive definite (damping), so the geometry is unchanged; what
does not exist is :math:`M^{-1}`, hence the function-space residual :math:`M^{-1}\nabla F_k`: only its
tangential part is computed (see :meth:`mms_manifolds.MMSSubproblem.residual`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .._checks import check_positive_float
from ..metrics.base import Metric
from .jets import JetParametrization

__all__ = ["JetMetric"]


class JetMetric(Metric):
    r"""The diagonal metric :math:`M = \operatorname{diag}(c)` on stacked jets (formula in the module docstring).

    Args:
        parametrization: the jet parametrisation whose layout and node weights the metric uses.
        value: coefficient :math:`a_s \ge 0` on values, by node-set name (sets not named get 0).
        gradient: coefficient :math:`b_s \ge 0` on gradients, by node-set name (those sets must
            carry gradients).

    Raises:
        ValueError: an unknown node-set name, a set without the component asked for, a negative or
            non-finite coefficient, or a metric that is zero.

    Examples:
        >>> import torch
        >>> from mms_manifolds.meshfree import JetParametrization, box_interior_grid
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
        >>> phi = JetParametrization(net, {"interior": box_interior_grid(4, 1, ("value", "gradient"))})
        >>> l2 = JetMetric(phi, value={"interior": 1.0})
        >>> h1 = JetMetric(phi, value={"interior": 1.0}, gradient={"interior": 1.0})
        >>> l2.positive_definite, h1.positive_definite
        (False, True)
    """

    def __init__(
        self,
        parametrization: JetParametrization,
        value: Mapping[str, float] | None = None,
        gradient: Mapping[str, float] | None = None,
    ):
        if not isinstance(parametrization, JetParametrization):
            raise TypeError(f"parametrization must be a JetParametrization, got {type(parametrization).__name__}")
        layout = parametrization.layout
        coefficients = {"value": dict(value or {}), "gradient": dict(gradient or {})}
        pieces = []
        for name, block in layout.blocks.items():
            weights = parametrization.node_sets[name].weights
            per_node = []
            for derivative in block.derivatives:
                coefficient = coefficients.get(derivative, {}).get(name, 0.0)
                coefficient = check_positive_float(f"{derivative}[{name!r}]", coefficient, allow_zero=True)
                per_node.append(coefficient * weights.unsqueeze(-1).expand(-1, layout.component_size(derivative)))
            pieces.append(torch.cat(per_node, dim=-1).reshape(-1))
        for derivative, by_name in coefficients.items():
            for name in by_name:
                if name not in layout.blocks:
                    raise ValueError(f"{derivative}: unknown node set {name!r}; known: {sorted(layout.blocks)}")
                if derivative not in layout.blocks[name].derivatives:
                    raise ValueError(
                        f"node set {name!r} carries no {derivative} (it has {layout.blocks[name].derivatives})"
                    )
        self.diagonal = torch.cat(pieces).unsqueeze(-1)  # (K, 1)
        if not bool((self.diagonal > 0).any()):
            raise ValueError("the metric is zero: give a positive coefficient to some node set")
        self.positive_definite = bool((self.diagonal > 0).all())

    def _check(self, v: torch.Tensor) -> None:
        if v.shape[-2:] != self.diagonal.shape:
            raise ValueError(f"JetMetric acts on shape (..., {self.diagonal.shape[0]}, 1), got {tuple(v.shape)}")

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v)
        return self.diagonal * v

    def solve_condition(self, shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> float:
        """1: the solve divides entry by entry, with a relative rounding of one epsilon per entry whatever the weights."""
        return 1.0

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`M^{-1}v`, only where every jet entry is weighted.

        Raises:
            ValueError: the metric is semi-definite on the jet space (no inverse).
        """
        self._check(v)
        if not self.positive_definite:
            raise ValueError(
                "JetMetric is only semi-definite on the jet space (some jet entries have weight 0): M^{-1} does not exist"
            )
        return v / self.diagonal

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top v` with :math:`C = \operatorname{diag}(\sqrt c)`; valid for semi-definite :math:`M` too."""
        self._check(v)
        return (self.diagonal.sqrt() * v).reshape(*v.shape[:-2], -1)
