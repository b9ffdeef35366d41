"""State encoder φ (paper eq. 3): robot state → tokens appended to the Right Brain's input."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def stack_states(states: Sequence, state_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample states (``[state_dim]`` or ``[1, state_dim]`` arrays/tensors, or None) → ``float32 [B, state_dim]``
    (zeros where missing) and ``bool [B]`` (which samples have one). Errors name the example."""
    out = torch.zeros(len(states), state_dim, dtype=torch.float32)
    valid = torch.zeros(len(states), dtype=torch.bool)
    for b, s in enumerate(states):
        if s is None:
            continue
        s = torch.tensor(np.asarray(s, dtype=np.float32))  # a copy: host arrays may be read-only
        if s.numel() != state_dim or s.ndim > 2 or (s.ndim == 2 and s.shape[0] != 1):
            raise ValueError(f"examples[{b}]['state']: expected shape [{state_dim}] or [1, {state_dim}] "
                             f"(state_dim), got {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise ValueError(f"examples[{b}]['state']: contains NaN or inf")
        out[b], valid[b] = s.reshape(state_dim), True
    return out, valid


class StateEncoder(nn.Module):
    """MLP ``[B, state_dim] → [B, num_tokens, hidden_size]``. Also accepts starVLA's ``[B, 1, state_dim]``."""

    def __init__(self, state_dim: int, hidden_size: int, num_tokens: int = 1, mlp_dim: int = 1024):
        super().__init__()
        self.state_dim, self.hidden_size, self.num_tokens = state_dim, hidden_size, num_tokens
        self.mlp = nn.Sequential(
            nn.Linear(state_dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, num_tokens * hidden_size)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if state.ndim == 3 and state.shape[1] == 1:
            state = state[:, 0]
        if state.ndim != 2 or state.shape[-1] != self.state_dim:
            raise ValueError(
                f"state: expected shape [B, {self.state_dim}] (state_dim={self.state_dim}), "
                f"got {tuple(state.shape)}"
            )
        param = self.mlp[0].weight
        return self.mlp(state.to(param.dtype)).view(state.shape[0], self.num_tokens, self.hidden_size)
