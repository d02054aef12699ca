"""Test configuration: float64 by default, so geometry identities are checked at full precision."""

import torch

torch.set_default_dtype(torch.float64)
