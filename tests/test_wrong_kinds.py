"""Every public constructor and entry point, called with wrong kinds of values for each argument in turn.

Each call must raise ``TypeError`` (a wrong kind) or ``ValueError`` (a wrong value) from our own code
(the innermost frame in ``mms_manifolds`` or ``adapters``) with a message naming the argument: never a
bare ``AttributeError`` or a ``TypeError`` from inside torch or numpy, never silent acceptance. The valid
call of each target is run too, so that the table cannot pass by refusing everything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import geoopt
import numpy as np
import pytest
import torch
from pymanopt.optimizers import SteepestDescent

from mms_manifolds import (
    LBFGS,
    SGD,
    Adam,
    CallableEnergy,
    DirichletEnergy,
    GaussNewton,
    GinzburgLandau,
    IncrementManifold,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MatrixMetric,
    MinimizingMovement,
    MMSResult,
    MMSSubproblem,
    QuarticEnergy,
    RiemannianGradientDescent,
    SobolevMetric,
    TorchParametrization,
    TrajectoryBudget,
    exact_trajectory,
)
from mms_manifolds.adapters import GeooptIncrementManifold, GeooptSolver, PymanoptIncrementManifold, PymanoptSolver
from mms_manifolds.grids import grid_2d, stiffness_1d, trapezoid_weights, uniform_nodes

from cases import mlp

OURS = (f"{os.sep}mms_manifolds{os.sep}", f"{os.sep}adapters{os.sep}")
COUNT = 8
X = torch.linspace(-1.0, 1.0, COUNT, dtype=torch.float64).unsqueeze(-1)
NET = mlp((1, 3, 1), seed=0)
PHI = TorchParametrization(NET, X)
WEIGHTS = trapezoid_weights(COUNT, -1.0, 1.0)
METRIC = L2Metric(WEIGHTS)
STIFFNESS = stiffness_1d(COUNT, -1.0, 1.0, "dirichlet")
ENERGY = L2Regression(X.abs(), METRIC)
FLOW = MinimizingMovement(PHI, ENERGY, METRIC, 0.2)
THETA = PHI.initial_point()
MANIFOLD = IncrementManifold(PHI, METRIC)

NAN = math.nan
ARRAY = np.array([0.5, 0.5])
NUMBER = (None, "1e-3", ARRAY, True, NAN, math.inf, -1.0)  # for a positive number
NUMBER_OR_ZERO = (None, "1e-3", ARRAY, True, NAN, math.inf, -1.0)  # for a number >= 0
COUNT_ARGUMENT = (None, "3", ARRAY, True, 2.5, NAN, -1)
TENSOR = (None, "x", np.ones((COUNT, 1)), True, 3.0)
OPTION = (None, 3, "bogus", ARRAY)
FLAG = (None, "yes", 2, ARRAY, NAN)
FUNCTION = (None, "exact", 3, ARRAY)


def _valid_result(tmp_path_factory):
    return FLOW.run(THETA, 1, GaussNewton(max_iterations=1)).save(tmp_path_factory.mktemp("load") / "result.npz")


TARGETS: dict[str, tuple[Callable, dict, dict[str, tuple]]] = {
    "TrajectoryBudget": (TrajectoryBudget, {"tolerance": 1e-3}, {"tolerance": NUMBER}),
    "CallableEnergy": (
        CallableEnergy,
        {"fn": lambda u: (u**2).sum(), "convexity": None, "prox": None},
        {"fn": FUNCTION, "convexity": ("1", ARRAY, True, NAN, math.inf), "prox": FUNCTION[1:]},
    ),
    "L2Metric": (L2Metric, {"weights": WEIGHTS}, {"weights": TENSOR}),
    "MatrixMetric": (MatrixMetric, {"matrix": torch.eye(COUNT, dtype=torch.float64)}, {"matrix": TENSOR}),
    "SobolevMetric": (
        SobolevMetric,
        {"weights": WEIGHTS, "stiffness": STIFFNESS, "alpha": 1.0},
        {"weights": TENSOR, "stiffness": TENSOR, "alpha": NUMBER},
    ),
    "L2Regression": (L2Regression, {"target": X.abs(), "metric": METRIC}, {"target": TENSOR, "metric": TENSOR}),
    "DirichletEnergy": (DirichletEnergy, {"stiffness": STIFFNESS}, {"stiffness": TENSOR}),
    "GinzburgLandau": (
        GinzburgLandau,
        {"epsilon": 0.1, "stiffness": STIFFNESS, "weights": WEIGHTS},
        {"epsilon": NUMBER, "stiffness": TENSOR, "weights": TENSOR},
    ),
    "QuarticEnergy": (
        QuarticEnergy,
        {"stiffness": STIFFNESS, "weights": WEIGHTS, "source": torch.ones(COUNT, 1, dtype=torch.float64)},
        {"stiffness": TENSOR, "weights": TENSOR, "source": TENSOR},
    ),
    "TorchParametrization": (
        TorchParametrization,
        {"module": NET, "nodes": X, "node_separable": None},
        {"module": TENSOR, "nodes": TENSOR, "node_separable": FLAG[1:]},
    ),
    "LinearParametrization": (
        LinearParametrization,
        {"basis": torch.ones(COUNT, 3, dtype=torch.float64), "initial_point": torch.zeros(3, dtype=torch.float64)},
        {"basis": TENSOR, "initial_point": TENSOR[1:]},
    ),
    "IncrementManifold": (
        IncrementManifold,
        {"parametrization": PHI, "metric": METRIC, "damping": "auto", "solve_mode": "auto"},
        {
            "parametrization": TENSOR,
            "metric": TENSOR,
            "damping": (None, "more", ARRAY, True, NAN, -1.0),
            "solve_mode": OPTION,
        },
    ),
    "MMSSubproblem": (
        MMSSubproblem,
        {"manifold": MANIFOLD, "energy": ENERGY, "tau": 0.2, "anchor": PHI.value(THETA)},
        {"manifold": TENSOR, "energy": TENSOR, "tau": NUMBER, "anchor": TENSOR[1:]},
    ),
    "IncrementManifold.geodesic": (
        MANIFOLD.geodesic,
        {"theta": THETA, "xi": torch.zeros_like(THETA), "time": 1.0, "rtol": 1e-10, "atol": 1e-12},
        {"theta": TENSOR, "xi": TENSOR, "time": NUMBER_OR_ZERO, "rtol": NUMBER, "atol": NUMBER},
    ),
    "GaussNewton": (
        GaussNewton,
        {},
        {
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "globalization": OPTION,
            "line_search": OPTION,
            "armijo": NUMBER,
            "max_halvings": COUNT_ARGUMENT,
            "initial_damping": NUMBER,
            "max_retries": COUNT_ARGUMENT,
            "solve_mode": OPTION,
            "geodesic_acceleration": FLAG,
            "step_cutoff": NUMBER,
            "search_start": OPTION,
            "max_step_length": NUMBER,
            "momentum": NUMBER_OR_ZERO,
            "absolute_damping": FLAG,
            "grid_largest": NUMBER,
        },
    ),
    "RiemannianGradientDescent": (
        RiemannianGradientDescent,
        {},
        {
            "step_size": NUMBER[1:],
            "use_exp": FLAG,
            "line_search": FLAG,
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "exp_rtol": NUMBER,
        },
    ),
    "SGD": (
        SGD,
        {},
        {
            "lr": NUMBER,
            "momentum": NUMBER_OR_ZERO,
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "check_every": COUNT_ARGUMENT,
        },
    ),
    "Adam": (
        Adam,
        {},
        {"lr": NUMBER, "max_iterations": COUNT_ARGUMENT, "tolerance": NUMBER_OR_ZERO, "check_every": COUNT_ARGUMENT},
    ),
    "LBFGS": (
        LBFGS,
        {},
        {
            "lr": NUMBER,
            "history_size": COUNT_ARGUMENT,
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "check_every": COUNT_ARGUMENT,
        },
    ),
    "MinimizingMovement": (
        MinimizingMovement,
        {"parametrization": PHI, "energy": ENERGY, "metric": METRIC, "tau": 0.2, "damping": "auto", "solve_mode": "auto"},
        {
            "parametrization": TENSOR,
            "energy": TENSOR,
            "metric": TENSOR,
            "tau": NUMBER,
            "damping": (None, "more", ARRAY, True, NAN, -1.0),
            "solve_mode": OPTION,
        },
    ),
    "MinimizingMovement.run": (
        FLOW.run,
        {"theta0": THETA, "steps": 1, "solver": GaussNewton(max_iterations=1)},
        {
            "theta0": TENSOR,
            "steps": COUNT_ARGUMENT,
            "solver": TENSOR,
            "budget": ("1e-3", 3.0, ARRAY, True),
            "reference": TENSOR[1:],
            "checkpoint": (3, ARRAY, True),
            "progress": FLAG,
            "on_failure": OPTION,
            "max_retries": COUNT_ARGUMENT,
            "diagnostics": FLAG,
            "resample": FUNCTION[1:],
            "residual": OPTION,
        },
    ),
    "exact_trajectory": (
        exact_trajectory,
        {"energy": ENERGY, "metric": METRIC, "u0": X.abs(), "tau": 0.2, "steps": 2},
        {"energy": TENSOR, "metric": TENSOR, "u0": TENSOR, "tau": NUMBER, "steps": COUNT_ARGUMENT},
    ),
    "PymanoptIncrementManifold": (
        PymanoptIncrementManifold,
        {
            "manifold": MANIFOLD,
            "transport_kind": "identity",
            "typical_dist": None,
            "seed": 0,
            "exp_map": "second-order",
            "retraction": "projective",
            "projection_iterations": 2,
        },
        {
            "manifold": TENSOR,
            "transport_kind": OPTION,
            "typical_dist": ("1", ARRAY, True, NAN, math.inf, -1.0, 0.0),
            "seed": (None, "0", 2.5, ARRAY, True, -1),
            "exp_map": OPTION,
            "retraction": OPTION,
            "projection_iterations": COUNT_ARGUMENT,
        },
    ),
    "GeooptIncrementManifold": (
        GeooptIncrementManifold,
        {"manifold": MANIFOLD, "transport_kind": "projection"},
        {"manifold": TENSOR, "transport_kind": OPTION},
    ),
    "PymanoptSolver": (
        PymanoptSolver,
        {"optimizer_class": SteepestDescent, "max_iterations": 2, "tolerance": 0.0, "transport_kind": "identity"},
        {
            "optimizer_class": TENSOR,
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "transport_kind": OPTION,
            "run_options": ("x", 3, ARRAY),
            "retraction": OPTION,
        },
    ),
    "GeooptSolver": (
        GeooptSolver,
        {"optimizer_class": geoopt.optim.RiemannianSGD, "max_iterations": 2, "lr": 0.1},
        {
            "optimizer_class": TENSOR,
            "max_iterations": COUNT_ARGUMENT,
            "tolerance": NUMBER_OR_ZERO,
            "check_every": COUNT_ARGUMENT,
            "transport_kind": OPTION,
            "lr": NUMBER,
        },
    ),
    "uniform_nodes": (
        uniform_nodes,
        {"count": 8, "start": 0.0, "stop": 1.0, "boundary": "dirichlet"},
        {"count": COUNT_ARGUMENT, "start": (None, "0", ARRAY, True, NAN), "boundary": OPTION},
    ),
    "trapezoid_weights": (
        trapezoid_weights,
        {"count": 8, "start": 0.0, "stop": 1.0},
        {"count": COUNT_ARGUMENT, "stop": (None, "1", ARRAY, True, NAN, math.inf)},
    ),
}

CASES = [
    (target, argument, value)
    for target, (_, _, attacks) in TARGETS.items()
    for argument, values in attacks.items()
    for value in values
]


def _innermost_file(error: BaseException) -> str:
    frame, last = error.__traceback__, None
    while frame is not None:
        last, frame = frame, frame.tb_next
    return "" if last is None else last.tb_frame.f_code.co_filename


def _label(value: object) -> str:
    return type(value).__name__ if isinstance(value, (np.ndarray, torch.Tensor, torch.nn.Module)) else repr(value)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_accepts_its_valid_call(target):
    build, valid, _ = TARGETS[target]
    build(**valid)


@pytest.mark.parametrize(
    ("target", "argument", "value"), CASES, ids=[f"{t}-{a}-{_label(v)}" for t, a, v in CASES]
)
def test_a_wrong_kind_is_refused_by_our_code_naming_the_argument(target, argument, value):
    build, valid, _ = TARGETS[target]
    try:
        build(**{**valid, argument: value})
    except (TypeError, ValueError) as error:
        assert any(part in _innermost_file(error) for part in OURS), (
            f"{type(error).__name__} from {_innermost_file(error)}: {error}"
        )
        assert argument in str(error), f"the message does not name {argument!r}: {error}"
        return
    pytest.fail(f"{target}({argument}={_label(value)}) was accepted")


def test_loading_onto_a_device_without_data_or_an_unknown_one_is_refused(tmp_path_factory):
    path = _valid_result(tmp_path_factory)
    for device in ("meta", "nonsense", 3.5, None):
        with pytest.raises((TypeError, ValueError), match="device"):
            MMSResult.load(path, device=device)
    assert MMSResult.load(path, device="cpu").steps_done == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: uniform_nodes(10**12, 0.0, 1.0, "dirichlet"),
        lambda: trapezoid_weights(10**12, 0.0, 1.0),
        lambda: stiffness_1d(10**7, 0.0, 1.0, "dirichlet"),
        lambda: grid_2d(10**6, 10**6, (0.0, 1.0, 0.0, 1.0), "dirichlet"),
    ],
    ids=["uniform_nodes", "trapezoid_weights", "stiffness_1d", "grid_2d"],
)
def test_huge_node_grids_fail_with_a_message_naming_the_size(build):
    with pytest.raises(ValueError, match=r"count.* would need .*GiB"):
        build()
