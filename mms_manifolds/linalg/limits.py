r"""The numerical and memory limits of the linear algebra: one cutoff rule, one rank rule, one truncated inverse.

A leaf module (it imports only torch): every factorisation, the residual split and the diagnostics read
their cutoffs from here, so the recorded rank of a Jacobian is the rank the residual split uses.
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "available_memory_bytes",
    "check_fits_in_memory",
    "pseudo_inverse_rtol",
    "range_mask",
    "range_threshold",
    "truncated_reciprocal",
]


def available_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on CUDA, available physical memory on the CPU.

    On the CPU that is the kernel's ``MemAvailable`` (``/proc/meminfo``: free pages plus the page cache it can
    reclaim), where it exists; the free pages alone (``SC_AVPHYS_PAGES``) leave out the cache, which on a machine
    that has read many files is most of its memory (measured: 3 GiB free, 19 GiB available, of 23).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no /proc: the free pages below
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # platforms without sysconf: assume enough
        return 2**62


def check_fits_in_memory(required_bytes: int, device: torch.device | str, what: str) -> None:
    """Raise ``MemoryError`` naming ``what`` before allocating ``required_bytes`` that ``device`` does not have free.

    A forced solve mode that cannot fit (a Woodbury kernel of :math:`N \times N` at :math:`N = 10^5` is
    74.5 GiB) then fails with a message, not an out-of-memory crash inside the factorisation.
    """
    available = available_memory_bytes(device)
    if required_bytes > available:
        raise MemoryError(
            f"{what} needs about {required_bytes / 2**30:.1f} GiB on {device}, {available / 2**30:.1f} GiB are free: "
            "use solve_mode='dense' (factors the smaller Gram side) or 'cg' (matrix-free)"
        )


def pseudo_inverse_rtol(size: int, dtype: torch.dtype) -> float:
    r"""Relative eigenvalue cutoff of a truncated pseudo-inverse of a ``(size, size)`` Gram matrix: ``size * eps``.

    Eigenvalues :math:`\lambda_i \le` ``size`` :math:`\cdot\,\varepsilon\,\lambda_{\max}` are dropped: the rule of
    LAPACK's and numpy's least-squares drivers (``rcond=None``), applied to the Gram matrix. Rounding in
    forming and factoring it perturbs eigenvalues by about :math:`\varepsilon\lambda_{\max}`, so the directions kept are
    resolved; a Gauss–Newton step along the dropped ones would be noise (a cutoff of :math:`10^{-16}` failed on
    the 2-D Poisson benchmark, ``docs/performance.md``). Every pseudo-inverse and residual split in the library
    uses this one rule.
    """
    return size * torch.finfo(dtype).eps


def range_mask(singular: torch.Tensor, num_parameters: int, ambient_dimension: int) -> torch.Tensor:
    r"""The singular values of a whitened Jacobian :math:`B` (``(Nm, p)``) that span :math:`\operatorname{range} J`: :math:`\sigma_i^2 > \text{rtol}\,\sigma_{\max}^2`.

    The one rank rule of the library: ``rtol`` is :func:`pseudo_inverse_rtol` of :math:`\min(p, Nm)`, the
    cutoff of the undamped dense pseudo-inverse, so the residual split agrees with the projection at
    ``damping=0`` and the recorded ``jacobian_rank`` (:meth:`IncrementManifold.diagnostics
    <mms_manifolds.IncrementManifold.diagnostics>`) is the rank the split uses.
    """
    rtol = pseudo_inverse_rtol(min(num_parameters, ambient_dimension), singular.dtype)
    return singular.square() > rtol * float(singular.max()) ** 2


def range_threshold(singular: torch.Tensor, num_parameters: int, ambient_dimension: int) -> float:
    r"""The singular value :math:`\sqrt{\text{rtol}}\,\sigma_{\max}` that :func:`range_mask` keeps values above (for reports)."""
    rtol = pseudo_inverse_rtol(min(num_parameters, ambient_dimension), singular.dtype)
    return rtol**0.5 * float(singular.max())


def truncated_reciprocal(values: torch.Tensor, keep: torch.Tensor, power: int = 1) -> torch.Tensor:
    r""":math:`1/v_i^{\text{power}}` where ``keep``, 0 elsewhere: the diagonal of every truncated pseudo-inverse."""
    safe = values.where(keep, torch.ones_like(values))
    return torch.where(keep, 1.0 / (safe if power == 1 else safe**power), 0.0)
