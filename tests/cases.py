"""Reusable problem builders for the tests: each takes its own seed and builds its own generator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mms_manifolds import (
    FunctionParametrization,
    L2Metric,
    LinearParametrization,
    MatrixMetric,
    Metric,
    Parametrization,
    SobolevMetric,
    TorchParametrization,
)
from mms_manifolds.grids import stiffness_1d, trapezoid_weights
from mms_manifolds.meshfree import JetMetric, JetParametrization, box_boundary_grid, box_interior_grid
from mms_manifolds.problems import mlp


def nodes_1d(count: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, count, dtype=dtype).unsqueeze(-1)


def mlp_parametrization(seed: int, count: int = 12, widths=(1, 5, 2), dtype=torch.float64) -> TorchParametrization:
    return TorchParametrization(mlp(widths, seed, dtype), nodes_1d(count, dtype))


def random_spd(size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(size, size, generator=generator, dtype=torch.float64)
    return factor @ factor.T / size + 0.5 * torch.eye(size, dtype=torch.float64)


@dataclass(frozen=True)
class Case:
    """A parametrisation and a metric to run the generic geometry identities on."""

    name: str
    build_parametrization: Callable[[int], Parametrization]
    build_metric: Callable[[Parametrization], Metric]


def _l2(parametrization: Parametrization) -> Metric:
    return L2Metric(trapezoid_weights(parametrization.output_shape[0], -1.0, 1.0))


def _sobolev(parametrization: Parametrization) -> Metric:
    count = parametrization.output_shape[0]
    return SobolevMetric(trapezoid_weights(count, -1.0, 1.0), stiffness_1d(count, -1.0, 1.0, "neumann"), 0.1)


def _full_matrix(parametrization: Parametrization) -> Metric:
    return MatrixMetric(random_spd(parametrization.ambient_dimension, 7))


def _sine_features(seed: int) -> Parametrization:
    """A nonlinear model that is not a torch module: u(x) = a sin(b x + c) + d x."""
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)

    def function(theta: torch.Tensor) -> torch.Tensor:
        return theta[0] * torch.sin(theta[1] * x + theta[2]) + theta[3] * x

    generator = torch.Generator().manual_seed(seed)
    return FunctionParametrization(function, torch.randn(4, generator=generator, dtype=torch.float64) + torch.tensor([1.0, 2.0, 0, 0], dtype=torch.float64))


def _jets(seed: int) -> Parametrization:
    """Jets of a 2-D tanh network: value, gradient and Laplacian inside, values on the boundary."""
    node_sets = {
        "interior": box_interior_grid(2, 2, ("value", "gradient", "laplacian")),
        "boundary": box_boundary_grid(1),
    }
    return JetParametrization(mlp((2, 4, 1), seed), node_sets)


def _jet_h1(parametrization: Parametrization) -> Metric:
    """H1 on the interior, L2 on the boundary: semi-definite (Laplacian entries have weight 0)."""
    return JetMetric(parametrization, value={"interior": 1.0, "boundary": 1.0}, gradient={"interior": 1.0})


CASES = [
    Case("mlp-l2", lambda seed: mlp_parametrization(seed), _l2),
    Case("mlp2out-sobolev", lambda seed: mlp_parametrization(seed, 10, (1, 4, 2)), _sobolev),
    Case("mlp-fullmatrix", lambda seed: mlp_parametrization(seed, 8, (1, 3, 2)), _full_matrix),
    Case("sine-l2", _sine_features, _l2),
    Case(
        "linear-l2",
        lambda seed: LinearParametrization(torch.randn(12, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)),
        _l2,
    ),
    Case("jets-h1", _jets, _jet_h1),
]
