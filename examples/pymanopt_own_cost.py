"""Writing the cost yourself with pymanopt's autodiff backends: @pymanopt.function.pytorch and .autograd."""

import autograd.numpy as anp
import numpy as np
import pymanopt
import torch
from pymanopt.manifolds import Euclidean, Product
from pymanopt.optimizers import ConjugateGradient, TrustRegions

from mms_manifolds import IncrementManifold, L2Metric, TorchParametrization
from mms_manifolds.adapters import PymanoptIncrementManifold
from mms_manifolds.grids import trapezoid_weights

torch.manual_seed(0)
x = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(-1)
net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
metric = L2Metric(trapezoid_weights(32, -1, 1))
network = PymanoptIncrementManifold(IncrementManifold(TorchParametrization(net, x), metric))
weights, target = metric.weights, x.abs() + 1.5
theta0 = network.core.parametrization.initial_point().numpy()

# 1. pytorch backend, jointly with a scalar offset on a product manifold.
product = Product([network, Euclidean(1)])


@pymanopt.function.pytorch(product)
def cost(theta, offset):
    return 0.5 * (weights[:, None] * (network.function_values(theta) + offset - target) ** 2).sum()


result = ConjugateGradient(max_iterations=100, verbosity=0).run(
    pymanopt.Problem(product, cost), initial_point=[theta0, np.zeros(1)]
)
print("pytorch backend, product manifold: cost", result.cost, "offset", result.point[1])

# 2. autograd backend on the increment manifold alone (Hessians by reverse-over-reverse autograd).
target_np, weights_np = target.numpy(), weights.numpy()


@pymanopt.function.autograd(network)
def autograd_cost(theta):
    return 0.5 * anp.sum(weights_np[:, None] * (network.function_values(theta) - target_np) ** 2)


result = TrustRegions(max_iterations=10, verbosity=0).run(
    pymanopt.Problem(network, autograd_cost), initial_point=theta0
)
print("autograd backend, TrustRegions: cost", result.cost)
