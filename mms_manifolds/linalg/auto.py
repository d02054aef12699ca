r"""Choice of solve mode from the sizes :math:`p`, :math:`Nm`, the device and its memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cg import ConjugateGradientSolve
from .cost_model import DEVICE_RATES, cg_estimate, dense_svd_seconds, kernel_estimate, layer_kernel_estimate
from .dense import DenseSolve
from .kernel import KernelSolve
from .layer_kernel_solve import LayerKernelSolve
from .limits import available_memory_bytes
from .woodbury import WoodburySolve

__all__ = ["AutoSolve", "SolveChoice", "SolveMode", "make_solve_mode", "resolve_solve_mode"]

SolveMode = DenseSolve | WoodburySolve | KernelSolve | LayerKernelSolve | ConjugateGradientSolve

#: Default peak bytes of a dense or kernel factorisation on a CPU (``AutoSolve(memory_budget_bytes=...)``).
CPU_MEMORY_BUDGET_BYTES = 4 * 2**30

#: Longest estimated SVD (seconds per point) the dense mode may take on the kernel side before the kernel mode replaces it.
DENSE_SVD_SECONDS = 2.0

#: Largest smaller Gram side :math:`\min(p, Nm)` factored densely, by device type (``docs/performance.md``).
MAX_DENSE_SIZE = {"cpu": 4096, "cuda": 16384}


@dataclass(frozen=True)
class AutoSolve:
    r"""Pick a solve mode by size and device; :meth:`select` says which and why.

    - ``dense`` (Cholesky of the smaller Gram side, :math:`J^\top MJ` or :math:`MJJ^\top`, and the SVD of
      the whitened Jacobian for the residual split) when :math:`n = \min(p, Nm)` is at most
      ``max_dense_size`` and the factorisation fits, except on the kernel side (:math:`Nm < p`) where that
      SVD is estimated above ``DENSE_SVD_SECONDS`` (2 s: about :math:`(Nm)^2p > 1.4\cdot10^9` on a CPU; at
      :math:`Nm = 2500`, :math:`p = 20601` it took 180 s, against 1 s for a Cholesky of the kernel), which
      goes to ``kernel``;
    - else ``kernel`` (:class:`~mms_manifolds.linalg.KernelSolve`: Cholesky of the :math:`Nm \times Nm`
      kernel, no SVD) when :math:`Nm < p`, its :meth:`KernelSolve.peak_numbers` fit the budget, and the
      time model of :mod:`~mms_manifolds.linalg.cost_model` estimates it cheaper than CG per point;
    - ``cg`` (matrix-free) otherwise.

    The default ``max_dense_size`` is 4096 on a CPU (at :math:`p = 3022`, :math:`N = 4000` a dense
    factorisation and ten solves took 3.2 s against 4.7 s for ten CG solves on one core; forming the
    Gram matrix costs :math:`O(Nm\,p\,n)`, so CG takes over beyond), and 16384 on CUDA, where a Gram
    matrix of that side and its Cholesky take milliseconds while CG is bound by kernel launches and
    host synchronisations (0.5-0.7 s for ten solves in every cell measured on an H200; crossovers per
    device in ``docs/performance.md``).

    A factorisation "fits" when ``FACTORIZATION_MEMORY_MULTIPLE`` times the Jacobian's bytes
    (:math:`Nm \cdot p` numbers) is within the memory budget: the Jacobian, its whitened copy, the
    Gram matrix and LAPACK's workspace together peaked at about 8 times the Jacobian
    (``benchmarks/run.py``).

    Args:
        memory_budget_bytes: peak bytes a dense or kernel factorisation may use; ``None`` means 4 GiB on a
            CPU (1 GiB before the kernel mode; it moves the dense choice only where 8 Jacobians take 1-4 GiB)
            and a quarter of the free memory on CUDA.
        max_dense_size: largest :math:`\min(p, Nm)` for a dense factorisation; ``None`` for the
            device's default (:data:`MAX_DENSE_SIZE`).
    """

    FACTORIZATION_MEMORY_MULTIPLE = 8

    memory_budget_bytes: int | None = None
    max_dense_size: int | None = None
    name: str = "auto"

    def select(
        self,
        num_parameters: int,
        ambient_dimension: int,
        bytes_per_number: int = 8,
        device: torch.device | str = "cpu",
        kernel_flops: float | None = None,
    ) -> tuple[SolveMode, str]:
        """Return ``(mode, reason)`` for a problem with ``p`` parameters and ``Nm`` node values on ``device``.

        ``kernel_flops``: the flops of the parametrisation's layer kernel :math:`JJ^\top`
        (:meth:`~mms_manifolds.parametrizations.Parametrization.jacobian_kernel_flops`) where it has one; the
        kernel mode's time estimate then charges those instead of :math:`(Nm)^2p`
        (:func:`~mms_manifolds.linalg.cost_model.kernel_estimate`).
        """
        kind = torch.device(device).type
        budget = self.memory_budget_bytes
        if budget is None:
            budget = available_memory_bytes(device) // 4 if kind == "cuda" else CPU_MEMORY_BUDGET_BYTES
        limit = self.max_dense_size or MAX_DENSE_SIZE.get(kind, MAX_DENSE_SIZE["cpu"])
        jacobian_bytes = num_parameters * ambient_dimension * bytes_per_number
        required = self.FACTORIZATION_MEMORY_MULTIPLE * jacobian_bytes
        smaller = min(num_parameters, ambient_dimension)
        side = "J^T M J" if num_parameters <= ambient_dimension else "M J J^T"
        rates = DEVICE_RATES.get(kind, DEVICE_RATES["cpu"])
        svd_seconds = dense_svd_seconds(num_parameters, ambient_dimension, rates)
        kernel_side = ambient_dimension < num_parameters
        layer = None
        if kernel_side and kernel_flops is not None:
            layer_peak = LayerKernelSolve.peak_numbers(num_parameters, ambient_dimension)
            layer = layer_kernel_estimate(
                num_parameters, ambient_dimension, bytes_per_number, rates, layer_peak, kernel_flops
            )
        if smaller <= limit and required <= budget and kernel_side and svd_seconds > DENSE_SVD_SECONDS:
            slow_svd = (
                f"min(p, Nm) = {smaller} <= {limit} on {kind}, but the dense mode's SVD of the {ambient_dimension} x "
                f"{num_parameters} whitened Jacobian would take about {svd_seconds:.3g} s per point "
                f"(> {DENSE_SVD_SECONDS:g} s)"
            )
            if layer is not None and layer.peak_bytes <= budget:
                return LayerKernelSolve(), (
                    f"{slow_svd}: Cholesky of the {ambient_dimension} x {ambient_dimension} kernel from the network's "
                    f"layers, no Jacobian, about {layer.peak_bytes / 2**20:.0f} MiB"
                )
            peak = KernelSolve.peak_numbers(num_parameters, ambient_dimension) * bytes_per_number
            if peak <= budget:
                return KernelSolve(), (
                    f"{slow_svd}: Cholesky of the {ambient_dimension} x {ambient_dimension} kernel, about "
                    f"{peak / 2**20:.0f} MiB"
                )
        if smaller <= limit and required <= budget:
            return DenseSolve(), (
                f"min(p, Nm) = {smaller} <= {limit} on {kind} and about {required / 2**20:.0f} MiB fit: "
                f"Cholesky of the {smaller} x {smaller} Gram side {side}"
            )
        dense_refused = (
            f"p = {num_parameters}, Nm = {ambient_dimension} on {kind}: a dense factorisation would take about "
            f"{required / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget with a {smaller} x {smaller} Gram side "
            f"(limit {limit})"
        )
        cg = cg_estimate(num_parameters, ambient_dimension, bytes_per_number, rates)
        if not kernel_side:
            return ConjugateGradientSolve(), f"{dense_refused}; matrix-free CG (estimated {cg.seconds:.3g} s per point)"
        peak = KernelSolve.peak_numbers(num_parameters, ambient_dimension)
        kernel = kernel_estimate(num_parameters, ambient_dimension, bytes_per_number, rates, peak)
        candidates = {"kernel": (kernel, KernelSolve)}
        if layer is not None:
            candidates["layer kernel"] = (layer, LayerKernelSolve)
        estimates = ", ".join(
            f"{name} {estimate.seconds:.3g} s and {estimate.peak_bytes / 2**20:.0f} MiB"
            for name, (estimate, _) in candidates.items()
        )
        estimates = f"estimated per point: {estimates}, CG {cg.seconds:.3g} s"
        fitting = {name: entry for name, entry in candidates.items() if entry[0].peak_bytes <= budget}
        if fitting:
            name = min(fitting, key=lambda key: fitting[key][0].seconds)
            estimate, mode = fitting[name]
            if estimate.seconds <= cg.seconds:
                what = "from the network's layers, no Jacobian" if mode is LayerKernelSolve else "from B B^T"
                return mode(), (
                    f"{dense_refused}; {estimates}: Cholesky of the {ambient_dimension} x {ambient_dimension} "
                    f"kernel {what}"
                )
        return ConjugateGradientSolve(), f"{dense_refused}; {estimates}: matrix-free CG"


@dataclass(frozen=True)
class SolveChoice:
    """The solve mode a problem uses and why: :meth:`AutoSolve.select`'s reason, or that it was given."""

    mode: SolveMode
    reason: str


