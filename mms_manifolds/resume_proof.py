r"""Proof, on resume, that a checkpoint continues the problem this run sets up.

The fingerprint (:mod:`mms_manifolds.fingerprint`) is the fast first check, but a digest of code and
objects cannot see everything: a float attribute the module's ``repr`` omits (``u = net(x) + lift * x``),
an edited ``forward``, a replaced forward hook, weights in a plain list, energy data in a default
argument, a module global or a deeply nested config, an edited ``Energy.value``. So every checkpoint
also records what its last step :math:`k` computed, and a resumed run recomputes it and refuses, naming
what differs, unless it matches to rounding:

- the node values :math:`u_k = \phi_k(\theta_k)` (on step :math:`k`'s own nodes when they are resampled),
  through a sketch :math:`s = W\,\mathrm{vec}(u_k)` of :data:`SKETCH_SIZE` fixed projections (:math:`W` has
  independent standard normal entries from a generator seeded 0, drawn on the CPU so that every device sees
  the same :math:`W`): a change of :math:`u_k` moves :math:`s` almost surely. Rounding of the recomputation
  moves :math:`s_j` by at most :math:`C\varepsilon\|W_j\|_2\|u_k\|_2` (Cauchy–Schwarz), :math:`C` =
  :data:`ROUNDING_FACTOR`;
- the energy :math:`E_k(u_k)` against the record's energy column, to :math:`C\varepsilon(|E_k| + \|u_k\|_M^2)`;
- the reference states :math:`v_0, \dots, v_k` where ``reference=`` is given, against the record's, to
  :math:`C\varepsilon\max_i|v_i|`;
- where the reference states come from (given, the exact prox, none), which decides whether the record
  has them at all: a run resumed with another source would write a record that mixes two references, or
  one with reference states for only some steps.

It costs one evaluation of the network and one of the energy (and one norm) at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

__all__ = ["ROUNDING_FACTOR", "SKETCH_SIZE", "reference_source", "record", "refusal"]

SKETCH_SIZE = 8
"""Projections of the node values kept in the checkpoint's metadata."""

ROUNDING_FACTOR = 1e4
r""":math:`C`: a recomputation may differ from the record by :math:`C\varepsilon` times the quantity's scale
(another thread count or BLAS sums in another order); every edit the attacks tried moved a quantity by
far more (the smallest, a float attribute changed in its 7th digit, by :math:`10^{-7}` relative)."""

_SKETCH_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _projections(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r""":math:`W`, shape ``(SKETCH_SIZE, size)``, standard normal from a CPU generator seeded 0 (one cached entry)."""
    key = (size, dtype, torch.device(device))
    if key not in _SKETCH_CACHE:
        generator = torch.Generator().manual_seed(0)
        weights = torch.randn(SKETCH_SIZE, size, generator=generator, dtype=torch.float64, device="cpu").to(dtype=dtype, device=device)
        _SKETCH_CACHE.clear()
        _SKETCH_CACHE[key] = weights
    return _SKETCH_CACHE[key]


def reference_source(reference: torch.Tensor | None, resample: Callable | None, has_prox: bool) -> str | None:
    """Where a run's reference states :math:`v_k` come from: ``"given"``, ``"exact prox"`` or ``None`` (none kept)."""
    if reference is not None:
        return "given"
    return "exact prox" if resample is None and has_prox else None


def record(step: int, values: torch.Tensor, source: str | None) -> dict:
    r"""What a checkpoint keeps of its last step: the step, the sketch and :math:`\|\mathrm{vec}(u_k)\|_2`, the reference's source."""
    flat = values.detach().reshape(-1)
    sketch = _projections(flat.numel(), flat.dtype, flat.device) @ flat
    return {
        "step": int(step),
        "sketch": [float(value) for value in sketch.cpu()],
        "values_norm": float(flat.norm()),
        "reference": source,
    }


def refusal(
    stored: object,
    steps_done: int,
    problem: tuple[object, object, object],
    theta: torch.Tensor,
    recorded_energy: float,
    recorded_references: list[torch.Tensor],
    reference: torch.Tensor | None,
    source: str | None,
) -> str | None:
    r"""Why a checkpoint's last step was not computed by this run's problem, or ``None`` when it matches to rounding.

    Args:
        stored: the checkpoint's proof (:func:`record`), read from its metadata.
        steps_done: :math:`k`, the checkpoint's last step.
        problem: ``(parametrization, energy, metric)`` of step :math:`k` in this run (resampled: ``resample(k)``'s).
        theta: :math:`\theta_k` from the checkpoint.
        recorded_energy: the checkpoint's :math:`E_k(u_k)`.
        recorded_references: the checkpoint's reference states :math:`v_0, \dots, v_k` (possibly none).
        reference: this run's ``reference=`` (``None`` when not given).
        source: this run's :func:`reference_source`.
    """
    if not isinstance(stored, Mapping) or not isinstance(stored.get("sketch"), list):
        return "it records no proof of its last step (written by an older version): use another path"
    if stored.get("step") != steps_done or len(stored["sketch"]) != SKETCH_SIZE:
        return f"its proof is of step {stored.get('step')!r} ({len(stored['sketch'])} projections), not of {steps_done}"
    if stored.get("reference") != source:
        return (
            f"its reference states came from {stored.get('reference') or 'nowhere (none kept)'}, this run's from "
            f"{source or 'nowhere (no reference=, and no exact prox or nodes resampled)'}: the record would mix two "
            "references; pass the same reference= as the run that wrote it"
        )
    parametrization, energy, metric = problem
    epsilon = torch.finfo(theta.dtype).eps
    if source == "given":
        given = reference[: steps_done + 1]
        kept = torch.stack(recorded_references)
        scale = float(kept.abs().max()) if kept.numel() else 0.0
        difference = float((given - kept).abs().max())
        if not difference <= ROUNDING_FACTOR * epsilon * scale:
            return f"reference= differs from the reference states it recorded (by up to {difference:.3e})"
    values = parametrization.value(theta)
    now = record(steps_done, values, source)
    norm = max(now["values_norm"], float(stored.get("values_norm", 0.0)))
    projection_norms = _projections(values.numel(), values.dtype, values.device).norm(dim=1).tolist()
    moved = [
        abs(a - b) / (length * norm) if norm > 0 else abs(a - b)
        for a, b, length in zip(now["sketch"], stored["sketch"], projection_norms)
    ]
    if not max(moved) <= ROUNDING_FACTOR * epsilon or not all(math.isfinite(value) for value in now["sketch"]):
        return (
            f"the network's node values at its last step (step {steps_done}) differ from those it recorded (by "
            f"{max(moved):.3e} relative): the module (an attribute, forward, a hook, weights outside its parameters) "
            "or its nodes are not the same"
        )
    value = float(energy.value(values))
    scale = abs(recorded_energy) + float(metric.norm(values)) ** 2
    if not abs(value - recorded_energy) <= ROUNDING_FACTOR * epsilon * scale:
        return (
            f"the energy at its last step (step {steps_done}) is {value!r} here, {recorded_energy!r} in the "
            "checkpoint: the energy (its data, defaults, globals it reads, or its code) is not the same"
        )
    return None
