"""Test-side workaround for pymanopt 2.2.1 under numpy 2.

``pymanopt.tools.diagnostics.identify_linear_piece`` assigns ``np.sqrt(residuals)`` (an array of shape
``(1,)`` from ``np.polyfit(..., full=True)``) to a scalar slot, which numpy 2 refuses. This replaces it
with the same computation on the scalar residual. It also skips windows that contain non-finite
values: ``check_retraction`` takes ``log10`` of distances that are exactly zero at tiny step sizes
(exp and retraction agree to rounding there), and a window holding ``-inf`` has no meaningful fit.
Nothing else in pymanopt is touched.
"""

import numpy as np
import pymanopt.tools.diagnostics as diagnostics


def identify_linear_piece(x, y, window_length):
    residues = np.zeros(len(x) - window_length)
    polys = np.zeros((2, len(residues)))
    for k in range(len(residues)):
        segment = np.arange(k, k + window_length + 1)
        if not np.all(np.isfinite(y[segment])):
            residues[k] = np.inf
            continue
        poly, residuals, *_ = np.polyfit(x[segment], y[segment], deg=1, full=True)
        residues[k] = np.sqrt(residuals[0]) if residuals.size else 0.0
        polys[:, k] = poly
    best = int(np.argmin(residues))
    return np.arange(best, best + window_length + 1), polys[:, best]


def install() -> None:
    """Patch pymanopt's diagnostics module (idempotent)."""
    diagnostics.identify_linear_piece = identify_linear_piece
