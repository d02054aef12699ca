r"""The record of an MMS run: per-step numbers, parameters, and their safe storage on disk.

Files are ``.npz`` archives of plain numeric arrays plus one JSON string, read with
``allow_pickle=False``: loading a result can never execute code. Writes go to a temporary file in the
same folder and are renamed into place, so an interrupted write never destroys the previous file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["COLUMNS", "MMSResult", "ResultFileError"]

FORMAT_VERSION = 1

#: Per-step columns; index 0 is the initial state.
COLUMNS = (
    "energy",
    "inner_iterations",
    "retries",
    "wall_time",
    "initial_residual",
    "residual_total",
    "residual_tangential",
    "residual_normal",
    "tracking_bound",
    "bound_inexactness",
    "bound_approximation",
    "trajectory_error",
    "step_tolerance",
    "jacobian_rank",
    "jacobian_sigma_min",
)


class ResultFileError(ValueError):
    """A result or checkpoint file is missing pieces, truncated, corrupted or of another format."""


def _same(a: object, b: object) -> bool:
    """Equality of result contents with NaN equal to NaN: numbers, strings, lists, dicts, tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a.isnan(), b.isnan()))
            and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
        )
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return a == b


@dataclass(eq=False)
class MMSResult:
    r"""Per-step record of a minimizing-movement run; every column has length ``steps + 1``.

    Columns (numpy arrays through attributes of the same name): ``energy`` :math:`E(u_k)`,
    ``inner_iterations``, ``retries`` (failed inner solves
    retried with the solver's fallback), ``wall_time`` (seconds per step), ``initial_residual`` (the tangential
    residual of :math:`F_k` at the start of the step), ``residual_total`` :math:`\rho_k = \|r\|_M`,
    ``residual_tangential`` (inner inexactness), ``residual_normal`` (approximation error),
    ``tracking_bound`` :math:`B_k`, its parts ``bound_inexactness`` and ``bound_approximation``
    (propagated tangential and normal residuals), ``trajectory_error`` :math:`e_k = \|u_k - v_k\|_M`
    (``nan`` without a reference), ``step_tolerance`` (the budget's tolerance, ``nan`` without one).
    Bounds are ``nan`` when the energy's convexity is unknown (``certified`` is then ``False``).

    Attributes:
        columns: the columns above, as lists.
        thetas: parameters after each step, ``steps + 1`` tensors of shape ``(p,)``.
        stop_reasons: the inner solver's stop reason per step (``""`` at index 0).
        reference_states: exact MMS iterates :math:`v_k`, shape ``(N, m)`` each, when computed.
        metadata: ``tau``, ``convexity``, ``lipschitz``, ``strong_convexity``, ``certified``, ``solver``,
            ``steps``, ``damping``, ``solve_mode``, ``budget``, ``notes``, ...
    """

    columns: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in COLUMNS})
    thetas: list[torch.Tensor] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)
    reference_states: list[torch.Tensor] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        if name in COLUMNS:
            return np.asarray(self.__dict__["columns"][name], dtype=float)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        """Same columns, parameters, stop reasons, reference states and metadata, with NaN equal to NaN.

        ``nan`` marks what was not computed (bounds without a convexity modulus, errors without a
        reference), so a result read back from its file equals the one that was saved. Tensors compare by
        value (dtype and device of the same values do not matter: :meth:`load` chooses them).
        """
        if not isinstance(other, MMSResult):
            return NotImplemented
        tensors = lambda values: [value.detach().cpu().double() for value in values]  # noqa: E731
        return (
            _same(self.columns, other.columns)
            and _same(tensors(self.thetas), tensors(other.thetas))
            and self.stop_reasons == other.stop_reasons
            and _same(tensors(self.reference_states), tensors(other.reference_states))
            and _same(self.metadata, other.metadata)
        )

    @property
    def steps_done(self) -> int:
        """Number of completed MMS steps (``len(thetas) - 1``)."""
        return len(self.thetas) - 1

    @property
    def certified(self) -> bool:
        """Whether the tracking bound rests on a known convexity modulus."""
        return bool(self.metadata.get("certified", False))

    def append(self, theta: torch.Tensor, stop_reason: str, reference: torch.Tensor | None, **values: float) -> None:
        """Add one step's record (all of :data:`COLUMNS` as keyword arguments)."""
        missing = set(COLUMNS) - set(values)
        if missing:
            raise ValueError(f"missing columns: {sorted(missing)}")
        for name in COLUMNS:
            self.columns[name].append(float(values[name]))
        self.thetas.append(theta.detach().clone())
        self.stop_reasons.append(stop_reason)
        if reference is not None:
            self.reference_states.append(reference.detach().clone())

    # ------------------------------------------------------------------------------- storage

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result atomically to ``path`` (``.npz``); returns the path."""
        path = Path(path)
        arrays = {f"column_{name}": np.asarray(values, dtype=np.float64) for name, values in self.columns.items()}
        arrays["thetas"] = torch.stack(self.thetas).cpu().numpy() if self.thetas else np.zeros((0, 0))
        if self.reference_states:
            arrays["reference_states"] = torch.stack(self.reference_states).cpu().numpy()
        header = {"format_version": FORMAT_VERSION, "stop_reasons": self.stop_reasons, "metadata": self.metadata}
        arrays["header"] = np.array(json.dumps(header))
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
    ) -> MMSResult:
        """Read a result written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ResultFileError: the file is truncated, corrupted, not a result, or of another format version.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no result file at {path}")
        try:
            with np.load(path, allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                if header.get("format_version") != FORMAT_VERSION:
                    raise ResultFileError(
                        f"{path}: format version {header.get('format_version')}, expected {FORMAT_VERSION}"
                    )
                columns = {name: archive[f"column_{name}"].tolist() for name in COLUMNS}
                thetas = archive["thetas"]
                references = archive["reference_states"] if "reference_states" in archive.files else None
        except ResultFileError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as error:
            raise ResultFileError(f"{path} is not a readable MMS result (truncated or corrupted?): {error}") from error
        lengths = {len(values) for values in columns.values()} | {len(thetas), len(header["stop_reasons"])}
        if len(lengths) != 1:
            raise ResultFileError(f"{path}: columns have inconsistent lengths {sorted(lengths)}")
        convert = lambda array: torch.as_tensor(array, dtype=dtype, device=device)  # noqa: E731
        return cls(
            columns=columns,
            thetas=[convert(theta) for theta in thetas],
            stop_reasons=list(header["stop_reasons"]),
            reference_states=[] if references is None else [convert(state) for state in references],
            metadata=header["metadata"],
        )

    # --------------------------------------------------------------------------- presentation

    def table(self, every: int = 1) -> str:
        """A plain-text table of the per-step numbers (every ``every``-th step and the last)."""
        header = f"{'step':>4} {'energy':>11} {'inner':>5} {'time[s]':>8} {'rho_tan':>9} {'rho_nor':>9} {'B_k':>9} {'e_k':>9}  stop"
        lines = [header, "-" * len(header)]
        for step in range(len(self.thetas)):
            if step % every and step != len(self.thetas) - 1:
                continue
            lines.append(
                f"{step:>4} {self.columns['energy'][step]:>11.4e} {int(self.columns['inner_iterations'][step]):>5} "
                f"{self.columns['wall_time'][step]:>8.3f} {self.columns['residual_tangential'][step]:>9.2e} "
                f"{self.columns['residual_normal'][step]:>9.2e} {self.columns['tracking_bound'][step]:>9.2e} "
                f"{self.columns['trajectory_error'][step]:>9.2e}  {self.stop_reasons[step]}"
            )
        if self.certified:
            lines.append(
                f"bounds certified: B_k >= ||u_k - v_k||_M from the convexity modulus "
                f"lambda = {self.metadata.get('convexity')} and the residuals"
            )
        else:
            lines.append(
                "bounds uncertified: " + "; ".join(self.metadata.get("notes") or ["convexity modulus unknown"])
            )
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Plot trajectory error, tracking bound and residuals against the step; save to ``path``.

        Raises:
            ImportError: matplotlib is missing (install the ``plot`` extra).
        """
        try:
            import matplotlib
            import matplotlib.ticker

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError("MMSResult.plot needs matplotlib: pip install 'mms_manifolds[plot]'") from error
        figure, axis = plt.subplots(figsize=(6, 4))
        steps = np.arange(len(self.thetas))
        for name, style in (
            ("trajectory_error", "o-"),
            ("tracking_bound", "--"),
            ("residual_tangential", ":"),
            ("residual_normal", "-."),
        ):
            values = getattr(self, name)
            if np.isfinite(values[1:]).any():
                axis.semilogy(steps[1:], np.abs(values[1:]) + 1e-300, style, label=name.replace("_", " "))
        axis.set_xlabel("MMS step k")
        axis.set_ylabel("M-norm (error, bound, residuals)")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are whole numbers
        axis.legend(loc="best", fontsize=8)
        certified = "certified bound" if self.certified else "bound uncertified"
        axis.set_title(title or f"{self.metadata.get('solver', '')} ({certified})", fontsize=9)
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path
