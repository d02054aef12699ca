"""Build the increment manifold of an MLP and take one Riemannian gradient step (the README example)."""

import torch

from mms_manifolds import IncrementManifold, L2Metric, TorchParametrization
from mms_manifolds.grids import trapezoid_weights

torch.manual_seed(0)
x = torch.linspace(-1, 1, 64, dtype=torch.float64).unsqueeze(-1)
net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
manifold = IncrementManifold(TorchParametrization(net, x), L2Metric(trapezoid_weights(64, -1, 1)))

theta = manifold.parametrization.initial_point()
target = torch.sin(3 * x)
residual = manifold.parametrization.value(theta) - target  # f = |phi(theta) - g|_M^2 / 2
egrad = manifold.parametrization.vjp(theta, manifold.metric.apply(residual))
rgrad = manifold.egrad2rgrad(theta, egrad)  # G^{-1} J^T M (phi - g)
theta_next = manifold.exp(theta, -0.5 * rgrad)  # along the geodesic
print(manifold.diagnostics(theta))
print(
    "misfit before/after:",
    float(manifold.metric.norm(residual)),
    float(manifold.metric.norm(manifold.parametrization.value(theta_next) - target)),
)
