r"""Choice of solve mode from the sizes :math:`p`, :math:`Nm` and a memory budget."""

from __future__ import annotations

from dataclasses import dataclass

from .cg import ConjugateGradientSolve
from .dense import DenseSolve
from .woodbury import WoodburySolve

__all__ = ["AutoSolve", "SolveMode", "make_solve_mode"]

SolveMode = DenseSolve | WoodburySolve | ConjugateGradientSolve


@dataclass(frozen=True)
class AutoSolve:
    r"""Pick a solve mode by size; :meth:`select` says which and why.

    - ``dense`` when :math:`p \le` ``max_dense_parameters`` and the factorisation fits;
    - ``woodbury`` when :math:`Nm \le` ``max_kernel_size``, :math:`Nm < p / 2`, and it fits;
    - ``cg`` (matrix-free) otherwise.

    A factorisation "fits" when ``FACTORIZATION_MEMORY_MULTIPLE`` times the Jacobian's bytes
    (:math:`Nm \cdot p` numbers) is within ``memory_budget_bytes``: the Jacobian, its whitened copy, the
    SVD's or the kernel's factors and LAPACK's workspace together peaked at about 8.4 times the
    Jacobian (7.2 GB resident for an 817 MB Jacobian at :math:`p = 1021`, :math:`N = 10^5`; 5.8 GB for
    800 MB at :math:`p = 99853`, :math:`N = 10^3`; ``benchmarks/run.py``).

    Args:
        memory_budget_bytes: peak bytes a dense or kernel factorisation may use. Default 1 GiB.
        max_dense_parameters: largest :math:`p` for the :math:`p \times p` eigendecomposition. Default 3000.
        max_kernel_size: largest :math:`Nm` for the :math:`Nm \times Nm` one. Default 3000.
    """

    FACTORIZATION_MEMORY_MULTIPLE = 8

    memory_budget_bytes: int = 2**30
    max_dense_parameters: int = 3000
    max_kernel_size: int = 3000
    name: str = "auto"

    def select(self, num_parameters: int, ambient_dimension: int, bytes_per_number: int = 8) -> tuple[SolveMode, str]:
        """Return ``(mode, reason)`` for a problem with ``p`` parameters and ``Nm`` node values."""
        jacobian_bytes = num_parameters * ambient_dimension * bytes_per_number
        fits = self.FACTORIZATION_MEMORY_MULTIPLE * jacobian_bytes <= self.memory_budget_bytes
        if ambient_dimension <= self.max_kernel_size and 2 * ambient_dimension < num_parameters and fits:
            return WoodburySolve(), f"Nm = {ambient_dimension} << p = {num_parameters}: kernel Gram is smaller"
        if num_parameters <= self.max_dense_parameters and fits:
            return DenseSolve(), f"p = {num_parameters} <= {self.max_dense_parameters} and J fits in memory"
        return ConjugateGradientSolve(), (
            f"p = {num_parameters}, Nm = {ambient_dimension}: a factorisation would take about "
            f"{self.FACTORIZATION_MEMORY_MULTIPLE * jacobian_bytes / 2**20:.0f} MiB (J is "
            f"{jacobian_bytes / 2**20:.0f} MiB) or is too large; matrix-free CG"
        )


def make_solve_mode(mode: object) -> DenseSolve | WoodburySolve | ConjugateGradientSolve | AutoSolve:
    """Turn ``"auto" | "dense" | "woodbury" | "cg"`` or a mode instance into a mode instance."""
    named = {"auto": AutoSolve, "dense": DenseSolve, "woodbury": WoodburySolve, "cg": ConjugateGradientSolve}
    if isinstance(mode, str):
        if mode not in named:
            raise ValueError(f"solve_mode must be one of {sorted(named)}, got {mode!r}")
        return named[mode]()
    if isinstance(mode, (AutoSolve, DenseSolve, WoodburySolve, ConjugateGradientSolve)):
        return mode
    raise ValueError(f"solve_mode must be a name or a solve-mode instance, got {type(mode).__name__}")
