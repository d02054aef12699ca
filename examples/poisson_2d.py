r"""2-D Poisson problem as the steady state of a mesh-free gradient flow (Deep Ritz and least-squares energies).

    -Lap u = 2 pi^2 sin(pi x) sin(pi y) on (0, 1)^2,  u = 0 on the boundary,  solution sin(pi x) sin(pi y).

A [2, 32, 1] tanh network; 28 x 28 interior grid nodes and 29 nodes per boundary side; the zero
boundary values enter as the penalty (beta/2) int_boundary u^2. The flow is the L2 minimizing
movement of either energy with a large time step (each MMS step is then almost the minimisation of
the energy itself), every step solved by Gauss-Newton on the jets:

- ``ritz``:          E(u) = int 1/2 |grad u|^2 - f u + beta/2 int_boundary u^2     (jets: u, grad u)
- ``least-squares``: E(u) = 1/2 int (Lap u + f)^2 + beta/2 int_boundary u^2          (jets: u, Lap u)

Prints the L2 error against the solution on a 100 x 100 test grid, Gauss-Newton iterations and wall
time per iteration. docs/meshfree.md lists the numbers of a full run beside the published
natural-gradient result for this setting.

    python examples/poisson_2d.py                        # least squares, 1 step x 60 GN iterations
    python examples/poisson_2d.py --energy ritz --penalty 1000
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mms_manifolds import GaussNewton, MinimizingMovement
from mms_manifolds.meshfree import (
    JetMetric,
    JetParametrization,
    PoissonLeastSquares,
    RitzEnergy,
    box_boundary_grid,
    box_interior_grid,
)


def source(points: torch.Tensor) -> torch.Tensor:
    return 2 * math.pi**2 * torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])


def solution(points: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", choices=("least-squares", "ritz"), default="least-squares")
    parser.add_argument("--steps", type=int, default=1, help="MMS steps")
    parser.add_argument("--iterations", type=int, default=60, help="Gauss-Newton iterations per MMS step")
    parser.add_argument("--tau", type=float, default=1e6, help="MMS time step")
    parser.add_argument("--penalty", type=float, default=1.0, help="boundary penalty beta")
    parser.add_argument("--damping", type=float, default=1e-3, help="initial relative Levenberg-Marquardt damping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 keeps torch's default)")
    parser.add_argument(
        "--globalization",
        choices=("auto", "line-search", "levenberg-marquardt"),
        default="auto",
        help="Gauss-Newton rule",
    )
    arguments = parser.parse_args()
    if arguments.threads > 0:
        torch.set_num_threads(arguments.threads)

    torch.manual_seed(arguments.seed)
    double = {"dtype": torch.float64}
    network = torch.nn.Sequential(torch.nn.Linear(2, 32, **double), torch.nn.Tanh(), torch.nn.Linear(32, 1, **double))
    inside = ("value", "gradient") if arguments.energy == "ritz" else ("value", "laplacian")
    node_sets = {"interior": box_interior_grid(28, 2, inside), "boundary": box_boundary_grid(29)}
    jets = JetParametrization(network, node_sets)
    if arguments.energy == "ritz":
        energy = RitzEnergy(jets, source, boundary="boundary", penalty=arguments.penalty)
    else:
        energy = PoissonLeastSquares(jets, source, boundary="boundary", penalty=arguments.penalty)
    metric = JetMetric(jets, value={"interior": 1.0})  # the L2 flow; semi-definite on the jet space
    flow = MinimizingMovement(jets, energy, metric, tau=arguments.tau)
    solver = GaussNewton(
        max_iterations=arguments.iterations, initial_damping=arguments.damping, globalization=arguments.globalization
    )

    start = time.perf_counter()
    result = flow.run(jets.initial_point(), steps=arguments.steps, solver=solver)
    wall = time.perf_counter() - start

    test_points = box_interior_grid(100, 2).points
    jets.write_to_module(result.thetas[-1])
    with torch.no_grad():
        error = network(test_points).squeeze(-1) - solution(test_points)
    l2_error = float(error.square().mean().sqrt())
    iterations = int(result.inner_iterations.sum())
    print(
        f"energy: {arguments.energy}, penalty {arguments.penalty}, {jets.num_parameters} parameters, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    print(f"L2 error {l2_error:.3e} after {iterations} Gauss-Newton iterations ({arguments.steps} MMS steps)")
    print(f"wall time {wall:.2f} s, {wall / max(iterations, 1):.3f} s per iteration")
    print(f"final energy {result.energy[-1]:.8e}, tangential residual {result.residual_tangential[-1]:.3e}")


if __name__ == "__main__":
    main()
