"""Cahn–Hilliard: the H^-1 gradient flow of Ginzburg–Landau, with a network of fixed mass.

E(u) = int eps^2/2 |u'|^2 + (1 - u^2)^2 / 4 on the periodic interval [0, 1), 64 nodes, eps = 0.1,
tau = 0.005, the H^-1 metric on zero-mean functions (HMinusOneMetric), a 2-12-12-1 tanh network of
(cos 2 pi x, sin 2 pi x) held at mass 0.1 (ConstrainedParametrization.fixed_mass), Gauss-Newton with
15 iterations per step. The exact MMS iterates (the implicit Euler steps of
u_t = Delta_h(-eps^2 Delta_h u + u^3 - u)) come from the energy's prox restricted to the mass-0.1
functions, so they conserve mass to rounding, like the network. tests/test_constrained.py checks
them against an independent finite-difference Newton solve. docs/constrained_metrics.md derives it.

    python examples/cahn_hilliard.py [--steps 10]
"""

import argparse

import torch

from mms_manifolds import GaussNewton
from mms_manifolds.problems import cahn_hilliard_flow

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    flow, theta0 = cahn_hilliard_flow()
    weights = flow.metric.weights
    print(f"lambda = {flow.convexity:.4g} in H^-1 (tau < {1 / abs(flow.convexity):.3g}); tau = {flow.tau}")
    result = flow.run(theta0, arguments.steps, GaussNewton(max_iterations=15))
    print(result.table())
    masses = [float(weights @ flow.parametrization.value(theta).squeeze(-1)) for theta in result.thetas]
    references = [float(weights @ state.squeeze(-1)) for state in result.reference_states]
    print(f"network mass: max |m_k - 0.1| = {max(abs(m - 0.1) for m in masses):.2e}")
    print(f"exact MMS mass: max |m_k - 0.1| = {max(abs(m - 0.1) for m in references):.2e}")
