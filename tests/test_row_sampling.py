"""Row-sampled Gauss–Newton models (``GaussNewton(row_sampling=RowSampling(...))``, ``solvers/row_sampling.py``).

Held to exact references: with every row the sampled model's steps and geodesic acceleration equal the full
kernel-side model's to 1e-10; with a subset, its kernel, gradient in range form and damped step equal
``n/n_S B_S^T B_S`` and ``-B_S^T (K_S + n_S/n mu I)^{-1} s_S`` formed from the rows of the whitened Jacobian;
the solver counts the rows it used, redoes a rejected sampled iteration with the full model, is deterministic
given the seed, and equals the solver without the option where the sample would be every row. Explicit dtypes.
"""

from __future__ import annotations

import math

import pytest
import torch

from mms_manifolds import GaussNewton, MinimizingMovement, SubspaceGaussNewton
from mms_manifolds._random import random_subset
from mms_manifolds.linalg import EisenstatWalker, diagonal_of, singular_value_solve
from mms_manifolds.meshfree import (
    JetMetric,
    JetParametrization,
    PoissonLeastSquares,
    box_boundary_grid,
    box_interior_grid,
)
from mms_manifolds.solvers import row_sampling as sampling_module
from mms_manifolds.solvers.row_sampling import RowSampledFactorization, RowSampling, row_sampled_model

DTYPE = torch.float64


def _flow(tau: float = 1e12) -> MinimizingMovement:
    """p = 337 parameters, Nm = 36 Laplacians + 20 boundary values = 56 < p (a PINN loss at tau = 1e12)."""
    torch.manual_seed(7)
    network = torch.nn.Sequential(
        torch.nn.Linear(2, 16, dtype=DTYPE),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16, dtype=DTYPE),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 1, dtype=DTYPE),
    )
    nodes = {
        "interior": box_interior_grid(6, 2, ("laplacian",), dtype=DTYPE),
        "boundary": box_boundary_grid(6, dtype=DTYPE),
    }
    jets = JetParametrization(network, nodes)

    def source(points: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi**2 * torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])

    energy = PoissonLeastSquares(jets, source, boundary="boundary", penalty=1.0)
    return MinimizingMovement(jets, energy, JetMetric(jets, value={"boundary": 1.0}), tau=tau)


