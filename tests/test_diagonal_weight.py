"""The kernel-side Gauss–Newton model for a diagonal step Hessian (PINN-type jet energies, ``Nm < p``).

Held to the dense solves to 1e-10 (the SVD of the whitened Jacobian, and the assembled ``(p, p)`` matrix
the model used before): damped solves, the truncated pseudo-inverse step and the trace, the Gauss–Newton
iteration with the Tikhonov step (``step_damping``) and without the end-of-solve residual; and the fallback to the
assembled matrix where the diagonal has a negative entry (a non-convex energy). Every tensor and module has an explicit dtype.
"""

from __future__ import annotations

import math

import pytest
import torch

from mms_manifolds import GaussNewton, MinimizingMovement
from mms_manifolds.linalg import (
    GramFactorization,
    GramOperator,
    OperatorSum,
    ScaledOperator,
    ScaledRows,
    diagonal_of,
    diagonal_weight_factorization,
    singular_value_solve,
)
from mms_manifolds.meshfree import (
    GinzburgLandauJet,
    JetMetric,
    JetParametrization,
    PoissonLeastSquares,
    box_boundary_grid,
    box_interior_grid,
)
from mms_manifolds.solvers import GaussNewtonState

DTYPE = torch.float64


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(2, 16, dtype=DTYPE),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16, dtype=DTYPE),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 1, dtype=DTYPE),
    )


def _poisson_flow(tau: float = 1e3) -> MinimizingMovement:
    """p = 337 parameters, Nm = 25 Laplacians + 25 values + 16 boundary values = 66 < p."""
    nodes = {
        "interior": box_interior_grid(5, 2, ("value", "laplacian"), dtype=DTYPE),
        "boundary": box_boundary_grid(5, dtype=DTYPE),
    }
    jets = JetParametrization(_network(3), nodes)

    def source(points: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi**2 * torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])

    energy = PoissonLeastSquares(jets, source, boundary="boundary", penalty=2.0)
    return MinimizingMovement(jets, energy, JetMetric(jets, value={"interior": 1.0}), tau=tau)


def _assembled(subproblem, theta: torch.Tensor) -> GramFactorization:
    u = subproblem.manifold.parametrization.value(theta)
    operator = GramOperator(subproblem.manifold.parametrization, subproblem.step_hessian(u), theta)
    return GramFactorization(operator.gram_matrix())


