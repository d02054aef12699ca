"""The library's one source of random probes: seeded, on the caller's device, never the global RNG."""

from __future__ import annotations

import numpy as np
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


def random_subset(count: int, size: int, *, device: torch.device, seed: int = 0, draw: int = 0) -> torch.Tensor:
    r"""``min(count, size)`` distinct indices of ``range(size)``, uniform without replacement and increasing, shape ``(min(count, size),)``.

    Draw ``draw`` of the stream ``seed``: a CPU generator (the same indices on every device, then moved to
    ``device``) seeded with the 32-bit word numpy's ``SeedSequence((seed, draw))`` derives, so every pair gets its
    own well-mixed seed (torch's CPU generator reads 32 bits of its seed: ``seed * 2**32 + draw`` would ignore
    ``seed``, and ``seed + draw`` would make the streams overlap). The subspace Gauss–Newton solver draws its
    parameter blocks with it, the row-sampled models their residual rows.
    """
    word = int(np.random.SeedSequence((seed, draw)).generate_state(1)[0])
    generator = torch.Generator().manual_seed(word)
    return torch.randperm(size, generator=generator, device="cpu")[:count].sort().values.to(device)
