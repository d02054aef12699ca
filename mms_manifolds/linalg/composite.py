r"""Sums and scalar multiples of symmetric operators that know whether they are a multiple of a metric.

The MMS step's Hessian is :math:`W = \nabla^2E(u) + M/\tau`; where :math:`\nabla^2E = cM` it is
:math:`(c + 1/\tau)M` and a solve with :math:`J^\top WJ` reuses the metric's own factorisation. Built from
these pieces, ``W.multiple_of(M)`` says which case holds: each term states its multiple of :math:`M`
(``None`` where unknown), a sum adds them, a scalar multiple scales them. Each operator applies exactly
the arithmetic it is written with (``metric / tau`` divides by :math:`\tau`).
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["MetricMultiple", "OperatorSum", "ScaledOperator", "diagonal_of", "multiple_of"]


class MetricMultiple(Protocol):
    r"""A symmetric operator :math:`W` on :math:`H_N` that can say whether :math:`W = sM` for a metric :math:`M`."""

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Wv` for ``v`` of shape ``(..., N, m)``."""

    def multiple_of(self, metric: object) -> float | None:
        """:math:`s` with :math:`W = s\\,` ``metric``, or ``None`` when not known to be one."""


def multiple_of(operator: object, metric: object) -> float | None:
    """``operator.multiple_of(metric)`` where the operator states it; a metric is 1 times itself; else ``None``."""
    if operator is metric:
        return 1.0
    ask = getattr(operator, "multiple_of", None)
    return None if ask is None else ask(metric)


def diagonal_of(operator: object) -> torch.Tensor | None:
    r"""The diagonal :math:`d` (shape ``(N, m)``) of an operator known to be :math:`\operatorname{diag}(d)`, else ``None``.

    An operator says so through a ``diagonal`` method (the sums and multiples here, the step's energy
    Hessian) or a stored ``diagonal`` tensor (:class:`~mms_manifolds.meshfree.JetMetric`); a method may
    return ``None`` for "not known".
    """
    known = getattr(operator, "diagonal", None)
    if isinstance(known, torch.Tensor):
        return known
    return known() if callable(known) else None


class ScaledOperator:
    r""":math:`sW` (``factor`` :math:`s`) or :math:`W/d` (``divisor`` :math:`d`): exactly one of the two is given.

    Args:
        operator: :math:`W`.
        factor: :math:`s`.
        divisor: :math:`d`.
    """

    def __init__(self, operator: object, factor: float | None = None, divisor: float | None = None):
        if (factor is None) == (divisor is None):
            raise ValueError("give exactly one of factor and divisor")
        self.operator, self.factor, self.divisor = operator, factor, divisor

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`sWv` or :math:`Wv/d`."""
        product = self.operator.apply(v)
        return product * self.factor if self.divisor is None else product / self.divisor

    def multiple_of(self, metric: object) -> float | None:
        inner = multiple_of(self.operator, metric)
        if inner is None:
            return None
        return inner * self.factor if self.divisor is None else inner / self.divisor

    def diagonal(self) -> torch.Tensor | None:
        r"""The diagonal of :math:`sW` or :math:`W/d` where :math:`W`'s is known (:func:`diagonal_of`), else ``None``."""
        inner = diagonal_of(self.operator)
        if inner is None:
            return None
        return inner * self.factor if self.divisor is None else inner / self.divisor


class OperatorSum:
    r""":math:`W_1 + W_2 + \dots`, applied term by term (in the order given).

    Args:
        terms: the operators :math:`W_i`.
    """

    def __init__(self, *terms: object):
        if not terms:
            raise ValueError("an operator sum needs at least one term")
        self.terms = terms

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_i W_iv`."""
        total = self.terms[0].apply(v)
        for term in self.terms[1:]:
            total = total + term.apply(v)
        return total

    def multiple_of(self, metric: object) -> float | None:
        r""":math:`\sum_i s_i` where every term is :math:`s_iM`, else ``None``."""
        return _sum_if_all_known([multiple_of(term, metric) for term in self.terms])

    def diagonal(self) -> torch.Tensor | None:
        r""":math:`\sum_i d_i` where every term is :math:`\operatorname{diag}(d_i)`, else ``None``."""
        return _sum_if_all_known([diagonal_of(term) for term in self.terms])


def _sum_if_all_known(parts: list[float | torch.Tensor | None]) -> float | torch.Tensor | None:
    """The sum of ``parts`` in the order given (the terms' own arithmetic), or ``None`` if any part is ``None``."""
    if any(part is None for part in parts):
        return None
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
