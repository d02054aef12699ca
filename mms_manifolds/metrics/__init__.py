"""Metrics on discretised functions: SPD operators M on H_N = R^(N x m)."""

from .base import Metric
from .l2 import L2Metric
from .matrix import MatrixMetric, SobolevMetric

__all__ = ["L2Metric", "MatrixMetric", "Metric", "SobolevMetric"]
