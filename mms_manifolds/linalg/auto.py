r"""Choice of solve mode from the sizes :math:`p`, :math:`Nm`, the device and its memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cg import ConjugateGradientSolve
from .dense import DenseSolve
from .limits import available_memory_bytes
from .woodbury import WoodburySolve

__all__ = ["AutoSolve", "SolveChoice", "SolveMode", "make_solve_mode", "resolve_solve_mode"]

SolveMode = DenseSolve | WoodburySolve | ConjugateGradientSolve

#: Largest smaller Gram side :math:`\min(p, Nm)` factored densely, by device type (``docs/performance.md``).
MAX_DENSE_SIZE = {"cpu": 4096, "cuda": 16384}


@dataclass(frozen=True)
class AutoSolve:
    r"""Pick a solve mode by size and device; :meth:`select` says which and why.

    - ``dense`` (Cholesky of the smaller Gram side, :math:`J^\top MJ` or :math:`MJJ^\top`) when
      :math:`n = \min(p, Nm)` is at most ``max_dense_size`` and the factorisation fits;
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
        memory_budget_bytes: peak bytes a dense factorisation may use; ``None`` means 1 GiB on a CPU and
            a quarter of the free memory on CUDA.
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
    ) -> tuple[SolveMode, str]:
        """Return ``(mode, reason)`` for a problem with ``p`` parameters and ``Nm`` node values on ``device``."""
        kind = torch.device(device).type
        budget = self.memory_budget_bytes
        if budget is None:
            budget = available_memory_bytes(device) // 4 if kind == "cuda" else 2**30
        limit = self.max_dense_size or MAX_DENSE_SIZE.get(kind, MAX_DENSE_SIZE["cpu"])
        jacobian_bytes = num_parameters * ambient_dimension * bytes_per_number
        required = self.FACTORIZATION_MEMORY_MULTIPLE * jacobian_bytes
        smaller = min(num_parameters, ambient_dimension)
        side = "J^T M J" if num_parameters <= ambient_dimension else "M J J^T"
        if smaller <= limit and required <= budget:
            return DenseSolve(), (
                f"min(p, Nm) = {smaller} <= {limit} on {kind} and about {required / 2**20:.0f} MiB fit: "
                f"Cholesky of the {smaller} x {smaller} Gram side {side}"
            )
        return ConjugateGradientSolve(), (
            f"p = {num_parameters}, Nm = {ambient_dimension} on {kind}: a dense factorisation would take about "
            f"{required / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget with a {smaller} x {smaller} Gram side "
            f"(limit {limit}); matrix-free CG"
        )


@dataclass(frozen=True)
class SolveChoice:
    """The solve mode a problem uses and why: :meth:`AutoSolve.select`'s reason, or that it was given."""

    mode: SolveMode
    reason: str


def resolve_solve_mode(
    mode: object, num_parameters: int, ambient_dimension: int, dtype: torch.dtype, device: torch.device | str
) -> SolveChoice:
    """The one place a solve mode is resolved: ``"auto"`` (or an :class:`AutoSolve`) by :meth:`AutoSolve.select`, any other as given."""
    mode = make_solve_mode(mode)
    if isinstance(mode, AutoSolve):
        return SolveChoice(*mode.select(num_parameters, ambient_dimension, dtype.itemsize, device))
    return SolveChoice(mode, f"{mode.name}, as given")


#: What a solve mode provides: its name, whether it forms :math:`J`, and the two factorisations.
SOLVE_MODE_INTERFACE = ("name", "forms_jacobian", "factorize", "factorize_weighted")


def make_solve_mode(mode: object) -> SolveMode | AutoSolve:
    """Turn ``"auto" | "dense" | "woodbury" | "cg"`` or a mode instance into a mode instance.

    Any object with the attributes of :data:`SOLVE_MODE_INTERFACE` is a mode (``docs/architecture.md`` adds one):
    ``factorize(operator)`` returns the :class:`~mms_manifolds.linalg.Factorization` of the metric's Gram operator,
    ``factorize_weighted(operator)`` that of the step Hessian's.
    """
    named = {"auto": AutoSolve, "dense": DenseSolve, "woodbury": WoodburySolve, "cg": ConjugateGradientSolve}
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
