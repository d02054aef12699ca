"""Adapters: the increment manifold inside pymanopt and geoopt (``mms_manifolds.adapters``).

Each adapter imports its library only when first used, so that geoopt users need no pymanopt and the
other way round: ``from mms_manifolds.adapters import GeooptSolver`` imports geoopt (and torch) only,
``PymanoptSolver`` imports pymanopt and autograd only. The dependency edges:

- ``mms_manifolds.adapters.pymanopt`` -> pymanopt, autograd (and the core);
- ``mms_manifolds.adapters.geoopt`` -> geoopt (and the core).

Neither library is a dependency of the core: install the extra ``mms_manifolds[pymanopt]`` or
``mms_manifolds[geoopt]`` (the ``test`` extra has both).
"""

from __future__ import annotations

import importlib

_WHERE = {
    "GeooptIncrementManifold": "geoopt",
    "GeooptNetwork": "geoopt",
    "GeooptSolver": "geoopt",
    "network_parameter": "geoopt",
    "PymanoptIncrementManifold": "pymanopt",
    "PymanoptSolver": "pymanopt",
    "make_problem": "pymanopt",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    """Import the adapter module that defines ``name`` on first access (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
