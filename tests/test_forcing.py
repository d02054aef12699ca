"""Eisenstat–Walker forcing terms for Gauss–Newton's CG model solves: the terms, the decrease, the count, the record.

Counted CG iterations and cost decreases against the dense step, never timings.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from mms_manifolds import (
    GaussNewton,
    IncrementManifold,
    L2Metric,
    L2Regression,
    LinearParametrization,
    MinimizingMovement,
    TorchParametrization,
)
from mms_manifolds.linalg import ConjugateGradientSolve, EisenstatWalker, conjugate_gradient
from mms_manifolds.linalg.forcing import GOLDEN_RATIO
from mms_manifolds.progress import LOGGER
from mms_manifolds.subproblem import MMSSubproblem

from cases import mlp


def test_choice_2_terms_and_their_safeguard():
    sequence = EisenstatWalker(choice=2, initial=0.5, gamma=0.9, alpha=2.0).sequence()
    assert sequence.term(10.0) == 0.5  # eta_0
    # gamma (|g_1|/|g_0|)^alpha = 0.9 * 0.25 = 0.225; the safeguard gamma eta_0^alpha = 0.225 > 0.1 gives the same
    assert sequence.term(5.0) == pytest.approx(0.225, rel=1e-15)
    # a fast fall: 0.9 * 0.01^2 = 9e-5, but the safeguard 0.9 * 0.225^2 = 0.0455625 is <= 0.1: not applied
    assert sequence.term(0.05) == pytest.approx(0.9e-4, rel=1e-12)
    # a rise is clipped to eta_max
    assert sequence.term(1.0) == 0.9


def test_choice_2_safeguard_holds_a_term_that_would_fall_too_fast():
    sequence = EisenstatWalker(choice=2, initial=0.8, gamma=1.0, alpha=2.0).sequence()
    sequence.term(1.0)
    # (1e-3)^2 = 1e-6, but eta_0^2 = 0.64 > 0.1: the safeguard keeps 0.64
    assert sequence.term(1e-3) == pytest.approx(0.64, rel=1e-15)


def test_choice_1_terms_read_the_last_linear_residual():
    sequence = EisenstatWalker(choice=1, initial=0.5).sequence()
    assert sequence.term(4.0) == 0.5
    sequence.record_step(1.0)  # |g_0 - (A + mu I) x_0| = 1
    # | |g_1| - 1 | / |g_0| = |3 - 1| / 4 = 0.5; the safeguard 0.5^golden = 0.3257 < 0.5
    assert sequence.term(3.0) == pytest.approx(0.5, rel=1e-15)
    sequence.record_step(2.9)
    # |3 - 2.9| / 3 = 0.0333, below 0.5^golden = 0.3257 > 0.1: the safeguard
    assert sequence.term(3.0) == pytest.approx(0.5**GOLDEN_RATIO, rel=1e-12)
    floor = EisenstatWalker(choice=1, initial=1e-3, minimum=1e-4).sequence()
    floor.term(1.0)
    floor.record_step(1.0)
    assert floor.term(1.0) == 1e-4  # | 1 - 1 | / 1 = 0, clipped to eta_min


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"choice": 3}, ValueError),
        ({"maximum": 1.0}, ValueError),
        ({"initial": 0.95}, ValueError),
        ({"alpha": 1.0}, ValueError),
        ({"gamma": 1.5}, ValueError),
        ({"fraction": 1.0}, ValueError),
        ({"minimum": -1.0}, ValueError),
    ],
)
def test_bad_forcing_settings_are_refused(settings, error):
    with pytest.raises(error):
        EisenstatWalker(**settings)


def test_gauss_newton_refuses_a_forcing_that_is_no_rule():
    with pytest.raises(TypeError, match="EisenstatWalker"):
        GaussNewton(forcing=0.1)


def test_cg_stops_only_where_both_the_forcing_term_and_the_fraction_hold():
    generator = torch.Generator().manual_seed(5)
    factor = torch.randn(50, 50, generator=generator, dtype=torch.float64)
    matrix = factor @ torch.diag(torch.logspace(0, -6, 50, dtype=torch.float64)) @ factor.T
    damping = 1e-4
    shifted = matrix + damping * torch.eye(50, dtype=torch.float64)
    rhs = torch.randn(50, generator=generator, dtype=torch.float64)
    common = {"tolerance": 1e-14, "max_iterations": 500, "decrease_fraction": 0.9, "shift": damping}
    _, loose, loose_residual = conjugate_gradient(lambda x: shifted @ x, rhs, **common)
    _, forced, forced_residual = conjugate_gradient(lambda x: shifted @ x, rhs, forcing=1e-6, **common)
    _, full, _ = conjugate_gradient(lambda x: shifted @ x, rhs, tolerance=1e-14, max_iterations=500)
    assert loose < forced < full
    assert forced_residual <= 1e-6 < loose_residual


def linear_step_problem(seed: int = 0, count: int = 60, parameters: int = 40):
    r"""A linear-in-parameters regression step: :math:`f` is exactly quadratic in :math:`\theta`, so the Gauss–Newton model is :math:`f`."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.linalg.qr(torch.randn(count, parameters, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(parameters, parameters, generator=generator, dtype=torch.float64)).Q
    basis = left @ torch.diag(torch.logspace(0, -4, parameters, dtype=torch.float64)) @ right.T * count**0.5
    target = torch.randn(count, 1, generator=generator, dtype=torch.float64)
    metric = L2Metric(torch.full((count,), 1 / count, dtype=torch.float64))
    return LinearParametrization(basis), L2Regression(target, metric), metric


