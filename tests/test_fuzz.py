"""Input fuzzing of the public API with hypothesis.

Every generated call either succeeds with finite results or raises ``ValueError``/``TypeError`` from
our own code (the innermost frame is in ``mms_manifolds`` or ``adapters``, never deep inside torch,
pymanopt or geoopt) with a message naming the argument. ``MMS_FUZZ_EXAMPLES`` sets the examples per
test (default 60, derandomized); outcome counts are written to the file named by ``MMS_FUZZ_REPORT``
when it is set (docs/reliability.md records one such run).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mms_manifolds import (
    LBFGS,
    SGD,
    Adam,
    DirichletEnergy,
    GaussNewton,
    GinzburgLandau,
    IncrementManifold,
    L2Metric,
    L2Regression,
    MatrixMetric,
    MinimizingMovement,
    MMSSubproblem,
    RiemannianGradientDescent,
    SobolevMetric,
    TorchParametrization,
    TrajectoryBudget,
    exact_trajectory,
)
from mms_manifolds.adapters import GeooptIncrementManifold, GeooptSolver, PymanoptIncrementManifold

from cases import mlp

OUTCOMES: Counter = Counter()
EXAMPLES = int(os.environ.get("MMS_FUZZ_EXAMPLES", "60"))  # per test; docs/reliability.md used 600
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
OURS = (f"{os.sep}mms_manifolds{os.sep}", f"{os.sep}adapters{os.sep}")

NODES = 10
_NET = mlp((1, 3, 1), seed=0)
_X = torch.linspace(-1.0, 1.0, NODES, dtype=torch.float64).unsqueeze(-1)
_PHI = TorchParametrization(_NET, _X)
_METRIC = L2Metric(torch.full((NODES,), 0.2, dtype=torch.float64))
_MANIFOLD = IncrementManifold(_PHI, _METRIC)
_THETA = _PHI.initial_point()
_P = _PHI.num_parameters
_ENERGY = L2Regression(_X.abs(), _METRIC)
_FLOW = MinimizingMovement(_PHI, _ENERGY, _METRIC, 0.2)
_PYMANOPT = PymanoptIncrementManifold(_MANIFOLD)
_GEOOPT = GeooptIncrementManifold(_MANIFOLD)
_FLOW_REFERENCE = exact_trajectory(_ENERGY, _METRIC, _PHI.value(_THETA), 0.2, 1)  # (2, N, 1): the exact MMS iterates


def _raised_by_us(error: BaseException) -> bool:
    frame = error.__traceback__
    last = None
    while frame is not None:
        last = frame
        frame = frame.tb_next
    return last is not None and any(part in last.tb_frame.f_code.co_filename for part in OURS)


def exercise(target: str, call, names: tuple[str, ...]) -> None:
    """Run ``call``; count the outcome; fail on anything but a finite result or a clear error of ours."""
    try:
        value = call()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert _raised_by_us(error), f"{target}: {type(error).__name__} from outside our code: {message}"
        assert any(name in message for name in names), f"{target}: message names no argument of {names}: {message}"
        OUTCOMES[f"{target}: {type(error).__name__}"] += 1
        return
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, torch.Tensor):
            assert bool(torch.isfinite(item).all()), f"{target}: silent non-finite result"
        elif isinstance(item, (float, np.ndarray)):
            assert np.all(np.isfinite(item)), f"{target}: silent non-finite result"
    OUTCOMES[f"{target}: ok"] += 1


_SPECIAL = st.sampled_from([0.0, -1.0, 1.0, 1e308, -1e-300, math.nan, math.inf, -math.inf])
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), _SPECIAL)


@st.composite
def tensors(draw, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor that is often almost right: the expected shape with a wrong dtype, device or values."""
    if like is not None and draw(st.booleans()):
        shape = tuple(like.shape)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 12), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from([torch.float64, torch.float64, torch.float32, torch.int64, torch.complex128]))
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.one_of(st.floats(-10, 10, width=64), _SPECIAL), min_size=size, max_size=size))
    tensor = torch.tensor(values, dtype=torch.float64).reshape(shape)
    if dtype == torch.int64:
        tensor = torch.nan_to_num(tensor).clamp(-100, 100)
    tensor = tensor.to(dtype)
    if draw(st.integers(0, 9)) == 0:
        tensor = tensor.to("meta")
    return tensor


def _arrays(like: np.ndarray):
    return tensors(torch.from_numpy(like)).map(lambda t: t.numpy() if t.device.type != "meta" else np.zeros(0))


_SCALARS = st.one_of(_FLOATS, st.integers(-5, 5), st.none(), st.text(max_size=3), st.booleans())


def valid_calls(*cases: dict):
    """Add the valid calls ``cases`` as explicit examples: every target must accept a call it should accept
    (:func:`test_every_fuzzed_target_accepted_some_calls`), so an API that refuses everything fails."""

    def decorate(test):
        for case in cases:
            test = example(**case)(test)
        return test

    return decorate


_TANGENT = torch.full((_P,), 0.1, dtype=torch.float64)


