r"""Digests of everything that determines an MMS trajectory, so a checkpoint can refuse a changed problem.

:func:`trajectory_fingerprint` returns one SHA-256 digest per part of the run: the parametrization
(architecture, activation, nodes), the energy (type and data), the metric (type and data), the time
step, the manifold's damping and solve mode, the inner solver's full configuration, the dtype and the
initial parameters. Objects are described by :func:`describe`: tensors and arrays by dtype, shape and
bytes (sparse ones by coordinates and values); ``torch.nn.Module`` by its printed architecture (its
parameter values are the initial parameters, digested separately), its buffers and frozen parameters;
functions by qualified name, bytecode, constants (nested code included) and captured values; builtins
by name; ``functools.partial`` by function and arguments; generators by their state; other objects by
type and attributes (or slots), recursively. Nothing is described by its memory address, so equal
set-ups in two processes digest equally. Two runs with equal digests of a part set that part up
identically.
"""

from __future__ import annotations

import functools
import hashlib
import math
import types
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["describe", "differing_parts", "trajectory_fingerprint"]

_MAX_DEPTH = 8


def describe(value: object, _seen: frozenset[int] = frozenset()) -> bytes:
    """Canonical bytes for ``value``: equal for objects set up identically, else (almost surely) different.

    Attributes named ``_cache`` or ending in ``_cache`` are lazily filled caches, not part of an object's
    identity, and are left out; an object met again inside itself (a closure over ``self``) is described
    once.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value).encode()
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else float.hex(value)).encode()
    if isinstance(value, (torch.dtype, torch.device, types.ModuleType, type)):
        return repr(value).encode()
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        header = f"tensor|{tensor.dtype}|{tuple(tensor.shape)}|{tensor.layout}|".encode()
        if tensor.layout != torch.strided:  # sparse: its coordinates and values, never a dense copy
            coalesced = tensor.to_sparse_coo().coalesce()
            return header + describe([coalesced.indices(), coalesced.values()], _seen)
        return header + tensor.cpu().contiguous().numpy().tobytes()
    if isinstance(value, np.ndarray):
        return f"array|{value.dtype.str}|{value.shape}|".encode() + np.ascontiguousarray(value).tobytes()
    if id(value) in _seen or len(_seen) > _MAX_DEPTH:
        return f"<{type(value).__qualname__}>".encode()
    seen = _seen | {id(value)}
    if isinstance(value, torch.nn.Module):
        state = [(name, buffer) for name, buffer in value.named_buffers()]
        frozen = [(name, p) for name, p in value.named_parameters() if not p.requires_grad]
        return b"module|" + repr(value).encode() + describe(state + frozen, seen)
    if isinstance(value, (types.FunctionType, types.MethodType)):
        function = value.__func__ if isinstance(value, types.MethodType) else value
        code = function.__code__
        captured = [cell.cell_contents for cell in function.__closure__ or () if _filled(cell)]
        return (
            f"function|{function.__module__}.{function.__qualname__}|".encode()
            + code.co_code
            + describe([code.co_consts, captured, getattr(value, "__self__", None)], seen)
        )
    if isinstance(value, functools.partial):
        return b"partial|" + describe([value.func, value.args, value.keywords], seen)
    if isinstance(value, types.BuiltinFunctionType):  # torch.sin and friends: by name (their repr holds an address)
        return f"builtin|{value.__module__}.{getattr(value, '__qualname__', value.__name__)}".encode()
    if isinstance(value, types.CodeType):  # nested functions and comprehensions: by their code, not their address
        name = getattr(value, "co_qualname", value.co_name)  # co_qualname from Python 3.11
        return f"code|{name}|".encode() + value.co_code + describe([value.co_consts, value.co_names], seen)
    if isinstance(value, (list, tuple)):
        return b"seq|" + b"|".join(describe(item, seen) for item in value)
    if isinstance(value, Mapping):
        keys = sorted(value, key=repr)
        return b"map|" + b"|".join(describe(key, seen) + b"=" + describe(value[key], seen) for key in keys)
    if isinstance(value, torch.Generator):
        return b"generator|" + describe(value.get_state(), seen)
    attributes = getattr(value, "__dict__", None)
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if attributes is None:
        slots = [slot for cls in type(value).__mro__ for slot in getattr(cls, "__slots__", ())]
        if slots:
            return f"slots|{name}|".encode() + describe({slot: getattr(value, slot, None) for slot in slots}, seen)
        if type(value).__repr__ is object.__repr__:  # the default repr holds an address, not the object's identity
            return f"opaque|{name}".encode()
        return f"{name}|{value!r}".encode()
    identity = {key: item for key, item in attributes.items() if not (key == "_cache" or key.endswith("_cache"))}
    return f"object|{name}|".encode() + describe(identity, seen)


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _digest(value: object) -> str:
    return hashlib.sha256(describe(value)).hexdigest()


def trajectory_fingerprint(
    parametrization: object,
    energy: object,
    metric: object,
    tau: float,
    damping: float,
    solve_mode: object,
    solver: object,
    theta0: torch.Tensor,
) -> dict[str, str]:
    """One digest per part of a run; see the module docstring.

    The solver is described by its ``repr``, which lists every setting (:meth:`InnerSolver.__repr__` prints
    all public attributes; the adapters' solvers print their optimiser's options): a subclass that only
    instruments a solver (counting or interrupting its solves) digests like the solver it wraps.
    """
    return {
        "parametrization": _digest(parametrization),
        "energy": _digest(energy),
        "metric": _digest(metric),
        "tau": _digest(float(tau)),
        "damping": _digest(float(damping)),
        "solve_mode": _digest(solve_mode),
        "solver": _digest(repr(solver)),
        "dtype": _digest(str(theta0.dtype)),
        "theta0": _digest(theta0),
    }


def differing_parts(stored: object, current: Mapping[str, str]) -> list[str]:
    """The parts whose digests differ (all of them if ``stored`` is not a digest mapping)."""
    if not isinstance(stored, Mapping):
        return sorted(current)
    return sorted(part for part in current.keys() | stored.keys() if stored.get(part) != current.get(part))
