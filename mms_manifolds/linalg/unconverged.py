"""Iterative solves that stop unconverged: the error, the warning, and the count per block."""

from __future__ import annotations

import warnings

__all__ = ["UnconvergedSolveCount", "UnconvergedSolveError", "UnconvergedSolveWarning"]


class UnconvergedSolveError(RuntimeError):
    """An iterative solve stopped at its iteration cap above its tolerance, and its settings ask to raise."""


class UnconvergedSolveWarning(RuntimeWarning):
    """An iterative solve stopped at its iteration cap above its tolerance (settings ``on_unconverged="warn"``)."""


class UnconvergedSolveCount:
    """Counts the :class:`UnconvergedSolveWarning` raised inside a ``with`` block; ``count`` after it.

    The counted warnings are replaced by one summary warning (the first message and the count), so a
    step with 200 unconverged solves does not print 200 lines; other warnings pass through unchanged.
    """

    def __init__(self, what: str):
        self.what = what
        self.count = 0

    def __enter__(self) -> UnconvergedSolveCount:
        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always", UnconvergedSolveWarning)
        return self

    def __exit__(self, *exception: object) -> None:
        self._catcher.__exit__(*exception)
        counted = [record for record in self._records if issubclass(record.category, UnconvergedSolveWarning)]
        for record in self._records:
            if record not in counted:
                warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
        self.count = len(counted)
        if counted:
            warnings.warn(
                f"{self.what}: {self.count} iterative solve(s) stopped unconverged; the first: {counted[0].message}",
                UnconvergedSolveWarning,
                stacklevel=2,
            )
