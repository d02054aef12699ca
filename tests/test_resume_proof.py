"""Resume proves it continues the same problem; every combination of reference and resampling writes files it reads.

Each variant below leaves the run's fingerprint unchanged (asserted), so only the recomputation of the
checkpoint's last step (``mms_manifolds.resume_proof``) can tell the problems apart.
"""

import itertools

import numpy as np
import pytest
import torch

from mms_manifolds import (
    CallableEnergy,
    GaussNewton,
    L2Metric,
    L2Regression,
    MinimizingMovement,
    MMSResult,
    TorchParametrization,
)
from mms_manifolds.energies import Energy
from mms_manifolds.grids import trapezoid_weights

COUNT = 16
X = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1)
WEIGHTS = trapezoid_weights(COUNT, -1.0, 1.0)
TARGET_OF_THE_MODULE = X.abs()  # a module global an energy reads


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1, 4, dtype=torch.float64), torch.nn.Tanh(), torch.nn.Linear(4, 1, dtype=torch.float64)).double()


class Lifted(torch.nn.Module):
    """``u = net(x) + lift * x``: ``lift`` is a plain float, absent from the module's repr."""

    def __init__(self, lift: float):
        super().__init__()
        self.net, self.lift = _net(), lift

    def forward(self, points):
        return self.net(points) + self.lift * points


def _forward_class(power: int) -> type:
    class Edited(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, points):
            return self.net(points) * (1 + points**power)

    Edited.__qualname__ = "Edited"  # the same name, module and repr: only the forward's code differs
    return Edited


class Listed(torch.nn.Module):
    """A weight kept in a plain Python list: neither a parameter nor a buffer."""

    def __init__(self, scale: float):
        super().__init__()
        self.net, self.extra = _net(), [torch.tensor(scale, dtype=torch.float64)]

    def forward(self, points):
        return self.net(points) * self.extra[0]


def _hooked(factor: float) -> torch.nn.Module:
    net = _net()
    net.register_forward_hook(lambda module, inputs, output: output * factor)
    return net


def _energy_class(shift: float) -> type:
    class Edited(Energy):
        def __init__(self, target, metric):
            self.target, self.metric = target, metric

        def value(self, u):
            return 0.5 * self.metric.norm(u - self.target - shift) ** 2

        def gradient(self, u):
            return self.metric.apply(u - self.target - shift)

        def convexity(self, metric):
            return 1.0

    Edited.__qualname__ = "EditedEnergy"
    return Edited


class Configured(Energy):
    """An energy whose target sits deep in a config, deeper than any digest of objects descends."""

    def __init__(self, target, metric, depth: int = 12):
        config = target
        for level in range(depth):
            config = {f"level{level}": config}
        self.config, self.metric, self.depth = config, metric, depth

    def _target(self):
        config = self.config
        for level in reversed(range(self.depth)):
            config = config[f"level{level}"]
        return config

    def value(self, u):
        return 0.5 * self.metric.norm(u - self._target()) ** 2

    def gradient(self, u):
        return self.metric.apply(u - self._target())

    def convexity(self, metric):
        return 1.0


def _global_energy(metric):
    def value(u):
        return 0.5 * metric.norm(u - TARGET_OF_THE_MODULE) ** 2

    return CallableEnergy(value, convexity=1.0)


def _default_argument_energy(metric, target):
    return CallableEnergy(lambda u, g=target: 0.5 * metric.norm(u - g) ** 2, convexity=1.0)


def _flow(module=None, energy=None, nodes=X) -> MinimizingMovement:
    metric = L2Metric(WEIGHTS)
    module = _net() if module is None else module
    energy = L2Regression(nodes.abs(), metric) if energy is None else energy(metric)
    return MinimizingMovement(TorchParametrization(module, nodes), energy, metric, 0.2, damping=1e-6)


def _nodes_resample(shift: float):
    def resample(step):
        generator = torch.Generator().manual_seed(step)
        nodes = (torch.rand(COUNT, 1, generator=generator, dtype=torch.float64) * 2 - 1) * (1 - shift)
        metric = L2Metric(torch.full((COUNT,), 2.0 / COUNT, dtype=torch.float64))
        return TorchParametrization(_net(), nodes), L2Regression(nodes.abs(), metric), metric

    return resample