# ------------------------------------------------------------------------------------- the core


@FUZZ
@given(
    method=st.sampled_from(["egrad2rgrad", "inner", "retract", "project", "transport", "rhess", "metric_matvec"]),
    theta=tensors(_THETA),
    vector=tensors(_THETA),
    ambient=tensors(_PHI.value(_THETA)),
    use_valid_theta=st.booleans(),
)
@valid_calls(
    *(
        {"method": m, "theta": _THETA, "vector": _TANGENT, "ambient": _PHI.value(_THETA), "use_valid_theta": True}
        for m in ("egrad2rgrad", "inner", "retract", "project", "transport", "rhess", "metric_matvec")
    )
)
def test_manifold_methods(method, theta, vector, ambient, use_valid_theta):
    theta = _THETA if use_valid_theta else theta
    calls = {
        "egrad2rgrad": lambda: _MANIFOLD.egrad2rgrad(theta, vector),
        "inner": lambda: _MANIFOLD.inner(theta, vector, vector),
        "retract": lambda: _MANIFOLD.retract(theta, vector),
        "project": lambda: _MANIFOLD.project(theta, ambient),
        "transport": lambda: _MANIFOLD.transport(theta, _THETA, vector),
        "rhess": lambda: _MANIFOLD.rhess(theta, vector, vector, vector),
        "metric_matvec": lambda: _MANIFOLD.metric_matvec(theta, vector),
    }
    exercise(f"IncrementManifold.{method}", calls[method], ("theta", "xi", "egrad", "ehess_xi", "v", "g"))


@FUZZ
@given(damping=st.one_of(_SCALARS, st.just("auto"), st.just("more")))
def test_manifold_construction(damping):
    exercise("IncrementManifold()", lambda: IncrementManifold(_PHI, _METRIC, damping=damping).damping, ("damping",))


@FUZZ
@given(anchor=tensors(_PHI.value(_THETA)), tau=_SCALARS)
@valid_calls({"anchor": _PHI.value(_THETA), "tau": 0.2})
def test_step_problem_construction(anchor, tau):
    exercise(
        "MMSSubproblem()",
        lambda: MMSSubproblem(_MANIFOLD, _ENERGY, tau, anchor).cost(_THETA),
        ("anchor", "tau"),
    )


@FUZZ
@given(weights=tensors(torch.ones(NODES, dtype=torch.float64)), matrix=tensors(torch.eye(4, dtype=torch.float64)), alpha=_SCALARS, which=st.integers(0, 2))
@valid_calls(*({"weights": torch.ones(NODES, dtype=torch.float64), "matrix": torch.eye(4, dtype=torch.float64), "alpha": 0.5, "which": w} for w in range(3)))
def test_metric_construction(weights, matrix, alpha, which):
    builds = [
        lambda: L2Metric(weights).weights,
        lambda: MatrixMetric(matrix).matrix,
        lambda: SobolevMetric(weights, torch.eye(NODES, dtype=torch.float64), alpha).matrix,
    ]
    exercise(
        ["L2Metric", "MatrixMetric", "SobolevMetric"][which], builds[which], ("weights", "matrix", "alpha", "stiffness")
    )


@FUZZ
@given(nodes=tensors(_X))
def test_parametrization_construction(nodes):
    exercise("TorchParametrization()", lambda: TorchParametrization(_NET, nodes).initial_point(), ("nodes",))


@FUZZ
@given(target=tensors(_X), stiffness=tensors(torch.eye(NODES, dtype=torch.float64)), epsilon=_SCALARS, which=st.integers(0, 2))
@valid_calls(*({"target": _X.abs(), "stiffness": torch.eye(NODES, dtype=torch.float64), "epsilon": 0.1, "which": w} for w in range(3)))
def test_energy_construction(target, stiffness, epsilon, which):
    builds = [  # construction only: an energy may honestly overflow at extreme data (the driver stops on it)
        lambda: L2Regression(target, _METRIC).target,
        lambda: DirichletEnergy(stiffness).stiffness,
        lambda: GinzburgLandau(epsilon, torch.eye(NODES, dtype=torch.float64), torch.ones(NODES, dtype=torch.float64)).stiffness,
    ]
    names = ("target", "stiffness", "epsilon")
    exercise(["L2Regression", "DirichletEnergy", "GinzburgLandau"][which], builds[which], names)


@FUZZ
@given(tau=_SCALARS)
def test_driver_time_step(tau):
    exercise("MinimizingMovement(tau)", lambda: MinimizingMovement(_PHI, _ENERGY, _METRIC, tau).tau, ("tau",))


