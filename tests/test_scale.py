"""The large-scale paths: the kernel solve, the Nyström preconditioner, the solve-mode cost model.

Each new path is held to the dense solve (1e-10 on small problems) and the preconditioner to a counted
cut in CG iterations on a Gram matrix of condition number 1e10.
"""

from __future__ import annotations

import pytest
import torch

from mms_manifolds import IncrementManifold, L2Metric, L2Regression, TorchParametrization
from mms_manifolds.grids import stiffness_1d, trapezoid_weights
from mms_manifolds.linalg import (
    AutoSolve,
    ConjugateGradientSolve,
    DenseSolve,
    GramOperator,
    KernelSolve,
    LayerKernelSolve,
    NystromPreconditioning,
    conjugate_gradient,
    nystrom_approximation,
)
from mms_manifolds.linalg.kernel import kernel_gram_matrix
from mms_manifolds.metrics import SobolevMetric
from mms_manifolds.subproblem import MMSSubproblem

from cases import mlp


def wide_problem(count: int = 30, widths=(1, 12, 12, 1), seed: int = 3):
    """A net with p = 193 > Nm = 30: the kernel side is the smaller one."""
    nodes = torch.linspace(-1, 1, count, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp(widths, seed), nodes)
    metric = L2Metric(torch.full((count,), 2 / count, dtype=torch.float64))
    return parametrization, metric, nodes


@pytest.mark.parametrize("damping", [1e-2, 1e-6])
def test_kernel_solve_equals_the_dense_solve(damping):
    parametrization, metric, _ = wide_problem()
    theta = parametrization.initial_point()
    rhs = torch.randn(parametrization.num_parameters, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).solve(rhs, damping).value
    kernel = KernelSolve(block_rows=7).factorize(GramOperator(parametrization, metric, theta)).solve(rhs, damping).value
    assert float((kernel - dense).norm() / dense.norm()) < 1e-10
    gram = GramOperator(parametrization, metric, theta).gram_matrix()
    exact = torch.linalg.solve(gram + damping * torch.eye(gram.shape[0], dtype=torch.float64), rhs)
    assert float((kernel - exact).norm() / exact.norm()) < 1e-8  # the p x p system itself, cond <= 1e6


def test_block_kernel_gram_matrix_is_b_b_transpose_and_symmetric():
    factor = torch.randn(23, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for block in (1, 5, 23, 100):
        gram = kernel_gram_matrix(factor, block)
        assert torch.equal(gram, gram.T)
        torch.testing.assert_close(gram, factor @ factor.T, rtol=1e-14, atol=1e-13)


@pytest.mark.parametrize("kernel_mode", [KernelSolve(), LayerKernelSolve()])
@pytest.mark.parametrize("metric_kind", ["l2", "sobolev"])
@pytest.mark.parametrize(("count", "full_rank"), [(8, True), (40, False)])
def test_kernel_residual_split_equals_the_svd_split(metric_kind, count, full_rank, kernel_mode):
    """Full rank (Cholesky certificate: exact, 1e-10) and rank-deficient (eigh of K) kernels against the dense SVD split.

    Both kernel modes: ``B B^T`` (``KernelSolve``) and the layers' kernel with ``B`` as products (``LayerKernelSolve``).

    Where K is rank-deficient its eigenvectors near the cutoff carry the Gram matrix's rounding,
    about sqrt(eps) of the target (the accuracy of the CUDA path of ``GramOperator.whitened_svd`` too).
    """
    parametrization, metric, nodes = wide_problem(count, (1, 12, 12, 1))
    if metric_kind == "sobolev":
        metric = SobolevMetric(trapezoid_weights(count, -1.0, 1.0), stiffness_1d(count, -1.0, 1.0, "neumann"), 0.1)
    theta = parametrization.initial_point()
    v = torch.sin(4 * nodes) + nodes**3
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta))
    kernel = kernel_mode.factorize(GramOperator(parametrization, metric, theta))
    assert kernel.full_rank() is full_rank
    tolerance = (1e-10 if full_rank else 1e-6) * float(metric.norm(v))
    for got, want in zip(kernel.range_split_norms(v, 0.0), dense.range_split_norms(v, 0.0)):
        assert abs(got - want) <= tolerance
    egrad = parametrization.vjp(theta, metric.apply(v))
    got, want = kernel.dual_tangential_norm(egrad, 0.0), dense.dual_tangential_norm(egrad, 0.0)
    assert abs(got - want) <= (1e-8 if full_rank else 1e-6) * want  # K^{-1}: the Gram side's conditioning


