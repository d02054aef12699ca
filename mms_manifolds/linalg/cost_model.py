r"""Time and memory of one linearisation point in each solve mode, from the sizes and per-device rates.

Per point (one Gauss–Newton iteration), with :math:`n = Nm` and :math:`S` solves (the step, its geodesic
acceleration, Levenberg–Marquardt retries, the residual split):

- kernel (:class:`~mms_manifolds.linalg.KernelSolve`, :math:`n < p`): the Jacobian (:math:`np` entries at
  ``jacobian_entries_per_second``), :math:`K = BB^\top` (:math:`n^2p` flops: the lower block triangle,
  ``gemm_flops``), and one Cholesky per damping (:math:`n^3/3` flops at ``cholesky_flops``, counted for
  ``CHOLESKY_PER_POINT`` dampings); memory :meth:`KernelSolve.peak_numbers`;
- layer kernel (:class:`~mms_manifolds.linalg.LayerKernelSolve`, :math:`n < p`, where the parametrisation
  forms :math:`JJ^\top` from its layers): no Jacobian; the layer kernel's flops
  (:meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel_flops`, :math:`\sum_l n^2 d^l_{out} +
  N^2 d^l_{in}`) and its whitening at ``gemm_flops``, the same Cholesky factorisations, and one JVP and one VJP
  per solve and for the kernel's check; memory :meth:`LayerKernelSolve.peak_numbers` (:math:`4n^2`);
- CG: :math:`S \times I` iterations of one JVP and one VJP (:math:`8np` flops at ``autodiff_flops``, or
  ``iteration_latency`` seconds where that is longer: a GPU's launches), :math:`I` =
  ``CG_ITERATIONS_PER_SOLVE``; memory :math:`O(n + p)`.

The rates are per device type (:data:`DEVICE_RATES`): the CPU's were measured on the project's 2-core
machine with one torch thread, the CUDA ones derived from the H200 crossover measurements in
``docs/performance.md``. They need only be right to a factor of a few: the choice flips where the two
estimates cross.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CG_ITERATIONS_PER_SOLVE",
    "CHOLESKY_PER_POINT",
    "DEVICE_RATES",
    "SOLVES_PER_POINT",
    "WHITENING_FLOPS_PER_ENTRY",
    "DeviceRates",
    "ModeEstimate",
    "cg_estimate",
    "dense_svd_seconds",
    "kernel_estimate",
    "layer_kernel_estimate",
]

#: CG iterations per solve assumed by the model: a plain CG solve to ``1e-10`` took about 80 at
#: :math:`p = 8577`, :math:`N = 4900` (regression step, damping ``1e-3`` of the mean eigenvalue).
CG_ITERATIONS_PER_SOLVE = 80
#: Solves per point assumed by the model: the step, its geodesic acceleration, one retry, the residual.
SOLVES_PER_POINT = 4
#: Damping values (Cholesky factorisations) per point assumed by the model: the step and one retry.
CHOLESKY_PER_POINT = 2
#: Flops per kernel entry of whitening the layer kernel on both sides (an L2 metric scales each entry twice;
#: a Sobolev metric's banded factor costs a few times more), counted at ``gemm_flops``.
WHITENING_FLOPS_PER_ENTRY = 8


@dataclass(frozen=True)
class DeviceRates:
    """Throughputs of one device type (one torch thread on a CPU).

    Attributes:
        gemm_flops: dense matrix product, flops/s.
        cholesky_flops: Cholesky factorisation, flops/s.
        jacobian_entries_per_second: entries of :math:`J` formed per second (per-node reverse mode).
        autodiff_flops: a JVP and a VJP of a tanh MLP, counted as :math:`8Nmp` flops, per second.
        iteration_latency: shortest time of one CG iteration (kernel launches, host synchronisations), s.
        source: where the numbers come from.
        svd_rate: :math:`n^2p` per second of the thin SVD of an ``(n, p)`` whitened Jacobian (the dense mode's
            residual split), or ``None`` where that SVD comes from an eigendecomposition of the Gram side (CUDA).
    """

    gemm_flops: float
    cholesky_flops: float
    jacobian_entries_per_second: float
    autodiff_flops: float
    iteration_latency: float
    source: str
    svd_rate: float | None = None


#: Rates per device type (module docstring; ``docs/performance.md``, "Choosing the solve mode").
DEVICE_RATES = {
    "cpu": DeviceRates(
        gemm_flops=4.7e10,
        cholesky_flops=1.7e10,
        jacobian_entries_per_second=2.7e7,
        autodiff_flops=7.8e9,
        iteration_latency=0.0,
        source="measured: 2-core CPU, one torch thread, float64 (p = 8577, N = 4900 MLP; n = 2000 matrices)",
        svd_rate=7e8,  # LAPACK's SVD of a 2500 x 20601 whitened Jacobian: 180 s (shared machine)
    ),
    "cuda": DeviceRates(
        gemm_flops=3e13,
        cholesky_flops=1e12,
        jacobian_entries_per_second=3e10,
        autodiff_flops=1e12,
        iteration_latency=1e-3,
        source="derived from the H200 crossovers (a 16384 x 4353 Jacobian in 2 ms, ten CG solves in 0.5-0.7 s)",
    ),
}


@dataclass(frozen=True)
class ModeEstimate:
    """Estimated seconds and peak bytes of one point in one solve mode."""

    seconds: float
    peak_bytes: int


def kernel_estimate(
    num_parameters: int, ambient_dimension: int, bytes_per_number: int, rates: DeviceRates, peak_numbers: int
) -> ModeEstimate:
    r"""The kernel mode's estimate: Jacobian, :math:`n^2p` flops for :math:`K`, ``CHOLESKY_PER_POINT`` Cholesky factorisations."""
    n, p = ambient_dimension, num_parameters
    seconds = (
        n * p / rates.jacobian_entries_per_second
        + n * n * p / rates.gemm_flops
        + CHOLESKY_PER_POINT * n**3 / 3 / rates.cholesky_flops
    )
    return ModeEstimate(seconds, peak_numbers * bytes_per_number)


