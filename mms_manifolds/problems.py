r"""Ready-made networks and the regression flow, shared by the demo, the experiments, the benchmarks and the tests.

The regression flow is the library's running example: :math:`E(u) = \|u - g\|_M^2/2` with
:math:`g(x) = |x| + 0.3\sin 5x` on :math:`[-1, 1]`, a tanh MLP, :math:`\tau = 0.2`; its exact MMS step is
:math:`(u_k + \tau g)/(1 + \tau)`.
"""

from __future__ import annotations

import torch

from .energies import L2Regression
from .grids import trapezoid_weights
from .metrics import L2Metric
from .mms import MinimizingMovement
from .parametrizations import TorchParametrization

__all__ = ["mlp", "regression_flow"]


def mlp(
    widths: tuple[int, ...],
    seed: int,
    dtype: torch.dtype = torch.float64,
    *,
    device: torch.device | str = "cpu",
    activation: type[torch.nn.Module] = torch.nn.Tanh,
) -> torch.nn.Sequential:
    """An MLP with layer ``widths`` and ``activation`` between layers, torch's default initialisation drawn from ``seed``.

    The weights are drawn in float64 on the CPU from ``torch.manual_seed(seed)`` and then moved to
    ``dtype`` and ``device``, so the draw depends on nothing else (not the default dtype, not the device);
    the global random state is restored afterwards.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(width_in, width_out, dtype=torch.float64))
        if index < len(widths) - 2:
            layers.append(activation())
    torch.random.set_rng_state(state)
    return torch.nn.Sequential(*layers).to(dtype=dtype, device=device)


def regression_flow(
    nodes: int = 128,
    widths: tuple[int, ...] = (1, 12, 12, 1),
    seed: int = 0,
    tau: float = 0.2,
    *,
    weights: str = "trapezoid",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    damping: float | str = "auto",
    solve_mode: object = "auto",
) -> MinimizingMovement:
    """The regression flow on ``nodes`` equispaced points of [-1, 1] with ``mlp(widths, seed)``.

    Args:
        weights: quadrature of the :math:`L^2` metric: ``"trapezoid"`` (default) or ``"uniform"``
            (:math:`2/N` per node, the benchmarks' choice).
    """
    if weights not in ("trapezoid", "uniform"):
        raise ValueError(f"weights must be 'trapezoid' or 'uniform', got {weights!r}")
    options = {"dtype": dtype, "device": device}
    x = torch.linspace(-1.0, 1.0, nodes, **options).unsqueeze(-1)
    if weights == "trapezoid":
        quadrature = trapezoid_weights(nodes, -1.0, 1.0, dtype=dtype).to(device)
    else:
        quadrature = torch.full((nodes,), 2 / nodes, **options)
    metric = L2Metric(quadrature)
    parametrization = TorchParametrization(mlp(widths, seed, dtype, device=device), x)
    energy = L2Regression(x.abs() + 0.3 * torch.sin(5 * x), metric)
    return MinimizingMovement(parametrization, energy, metric, tau, damping=damping, solve_mode=solve_mode)