def test_kernel_mode_refuses_a_tall_problem():
    nodes = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp((1, 3, 1), 0), nodes)
    metric = L2Metric(torch.full((50,), 0.04, dtype=torch.float64))
    with pytest.raises(ValueError, match="Nm < p"):
        KernelSolve().factorize(GramOperator(parametrization, metric, parametrization.initial_point()))
    with pytest.raises(ValueError, match="block_rows"):
        KernelSolve(block_rows=0)


def test_kernel_mode_gauss_newton_step_equals_the_dense_one():
    from mms_manifolds import GaussNewton

    parametrization, metric, nodes = wide_problem()
    energy = L2Regression(torch.sin(3 * nodes), metric)
    theta = parametrization.initial_point()
    results = {}
    for mode in ("dense", "kernel"):
        manifold = IncrementManifold(parametrization, metric, solve_mode=mode)
        subproblem = MMSSubproblem(manifold, energy, 0.2, torch.zeros_like(nodes))
        results[mode] = GaussNewton(max_iterations=3).solve(subproblem, theta)
    assert float((results["kernel"].point - results["dense"].point).norm()) <= 1e-10 * float(
        results["dense"].point.norm()
    )


def conditioned_gram(size: int = 400, decay: int = 40, seed: int = 0) -> torch.Tensor:
    """A PSD matrix with 40 eigenvalues from 1 down to 1e-12 (a smooth network's fast decay) and a zero block."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    eigenvalues = torch.cat([torch.logspace(0, -12, decay, dtype=torch.float64), torch.zeros(size - decay, dtype=torch.float64)])
    matrix = (basis * eigenvalues) @ basis.T
    return 0.5 * (matrix + matrix.T)


def test_nystrom_preconditioner_cuts_cg_iterations_on_a_cond_1e10_gram():
    """Damped by 1e-10 the Gram matrix has condition number 1e10: plain CG needs > 1000 iterations, Nyström PCG < 10."""
    gram, damping = conditioned_gram(), 1e-10
    size = gram.shape[0]
    rhs = torch.randn(size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eigenvalues = torch.linalg.eigvalsh(gram + damping * torch.eye(size, dtype=torch.float64))
    assert 0.5e10 < float(eigenvalues[-1] / eigenvalues[0]) < 2e10

    def matvec(x):
        return gram @ x + damping * x

    options = {"tolerance": 1e-10, "max_iterations": 5000}
    _, plain_iterations, plain_residual = conjugate_gradient(matvec, rhs, **options)
    sketch = nystrom_approximation(lambda x: gram @ x, size, 60, dtype=torch.float64, device="cpu")
    assert sketch.matvecs == 60
    _, nystrom_iterations, nystrom_residual = conjugate_gradient(
        matvec, rhs, preconditioner=sketch.preconditioner(damping), **options
    )
    assert plain_residual <= 1e-10 and nystrom_residual <= 1e-10
    assert plain_iterations > 1000
    assert nystrom_iterations * 100 <= plain_iterations  # a cut by at least 100 times (measured: 1884 -> 3)
    # the sketch is exact where the rank exceeds the operator's: its eigenvalues are the top ones
    top = torch.linalg.eigvalsh(gram).flip(0)[:20]  # 1 down to 2e-6: to the shift, about sqrt(n) eps
    torch.testing.assert_close(sketch.eigenvalues[:20], top, rtol=0, atol=1e-12)


def test_nystrom_pcg_mode_equals_the_dense_solve():
    parametrization, metric, _ = wide_problem(count=60, widths=(1, 8, 8, 1))
    theta = parametrization.initial_point()
    rhs = torch.randn(parametrization.num_parameters, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    damping = 1e-4
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).solve(rhs, damping).value
    plain = ConjugateGradientSolve(tolerance=1e-13).factorize(GramOperator(parametrization, metric, theta))
    nystrom = ConjugateGradientSolve(tolerance=1e-13, preconditioner=NystromPreconditioning(40)).factorize(
        GramOperator(parametrization, metric, theta)
    )
    plain_solution, nystrom_solution = plain.solve(rhs, damping), nystrom.solve(rhs, damping)
    assert float((nystrom_solution.value - dense).norm() / dense.norm()) < 1e-10
    assert nystrom_solution.iterations < plain_solution.iterations
    with pytest.raises(ValueError, match="Nyström rank"):
        NystromPreconditioning(0)


def test_nystrom_rejects_bad_ranks_and_dampings():
    gram = conditioned_gram(size=50, decay=10)
    with pytest.raises(ValueError, match="rank"):
        nystrom_approximation(lambda x: gram @ x, 50, 0, dtype=torch.float64, device="cpu")
    sketch = nystrom_approximation(lambda x: gram @ x, 50, 5, dtype=torch.float64, device="cpu")
    with pytest.raises(ValueError, match="damping"):
        sketch.preconditioner(0.0)


@pytest.mark.parametrize(
    ("parameters", "ambient", "expected"),
    [
        (20601, 4900, "kernel"),  # the regression step of docs/performance.md: 3.0 GiB, no SVD
        (20601, 2500, "kernel"),  # under the dense cap, but the dense SVD took 180 s there
        (99853, 1000, "kernel"),
        (100_000, 10_000, "cg"),  # the kernel would take 25 GiB
        (5000, 5000, "cg"),  # Nm = p: no kernel side
    ],
)
def test_auto_solve_takes_the_kernel_where_it_fits_and_pays(parameters, ambient, expected):
    mode, reason = AutoSolve().select(parameters, ambient)
    assert mode.name == expected, reason
    assert "per point" in reason
    # a budget too small for the kernel sends it to CG, whatever the time model says
    assert AutoSolve(memory_budget_bytes=2**28).select(20601, 4900)[0].name == "cg"


@pytest.mark.parametrize("relative_damping", [1e-2, 1e-4])
def test_certified_decrease_cg_step_achieves_the_stated_share_of_the_dense_step(relative_damping):
    """A CG-mode Gauss–Newton step under CertifiedDecrease(0.9) decreases the damped model by >= 0.9 of the dense step's.

    The damped model m(d) + mu |d|^2 / 2 is the one a Levenberg–Marquardt step minimises; its decrease is
    computed here from the dense Gram matrix, not from the solver's own formula.
    """
    from mms_manifolds.linalg import CertifiedDecrease

    nodes = torch.linspace(-1, 1, 80, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp((1, 10, 10, 1), 4), nodes)
    metric = L2Metric(torch.full((80,), 2 / 80, dtype=torch.float64))
    energy = L2Regression(torch.sin(3 * nodes), metric)
    theta = parametrization.initial_point()
    decreases, iterations, damping = {}, {}, None
    for name, mode in {
        "dense": "dense",
        "certified": ConjugateGradientSolve(tolerance=CertifiedDecrease(0.9)),
        "plain": ConjugateGradientSolve(),
    }.items():
        manifold = IncrementManifold(parametrization, metric, solve_mode=mode)
        model = MMSSubproblem(manifold, energy, 0.2, torch.zeros_like(nodes)).gauss_newton_model(theta)
        if damping is None:  # the dense model's exact trace (CG's is Hutchinson's estimate): one damping for all
            damping = relative_damping * model.mean_eigenvalue
        step = model.step(damping)
        curvature = model.scale * GramOperator(parametrization, metric, theta).matvec(step) + damping * step
        decreases[name] = float(-(model.gradient @ step) - 0.5 * (step @ curvature))
        iterations[name] = model.factorization.linear_iterations
    assert 0.9 * decreases["dense"] <= decreases["certified"] <= decreases["dense"] * (1 + 1e-10)
    assert abs(decreases["plain"] - decreases["dense"]) <= 1e-8 * decreases["dense"]
    assert iterations["certified"] < iterations["plain"]


def test_certified_decrease_fraction_bounds_the_true_fraction():
    gram = conditioned_gram(size=80, decay=30, seed=1)
    damping = 1e-6
    matrix = gram + damping * torch.eye(80, dtype=torch.float64)
    rhs = torch.randn(80, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = torch.linalg.solve(matrix, rhs)
    best = 0.5 * float(rhs @ exact)
    from mms_manifolds.linalg import certified_decrease_fraction

    for cap in (1, 3, 10, 30):
        x, _, relative = conjugate_gradient(lambda v: matrix @ v, rhs, tolerance=1e-14, max_iterations=cap)
        true_fraction = (float(rhs @ x) - 0.5 * float(x @ matrix @ x)) / best
        bound = certified_decrease_fraction(float(rhs @ x), relative * float(rhs.norm()), damping)
        assert bound <= true_fraction * (1 + 1e-9)


def test_progress_records_arrive_during_a_gauss_newton_solve(caplog):
    """One INFO record per inner iteration, in order, each carrying the iterate, before the solve returns."""
    import logging

    from mms_manifolds import GaussNewton
    from mms_manifolds.progress import InnerProgress

    parametrization, metric, nodes = wide_problem()
    manifold = IncrementManifold(parametrization, metric, solve_mode=ConjugateGradientSolve())
    subproblem = MMSSubproblem(manifold, L2Regression(torch.sin(3 * nodes), metric), 0.2, torch.zeros_like(nodes))
    seen_during_the_solve = []

    class Watcher(logging.Handler):
        def emit(self, record):
            seen_during_the_solve.append(record.progress)

    watcher = Watcher(level=logging.INFO)
    logger = logging.getLogger("mms_manifolds.progress")
    logger.addHandler(watcher)
    try:
        with caplog.at_level(logging.INFO, logger="mms_manifolds.progress"):
            result = GaussNewton(max_iterations=3, tolerance=1e-30).solve(subproblem, parametrization.initial_point())
    finally:
        logger.removeHandler(watcher)
    assert [progress.iteration for progress in seen_during_the_solve] == [1, 2, 3] == list(range(1, result.iterations + 1))
    assert all(isinstance(progress, InnerProgress) for progress in seen_during_the_solve)
    assert [progress.cost for progress in seen_during_the_solve] == result.cost_history[1:]
    assert [progress.residual for progress in seen_during_the_solve] == result.residual_history[1:]
    assert all(progress.linear_iterations > 0 for progress in seen_during_the_solve)  # CG mode counts its iterations
    assert torch.equal(seen_during_the_solve[-1].point, result.point)
    times = [progress.seconds for progress in seen_during_the_solve]
    assert times == sorted(times)
    assert "gauss-newton iteration 2: cost = " in caplog.text and "CG iterations = " in caplog.text


def small_flow():
    from mms_manifolds import MinimizingMovement

    parametrization, metric, nodes = wide_problem(count=40, widths=(1, 8, 1))
    return MinimizingMovement(parametrization, L2Regression(torch.sin(3 * nodes), metric), metric, 0.2)


def test_progress_lines_appear_inside_each_step_of_a_run(capsys):
    from mms_manifolds import GaussNewton

    flow = small_flow()
    flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=3), progress=True)
    lines = capsys.readouterr().err.splitlines()
    steps = [index for index, line in enumerate(lines) if line.startswith("step ")]
    inner = [index for index, line in enumerate(lines) if "gauss-newton iteration" in line]
    assert len(steps) == 2 and len(inner) >= 4
    # the inner lines of step 1 come before its step line, those of step 2 between the two
    assert any(index < steps[0] for index in inner) and any(steps[0] < index < steps[1] for index in inner)


def test_certify_false_skips_the_residuals_and_says_so():
    import math

    from mms_manifolds import GaussNewton, TrajectoryBudget

    flow = small_flow()
    theta = flow.parametrization.initial_point()
    certified = flow.run(theta, 2, GaussNewton(max_iterations=2))
    quick = flow.run(theta, 2, GaussNewton(max_iterations=2), certify=False)
    assert torch.equal(torch.as_tensor(quick.thetas[-1], dtype=torch.float64), torch.as_tensor(certified.thetas[-1], dtype=torch.float64))  # the same steps
    assert certified.certified and not quick.certified
    assert all(math.isnan(value) for value in quick.residual_total[1:])
    assert all(math.isnan(value) for value in quick.tracking_bound[1:])
    assert any("certify=False" in note for note in quick.metadata["notes"])
    assert "solve_mode_reason" in quick.metadata and "Cholesky" in quick.metadata["solve_mode_reason"]
    with pytest.raises(ValueError, match="certify=False"):
        flow.run(theta, 2, GaussNewton(max_iterations=2), certify=False, budget=TrajectoryBudget(1e-2))
    with pytest.raises(TypeError, match="certify"):
        flow.run(theta, 2, GaussNewton(max_iterations=2), certify="no")


def test_the_ledger_reads_the_solvers_final_residual_from_the_cache(monkeypatch):
    """One residual split per step for GN (its own final residual, reused by the driver), none at the start."""
    from mms_manifolds import Adam, GaussNewton
    from mms_manifolds import IncrementManifold as Manifold

    flow = small_flow()
    calls = []
    original = Manifold.split_norms

    def counting(self, theta, v):
        calls.append(1)
        return original(self, theta, v)

    monkeypatch.setattr(Manifold, "split_norms", counting)
    flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert len(calls) == 2
    calls.clear()
    flow.run(flow.parametrization.initial_point(), 2, Adam(max_iterations=3))
    assert len(calls) == 2  # no start residual where no tolerance reads it


def test_a_certify_false_checkpoint_is_not_resumed_as_certified(tmp_path):
    """Its bounds so far are nan: a certifying resume refuses, naming certify; certify=False resumes it."""
    from mms_manifolds import GaussNewton

    flow, path = small_flow(), tmp_path / "quick.npz"
    theta = flow.parametrization.initial_point()
    flow.run(theta, 2, GaussNewton(max_iterations=2), checkpoint=path, certify=False)
    with pytest.raises(ValueError, match="certify=False"):
        flow.run(theta, 4, GaussNewton(max_iterations=2), checkpoint=path)
    resumed = flow.run(theta, 4, GaussNewton(max_iterations=2), checkpoint=path, certify=False)
    assert resumed.steps_done == 4 and not resumed.certified


class _ScaledOutput(torch.nn.Module):
    """An MLP whose output is multiplied by a trainable scalar: a parameter outside every ``Linear`` layer."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).to(torch.float64)
        self.scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.body(x)


