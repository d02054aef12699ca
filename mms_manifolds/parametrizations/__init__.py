"""Parametrisations: maps from flat parameter vectors to the node values of a network."""

from .autograd_numpy import AutogradParametrization
from .base import Parametrization
from .constrained import ConstrainedParametrization
from .linear import LinearParametrization
from .torch_function import FunctionParametrization
from .torch_module import TorchParametrization

__all__ = [
    "AutogradParametrization",
    "ConstrainedParametrization",
    "FunctionParametrization",
    "LinearParametrization",
    "Parametrization",
    "TorchParametrization",
]
