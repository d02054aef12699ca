r"""A network projected onto linear constraints :math:`C^\top u = b` (fixed mass, for example)."""

from __future__ import annotations

import torch

from .._checks import check_real_tensor
from .base import Parametrization

__all__ = ["ConstrainedParametrization"]


class ConstrainedParametrization(Parametrization):
    r"""The network :math:`\phi` followed by the projection onto the affine set :math:`\{u : C^\top u = b\}` along :math:`D`.

    .. math:: \psi(\theta) = \phi(\theta) - D\,(C^\top D)^{-1}\big(C^\top\phi(\theta) - b\big),\qquad
              C^\top\psi(\theta) = b \ \text{for every}\ \theta.

    The map :math:`P = I - D(C^\top D)^{-1}C^\top` is linear, so :math:`J_\psi = PJ_\phi`,
    :math:`J_\psi^\top w = J_\phi^\top P^\top w` and :math:`D^2\psi = PD^2\phi`: every increment lies in
    :math:`V = \ker C^\top`, the subspace a :class:`~mms_manifolds.metrics.SubspaceMetric` is defined on. For
    a fixed mass :math:`\sum_i w_iu_i = m_0` (:meth:`fixed_mass`) :math:`C = w`, :math:`D = \mathbf 1`:
    :math:`\psi = \phi - (\operatorname{mass}(\phi) - m_0)/|\mathbf 1|_W^2\,\mathbf 1`, the :math:`L^2(W)`-orthogonal
    projection.

    Constraints of shape ``(N, r)`` act on each output component (``values`` shape ``(r, m)``); of shape
    ``(Nm, r)`` on the flattened values (``values`` shape ``(r,)``).

    Args:
        parametrization: :math:`\phi`.
        constraints: :math:`C`, shape ``(N, r)``, ``(Nm, r)`` or ``(N,)``.
        values: :math:`b`; ``None`` for :math:`C^\top\phi(\theta_0)` at the initial point.
        directions: :math:`D`, the shape of ``constraints``; ``None`` for :math:`D = C`.

    Raises:
        TypeError: not a Parametrization, tensors that are not real floating tensors, or constraints in another
            dtype or on another device than the network.
        ValueError: shapes disagree, or :math:`C^\top D` is singular.
    """

    def __init__(
        self,
        parametrization: Parametrization,
        constraints: torch.Tensor,
        values: torch.Tensor | None = None,
        directions: torch.Tensor | None = None,
    ):
        if not isinstance(parametrization, Parametrization):
            raise TypeError(f"parametrization must be a Parametrization, got {type(parametrization).__name__}")
        check_real_tensor("constraints", constraints, ndim=(1, 2))
        constraints = constraints.unsqueeze(-1) if constraints.ndim == 1 else constraints
        directions = constraints if directions is None else check_real_tensor("directions", directions, ndim=(1, 2))
        directions = directions.unsqueeze(-1) if directions.ndim == 1 else directions
        nodes, outputs = parametrization.output_shape
        if constraints.shape[0] not in (nodes, nodes * outputs) or directions.shape != constraints.shape:
            raise ValueError(
                f"constraints {tuple(constraints.shape)} and directions {tuple(directions.shape)} must both have "
                f"shape (N, r) or (Nm, r) with N = {nodes}, m = {outputs}"
            )
        for name, tensor in (("constraints", constraints), ("directions", directions)):
            if tensor.dtype != parametrization.dtype or tensor.device != parametrization.device:
                raise TypeError(
                    f"{name} are {tensor.dtype} on {tensor.device}, the network {parametrization.dtype} on "
                    f"{parametrization.device}: build them in the network's dtype and device"
                )
        self.inner, self.constraints, self.directions = parametrization, constraints, directions
        self.num_parameters, self.output_shape = parametrization.num_parameters, parametrization.output_shape
        self.dtype, self.device = parametrization.dtype, parametrization.device
        self.per_node = constraints.shape[0] == nodes
        coupling = constraints.T @ directions
        if int(torch.linalg.matrix_rank(coupling)) < coupling.shape[0]:
            raise ValueError("C^T D is singular: the directions cannot restore the constraints")
        self._correction = directions @ torch.linalg.inv(coupling)  # D (C^T D)^{-1}, shape (n, r)
        current = self._constraint_values(parametrization.value(parametrization.initial_point()))
        if values is None:
            values = current
        values = check_real_tensor("values", values, ndim=(1, 2)).to(current.dtype)
        if values.shape != current.shape:
            raise ValueError(f"values must have shape {tuple(current.shape)}, got {tuple(values.shape)}")
        self.values = values

    @classmethod
    def fixed_mass(
        cls, parametrization: Parametrization, weights: torch.Tensor, mass: float | torch.Tensor | None = None
    ) -> ConstrainedParametrization:
        r"""The network with its mass :math:`\sum_i w_iu_i` (per output component) held at ``mass`` (default: its initial mass).

        :math:`C = w`, :math:`D = \mathbf 1`, so :math:`\psi = \phi - (\operatorname{mass}(\phi) - m_0)/\sum_i w_i`.
        """
        check_real_tensor("weights", weights, ndim=1)
        values = None
        if mass is not None:
            outputs = parametrization.output_shape[1]
            values = torch.as_tensor(mass, dtype=weights.dtype, device=weights.device).reshape(-1)
            values = values.expand(outputs).reshape(1, outputs).clone()
        return cls(parametrization, weights, values, torch.ones_like(weights))

    def _columns(self, v: torch.Tensor) -> torch.Tensor:
        """Values ``(..., N, m)`` as the columns the constraints act on: ``(n, batch)``."""
        if self.per_node:
            return v.movedim(-2, 0).reshape(v.shape[-2], -1)
        return v.reshape(-1, v.shape[-2] * v.shape[-1]).T

    def _values(self, columns: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.per_node:
            return columns.reshape(like.shape[-2], *like.shape[:-2], like.shape[-1]).movedim(0, -2)
        return columns.T.reshape(like.shape)

    def _constraint_values(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`C^\top u` of one value ``(N, m)``: shape ``(r, m)`` per node, ``(r,)`` flattened."""
        values = self.constraints.T @ self._columns(u)
        return values if self.per_node else values.reshape(-1)

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`Pv = v - D(C^\top D)^{-1}C^\top v` for ``v`` of shape ``(..., N, m)``."""
        columns = self._columns(v)
        return self._values(columns - self._correction @ (self.constraints.T @ columns), v)

    def _project_adjoint(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`P^\top w = w - C(C^\top D)^{-\top}D^\top w` for ``w`` of shape ``(..., N, m)``."""
        columns = self._columns(w)
        return self._values(columns - self.constraints @ (self._correction.T @ columns), w)

    def initial_point(self) -> torch.Tensor:
        return self.inner.initial_point()

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        raw = self.inner.value(theta)
        target = self.values if self.per_node else self.values.unsqueeze(-1)
        columns = self._columns(raw)
        return self._values(columns - self._correction @ (self.constraints.T @ columns - target), raw)

    def jvp(self, theta: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        return self._project(self.inner.jvp(theta, tangent))

    def vjp(self, theta: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        return self.inner.vjp(theta, self._project_adjoint(cotangent))

    def second_derivative(self, theta: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self._project(self.inner.second_derivative(theta, first, second))

    def second_derivative_adjoint(
        self, theta: torch.Tensor, tangent: torch.Tensor, cotangent: torch.Tensor
    ) -> torch.Tensor:
        return self.inner.second_derivative_adjoint(theta, tangent, self._project_adjoint(cotangent))

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`PJ_\phi`, shape ``(N, m, p)``, from the wrapped network's (batched) Jacobian."""
        jacobian = self.inner.jacobian(theta).movedim(-1, 0)
        return self._project(jacobian).movedim(0, -1)