def _whitened(flow: MinimizingMovement, subproblem, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, s)``: the formed whitened Jacobian ``(n, p)`` and the gradient in range form ``(n,)``."""
    parametrization = flow.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    u = parametrization.value(theta)
    root = diagonal_of(subproblem.step_hessian(u)).reshape(-1).sqrt()
    whitened = root.unsqueeze(-1) * parametrization.jacobian(theta).reshape(rows, columns)
    return whitened, subproblem.function_gradient(u).reshape(-1) / root


def test_with_every_row_the_sampled_model_is_the_full_model_to_1e_10():
    flow = _flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    total = flow.parametrization.ambient_dimension
    full = subproblem.gauss_newton_model(theta, "dense")
    sampled = row_sampled_model(subproblem, theta, torch.arange(total))
    assert isinstance(sampled.factorization, RowSampledFactorization)
    torch.testing.assert_close(sampled.factorization.gram, full.factorization.gram, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sampled.gradient, full.gradient, rtol=1e-12, atol=1e-14)
    assert sampled.mean_eigenvalue == pytest.approx(full.mean_eigenvalue, rel=1e-12)
    assert sampled.proximal_share == pytest.approx(full.proximal_share, rel=1e-12)
    for relative in (1e-12, 1e-6, 1e-2):
        damping = relative * full.mean_eigenvalue
        reference = full.step(damping)
        step = sampled.step(damping)
        assert float((step - reference).norm() / reference.norm()) <= 1e-10
        acceleration = subproblem.geodesic_acceleration(theta, sampled, step, damping)
        expected = subproblem.geodesic_acceleration(theta, full, reference, damping)
        assert float((acceleration - expected).norm() / expected.norm()) <= 1e-10


def test_a_sampled_model_is_the_rescaled_gauss_newton_model_of_its_rows_to_1e_10():
    """K_S = n/n_S B_S B_S^T, g_S = n/n_S B_S^T s_S, delta_S = -B_S^T (K_S + n_S/n mu)^-1 s_S, a_S from the rows S."""
    flow = _flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    total = flow.parametrization.ambient_dimension
    rows = random_subset(20, total, device=theta.device, seed=3)
    model = row_sampled_model(subproblem, theta, rows)
    whitened, ranged = _whitened(flow, subproblem, theta)
    share = total / 20
    factor = whitened[rows]
    assert model.factorization.gram.shape == (20, 20)  # the kernel of the 20 rows only
    torch.testing.assert_close(model.factorization.gram, share * factor @ factor.T, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        model.factorization.factor.T @ model.range_gradient, share * factor.T @ ranged[rows], rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(model.gradient, whitened.T @ ranged, rtol=1e-12, atol=1e-14)  # the exact gradient
    assert model.mean_eigenvalue == pytest.approx(share * float(factor.square().sum()) / whitened.shape[1], rel=1e-12)
    svd = torch.linalg.svd(share**0.5 * factor, full_matrices=False)  # U S V^T, so A_S = V S^2 V^T
    for relative in (1e-4, 1e-2, 1.0):  # delta_S = -V S (S^2 + mu)^-1 U^T sqrt(n/n_S) s_S, accurate at any damping
        damping = relative * model.mean_eigenvalue
        filtered = svd.S / (svd.S.square() + damping) * (svd.U.T @ (share**0.5 * ranged[rows]))
        reference = -svd.Vh.T @ filtered
        step = model.step(damping)
        assert float((step - reference).norm() / reference.norm()) <= 1e-10
    damping = 1e-3 * model.mean_eigenvalue
    step = model.step(damping)
    curvature = flow.parametrization.second_derivative(theta, step, step).reshape(-1)
    u = flow.parametrization.value(theta)
    root = diagonal_of(subproblem.step_hessian(u)).reshape(-1).sqrt()
    pulled = share * factor.T @ (root * curvature)[rows]
    reference = -singular_value_solve(svd, pulled, damping, 0.0)
    acceleration = subproblem.geodesic_acceleration(theta, model, step, damping)
    assert float((acceleration - reference).norm() / reference.norm()) <= 1e-10


def _solver(sampling: RowSampling | None, iterations: int = 6) -> GaussNewton:
    options = {"step_filter": "tikhonov", "search_start": "full", "final_residual": False}
    return GaussNewton(max_iterations=iterations, **options, row_sampling=sampling)


def test_the_solver_counts_the_rows_it_sampled_and_switches_to_the_full_model(monkeypatch):
    flow = _flow()
    theta = flow.parametrization.initial_point()
    drawn: list[int] = []
    draw = sampling_module.random_subset

    def counted(count, size, *, device, seed=0, **keywords):
        drawn.append(count)
        return draw(count, size, device=device, seed=seed, **keywords)

    monkeypatch.setattr(sampling_module, "random_subset", counted)
    result = _solver(RowSampling(24, until_length=1.0, max_sampled=3)).solve(flow.subproblem(theta), theta)
    record = result.extra["row_sampling"]
    assert 1 <= record["sampled_iterations"] <= 3 and record["sampled_rows"] == 24 * record["sampled_iterations"]
    assert drawn == [24] * len(drawn) and record["sampled_iterations"] <= len(drawn) <= 3
    assert result.iterations == 6 and all(b <= a for a, b in zip(result.cost_history, result.cost_history[1:]))


def test_a_rejected_sampled_step_is_redone_with_the_full_model(monkeypatch):
    """A sampled step whose line search finds no decrease is replaced, in the same iteration, by the full model's."""
    flow = _flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    calls: list[bool] = []
    search = GaussNewton._line_search

    def refuse_sampled(self, subproblem, model, *arguments, **options):
        sampled = isinstance(model.factorization, RowSampledFactorization)
        calls.append(sampled)
        return (None, 0.0, None) if sampled else search(self, subproblem, model, *arguments, **options)

    monkeypatch.setattr(GaussNewton, "_line_search", refuse_sampled)
    result = _solver(RowSampling(24), iterations=3).solve(subproblem, theta)
    monkeypatch.setattr(GaussNewton, "_line_search", search)
    reference = _solver(None, iterations=3).solve(flow.subproblem(theta), theta)
    assert calls == [True, False, False, False]  # one sampled try, then full models only
    assert result.extra["row_sampling"] == {"sampled_iterations": 0, "sampled_rows": 0}
    torch.testing.assert_close(result.point, reference.point, rtol=0.0, atol=0.0)


