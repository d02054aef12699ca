r"""Run the benchmark's default regression step on CUDA when there is a GPU (else on the CPU) and print its ratios.

    python examples/gpu_check.py              # p about 1e3, N = 1e3
    python examples/gpu_check.py --nodes 100000 --parameters 10000

Everything follows the device of the network: the nodes, the metric weights and every tensor the
geometry makes. Printed: the device; time of one Gauss-Newton iteration and one Adam iteration and
their ratio; the three solve modes' times and their agreement with the dense solve; and a 5-step
MMS run with its tracking bound checked against the exact trajectory error. CUDA timings
synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mms_manifolds import GaussNewton, L2Metric, L2Regression, MinimizingMovement, TorchParametrization
from mms_manifolds.linalg import ConjugateGradientSolve, DenseSolve, WoodburySolve


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parameters", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1000)
    arguments = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    options = {"dtype": torch.float64, "device": device}
    torch.manual_seed(0)
    width = max(2, round(-2 + math.sqrt(3 + arguments.parameters)))
    network = torch.nn.Sequential(
        torch.nn.Linear(1, width, **options),
        torch.nn.Tanh(),
        torch.nn.Linear(width, width, **options),
        torch.nn.Tanh(),
        torch.nn.Linear(width, 1, **options),
    )
    x = torch.linspace(-1, 1, arguments.nodes, **options).unsqueeze(-1)
    metric = L2Metric(torch.full((arguments.nodes,), 2 / arguments.nodes, **options))
    energy = L2Regression(x.abs() + 0.3 * torch.sin(5 * x), metric)
    parametrization = TorchParametrization(network, x)
    flow = MinimizingMovement(parametrization, energy, metric, tau=0.2)
    theta = parametrization.initial_point()
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no CUDA'}), "
        f"p = {parametrization.num_parameters}, N = {arguments.nodes}, auto mode {flow.manifold.solve_mode_name()}"
    )

    subproblem = flow.subproblem(theta)
    GaussNewton(max_iterations=1).solve(subproblem, theta)  # warm-up
    subproblem = flow.subproblem(theta)
    start = clock(device)
    GaussNewton(max_iterations=1).solve(subproblem, theta)
    gauss_newton = clock(device) - start

    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    weights, target, anchor = metric.weights.unsqueeze(-1), energy.target, subproblem.anchor

    def adam_iteration() -> None:
        optimizer.zero_grad()
        u = network(x)
        loss = 0.5 * (weights * (u - target) ** 2).sum() + (weights * (u - anchor) ** 2).sum() / (2 * flow.tau)
        loss.backward()
        optimizer.step()

    adam_iteration()
    start = clock(device)
    for _ in range(10):
        adam_iteration()
    adam = (clock(device) - start) / 10
    print(f"one GN iteration {gauss_newton:.4f} s, one Adam iteration {adam:.5f} s, ratio {gauss_newton / adam:.1f}")

    egrad = subproblem.euclidean_gradient(theta)
    solutions = {}
    for name, mode in [("dense", DenseSolve()), ("woodbury", WoodburySolve()), ("cg", ConjugateGradientSolve())]:
        manifold = flow.manifold.__class__(parametrization, metric, damping=flow.manifold.damping, solve_mode=mode)
        start = clock(device)
        solutions[name] = manifold.solve_metric(theta, egrad)
        print(f"  {name:8s} solve {clock(device) - start:.4f} s", end="")
        difference = (solutions[name] - solutions["dense"]).norm() / solutions["dense"].norm()
        print(f", relative difference to dense {float(difference):.2e}")

    result = flow.run(theta, steps=5, solver=GaussNewton(max_iterations=3))
    holds = bool((result.trajectory_error <= result.tracking_bound + 1e-12).all())
    print(f"5 MMS steps: max error {result.trajectory_error.max():.3e}, bound holds: {holds}")


if __name__ == "__main__":
    main()
