"""An nn.Module as one flat geoopt ManifoldParameter: Riemannian (Gauss-Newton-preconditioned) SGD."""

import geoopt
import torch

from mms_manifolds import L2Metric
from mms_manifolds.adapters import network_parameter
from mms_manifolds.grids import trapezoid_weights

torch.manual_seed(0)
x = torch.linspace(-1, 1, 64, dtype=torch.float64).unsqueeze(-1)
net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
network = network_parameter(net, x, L2Metric(trapezoid_weights(64, -1, 1)))
optimizer = geoopt.optim.RiemannianSGD([network.parameter], lr=0.5)
weights = network.manifold.core.metric.weights.unsqueeze(-1)
for iteration in range(20):
    optimizer.zero_grad()
    loss = 0.5 * (weights * (network.forward() - torch.sin(3 * x)) ** 2).sum()
    loss.backward()
    optimizer.step()
    if iteration % 5 == 0:
        print(iteration, float(loss.detach()))
network.write_back()  # the module now holds the trained parameters