def test_the_sampled_solve_is_deterministic_given_the_seed():
    flow = _flow()
    theta = flow.parametrization.initial_point()
    runs = [
        _solver(RowSampling(24, until_length=1.0, seed=seed), 4).solve(flow.subproblem(theta), theta).point
        for seed in (5, 5, 6)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_a_sample_of_every_row_is_the_solver_without_sampling():
    flow = _flow()
    theta = flow.parametrization.initial_point()
    total = flow.parametrization.ambient_dimension
    sampled = _solver(RowSampling(total)).solve(flow.subproblem(theta), theta)
    plain = _solver(None).solve(flow.subproblem(theta), theta)
    assert torch.equal(sampled.point, plain.point)
    assert sampled.extra["row_sampling"] == {"sampled_iterations": 0, "sampled_rows": 0}


def test_random_subset_draws_distinct_increasing_rows():
    rows = random_subset(30, 50, device=torch.device("cpu"), seed=2)
    assert rows.shape == (30,) and bool((rows[1:] > rows[:-1]).all()) and int(rows.max()) < 50
    assert torch.equal(rows, random_subset(30, 50, device=torch.device("cpu"), seed=2))


def test_a_float32_kernel_is_the_rounded_product_and_floors_the_damping():
    """K from J rounded to float32 (every row, no rescaling); the solver damps it by at least eps_32 tr(K)."""
    flow = _flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    total = flow.parametrization.ambient_dimension
    model = row_sampled_model(subproblem, theta, torch.arange(total), torch.float32)
    whitened, ranged = _whitened(flow, subproblem, theta)
    u = flow.parametrization.value(theta)
    root = diagonal_of(subproblem.step_hessian(u)).reshape(-1).sqrt()
    rounded = flow.parametrization.jacobian(theta).reshape(total, -1).float()
    reference = root.unsqueeze(-1) * (rounded @ rounded.T).double() * root
    assert model.factorization.gram.dtype == DTYPE
    scale = float(reference.diag().max())
    torch.testing.assert_close(model.factorization.gram, reference, rtol=1e-5, atol=1e-6 * scale)
    exact = whitened @ whitened.T
    assert not torch.equal(model.factorization.gram, exact)  # formed in float32, not float64
    assert float((model.factorization.gram - exact).abs().max()) <= 1e-5 * float(exact.diag().max())
    floor = model.factorization.damping_floor
    assert floor == torch.finfo(torch.float32).eps * float(torch.trace(model.factorization.gram))
    gradient = model.factorization.factor.T @ model.range_gradient
    torch.testing.assert_close(gradient, model.gradient, rtol=1e-12, atol=1e-12)
    solver = GaussNewton(step_filter="tikhonov", row_sampling=RowSampling(kernel_dtype=torch.float32))
    assert solver._filter_damping(model, 1e-12) == floor  # 1e-12 tr(A) is below float32's resolution
    assert solver._filter_damping(model, 1e-3) == pytest.approx(1e-3 * float(torch.trace(exact)), rel=1e-5)
    in_float64 = row_sampled_model(subproblem, theta, torch.arange(total))
    assert solver._filter_damping(in_float64, 1e-12) == pytest.approx(1e-12 * float(torch.trace(exact)), rel=1e-12)
    step = model.step(floor)
    kernel = exact + floor * torch.eye(total, dtype=DTYPE)
    expected = -whitened.T @ torch.linalg.solve(kernel, ranged)
    # the float64 step at that damping, to float32's rounding
    assert float((step - expected).norm() / expected.norm()) <= 1e-2


def test_a_float32_kernel_counts_every_row_and_needs_the_tikhonov_filter():
    flow = _flow()
    theta = flow.parametrization.initial_point()
    total = flow.parametrization.ambient_dimension
    result = _solver(RowSampling(kernel_dtype=torch.float32), 4).solve(flow.subproblem(theta), theta)
    record = result.extra["row_sampling"]
    assert record["sampled_iterations"] >= 1 and record["sampled_rows"] == total * record["sampled_iterations"]
    with pytest.raises(ValueError, match="tikhonov"):
        GaussNewton(row_sampling=RowSampling(kernel_dtype=torch.float32))
    with pytest.raises(TypeError, match="kernel_dtype"):
        RowSampling(kernel_dtype=torch.int32)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"rows": 0}, ValueError),
        ({"rows": 2.5}, TypeError),
        ({"rows": 4, "until_length": 1.5}, ValueError),
        ({"rows": 4, "until_length": 0.0}, ValueError),
        ({"rows": 4, "max_sampled": -1}, ValueError),
        ({"rows": 4, "seed": -1}, ValueError),
    ],
)
def test_a_row_sampling_rule_is_checked(arguments, error):
    with pytest.raises(error):
        RowSampling(**arguments)