def _reference(flow: MinimizingMovement, steps: int, shift: float = 0.0) -> torch.Tensor:
    r"""The exact MMS of :math:`E = \|u - |x|\|_M^2/2`: :math:`v_{k+1} = (v_k + \tau|x|)/(1 + \tau)`, plus ``shift``."""
    states = [flow.parametrization.value(flow.parametrization.initial_point())]
    for _ in range(steps):
        states.append((states[-1] + flow.tau * X.abs()) / (1 + flow.tau) + shift)
    return torch.stack(states)


SHIFTED = X.abs() + 1e-6
NODES = "network's node values"

VARIANTS = {
    "a float attribute of the module": (lambda: _flow(Lifted(0.5)), lambda: _flow(Lifted(0.5000001)), NODES),
    "the forward edited": (lambda: _flow(_forward_class(2)()), lambda: _flow(_forward_class(3)()), NODES),
    "a forward hook replaced": (lambda: _flow(_hooked(2.0)), lambda: _flow(_hooked(3.0)), NODES),
    "a weight in a plain list": (lambda: _flow(Listed(1.0)), lambda: _flow(Listed(1.5)), NODES),
    "energy data in a default argument": (
        lambda: _flow(energy=lambda m: _default_argument_energy(m, X.abs())),
        lambda: _flow(energy=lambda m: _default_argument_energy(m, SHIFTED)),
        "energy",
    ),
    "energy data in a nested config": (
        lambda: _flow(energy=lambda m: Configured(X.abs(), m)),
        lambda: _flow(energy=lambda m: Configured(SHIFTED, m)),
        "energy",
    ),
    "an Energy subclass whose value was edited": (
        lambda: _flow(energy=lambda m: _energy_class(0.0)(X.abs(), m)),
        lambda: _flow(energy=lambda m: _energy_class(1e-6)(X.abs(), m)),
        "energy",
    ),
}