@pytest.mark.parametrize("forcing", [0.5, 0.1])
def test_a_forced_cg_step_decreases_an_exactly_quadratic_cost_by_the_stated_share_of_the_dense_step(forcing):
    parametrization, energy, metric = linear_step_problem()
    theta = parametrization.initial_point()
    anchor = torch.zeros(parametrization.output_shape, dtype=torch.float64)
    decreases, damping = {}, None
    for name in ("dense", "cg"):
        manifold = IncrementManifold(parametrization, metric, solve_mode=name)
        subproblem = MMSSubproblem(manifold, energy, 0.2, anchor)
        model = subproblem.gauss_newton_model(theta)
        if damping is None:
            damping = 1e-3 * model.mean_eigenvalue
        if name == "dense":
            step = model.step(damping)
        else:
            step, solution = dataclasses.replace(model, forcing=(forcing, 0.9)).inexact_step(damping)
            plain_iterations = model.factorization.linear_iterations
            model.step(damping)
            plain_iterations = model.factorization.linear_iterations - plain_iterations
        decreases[name] = model.cost - subproblem.cost(theta + step)
    # f is its model: damped-model share >= 0.9 carries to the cost (the damping's mu |d|^2 / 2 only helps the inexact step)
    assert decreases["cg"] >= 0.9 * decreases["dense"] * (1 - 1e-12)
    assert solution.certified_fraction >= 0.9 and solution.converged
    assert solution.relative_residual <= forcing
    assert solution.iterations < plain_iterations


def mlp_regression(count: int, widths: tuple[int, ...], seed: int):
    r"""``(parametrization, energy, metric)``: an MLP regression of :math:`\sin 3x` on ``count`` nodes of [-1, 1]."""
    nodes = torch.linspace(-1, 1, count, dtype=torch.float64).unsqueeze(-1)
    metric = L2Metric(torch.full((count,), 2 / count, dtype=torch.float64))
    return TorchParametrization(mlp(widths, seed), nodes), L2Regression(torch.sin(3 * nodes), metric), metric


def _count_cg_iterations(run) -> tuple[object, int]:
    """``run()``'s result and the CG iterations its Gauss–Newton iterations reported to the progress logger."""
    counted = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counted.append(record.progress.linear_iterations)

    handler, level = Handler(), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        result = run()
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    return result, sum(counted)


@pytest.mark.parametrize("choice", [1, 2])
def test_forcing_takes_fewer_cg_iterations_and_keeps_the_dense_solves_decrease(choice):
    """Six Gauss–Newton iterations on a small MLP regression step: CG with forcing terms against CG to 1e-10 and dense."""
    parametrization, energy, metric = mlp_regression(80, (1, 10, 10, 1), 4)
    nodes, theta = parametrization.nodes, parametrization.initial_point()
    decreases, counts, results = {}, {}, {}
    for name, mode, forcing in (
        ("dense", "dense", None),
        ("fixed", ConjugateGradientSolve(), None),
        ("forced", ConjugateGradientSolve(), EisenstatWalker(choice=choice)),
    ):
        manifold = IncrementManifold(parametrization, metric, solve_mode=mode, damping=1e-6)
        subproblem = MMSSubproblem(manifold, energy, 0.2, torch.zeros_like(nodes))
        solver = GaussNewton(max_iterations=6, globalization="levenberg-marquardt", forcing=forcing)
        results[name], counts[name] = _count_cg_iterations(lambda solver=solver, subproblem=subproblem: solver.solve(subproblem, theta))
        decreases[name] = results[name].cost_history[0] - results[name].cost_history[-1]
    assert counts["forced"] < counts["fixed"], counts
    assert decreases["forced"] >= 0.9 * decreases["dense"], decreases
    records = results["forced"].extra["forcing"]
    assert [record["iteration"] for record in records] == list(range(1, results["forced"].iterations + 1))
    assert all(record["certified"] and record["certified_fraction"] >= 0.9 for record in records)
    assert results["forced"].extra["uncertified_iterations"] == []
    assert records[0]["forcing_term"] == 0.5
    assert all(0 < record["forcing_term"] <= 0.9 for record in records)
    assert "forcing" not in results["fixed"].extra


def test_a_step_whose_solve_is_capped_says_it_is_not_certified():
    parametrization, energy, metric = mlp_regression(40, (1, 8, 8, 1), 1)
    theta0 = parametrization.initial_point()
    capped = ConjugateGradientSolve(max_iterations=1, on_unconverged="ignore")
    forcing = EisenstatWalker(fraction=0.999999)
    flows = {}
    for name, mode in (("capped", capped), ("generous", ConjugateGradientSolve())):
        flow = MinimizingMovement(parametrization, energy, metric, 0.2, solve_mode=mode, damping=1e-6)
        solver = GaussNewton(max_iterations=2, globalization="levenberg-marquardt", forcing=forcing)
        flows[name] = flow.run(theta0, 2, solver, certify=False)
    listed = flows["capped"].metadata["uncertified_decrease_steps"]
    assert [entry["step"] for entry in listed] == [1, 2]
    assert all(entry["iterations"] for entry in listed)
    assert any("uncertified_decrease_steps" in note for note in flows["capped"].metadata["notes"])
    assert "uncertified_decrease_steps" not in flows["generous"].metadata
    assert math.isfinite(flows["generous"].columns["energy"][-1])
