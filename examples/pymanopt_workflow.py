"""An existing pymanopt workflow gains the increment manifold in a few lines: one MMS step with TrustRegions."""

import torch
from pymanopt.optimizers import TrustRegions

from mms_manifolds import L2Metric, L2Regression, MinimizingMovement, TorchParametrization
from mms_manifolds.adapters import PymanoptIncrementManifold, make_problem
from mms_manifolds.grids import trapezoid_weights

torch.manual_seed(0)
x = torch.linspace(-1, 1, 64, dtype=torch.float64).unsqueeze(-1)
net = torch.nn.Sequential(torch.nn.Linear(1, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1)).double()
metric = L2Metric(trapezoid_weights(64, -1, 1))
flow = MinimizingMovement(TorchParametrization(net, x), L2Regression(x.abs(), metric), metric, tau=0.2)

theta0 = flow.parametrization.initial_point()
step = flow.subproblem(theta0)
manifold = PymanoptIncrementManifold(step.manifold)
result = TrustRegions(max_iterations=10, verbosity=1).run(make_problem(step, manifold), initial_point=theta0.numpy())
print("residual split (total, tangential, normal):", step.residual(torch.from_numpy(result.point)))