@FUZZ
@given(
    steps=_SCALARS,
    theta0=tensors(_THETA),
    reference=tensors(torch.zeros(2, NODES, 1, dtype=torch.float64)),
    tolerance=_SCALARS,
    use_reference=st.booleans(),
)
@valid_calls(
    {"steps": 1, "theta0": _THETA, "reference": None, "tolerance": None, "use_reference": False},
    {"steps": 1, "theta0": _THETA, "reference": _FLOW_REFERENCE, "tolerance": 1e-2, "use_reference": True},
)
def test_driver_run(steps, theta0, reference, tolerance, use_reference):
    def call():
        budget = TrajectoryBudget(tolerance) if tolerance is not None else None
        result = _FLOW.run(
            theta0, steps, GaussNewton(max_iterations=1), budget=budget, reference=reference if use_reference else None
        )
        if not result.certified:  # a withdrawn bound is nan by design (e_k > B_k against a foreign reference), and said
            assert "certification_withdrawn" in result.metadata, result.metadata.get("notes")
            return torch.as_tensor(result.energy, dtype=torch.float64)
        return torch.as_tensor(result.tracking_bound, dtype=torch.float64)

    exercise("MinimizingMovement.run", call, ("steps", "theta0", "reference", "tolerance"))


@FUZZ
@given(first=_SCALARS, second=_SCALARS, which=st.integers(0, 4))
@valid_calls(
    *(
        {"first": f, "second": g, "which": w}
        for w, (f, g) in enumerate([(2, 0.1), (0.1, 2), (0.1, 0.5), (2, 2), (0.1, 2)])
    )
)
def test_solver_construction(first, second, which):
    builds = [
        lambda: GaussNewton(max_iterations=first, initial_damping=second).max_iterations,
        lambda: Adam(lr=first, max_iterations=second).lr,
        lambda: SGD(lr=first, momentum=second).lr,
        lambda: LBFGS(history_size=first, max_iterations=second).history_size,
        lambda: RiemannianGradientDescent(step_size=first, max_iterations=second).max_iterations,
    ]
    names = ("max_iterations", "initial_damping", "lr", "momentum", "history_size", "step_size")
    exercise(
        ["GaussNewton", "Adam", "SGD", "LBFGS", "RiemannianGradientDescent"][which],
        lambda: float(builds[which]()),
        names,
    )


# ------------------------------------------------------------------------------------- adapters


@FUZZ
@given(
    method=st.sampled_from(["inner_product", "retraction", "euclidean_to_riemannian_gradient", "transport", "dist"]),
    point=_arrays(_THETA.numpy()),
    vector=_arrays(_THETA.numpy()),
)
@valid_calls(
    *(
        {"method": m, "point": _THETA.numpy(), "vector": _TANGENT.numpy()}
        for m in ("inner_product", "retraction", "euclidean_to_riemannian_gradient", "transport", "dist")
    )
)
def test_pymanopt_boundary(method, point, vector):
    calls = {
        "inner_product": lambda: _PYMANOPT.inner_product(point, vector, vector),
        "retraction": lambda: _PYMANOPT.retraction(point, vector),
        "euclidean_to_riemannian_gradient": lambda: _PYMANOPT.euclidean_to_riemannian_gradient(point, vector),
        "transport": lambda: _PYMANOPT.transport(point, point, vector),
        "dist": lambda: _PYMANOPT.dist(point, vector),
    }
    names = ("point", "tangent_vector", "euclidean_gradient", "point_a", "point_b", "theta")
    exercise(f"PymanoptIncrementManifold.{method}", calls[method], names)


@FUZZ
@given(method=st.sampled_from(["egrad2rgrad", "inner", "retr", "transp", "dist"]), x=tensors(_THETA), u=tensors(_THETA))
@valid_calls(*({"method": m, "x": _THETA, "u": _TANGENT} for m in ("egrad2rgrad", "inner", "retr", "transp", "dist")))
def test_geoopt_boundary(method, x, u):
    calls = {
        "egrad2rgrad": lambda: _GEOOPT.egrad2rgrad(x, u),
        "inner": lambda: _GEOOPT.inner(x, u),
        "retr": lambda: _GEOOPT.retr(x, u),
        "transp": lambda: _GEOOPT.transp(x, x, u),
        "dist": lambda: _GEOOPT.dist(x, u),
    }
    exercise(f"GeooptIncrementManifold.{method}", calls[method], ("x", "u", "y", "v", "egrad", "theta"))


@FUZZ
@given(options=st.dictionaries(st.sampled_from(["lr", "momentum"]), _SCALARS, max_size=2), iterations=_SCALARS)
@example(options={"lr": 0.1, "momentum": 0.5}, iterations=3)  # a valid call: random draws hold about one in 60
def test_geoopt_solver_options(options, iterations):
    exercise(
        "GeooptSolver()",
        lambda: float(GeooptSolver(geoopt.optim.RiemannianSGD, max_iterations=iterations, **options).max_iterations),
        ("max_iterations", "lr", "momentum"),
    )


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    target = os.environ.get("MMS_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps(dict(sorted(OUTCOMES.items())), indent=1))


def test_every_fuzzed_target_accepted_some_calls():
    """Runs last: an API that refused every generated call (valid ones included) would pass each test above."""
    targets = {outcome.rsplit(": ", 1)[0] for outcome in OUTCOMES}
    if not targets:
        pytest.skip("no fuzz test ran before this one (run the whole file)")
    refused_everything = sorted(target for target in targets if OUTCOMES[f"{target}: ok"] == 0)
    assert refused_everything == []