def resolve_solve_mode(
    mode: object,
    num_parameters: int,
    ambient_dimension: int,
    dtype: torch.dtype,
    device: torch.device | str,
    kernel_flops: float | None = None,
) -> SolveChoice:
    """The one place a solve mode is resolved: ``"auto"`` (or an :class:`AutoSolve`) by :meth:`AutoSolve.select`, any other as given.

    ``kernel_flops``: the parametrisation's layer-kernel flops, or ``None`` (:meth:`AutoSolve.select`).
    """
    mode = make_solve_mode(mode)
    if isinstance(mode, AutoSolve):
        return SolveChoice(*mode.select(num_parameters, ambient_dimension, dtype.itemsize, device, kernel_flops))
    return SolveChoice(mode, f"{mode.name}, as given")


#: What a solve mode provides: its name, whether it forms :math:`J`, and the two factorisations.
SOLVE_MODE_INTERFACE = ("name", "forms_jacobian", "factorize", "factorize_weighted")


def make_solve_mode(mode: object) -> SolveMode | AutoSolve:
    """Turn ``"auto" | "dense" | "woodbury" | "kernel" | "layer-kernel" | "cg"`` or a mode instance into a mode instance.

    Any object with the attributes of :data:`SOLVE_MODE_INTERFACE` is a mode (``docs/architecture.md`` adds one):
    ``factorize(operator)`` returns the :class:`~mms_manifolds.linalg.Factorization` of the metric's Gram operator,
    ``factorize_weighted(operator)`` that of the step Hessian's.
    """
    named = {
        "auto": AutoSolve,
        "dense": DenseSolve,
        "woodbury": WoodburySolve,
        "kernel": KernelSolve,
        "layer-kernel": LayerKernelSolve,
        "cg": ConjugateGradientSolve,
    }
    if isinstance(mode, str):
        if mode not in named:
            raise ValueError(f"solve_mode must be one of {sorted(named)}, got {mode!r}")
        return named[mode]()
    if isinstance(mode, AutoSolve) or all(hasattr(mode, attribute) for attribute in SOLVE_MODE_INTERFACE):
        return mode
    raise ValueError(
        f"solve_mode must be a name or a solve-mode instance (with {', '.join(SOLVE_MODE_INTERFACE)}), "
        f"got {type(mode).__name__}"
    )
