r"""The parametrisation interface: a map from flat parameters to node values.

A parametrisation is the discretised network :math:`\phi(\theta) = (f_\theta(x_i))_{i=1}^N`, a map
from a flat parameter vector :math:`\theta \in \mathbb{R}^p` to node values in
:math:`\mathbb{R}^{N \times m}`. The geometry needs its value, its Jacobian
:math:`J(\theta) \in \mathbb{R}^{Nm \times p}` through products (JVP :math:`J\xi`, VJP :math:`J^\top w`),
and its second derivative :math:`D^2\phi(\theta)[\xi, \eta]`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from .._checks import check_vector

if TYPE_CHECKING:
    from .layer_kernel import LinearLayerFactors

__all__ = ["Parametrization"]


class Parametrization(ABC):
    r"""Abstract map :math:`\theta \mapsto \phi(\theta)`, shape ``(p,) -> (N, m)``.

    Subclasses implement :meth:`value`, :meth:`jvp`, :meth:`vjp`, :meth:`second_derivative`,
    :meth:`second_derivative_adjoint` and :meth:`initial_point`; :meth:`jacobian` and
    :meth:`jacobian_columns` have defaults built from JVPs that subclasses may replace with batched ones.

    Attributes:
        num_parameters: :math:`p`.
        output_shape: ``(N, m)``: number of nodes and output components per node.
        dtype: floating dtype of parameters and outputs.
        device: device of parameters and outputs.
    """

    num_parameters: int
    output_shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    @property
    def ambient_dimension(self) -> int:
        """:math:`Nm`, the dimension of the discretised function space :math:`H_N`."""
        return self.output_shape[0] * self.output_shape[1]

    def check_point(self, theta: object, name: str = "theta") -> torch.Tensor:
        """Validate a flat parameter vector: dtype, device, shape ``(p,)``, finite values."""
        return check_vector(name, theta, length=self.num_parameters, dtype=self.dtype, device=self.device)

    @abstractmethod
    def initial_point(self) -> torch.Tensor:
        """The parameters the parametrisation was built with, shape ``(p,)``."""

    @abstractmethod
    def value(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(\theta)`, shape ``(N, m)``."""

    @abstractmethod
    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        r"""Jacobian-vector product :math:`J(\theta)\xi`; ``tangent`` shape ``(p,)``, result ``(N, m)``."""

    @abstractmethod
    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        r"""Vector-Jacobian product :math:`J(\theta)^\top w`; ``cotangent`` shape ``(N, m)``, result ``(p,)``."""

    @abstractmethod
    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        r"""Second directional derivative :math:`D^2\phi(\theta)[\xi, \eta]`, shape ``(N, m)``.

        Symmetric in ``first`` (:math:`\xi`) and ``second`` (:math:`\eta`), both shape ``(p,)``.
        """

    @abstractmethod
    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        r"""The vector :math:`c` with :math:`c_i = \langle D^2\phi(\theta)[\xi, e_i], w \rangle`, shape ``(p,)``.

        It is the VJP of :math:`\theta \mapsto J(\theta)\xi` with cotangent :math:`w`; the Riemannian
        Hessian's curvature term uses it.

        Args:
            theta: point, shape ``(p,)``.
            tangent: :math:`\xi`, shape ``(p,)``.
            cotangent: :math:`w`, shape ``(N, m)``.
        """

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Dense Jacobian :math:`J(\theta)`, shape ``(N, m, p)``, one JVP per parameter.

        Subclasses override this with a batched version where they can.
        """
        eye = torch.eye(self.num_parameters, dtype=self.dtype, device=self.device)
        return torch.stack([self.jvp(theta, column) for column in eye], dim=-1)

    def jacobian_kernel(self, theta: torch.Tensor) -> torch.Tensor | None:
        r""":math:`J(\theta)J(\theta)^\top`, shape ``(Nm, Nm)``, where the parametrisation knows a structure cheaper than forming :math:`J`; else ``None``.

        The kernel solve (:class:`~mms_manifolds.linalg.KernelSolve`) asks for it before forming
        :math:`BB^\top` from the whitened Jacobian and checks it against :math:`B`. The default knows none.
        """
        return None

    def layer_factors(self, theta: torch.Tensor) -> LinearLayerFactors | None:
        r"""Per-layer factors of :math:`J(\theta)` (:class:`~mms_manifolds.parametrizations.layer_kernel.LinearLayerFactors`) where the parametrisation has them; else ``None``.

        With them the kernel solve's residual split takes the diagonal, a few columns and a Rayleigh quotient
        of :math:`JJ^\top` without forming it (:class:`~mms_manifolds.linalg.KernelFactorization`). The
        default has none.
        """
        return None

    def jacobian_kernel_flops(self) -> float | None:
        r"""Flops of :meth:`jacobian_kernel` where the parametrisation has one (the solve-mode cost model reads it), else ``None``."""
        return None

    def jacobian_columns(self, theta: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        r"""The columns :math:`J_S = J(\theta)P_S` of the parameters ``indices`` (:math:`S`, shape ``(s,)``), shape ``(N, m, s)``.

        One JVP per column with the unit vector :math:`e_i`, :math:`i \in S`; the full ``(N, m, p)``
        Jacobian is never formed. Subclasses override this with a batched version where they can.
        """
        columns = []
        for index in indices.tolist():
            unit = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
            unit[index] = 1.0
            columns.append(self.jvp(theta, unit))
        return torch.stack(columns, dim=-1)
