"""Test configuration: torch's default dtype stays float32, so every test states the dtypes it means.

A global float64 default would hide library code that creates tensors without following the model's dtype
(the library itself defaults geometry to float64 where no model says otherwise). Tests build their models
and tensors with an explicit dtype (``problems.DTYPE``, ``.double()``, ``dtype=torch.float64``); a test that
changes the default must restore it, which the fixture below checks.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _default_dtype_is_left_alone():
    yield
    assert torch.get_default_dtype() is torch.float32, "a test left torch's default dtype changed: restore it"