def test_the_row_sampling_option_is_checked():
    with pytest.raises(TypeError, match="row_sampling"):
        GaussNewton(row_sampling=16)


def test_a_rejected_sampled_step_keeps_the_iterations_forcing_term(monkeypatch):
    """The full model that replaces a rejected sampled one takes the same forcing term: the terms and the point are
    the plain solver's, as if no sampled model had been tried (the term's sequence advances once per iteration)."""
    search = GaussNewton._line_search

    def refuse_sampled(self, subproblem, model, *arguments, **options):
        if isinstance(model.factorization, RowSampledFactorization):
            return None, 0.0, None
        return search(self, subproblem, model, *arguments, **options)

    def solver(sampling: RowSampling | None) -> GaussNewton:
        options = {"step_filter": "tikhonov", "final_residual": False, "globalization": "line-search"}
        return GaussNewton(
            max_iterations=3, solve_mode="cg", forcing=EisenstatWalker(), **options, row_sampling=sampling
        )

    def solve(sampling: RowSampling | None):  # a fresh flow each: its probes' seeds advance from solve to solve
        flow = _flow()
        theta = flow.parametrization.initial_point()
        return solver(sampling).solve(flow.subproblem(theta), theta)

    monkeypatch.setattr(GaussNewton, "_line_search", refuse_sampled)
    sampled = solve(RowSampling(24))
    monkeypatch.setattr(GaussNewton, "_line_search", search)
    plain = solve(None)
    terms = [record["forcing_term"] for record in sampled.extra["forcing"]]
    assert terms == [record["forcing_term"] for record in plain.extra["forcing"]] and len(terms) == 3
    torch.testing.assert_close(sampled.point, plain.point, rtol=0.0, atol=0.0)


def test_row_sampling_is_refused_where_it_cannot_apply():
    """A line-search option of the full-parameter solver: refused with Levenberg–Marquardt, by the subspace solver
    (whose models are of parameter blocks), and dropped from the Levenberg–Marquardt fallback."""
    with pytest.raises(ValueError, match="line search"):
        GaussNewton(globalization="levenberg-marquardt", row_sampling=RowSampling(24))
    with pytest.raises(ValueError, match="SubspaceGaussNewton does not take row_sampling"):
        SubspaceGaussNewton(block_size=40, row_sampling=RowSampling(24))
    assert GaussNewton(row_sampling=RowSampling(24)).fallback().row_sampling is None


def test_random_subset_is_the_same_on_every_stream_pair_and_differs_between_them():
    """Draw k of stream s is one fixed set (a CPU generator), and neighbouring streams do not overlap: (5, 1) != (6, 0)."""
    cpu = torch.device("cpu")
    assert torch.equal(
        random_subset(10, 60, device=cpu, seed=5, draw=1), random_subset(10, 60, device=cpu, seed=5, draw=1)
    )
    assert not torch.equal(
        random_subset(10, 60, device=cpu, seed=5, draw=1), random_subset(10, 60, device=cpu, seed=6, draw=0)
    )
