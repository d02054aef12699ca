"""Reproduce the paper's claim and the field's standard test cases: trajectory error against inner iterations per solver."""

from .experiments import EXPERIMENTS, Experiment, build
from .runner import Row, compare, summary_markdown

__all__ = ["EXPERIMENTS", "Experiment", "Row", "build", "compare", "summary_markdown"]
