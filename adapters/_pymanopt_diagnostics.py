"""A repair of pymanopt 2.2's diagnostics under numpy 2, installed only where pymanopt's own code fails.

``pymanopt.tools.diagnostics.identify_linear_piece`` (used by ``check_gradient``, ``check_hessian``,
``check_directional_derivative`` and ``check_retraction``) assigns ``np.sqrt(residuals)``, an array of
shape ``(1,)`` from ``np.polyfit(..., full=True)``, to a scalar slot. numpy 1 accepted that with a
deprecation warning; numpy 2 raises ``ValueError: setting an array element with a sequence``, so
every diagnostic fails on every manifold.

:func:`install` probes pymanopt's function once and replaces it only when the probe fails. The
replacement fits the same least-squares line over the same windows and returns the same segment and
polynomial on finite data; it also skips windows that hold a non-finite value (``log10`` of a distance
that is exactly zero, where two maps agree to rounding), where pymanopt would fit NaN and might
report that window. Nothing else in pymanopt is touched, and where pymanopt works (numpy 1, or a
fixed pymanopt release) nothing is replaced.
"""

from __future__ import annotations

import numpy as np
import pymanopt.tools.diagnostics as diagnostics

__all__ = ["identify_linear_piece", "install", "installed"]


def identify_linear_piece(x: np.ndarray, y: np.ndarray, window_length: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The window of ``window_length + 1`` consecutive points of ``(x, y)`` that a line fits best.

    For every window :math:`S_k = \{k, \dots, k + L\}` fit :math:`y \approx a x + b` by least squares
    and keep the window with the smallest residual norm. Returns ``(segment, poly)``: the indices of that
    window and ``[a, b]`` (highest degree first), as pymanopt's function does.
    """
    count = len(x) - window_length
    residues = np.full(count, np.inf)
    polys = np.zeros((2, count))
    for k in range(count):
        segment = np.arange(k, k + window_length + 1)
        if not (np.all(np.isfinite(x[segment])) and np.all(np.isfinite(y[segment]))):
            continue
        poly, residuals, *_ = np.polyfit(x[segment], y[segment], deg=1, full=True)
        residues[k] = float(np.sqrt(residuals[0])) if residuals.size else 0.0
        polys[:, k] = poly
    best = int(np.argmin(residues))
    return np.arange(best, best + window_length + 1), polys[:, best]


def _pymanopt_version_works() -> bool:
    """Whether pymanopt's own ``identify_linear_piece`` runs under the installed numpy."""
    x = np.linspace(0.0, 1.0, 12)
    try:
        diagnostics.identify_linear_piece(x, 2.0 * x + np.sin(x), 10)
    except (ValueError, TypeError):
        return False
    return True


def installed() -> bool:
    """Whether pymanopt's diagnostics currently use this module's :func:`identify_linear_piece`."""
    return diagnostics.identify_linear_piece is identify_linear_piece


def install() -> bool:
    """Replace pymanopt's ``identify_linear_piece`` if, and only if, it fails here; return whether it is replaced."""
    if not installed() and not _pymanopt_version_works():
        diagnostics.identify_linear_piece = identify_linear_piece
    return installed()