@pytest.mark.parametrize("widths", [(2, 7, 5, 1), (2, 6, 3)])
def test_layer_kernel_equals_j_j_transpose(widths):
    """The per-layer kernel of an MLP (one or three outputs per node) is J J^T to rounding."""
    torch.manual_seed(0)
    nodes = torch.rand(25, 2, dtype=torch.float64)
    parametrization = TorchParametrization(mlp(widths, 4, torch.float64), nodes)
    theta = parametrization.initial_point() + 0.3 * torch.randn(parametrization.num_parameters, dtype=torch.float64)
    jacobian = parametrization.jacobian(theta).reshape(-1, parametrization.num_parameters)
    kernel = parametrization.jacobian_kernel(theta)
    assert kernel is not None
    torch.testing.assert_close(kernel, jacobian @ jacobian.T, rtol=1e-12, atol=1e-12 * float(kernel.abs().max()))


def test_layer_kernel_declines_a_parameter_outside_linear_layers_and_the_kernel_mode_still_agrees():
    nodes = torch.rand(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    parametrization = TorchParametrization(_ScaledOutput(), nodes)
    theta = parametrization.initial_point()
    parametrization.jacobian(theta)  # the node-separability check
    assert parametrization.jacobian_kernel(theta) is None
    metric = L2Metric(torch.full((20,), 0.05, dtype=torch.float64))
    factorization = KernelSolve().factorize(GramOperator(parametrization, metric, theta))
    whitened = GramOperator(parametrization, metric, theta).whitened_jacobian()
    torch.testing.assert_close(factorization.gram, whitened @ whitened.T, rtol=1e-13, atol=1e-15)
    assert factorization.kernel_source == "jacobian"


@pytest.mark.parametrize("metric_kind", ["l2", "sobolev"])
def test_kernel_mode_forms_the_whitened_kernel_from_layers(metric_kind):
    """C^T (J J^T) C from the layers equals B B^T of the whitened Jacobian, for a diagonal and a Sobolev metric."""
    parametrization, metric, _ = wide_problem(30, (1, 12, 12, 1))
    if metric_kind == "sobolev":
        metric = SobolevMetric(trapezoid_weights(30, -1.0, 1.0), stiffness_1d(30, -1.0, 1.0, "neumann"), 0.1)
    theta = parametrization.initial_point()
    factorization = KernelSolve().factorize(GramOperator(parametrization, metric, theta))
    whitened = GramOperator(parametrization, metric, theta).whitened_jacobian()
    expected = whitened @ whitened.T
    torch.testing.assert_close(factorization.gram, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    assert factorization.kernel_source == "layers"


def test_a_kernel_mode_residual_at_a_new_point_forms_no_jacobian_and_no_eigendecomposition(monkeypatch):
    """Counted: the ledger's residual of a smooth network (low-rank K) costs the layer factors and a pivoted Cholesky: no J, no K, no eigh of K."""
    generator = torch.Generator().manual_seed(0)
    nodes = torch.cartesian_prod(*(torch.linspace(-1, 1, 20, dtype=torch.float64),) * 2)
    parametrization = TorchParametrization(mlp((2, 30, 30, 1), 5, torch.float64), nodes)
    metric = L2Metric(torch.full((400,), 4 / 400, dtype=torch.float64))
    target = nodes.abs().sum(-1, keepdim=True)
    manifold = IncrementManifold(parametrization, metric, solve_mode="kernel")
    subproblem = MMSSubproblem(manifold, L2Regression(target, metric), 0.2, torch.zeros_like(target))
    theta = parametrization.initial_point() + 0.01 * torch.randn(
        parametrization.num_parameters, generator=generator, dtype=torch.float64
    )
    jacobians, eigendecompositions = [], []
    jacobian, eigh = type(parametrization).jacobian, torch.linalg.eigh
    monkeypatch.setattr(type(parametrization), "jacobian", lambda self, point: jacobians.append(1) or jacobian(self, point))
    monkeypatch.setattr(torch.linalg, "eigh", lambda matrix: eigendecompositions.append(matrix.shape[0]) or eigh(matrix))
    residual = subproblem.residual(theta)
    assert jacobians == [] and 400 not in eigendecompositions
    factorization = manifold.metric_factorization(theta)
    assert factorization.split_source == "layer factors" and factorization._kept is not None
    assert factorization._gram is None and factorization.kernel_source is None  # K never formed
    monkeypatch.undo()
    ambient = metric.solve(subproblem.function_gradient(parametrization.value(theta)))
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).range_split_norms(ambient, 0.0)
    scale = float(metric.norm(ambient))
    # against the SVD split: tangential 1e-7 relative; the small normal part differs by 2e-6 of |r| (eigh of K: 2.6e-5)
    assert abs(residual.tangential - dense[0]) <= 1e-6 * scale and abs(residual.normal - dense[1]) <= 1e-5 * scale


def test_pivoted_cholesky_leaves_a_psd_schur_complement_below_the_tolerance():
    from mms_manifolds.linalg.kernel import pivoted_cholesky

    gram = conditioned_gram(60, 12)
    tolerance = 1e-9 * float(gram.diagonal().max())
    columns = pivoted_cholesky(gram, tolerance, 60)
    rest = gram - columns @ columns.T
    assert columns.shape[1] < 60 and float(rest.diagonal().max()) <= tolerance
    assert float(torch.linalg.eigvalsh(rest)[0]) >= -1e-12
    assert pivoted_cholesky(gram, tolerance, 3) is None  # more pivots than allowed
    assert pivoted_cholesky(torch.zeros(4, 4, dtype=torch.float64), 0.0, 4).shape == (4, 0)


class _Square(torch.nn.Module):
    """The activation x -> x^2: a network of these is a polynomial in its input, so J J^T has exact low rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def polynomial_problem(outputs: int = 1):
    """A 2-30-30-outputs network with square activations on 400 nodes (p = 1021 + 31 outputs > Nm): J J^T has rank 15 per output."""
    torch.manual_seed(1)
    network = torch.nn.Sequential(
        torch.nn.Linear(2, 30), _Square(), torch.nn.Linear(30, 30), _Square(), torch.nn.Linear(30, outputs)
    ).to(torch.float64)
    nodes = torch.cartesian_prod(*(torch.linspace(-1, 1, 20, dtype=torch.float64),) * 2)
    parametrization = TorchParametrization(network, nodes, node_separable=True)
    weights = 0.5 + torch.rand(400, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return parametrization, L2Metric(weights / 400), nodes


@pytest.mark.parametrize(("widths", "frozen"), [((2, 7, 5, 1), None), ((2, 6, 3), None), ((2, 7, 5, 1), "2.bias")])
def test_layer_factors_give_the_diagonal_columns_and_products_of_j_j_transpose(widths, frozen):
    """Diagonal, columns, K V and the Gram matrix of J^T V from the layer factors equal those of J J^T (one or three outputs, a frozen bias)."""
    torch.manual_seed(0)
    nodes = torch.rand(25, 2, dtype=torch.float64)
    network = mlp(widths, 4, torch.float64)
    if frozen is not None:
        network.get_parameter(frozen).requires_grad_(False)
    parametrization = TorchParametrization(network, nodes, node_separable=True)
    theta = parametrization.initial_point() + 0.3 * torch.randn(parametrization.num_parameters, dtype=torch.float64)
    jacobian = parametrization.jacobian(theta).reshape(-1, parametrization.num_parameters)
    kernel = jacobian @ jacobian.T
    factors = parametrization.layer_factors(theta)
    assert factors is not None and factors.size == kernel.shape[0]
    vectors = torch.randn(kernel.shape[0], 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    indices = torch.tensor([0, 5, kernel.shape[0] - 1])
    scale = float(kernel.abs().max())
    close = {"rtol": 1e-12, "atol": 1e-12 * scale}
    torch.testing.assert_close(factors.kernel(), kernel, **close)
    torch.testing.assert_close(factors.diagonal(), kernel.diagonal(), **close)
    torch.testing.assert_close(factors.columns(indices), kernel[:, indices], **close)
    torch.testing.assert_close(factors.kernel_product(vectors), kernel @ vectors, rtol=1e-12, atol=1e-12 * scale * 25)
    rows = factors.transpose_products(vectors)  # J^T V, its rows in the layers' order: the same Gram matrix
    torch.testing.assert_close(rows @ rows.T, (jacobian.T @ vectors).T @ (jacobian.T @ vectors), rtol=1e-12, atol=1e-10)


def test_l2_whitening_is_the_diagonal_it_reports():
    weights = torch.rand(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    values = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale = L2Metric(weights).diagonal_whitening((6, 2), dtype=torch.float64, device=torch.device("cpu"))
    torch.testing.assert_close(L2Metric(weights).whiten(values), scale * values.reshape(-1), rtol=0, atol=0)
    sobolev = SobolevMetric(trapezoid_weights(6, -1.0, 1.0), stiffness_1d(6, -1.0, 1.0, "neumann"), 0.1)
    assert sobolev.diagonal_whitening((6, 1), dtype=torch.float64, device=torch.device("cpu")) is None
    with pytest.raises(ValueError, match="6 nodes"):
        L2Metric(weights).diagonal_whitening((5, 1), dtype=torch.float64, device=torch.device("cpu"))


@pytest.mark.parametrize("outputs", [1, 2])
def test_the_layer_factor_split_forms_no_kernel_and_equals_the_dense_and_the_kernel_split(outputs, monkeypatch):
    """Counted: no J, no K. Exactly low-rank J J^T (rank 15 per output): the split equals the SVD split and the formed-K split to 1e-10 of |v|_M."""
    parametrization, metric, nodes = polynomial_problem(outputs)
    theta = parametrization.initial_point()
    components = torch.arange(1.0, outputs + 1.0, dtype=torch.float64)
    v = (torch.sin(3 * nodes[:, :1]) + nodes[:, 1:] ** 3).repeat(1, outputs) * components
    jacobians = []
    jacobian = type(parametrization).jacobian
    monkeypatch.setattr(
        type(parametrization), "jacobian", lambda self, point: jacobians.append(1) or jacobian(self, point)
    )
    factorization = KernelSolve().factorize(GramOperator(parametrization, metric, theta))
    split = factorization.range_split_norms(v, 0.0)
    assert jacobians == [] and factorization._gram is None and factorization.split_source == "layer factors"
    assert factorization._kept[0].numel() == 15 * outputs
    monkeypatch.undo()
    formed = KernelSolve().factorize(GramOperator(parametrization, metric, theta))
    formed._factors_known = True  # no layer factors: the split of the formed kernel (pivoted Cholesky, Rayleigh–Ritz)
    from_kernel = formed.range_split_norms(v, 0.0)
    assert formed.split_source == "kernel"
    dense = DenseSolve().factorize(GramOperator(parametrization, metric, theta)).range_split_norms(v, 0.0)
    scale = float(metric.norm(v))
    for got, want, other in zip(split, dense, from_kernel):
        assert abs(got - want) <= 1e-10 * scale and abs(got - other) <= 1e-10 * scale
    assert split[1] > 1e-3 * scale  # a real normal part: the target is no polynomial of degree 4


def test_a_metric_without_a_diagonal_whitening_splits_with_the_formed_kernel():
    parametrization, _, nodes = wide_problem(40, (1, 12, 12, 1))
    metric = SobolevMetric(trapezoid_weights(40, -1.0, 1.0), stiffness_1d(40, -1.0, 1.0, "neumann"), 0.1)
    theta = parametrization.initial_point()
    parametrization.jacobian(theta)  # the node-separability check, which the layer factors need
    factorization = KernelSolve().factorize(GramOperator(parametrization, metric, theta))
    factorization.range_split_norms(torch.sin(4 * nodes), 0.0)
    assert factorization.split_source == "kernel" and factorization.kernel_source == "layers"
