"""Small networks built reproducibly from a seed, whatever the default dtype, device or global random state."""

from __future__ import annotations

import torch

__all__ = ["mlp"]


def mlp(
    widths: tuple[int, ...],
    seed: int,
    dtype: torch.dtype = torch.float64,
    *,
    device: torch.device | str = "cpu",
    activation: type[torch.nn.Module] = torch.nn.Tanh,
) -> torch.nn.Sequential:
    """An MLP with layer ``widths`` and ``activation`` between layers, torch's default initialisation drawn from ``seed``.

    The weights are drawn in float64 on the CPU from ``torch.manual_seed(seed)`` and then moved to
    ``dtype`` and ``device``, so the draw depends on nothing else (not the default dtype, not the device);
    the global random state is restored afterwards.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(width_in, width_out, dtype=torch.float64))
        if index < len(widths) - 2:
            layers.append(activation())
    torch.random.set_rng_state(state)
    return torch.nn.Sequential(*layers).to(dtype=dtype, device=device)
