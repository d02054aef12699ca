r"""What an MMS run was asked to do and the constants it derived: typed, and the only thing a resume compares.

A record's ``metadata`` is :meth:`RunSettings.as_metadata` plus what the run found on its way (the
solver's warm-start state, rank-deficient steps, a withdrawn certification, their notes). A checkpoint
is resumed only when :meth:`RunSettings.resume_conflict` finds nothing that differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from .fingerprint import differing_parts

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    r"""The settings of one :meth:`~mms_manifolds.MinimizingMovement.run`.

    Attributes:
        tau: the time step :math:`\tau`.
        convexity: :math:`\lambda`, or ``None`` when unknown.
        lipschitz: :math:`L = 1/(1 + \tau\lambda)`, or ``None``.
        strong_convexity: :math:`\mu = 1/\tau + \lambda`, or ``None``.
        certified: whether the tracking bound is certified (known modulus, SPD metric, fixed nodes).
        resampled: whether nodes are drawn anew every step.
        solver: the inner solver's ``repr`` (every setting).
        steps: the number of MMS steps asked for.
        num_parameters: :math:`p`.
        damping: the manifold's damping :math:`\lambda_d`.
        solve_mode: the name of the solve mode in use; the step residuals and the ledger use it, whatever
            solve mode the inner solver's own model solves use.
        solve_mode_reason: why that mode (:attr:`~mms_manifolds.linalg.SolveChoice.reason`); not compared on resume.
        budget: the trajectory budget's tolerance, or ``None``.
        residual: what each step books of its residual :math:`\rho_k` (:data:`~mms_manifolds.subproblem.RESIDUAL_PARTS`):
            ``"split"``, the total and its tangential and normal parts; ``"total"``, the total alone (the tangential
            and normal columns and the bound's inexactness and approximation parts ``nan``). A checkpoint written
            before the setting existed booked the split.
        notes: why bounds are not certified, if they are not.
        fingerprint: one digest per part of the run (:func:`~mms_manifolds.fingerprint.trajectory_fingerprint`).
    """

    tau: float
    convexity: float | None
    lipschitz: float | None
    strong_convexity: float | None
    certified: bool
    resampled: bool
    solver: str
    steps: int
    num_parameters: int
    damping: float
    solve_mode: str
    solve_mode_reason: str
    budget: float | None
    residual: str
    notes: tuple[str, ...]
    fingerprint: Mapping[str, str]

    def as_metadata(self) -> dict:
        """The settings as the JSON-ready start of a record's ``metadata`` (notes as a list)."""
        metadata = asdict(self)
        metadata["notes"], metadata["fingerprint"] = list(self.notes), dict(self.fingerprint)
        return metadata

    def resume_conflict(self, stored: Mapping, steps_done: int) -> str | None:
        """Why a checkpoint with metadata ``stored`` and ``steps_done`` steps cannot be resumed by this run, or ``None``.

        It must record the same problem (every fingerprint part), the same budget, resampling and booked
        ``residual`` (a record with split residuals up to some step and totals after it, or the reverse, repeats
        no uninterrupted run), the same ``steps`` when a budget is set (its tolerances depend on them), and no
        more steps than asked.
        """
        differing = differing_parts(stored.get("fingerprint"), self.fingerprint)
        if differing:
            return f"it was written for another problem: {', '.join(differing)} differ"
        stored = {**stored, "residual": stored.get("residual", "split")}  # written before the setting: the split
        for key in ("budget", "resampled", "residual") + (("steps",) if self.budget is not None else ()):
            if stored.get(key) != getattr(self, key):
                return f"it was written with {key} = {stored.get(key)!r}, this run has {getattr(self, key)!r}"
        if steps_done > self.steps:
            return f"it holds {steps_done} steps, more than steps = {self.steps}: ask for at least as many steps"
        return None
