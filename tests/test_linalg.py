"""The linear algebra of the pullback metric: preconditioned CG, and the matrix-free mode's memory guard."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mms_manifolds import GaussNewton, IncrementManifold, L2Metric, L2Regression, TorchParametrization
from mms_manifolds.linalg import (
    AutoSolve,
    CertifiedDecrease,
    ConjugateGradientSolve,
    EisenstatWalker,
    GramOperator,
    NystromPreconditioning,
    conjugate_gradient,
)
from mms_manifolds.subproblem import MMSSubproblem

from cases import mlp


def test_jacobi_preconditioning_solves_the_same_system_in_fewer_iterations():
    generator = torch.Generator().manual_seed(0)
    size = 60
    factor = torch.randn(size, size, generator=generator, dtype=torch.float64) / size**0.5
    scales = torch.logspace(-3, 3, size, dtype=torch.float64)
    matrix = scales.sqrt()[:, None] * (factor @ factor.T + torch.eye(size, dtype=torch.float64)) * scales.sqrt()
    rhs = torch.randn(size, generator=generator, dtype=torch.float64)
    exact = torch.linalg.solve(matrix, rhs)
    options = {"tolerance": 1e-10, "max_iterations": 2000}
    plain, plain_iterations, _ = conjugate_gradient(lambda x: matrix @ x, rhs, **options)
    jacobi, jacobi_iterations, relative = conjugate_gradient(
        lambda x: matrix @ x, rhs, preconditioner=1 / matrix.diagonal(), **options
    )
    assert relative <= 1e-10
    torch.testing.assert_close(jacobi, exact, rtol=1e-7, atol=0)
    assert jacobi_iterations < plain_iterations / 3
    torch.testing.assert_close(plain, exact, rtol=1e-6, atol=0)


def test_hutchinson_diagonal_estimates_the_gram_diagonal():
    parametrization = TorchParametrization(mlp((1, 6, 1), 1), torch.linspace(-1, 1, 40, dtype=torch.float64).unsqueeze(-1))
    metric = L2Metric(torch.full((40,), 0.05, dtype=torch.float64))
    operator = GramOperator(parametrization, metric, parametrization.initial_point())
    exact = operator.gram_matrix().diagonal()
    estimate = ConjugateGradientSolve(diagonal_probes=400).factorize(operator).diagonal()
    assert float((estimate - exact).norm() / exact.norm()) < 0.3  # a rough but positive scaling
    assert bool((estimate > 0).all())
    with pytest.raises(ValueError, match="preconditioner"):
        ConjugateGradientSolve(preconditioner="ilu")


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return output


@pytest.mark.parametrize(
    ("preconditioner", "tolerance"),
    [("jacobi", 1e-10), ("none", 1e-10), (NystromPreconditioning(16), 1e-10), ("none", CertifiedDecrease(0.9))],
)
def test_matrix_free_mode_never_creates_an_n_by_p_tensor(preconditioner, tolerance):
    count, widths = 400, (1, 24, 24, 1)
    nodes = torch.linspace(-1, 1, count, dtype=torch.float64).unsqueeze(-1)
    parametrization = TorchParametrization(mlp(widths, 2), nodes)
    metric = L2Metric(torch.full((count,), 2 / count, dtype=torch.float64))
    mode = ConjugateGradientSolve(
        max_iterations=50, preconditioner=preconditioner, on_unconverged="ignore", tolerance=tolerance
    )  # capped: short; the Nyström sketch is p x 16
    manifold = IncrementManifold(parametrization, metric, solve_mode=mode)
    p = parametrization.num_parameters
    anchor = torch.zeros(parametrization.output_shape, dtype=torch.float64)
    subproblem = MMSSubproblem(manifold, L2Regression(torch.sin(3 * nodes), metric), 0.1, anchor)
    theta = parametrization.initial_point()
    guard = LargestTensor()
    with guard:
        manifold.egrad2rgrad(theta, subproblem.euclidean_gradient(theta))
        subproblem.residual(theta)
        GaussNewton(max_iterations=2).solve(subproblem, theta)
        GaussNewton(max_iterations=1, forcing=EisenstatWalker()).solve(subproblem, theta)
        manifold.retract_projective(theta, 1e-3 * theta)
    # the widest tensor is a layer activation (N x width) or a parameter-sized vector, far below N x p
    assert guard.largest < count * p / 10, (guard.largest, count * p)
    dense_guard = LargestTensor()
    with dense_guard:
        IncrementManifold(parametrization, metric, solve_mode="dense").egrad2rgrad(theta, torch.ones(p, dtype=torch.float64))
    assert dense_guard.largest >= count * p  # the guard does see a materialised Jacobian


def test_a_jet_energy_in_the_matrix_free_mode_never_creates_an_n_by_p_tensor():
    """Mesh-free jets (value and gradient rows, a diagonal step Hessian): no N x p tensor in the CG mode, where the dense mode makes one."""
    from mms_manifolds.meshfree import JetMetric, JetParametrization, RitzEnergy, box_interior_grid

    jets = JetParametrization(mlp((2, 24, 24, 1), 1), {"interior": box_interior_grid(10, 2, ("value", "gradient"))})
    energy = RitzEnergy(jets, lambda x: torch.ones_like(x[:, 0]))
    metric = JetMetric(jets, value={"interior": 1.0}, gradient={"interior": 1.0})
    mode = ConjugateGradientSolve(max_iterations=20, on_unconverged="ignore")
    manifold = IncrementManifold(jets, metric, solve_mode=mode)
    theta = jets.initial_point()
    subproblem = MMSSubproblem(manifold, energy, 0.1, jets.value(theta))
    size = jets.ambient_dimension * jets.num_parameters
    guard = LargestTensor()
    with guard:
        result = GaussNewton(max_iterations=1).solve(subproblem, theta)
        manifold.retract_projective(theta, 1e-3 * theta, iterations=1)
    assert guard.largest < size / 10, (guard.largest, size)
    assert result.cost_history[-1] < result.cost_history[0]
    dense_guard = LargestTensor()
    with dense_guard:
        IncrementManifold(jets, metric, solve_mode="dense").egrad2rgrad(theta, torch.ones_like(theta))
    assert dense_guard.largest >= size


@pytest.mark.parametrize(
    ("parameters", "ambient", "expected"),
    [
        (286, 300, "dense"),
        (1021, 10_000, "dense"),  # J is 82 MB: the factorisation's ~650 MB fits the 1 GiB budget
        (9997, 1000, "kernel"),  # the dense mode's SVD of 1000 x 9997 is ~14 s: the kernel's Cholesky instead
        (1021, 1000, "dense"),  # that SVD under 2 s: the dense mode, as before
        (1021, 100_000, "cg"),  # J is 817 MB: the dense factorisation peaked at 7.2 GB
        (99853, 1000, "kernel"),  # J is 800 MB: the dense SVD path peaked at 5.8 GB; the kernel's Cholesky needs 2.3 GiB
        (5000, 5000, "cg"),  # a 5000 x 5000 Gram side is past the CPU's dense limit (and the budget)
    ],
)
def test_auto_solve_picks_by_size_and_the_factorisation_memory(parameters, ambient, expected):
    mode, reason = AutoSolve().select(parameters, ambient)
    assert mode.name == expected, reason
    assert AutoSolve(max_dense_size=6000, memory_budget_bytes=2**40).select(5000, 5000)[0].name == "dense"
    assert AutoSolve(memory_budget_bytes=2**40).select(1021, 100_000)[0].name == "dense"
    assert AutoSolve(memory_budget_bytes=2**30).select(99853, 1000)[0].name == "cg"  # the budget before the kernel mode


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_svd_from_the_gram_eigendecomposition_matches_lapack(shape):
    """The CUDA path of GramOperator.whitened_svd: U S Vh from eigh of the smaller Gram side, checked on the CPU."""
    from mms_manifolds.linalg.operator import _svd_from_gram

    generator = torch.Generator().manual_seed(2)
    factor = torch.randn(*shape, generator=generator, dtype=torch.float64)
    factor[:, -1] = factor[:, 0]  # rank deficient by one
    left, singular, right = _svd_from_gram(factor)
    reference = torch.linalg.svdvals(factor)
    # a zero singular value comes out at the rounding level of the Gram matrix, sqrt(eps) sigma_max
    assert torch.allclose(singular, reference, atol=10 * torch.finfo(factor.dtype).eps ** 0.5 * float(reference[0]))
    assert torch.allclose((left * singular) @ right, factor, atol=1e-12)
    kept = singular > 1e-8 * singular[0]
    assert torch.allclose(left[:, kept].T @ left[:, kept], torch.eye(int(kept.sum()), dtype=torch.float64), atol=1e-10)


def test_auto_solve_on_cuda_allows_larger_dense_sides():
    cuda = AutoSolve(memory_budget_bytes=2**40)
    assert cuda.select(5000, 5000, device="cuda")[0].name == "dense"  # min(p, Nm) <= 16384 there
    assert cuda.select(5000, 5000, device="cpu")[0].name == "cg"  # past the CPU's 4096
    assert cuda.select(20000, 20000, device="cuda")[0].name == "cg"


def test_an_unconverged_cg_solve_is_reported():
    """CG at its iteration cap above its tolerance: converged=False, and a warning or an error by setting."""
    from mms_manifolds.linalg import UnconvergedSolveError

    parametrization = TorchParametrization(mlp((1, 8, 8, 1), 0), torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(-1))
    metric = L2Metric(torch.full((50,), 1 / 50, dtype=torch.float64))
    theta = parametrization.initial_point()
    rhs = torch.ones(parametrization.num_parameters, dtype=torch.float64)
    starved = ConjugateGradientSolve(max_iterations=2, tolerance=1e-14)
    with pytest.warns(RuntimeWarning, match="relative residual"):
        solution = starved.factorize(GramOperator(parametrization, metric, theta)).solve(rhs, 1e-6)
    assert not solution.converged and solution.iterations == 2 and solution.relative_residual > 1e-14
    raising = ConjugateGradientSolve(max_iterations=2, tolerance=1e-14, on_unconverged="raise")
    with pytest.raises(UnconvergedSolveError, match="inexact"):
        raising.factorize(GramOperator(parametrization, metric, theta)).solve(rhs, 1e-6)
    enough = ConjugateGradientSolve().factorize(GramOperator(parametrization, metric, theta)).solve(rhs, 1e-2)
    assert enough.converged
    with pytest.raises(ValueError, match="on_unconverged"):
        ConjugateGradientSolve(on_unconverged="sometimes")


def test_unconverged_cg_solves_are_counted_per_step_into_the_record():
    """Starved CG in a whole run: InnerResult and the unconverged_solves column count them; one warning per solve."""
    from mms_manifolds import GaussNewton, L2Regression, MinimizingMovement
    from mms_manifolds.linalg import UnconvergedSolveWarning

    x = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(-1)
    metric = L2Metric(torch.full((50,), 1 / 50, dtype=torch.float64))
    starved = ConjugateGradientSolve(max_iterations=2, tolerance=1e-14)
    flow = MinimizingMovement(
        TorchParametrization(mlp((1, 8, 8, 1), 0), x),
        L2Regression(torch.sin(3 * x), metric),
        metric,
        0.2,
        solve_mode=starved,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = flow.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert result.unconverged_solves[0] == 0 and np.all(result.unconverged_solves[1:] >= 1)
    summaries = [str(w.message) for w in caught if issubclass(w.category, UnconvergedSolveWarning)]
    # the residual the solver measured at its end is the one the driver books (kept by the step, not solved again)
    assert not any(m.startswith("MMS step") for m in summaries)
    assert any(re.match(r"GaussNewton solve: \d+ iterative solve\(s\) stopped unconverged", m) for m in summaries)
    assert len(summaries) <= 2  # one per inner solve, not one per CG call
    converged = MinimizingMovement(flow.parametrization, flow.energy, metric, 0.2, solve_mode="cg")
    quiet = converged.run(flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=2))
    assert np.all(quiet.unconverged_solves == 0)
