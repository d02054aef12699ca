"""Shared state: one parametrization or one network in several threads, modules a run must not change, random maps."""

import threading

import pytest
import torch

from mms_manifolds import GaussNewton, L2Metric, L2Regression, MinimizingMovement, TorchParametrization
from mms_manifolds.grids import trapezoid_weights

COUNT = 64
X = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1)


def _net(seed: int = 0, width: int = 32) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, width, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(width, 1, dtype=torch.float64)).double()


def _in_threads(work, count: int = 4) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_one_parametrization_in_several_threads_gives_the_single_threaded_numbers():
    phi = TorchParametrization(_net(), X)
    generator = torch.Generator().manual_seed(1)
    thetas = [torch.randn(phi.num_parameters, generator=generator, dtype=torch.float64) for _ in range(4)]
    tangent = torch.randn(phi.num_parameters, generator=generator, dtype=torch.float64)
    expected = [(phi.value(theta), phi.jvp(theta, tangent), phi.vjp(theta, phi.value(theta))) for theta in thetas]

    def work(index: int) -> int:
        wrong = 0
        for _ in range(60):
            got = (phi.value(thetas[index]), phi.jvp(thetas[index], tangent), phi.vjp(thetas[index], expected[index][0]))
            wrong += sum(not torch.equal(a, b) for a, b in zip(got, expected[index]))
        return wrong

    assert _in_threads(work) == [0, 0, 0, 0]


def test_two_flows_on_one_network_in_two_threads_match_the_sequential_runs():
    net = _net()
    before = [parameter.detach().clone() for parameter in net.parameters()]
    metric = L2Metric(trapezoid_weights(COUNT, -1.0, 1.0))
    targets = [X.abs(), torch.sin(3 * X)]
    flows = [
        MinimizingMovement(TorchParametrization(net, X), L2Regression(target, metric), metric, 0.2) for target in targets
    ]
    theta0 = flows[0].parametrization.initial_point()
    sequential = [flow.run(theta0, 3, GaussNewton(max_iterations=3)) for flow in flows]
    threaded = _in_threads(lambda index: flows[index].run(theta0, 3, GaussNewton(max_iterations=3)), count=2)
    for alone, together in zip(sequential, threaded):
        assert all(torch.equal(a, b) for a, b in zip(alone.thetas, together.thetas))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the user's module is untouched


class Counting(torch.nn.Module):
    """A forward that updates a buffer in place: evaluating it changes the user's module."""

    def __init__(self):
        super().__init__()
        self.net = _net()
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

    def forward(self, points):
        self.calls += 1
        return self.net(points)


class Noisy(torch.nn.Module):
    """A forward that reads the global random state: no function of its parameters."""

    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, points):
        return self.net(points) + 1e-3 * torch.randn_like(points)


def test_a_forward_that_updates_a_buffer_is_refused_and_the_module_restored():
    module = Counting()
    with pytest.raises(ValueError, match=r"changes the module's buffer 'calls'"):
        TorchParametrization(module, X)
    assert float(module.calls) == 0.0


def test_a_forward_that_changes_a_parameter_in_place_is_refused_and_the_module_restored():
    class Drifting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.frozen = _net(), _net(1)
            self.frozen.requires_grad_(False)

        def forward(self, points):
            with torch.no_grad():
                self.frozen[0].weight.mul_(1.01)  # a shared, frozen submodule drifts at every call
            return self.net(points) + self.frozen(points)

    module = Drifting()
    before = module.frozen[0].weight.clone()
    with pytest.raises(ValueError, match=r"changes the module's .*frozen.0.weight"):
        TorchParametrization(module, X)
    assert torch.equal(module.frozen[0].weight, before)


def test_a_forward_that_reads_the_global_random_state_is_refused_and_the_state_kept():
    module = Noisy()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="random state"):
        TorchParametrization(module, X)
    assert torch.equal(torch.get_rng_state(), state)