def test_the_step_hessian_of_a_jet_energy_states_its_diagonal_exactly():
    flow = _poisson_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    u = flow.parametrization.value(theta)
    weight = subproblem.step_hessian(u)
    diagonal = diagonal_of(weight)
    probe = torch.randn(u.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(diagonal * probe, weight.apply(probe), rtol=1e-14, atol=1e-14)
    assert diagonal_of(ScaledOperator(weight, factor=2.0)) is not None
    assert diagonal_of(OperatorSum(weight, object())) is None  # one term without a known diagonal


def test_kernel_side_model_equals_the_dense_solves_to_1e_10():
    """Against the SVD of the whitened Jacobian (the accurate dense solve) and the assembled (p, p) matrix."""
    flow = _poisson_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    model = subproblem.gauss_newton_model(theta, "dense")
    assert model.factorization.mode == "kernel"
    parametrization = flow.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    assert model.factorization.gram.shape == (rows, rows) and rows < columns
    u = parametrization.value(theta)
    whitened = diagonal_of(subproblem.step_hessian(u)).reshape(-1, 1).sqrt() * parametrization.jacobian(theta).reshape(
        rows, columns
    )
    svd = torch.linalg.svd(whitened, full_matrices=False)
    assembled = _assembled(subproblem, theta)
    torch.testing.assert_close(
        torch.trace(model.factorization.gram), torch.trace(assembled.gram), rtol=1e-12, atol=0.0
    )
    rhs = model.gradient
    for relative in (1e-3, 1e-1, 10.0):  # as the solver damps: relative to tr(A)/p
        damping = relative * model.mean_eigenvalue
        reference = singular_value_solve(svd, rhs, damping, 0.0)
        for solved in (model.factorization.solve(rhs, damping).value, assembled.solve(rhs, damping).value):
            assert float((solved - reference).norm() / reference.norm()) <= 1e-10
    # the truncated pseudo-inverse at a cutoff clear of the eigenvalues' rounding (1e-6 of the largest)
    reference = singular_value_solve(svd, rhs, 0.0, 1e-6)
    for solved in (model.factorization.solve(rhs, 0.0, 1e-6).value, assembled.solve(rhs, 0.0, 1e-6).value):
        assert float((solved - reference).norm() / reference.norm()) <= 1e-10


def test_range_form_steps_and_acceleration_equal_the_svd_solves_to_1e_10():
    """The model's steps (B^T (K + mu)^-1 s) and the geodesic acceleration against the SVD of the whitened Jacobian."""
    flow = _poisson_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    model = subproblem.gauss_newton_model(theta, "dense")
    assert model.range_gradient is not None
    factorization = model.factorization
    torch.testing.assert_close(factorization.factor.T @ model.range_gradient, model.gradient, rtol=1e-12, atol=1e-12)
    svd = torch.linalg.svd(factorization.factor.dense(), full_matrices=False)
    for relative in (1e-3, 1e-1, 10.0):
        damping = relative * model.mean_eigenvalue
        reference = -singular_value_solve(svd, model.gradient, damping, 0.0)
        assert float((model.step(damping) - reference).norm() / reference.norm()) <= 1e-10
    reference = -singular_value_solve(svd, model.gradient, 0.0, 1e-6)
    step = model.step(0.0, 1e-6)
    assert float((step - reference).norm() / reference.norm()) <= 1e-10
    damping = 1e-3 * model.mean_eigenvalue
    step = model.step(damping)
    acceleration = subproblem.geodesic_acceleration(theta, model, step, damping)
    u = flow.parametrization.value(theta)
    curvature = flow.parametrization.second_derivative(theta, step, step)
    pulled = flow.manifold.pull_back(theta, subproblem.step_hessian(u).apply(curvature))
    reference = -singular_value_solve(svd, pulled, damping, 0.0)
    assert float((acceleration - reference).norm() / reference.norm()) <= 1e-10


def test_a_negative_hessian_entry_keeps_the_assembled_matrix():
    nodes = {"interior": box_interior_grid(4, 2, ("value", "gradient"), dtype=DTYPE)}
    jets = JetParametrization(_network(5), nodes)
    energy = GinzburgLandauJet(jets, 0.2)  # (u^2 - 1)^2 / 4 has curvature 3u^2 - 1 < 0 near u = 0
    flow = MinimizingMovement(jets, energy, JetMetric(jets, value={"interior": 1.0}), tau=1e3)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    u = flow.parametrization.value(theta)
    weight = subproblem.step_hessian(u)
    assert bool((diagonal_of(weight) < 0).any())
    operator = GramOperator(flow.parametrization, weight, theta)
    assert flow.parametrization.ambient_dimension < flow.parametrization.num_parameters
    assert diagonal_weight_factorization(operator) is None
    model = subproblem.gauss_newton_model(theta, "dense")
    assert model.factorization.gram.shape == (flow.parametrization.num_parameters,) * 2


def test_the_trace_of_a_diagonal_weight_from_the_rows_of_j_equals_the_whitened_one():
    """tr(J^T W J) = sum_r d_r |J_r|^2 without the whitened copy, equal to |B|_F^2 to 1e-12, for the metric and the step Hessian."""
    flow = _poisson_flow()
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    u = flow.parametrization.value(theta)
    for weight in (flow.metric, subproblem.step_hessian(u)):
        operator = GramOperator(flow.parametrization, weight, theta)
        from_rows = operator.trace()
        assert operator._whitened_jacobian is None  # the shortcut formed no copy
        whitened = diagonal_of(weight).reshape(-1, 1).sqrt() * operator.jacobian().reshape(u.numel(), -1)
        reference = float(whitened.square().sum())
        assert abs(from_rows - reference) <= 1e-12 * reference
        assert abs(from_rows - float(torch.trace(operator.gram_matrix()))) <= 1e-10 * reference


def test_the_tikhonov_filtered_line_search_step_equals_the_damped_svd_solve_to_1e_10():
    """``step_filter="tikhonov"``: delta = -(A + mu I)^{-1} g, mu = cutoff tr(A), by Cholesky of the shifted kernel; the point on its accelerated curve."""
    flow = _poisson_flow(tau=1e12)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    solver = GaussNewton(max_iterations=1, globalization="line-search", step_filter="tikhonov", step_cutoff=1e-6)
    result = solver.solve(subproblem, theta, state=GaussNewtonState(step_length=0.5, relative_damping=1e-3))
    model = subproblem.gauss_newton_model(theta)
    assert model.factorization.mode == "kernel"
    parametrization = flow.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    u = parametrization.value(theta)
    whitened = diagonal_of(subproblem.step_hessian(u)).reshape(-1, 1).sqrt() * parametrization.jacobian(theta).reshape(
        rows, columns
    )
    damping = 1e-6 * float(whitened.square().sum())
    expected = -singular_value_solve(torch.linalg.svd(whitened, full_matrices=False), model.gradient, damping, 0.0)
    step = model.step(damping)
    assert float((step - expected).norm() / expected.norm()) <= 1e-10
    assert model.factorization._cholesky is not None and model.factorization._cholesky[1] is not None
    length = result.state.step_length
    acceleration = subproblem.geodesic_acceleration(theta, model, step, damping)
    reached = theta + length * step + 0.5 * length**2 * acceleration
    assert float((result.point - reached).norm()) <= 1e-10 * float(reached.norm())
    assert result.cost_history[-1] <= result.cost_history[0] + solver.armijo * length * float(model.gradient @ step)
    with pytest.raises(ValueError, match="step_filter"):
        GaussNewton(step_filter="spectral")


def _count_calls(monkeypatch, owner, name: str) -> list[int]:
    """Wrap ``owner.name`` so that each call appends to the returned list."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_the_tikhonov_step_of_the_line_search_equals_the_dense_damped_solve_to_1e_10(monkeypatch):
    """``GaussNewton(step_filter="tikhonov", step_damping=...)``: theta + eta delta (+ eta^2 a / 2), delta = -(A + mu I)^-1 g, mu = step_damping tr(A)/p.

    Held against the SVD of the whitened Jacobian to 1e-10 at 1e-3 of tr(A)/p; taken from one Cholesky
    factorisation of the shifted kernel (the eigendecomposition is never computed: counted).
    """
    flow = _poisson_flow(tau=1e12)  # proximal share ~1e-12: the line search
    theta = flow.parametrization.initial_point()
    relative = 1e-3
    for acceleration in (False, True):
        subproblem = flow.subproblem(theta)
        eigendecompositions = _count_calls(monkeypatch, GramFactorization, "eigendecomposition")
        solver = GaussNewton(
            max_iterations=1, step_filter="tikhonov", step_damping=relative, geodesic_acceleration=acceleration
        )
        result = solver.solve(subproblem, theta)
        assert eigendecompositions == [] and result.iterations == 1
        monkeypatch.undo()
        model = subproblem.gauss_newton_model(theta, "dense")
        damping = relative * model.mean_eigenvalue
        assert solver._filter_damping(model, None) == damping
        svd = torch.linalg.svd(model.factorization.factor.dense(), full_matrices=False)
        reference = -singular_value_solve(svd, model.gradient, damping, 0.0)
        length = result.state.step_length
        moved = theta + length * reference
        if acceleration:
            u = flow.parametrization.value(theta)
            curvature = flow.parametrization.second_derivative(theta, reference, reference)
            pulled = flow.manifold.pull_back(theta, subproblem.step_hessian(u).apply(curvature))
            bend = -singular_value_solve(svd, pulled, damping, 0.0)
            assert float(bend.norm()) > 0
            moved = moved + 0.5 * length**2 * bend
        assert float((result.point - moved).norm() / (result.point - theta).norm()) <= 1e-10
        assert result.cost_history[-1] < result.cost_history[0]
    # smaller dampings lose what any Tikhonov solve loses, about eps lambda_max / mu: 5e-8 at the 5-D
    # benchmark's 1e-8 here (lambda_max = 292 tr(A)/p)
    mu = 1e-8 * model.mean_eigenvalue
    reference = -singular_value_solve(svd, model.gradient, mu, 0.0)
    error = float((model.step(mu) - reference).norm() / reference.norm())
    assert 1e-12 < error <= 1e-6


def test_without_the_final_residual_the_iterates_are_the_same_and_no_residual_is_formed(monkeypatch):
    flow = _poisson_flow(tau=1e12)
    theta = flow.parametrization.initial_point()
    results, counts = {}, {}
    for final_residual in (True, False):
        subproblem = flow.subproblem(theta)
        calls = _count_calls(monkeypatch, subproblem, "tangential_residual")
        results[final_residual] = GaussNewton(max_iterations=3, final_residual=final_residual).solve(subproblem, theta)
        counts[final_residual] = len(calls)
    assert torch.equal(results[True].point, results[False].point)
    assert results[True].cost_history == results[False].cost_history
    assert counts == {True: 1, False: 0}
    assert len(results[True].residual_history) == 1 and results[False].residual_history == []
    # a stopping test still measures what it needs
    subproblem = flow.subproblem(theta)
    calls = _count_calls(monkeypatch, subproblem, "tangential_residual")
    tested = GaussNewton(max_iterations=2, tolerance=1e-30, final_residual=False).solve(subproblem, theta)
    assert len(calls) == 3 and tested.residual_iterations == [0, 1, 2]


@pytest.mark.parametrize(
    "bad, error", [(0.0, ValueError), (-1e-8, ValueError), (math.nan, ValueError), ("1e-8", TypeError)]
)
def test_the_step_damping_is_checked(bad, error):
    with pytest.raises(error, match="step_damping"):
        GaussNewton(step_filter="tikhonov", step_damping=bad)


def test_a_step_damping_needs_the_tikhonov_filter():
    with pytest.raises(ValueError, match="step_damping=1e-08 needs step_filter='tikhonov'"):
        GaussNewton(step_damping=1e-8)


def test_the_final_residual_flag_is_checked():
    with pytest.raises(TypeError, match="final_residual"):
        GaussNewton(final_residual=1)


def test_the_kernel_and_the_products_of_b_from_j_equal_the_formed_whitened_jacobian_to_1e_12():
    """K = diag(sqrt d) J J^T diag(sqrt d) and B x, B^T y as products with J (B never formed) against B formed."""
    flow = _poisson_flow(tau=1e12)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    model = subproblem.gauss_newton_model(theta, "dense")
    factor = model.factorization.factor
    assert isinstance(factor, ScaledRows) and factor.shape == factor.dense().shape
    parametrization = flow.parametrization
    rows, columns = parametrization.ambient_dimension, parametrization.num_parameters
    u = parametrization.value(theta)
    whitened = diagonal_of(subproblem.step_hessian(u)).reshape(-1, 1).sqrt() * parametrization.jacobian(theta).reshape(
        rows, columns
    )
    torch.testing.assert_close(factor.dense(), whitened, rtol=1e-14, atol=0.0)
    reference = whitened @ whitened.T
    scale = float(reference.abs().max())
    assert float((model.factorization.gram - reference).abs().max()) <= 1e-12 * scale
    generator = torch.Generator().manual_seed(4)
    for shape in ((columns,), (columns, 3)):
        x = torch.randn(shape, generator=generator, dtype=DTYPE)
        torch.testing.assert_close(factor @ x, whitened @ x, rtol=1e-12, atol=1e-12 * float((whitened @ x).abs().max()))
    for shape in ((rows,), (rows, 3)):
        y = torch.randn(shape, generator=generator, dtype=DTYPE)
        expected = whitened.T @ y
        torch.testing.assert_close(factor.T @ y, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    assert factor.T.shape == (columns, rows)
    torch.testing.assert_close(factor.T.dense(), whitened.T, rtol=1e-14, atol=0.0)


def test_an_absolute_step_damping_is_mu_itself_and_its_step_the_dense_damped_solve():
    """``absolute_damping=True``: mu = step_damping in the units of A (not times tr(A)/p); the iterate is the
    SVD solve at that mu to 1e-10, and differs from the relative damping's step at the same number."""
    flow = _poisson_flow(tau=1e12)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    model = subproblem.gauss_newton_model(theta, "dense")
    mu = 1e-3 * model.mean_eigenvalue * 7.0  # not a multiple the relative rule would land on
    options = {"max_iterations": 1, "step_filter": "tikhonov", "geodesic_acceleration": False}
    absolute = GaussNewton(step_damping=mu, absolute_damping=True, **options)
    relative = GaussNewton(step_damping=mu, **options)
    assert absolute._filter_damping(model, None) == mu
    assert relative._filter_damping(model, None) == mu * model.mean_eigenvalue
    result = absolute.solve(subproblem, theta)
    svd = torch.linalg.svd(model.factorization.factor.dense(), full_matrices=False)
    moved = theta + result.state.step_length * -singular_value_solve(svd, model.gradient, mu, 0.0)
    assert float((result.point - moved).norm() / (result.point - theta).norm()) <= 1e-10
    other = relative.solve(flow.subproblem(theta), theta)
    assert float((other.point - result.point).norm() / (result.point - theta).norm()) > 1e-3


def test_an_absolute_damping_needs_a_step_damping():
    with pytest.raises(ValueError, match="absolute_damping=True needs a step_damping"):
        GaussNewton(step_filter="tikhonov", absolute_damping=True)
    with pytest.raises(TypeError, match="absolute_damping"):
        GaussNewton(step_filter="tikhonov", step_damping=1e-8, absolute_damping="yes")
