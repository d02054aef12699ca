r"""The numerical and memory limits of the linear algebra: one cutoff rule, one rank rule, one truncated inverse.

A leaf module (it imports only torch): every factorisation, the residual split and the diagnostics read
their cutoffs from here, so the recorded rank of a Jacobian is the rank the residual split uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

__all__ = [
    "available_memory_bytes",
    "check_fits_in_memory",
    "first_factorable_shift",
    "meminfo_available_bytes",
    "pseudo_inverse_rtol",
    "range_mask",
    "range_threshold",
    "truncated_reciprocal",
]


def meminfo_available_bytes(meminfo: str) -> int | None:
    """``MemAvailable`` of a Linux ``/proc/meminfo`` text in bytes (``None`` where the line is missing).

    The kernel's estimate of the memory a new allocation can get without swapping: free pages plus the page
    cache and reclaimable slabs it would drop. ``MemFree`` alone (``sysconf(SC_AVPHYS_PAGES)``) leaves the cache
    out, and on a machine that has read many files it is a small part of what is usable (0.9 GiB free against
    17 GiB available, measured on the 24 GiB benchmark machine).
    """
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "MemAvailable":
            value, *unit = rest.split()
            return int(value) * (1024 if unit and unit[0].lower() == "kb" else 1)
    return None


def available_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on CUDA; on the CPU Linux's ``MemAvailable``
    (:func:`meminfo_available_bytes`), else the free physical pages."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            available = meminfo_available_bytes(handle.read())
        if available is not None:
            return available
    except OSError:  # not Linux
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


def first_factorable_shift(
    factor_at: Callable[[float], torch.Tensor | None], start: float, growth: float, tries: int
) -> tuple[float, torch.Tensor] | None:
    r"""The first shift :math:`\nu_k = \nu_0 g^k`, :math:`k = 0, \dots, n - 1`, at which ``factor_at`` gives a factor: ``(nu_k, factor)``, or ``None``.

    ``factor_at(nu)`` is a Cholesky factorisation of a matrix shifted by :math:`\nu` (``None`` where it has none);
    ``start`` :math:`= \nu_0 > 0`, ``growth`` :math:`= g > 1`, ``tries`` :math:`= n`. The rule of every shifted
    Cholesky factorisation of the library whose matrix rounding can leave indefinite (the Nyström core, the damped
    Gram matrices).
    """
    shift = start
    for _ in range(tries):
        factor = factor_at(shift)
        if factor is not None:
            return shift, factor
        shift *= growth
    return None
