"""Metrics on discretised functions: SPD operators M on H_N = R^(N x m), or on a subspace of it."""

from .base import Metric
from .l2 import L2Metric
from .matrix import MatrixMetric, SobolevMetric
from .subspace import HMinusOneMetric, SubspaceMetric

__all__ = ["HMinusOneMetric", "L2Metric", "MatrixMetric", "Metric", "SobolevMetric", "SubspaceMetric"]
