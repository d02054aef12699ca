"""The library's one source of random probes: seeded, on the caller's device, never the global RNG."""

from __future__ import annotations

import torch

__all__ = ["gaussian_probes", "rademacher_probes", "random_subset"]


def rademacher_probes(
    count: int, size: int, *, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> torch.Tensor:
    r"""``count`` Rademacher vectors :math:`z_j \in \{-1, 1\}^{\text{size}}`, shape ``(count, size)``, from a generator seeded with ``seed``.

    Hutchinson's estimators use them (:math:`\mathbb{E}[zz^\top] = I`): the trace of the Gram operator, the
    diagonal for CG's Jacobi preconditioner, and the mesh-free Laplacian. The same seed gives the same
    probes, so every estimate is deterministic.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    signs = torch.randint(0, 2, (count, size), generator=generator, device=device)
    return (2 * signs - 1).to(dtype)


def gaussian_probes(
    count: int, size: int, *, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> torch.Tensor:
    r"""``count`` standard Gaussian vectors of length ``size``, shape ``(size, count)``, from a generator seeded with ``seed``.

    The randomized Nyström sketch (:mod:`mms_manifolds.linalg.nystrom`) uses them as its test matrix
    :math:`\Omega`; the same seed gives the same sketch.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(size, count, generator=generator, dtype=dtype, device=device)


def random_subset(count: int, size: int, *, device: torch.device, seed: int = 0) -> torch.Tensor:
    r"""``min(count, size)`` distinct indices of ``range(size)``, uniformly at random without replacement and increasing, shape ``(count,)``, from a generator seeded with ``seed``.

    The row-sampled Gauss–Newton models (:mod:`mms_manifolds.solvers.row_sampling`) draw their residual rows with
    it; the same seed gives the same rows.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randperm(size, generator=generator, device=device)[:count].sort().values
