"""Parametrisations: maps from flat parameter vectors to the node values of a network."""

from .autograd_numpy import AutogradParametrization
from .base import Parametrization
from .linear import LinearParametrization
from .torch_function import FunctionParametrization
from .torch_module import TorchParametrization

__all__ = [
    "AutogradParametrization",
    "FunctionParametrization",
    "LinearParametrization",
    "Parametrization",
    "TorchParametrization",
]
