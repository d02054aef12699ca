r"""Linear-in-parameters models :math:`\phi(\theta) = \Phi\theta`: the flat reference case."""

from __future__ import annotations

import torch

from .._checks import check_real_tensor
from .torch_function import FunctionParametrization, serialized

__all__ = ["LinearParametrization"]


class LinearParametrization(FunctionParametrization):
    r"""The linear model :math:`\phi(\theta) = \Phi\theta` with a fixed basis :math:`\Phi`.

    Its increment set is the flat subspace :math:`\operatorname{range}\Phi`: geodesics are straight
    lines, :math:`D^2\phi = 0`, and every MMS step with a quadratic energy has a closed-form
    minimiser. The library's exactness tests use it as ground truth.

    Args:
        basis: :math:`\Phi`, shape ``(N, p)`` (one output) or ``(N, m, p)``.
        initial_point: parameters, shape ``(p,)``; zeros if omitted.

    Raises:
        ValueError: ``basis`` is not 2-D or 3-D, or holds non-finite values.
    """

    def __init__(self, basis: torch.Tensor, initial_point: torch.Tensor | None = None):
        check_real_tensor("basis", basis, ndim=(2, 3))
        self.basis = basis if basis.ndim == 3 else basis.unsqueeze(1)
        if initial_point is None:
            initial_point = torch.zeros(self.basis.shape[-1], dtype=basis.dtype, device=basis.device)
        super().__init__(lambda theta: self.basis @ theta, initial_point)

    @serialized
    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        return self.basis.clone()