def layer_kernel_estimate(
    num_parameters: int,
    ambient_dimension: int,
    bytes_per_number: int,
    rates: DeviceRates,
    peak_numbers: int,
    kernel_flops: float,
) -> ModeEstimate:
    r"""The layer-kernel mode's estimate (:class:`~mms_manifolds.linalg.LayerKernelSolve`): no Jacobian.

    ``kernel_flops`` (:meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel_flops`) and the
    whitening on both sides (:math:`2n^2` entries at ``WHITENING_FLOPS_PER_ENTRY``) at ``gemm_flops``;
    ``CHOLESKY_PER_POINT`` Cholesky factorisations; one JVP and one VJP (:math:`8np` flops at
    ``autodiff_flops``, or ``iteration_latency``) for the kernel's check and for each of ``SOLVES_PER_POINT`` solves.
    """
    n, p = ambient_dimension, num_parameters
    product = max(8 * n * p / rates.autodiff_flops, rates.iteration_latency)
    seconds = (
        (kernel_flops + 2 * WHITENING_FLOPS_PER_ENTRY * n * n) / rates.gemm_flops
        + CHOLESKY_PER_POINT * n**3 / 3 / rates.cholesky_flops
        + (1 + SOLVES_PER_POINT) * product
    )
    return ModeEstimate(seconds, peak_numbers * bytes_per_number)


def cg_estimate(num_parameters: int, ambient_dimension: int, bytes_per_number: int, rates: DeviceRates) -> ModeEstimate:
    r"""CG's estimate: ``SOLVES_PER_POINT * CG_ITERATIONS_PER_SOLVE`` iterations of :math:`8Nmp` flops (or the latency)."""
    iteration = max(8 * ambient_dimension * num_parameters / rates.autodiff_flops, rates.iteration_latency)
    numbers = 8 * (ambient_dimension + num_parameters)
    return ModeEstimate(SOLVES_PER_POINT * CG_ITERATIONS_PER_SOLVE * iteration, numbers * bytes_per_number)


def dense_svd_seconds(num_parameters: int, ambient_dimension: int, rates: DeviceRates) -> float:
    r"""Estimated seconds of the dense mode's thin SVD of the whitened Jacobian, :math:`n^2p` with :math:`n = \min(p, Nm)`; 0 where ``svd_rate`` is ``None``."""
    if rates.svd_rate is None:
        return 0.0
    smaller, larger = sorted((num_parameters, ambient_dimension))
    return smaller**2 * larger / rates.svd_rate