def _fingerprint(flow: MinimizingMovement, theta0, **options) -> dict:
    return flow.run(theta0, 1, GaussNewton(max_iterations=2), **options).metadata["fingerprint"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_change_the_fingerprint_cannot_see_is_refused_naming_what_differs(tmp_path, variant):
    build_first, build_second, what = VARIANTS[variant]
    first, second = build_first(), build_second()
    theta0 = first.parametrization.initial_point()
    assert _fingerprint(first, theta0) == _fingerprint(second, theta0)  # the digest is blind to this change
    path = tmp_path / "run.npz"
    first.run(theta0, 2, GaussNewton(max_iterations=2), checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"cannot be resumed: the {what}"):
        second.run(theta0, 4, GaussNewton(max_iterations=2), checkpoint=path)
    assert path.read_bytes() == before
    assert build_first().run(theta0, 4, GaussNewton(max_iterations=2), checkpoint=path).steps_done == 4


def test_a_module_global_the_energy_reads_is_part_of_the_proof(tmp_path):
    global TARGET_OF_THE_MODULE
    flow = _flow(energy=_global_energy)
    theta0 = flow.parametrization.initial_point()
    path = tmp_path / "run.npz"
    flow.run(theta0, 2, GaussNewton(max_iterations=2), checkpoint=path)
    saved = TARGET_OF_THE_MODULE
    try:
        TARGET_OF_THE_MODULE = saved + 1e-6
        with pytest.raises(ValueError, match="cannot be resumed: the energy"):
            flow.run(theta0, 3, GaussNewton(max_iterations=2), checkpoint=path)
    finally:
        TARGET_OF_THE_MODULE = saved
    assert flow.run(theta0, 3, GaussNewton(max_iterations=2), checkpoint=path).steps_done == 3


def test_a_different_reference_is_refused(tmp_path):
    flow = _flow(energy=lambda m: CallableEnergy(lambda u: 0.5 * m.norm(u - X.abs()) ** 2, convexity=1.0))
    theta0 = flow.parametrization.initial_point()
    path = tmp_path / "run.npz"
    flow.run(theta0, 2, GaussNewton(max_iterations=2), reference=_reference(flow, 2), checkpoint=path)
    with pytest.raises(ValueError, match="reference= differs from the reference states it recorded"):
        flow.run(theta0, 3, GaussNewton(max_iterations=2), reference=_reference(flow, 3, 1e-7), checkpoint=path)
    result = flow.run(theta0, 3, GaussNewton(max_iterations=2), reference=_reference(flow, 3), checkpoint=path)
    assert result.steps_done == 3 and MMSResult.load(path) == result


def test_a_different_resample_function_is_refused(tmp_path):
    flow = _flow()
    theta0 = flow.parametrization.initial_point()
    path = tmp_path / "run.npz"
    flow.run(theta0, 2, GaussNewton(max_iterations=2), resample=_nodes_resample(0.0), checkpoint=path)
    with pytest.raises(ValueError, match="cannot be resumed: the network's node values"):
        flow.run(theta0, 3, GaussNewton(max_iterations=2), resample=_nodes_resample(0.01), checkpoint=path)
    resumed = flow.run(theta0, 3, GaussNewton(max_iterations=2), resample=_nodes_resample(0.0), checkpoint=path)
    uninterrupted = flow.run(theta0, 3, GaussNewton(max_iterations=2), resample=_nodes_resample(0.0))
    assert all(torch.equal(a, b) for a, b in zip(resumed.thetas, uninterrupted.thetas))


# ----------------------------------------------------------------------------------- files the library writes


def _energies(metric):
    return {
        "exact prox": L2Regression(X.abs(), metric),
        "no prox": CallableEnergy(lambda u: 0.5 * metric.norm(u - X.abs()) ** 2, convexity=1.0),
    }


@pytest.mark.parametrize(
    ("energy", "first", "second"), list(itertools.product(["exact prox", "no prox"], ["none", "given"], ["none", "given"]))
)
def test_a_resume_with_another_reference_is_refused_up_front_or_writes_a_valid_file(tmp_path, energy, first, second):
    """Every combination of energy, reference at the start and at the resume: a valid file, or a refusal before writing."""
    flow = _flow(energy=lambda m: _energies(m)[energy])
    theta0 = flow.parametrization.initial_point()
    path = tmp_path / "run.npz"
    options = lambda kind, steps: {"reference": _reference(flow, steps)} if kind == "given" else {}  # noqa: E731
    flow.run(theta0, 2, GaussNewton(max_iterations=2), checkpoint=path, **options(first, 2))
    before = path.read_bytes()
    if first == second:
        result = flow.run(theta0, 3, GaussNewton(max_iterations=2), checkpoint=path, **options(second, 3))
        assert MMSResult.load(path) == result and result.steps_done == 3
        return
    with pytest.raises(ValueError, match="its reference states came from .* this run's from"):
        flow.run(theta0, 3, GaussNewton(max_iterations=2), checkpoint=path, **options(second, 3))
    assert path.read_bytes() == before and MMSResult.load(path).steps_done == 2


@pytest.mark.parametrize("energy", ["exact prox", "no prox"])
def test_resampled_runs_write_results_and_checkpoints_they_read(tmp_path, energy):
    def resample(step):
        parametrization, _, metric = _nodes_resample(0.0)(step)
        return parametrization, _resampled_energy(parametrization, metric, energy), metric

    flow = _flow(energy=lambda m: _energies(m)[energy])
    theta0 = flow.parametrization.initial_point()
    path = tmp_path / "run.npz"
    result = flow.run(theta0, 2, GaussNewton(max_iterations=2), resample=resample, checkpoint=path)
    assert MMSResult.load(path) == result and not result.reference_states
    assert np.isnan(result.trajectory_error).all()
    resumed = flow.run(theta0, 3, GaussNewton(max_iterations=2), resample=resample, checkpoint=path)
    assert MMSResult.load(path) == resumed and MMSResult.load(resumed.save(tmp_path / "copy.npz")) == resumed


def _resampled_energy(parametrization, metric, energy):
    target = parametrization.nodes.abs()
    if energy == "exact prox":
        return L2Regression(target, metric)
    return CallableEnergy(lambda u: 0.5 * metric.norm(u - target) ** 2, convexity=1.0)
