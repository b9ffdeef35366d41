"""State encoder φ (paper eq. 3): robot state → tokens appended to the Right Brain's input."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def stack_states(states: Sequence | torch.Tensor, state_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample states (``[state_dim]`` or ``[1, state_dim]`` arrays/tensors, or None) or a ``[B, state_dim]``
    tensor → ``float32 [B, state_dim]`` (zeros where missing) and ``bool [B]`` (which samples have one).

    User input is checked where it enters, by the framework (framework/states.py, which names the example); a wrong
    size here is a programming error."""
    if isinstance(states, torch.Tensor):
        if states.ndim != 2 or states.shape[1] != state_dim:
            raise ValueError(f"states: expected [B, {state_dim}], got {list(states.shape)}")
        return states.float(), torch.ones(states.shape[0], dtype=torch.bool)
    out = torch.zeros(len(states), state_dim, dtype=torch.float32)
    valid = torch.zeros(len(states), dtype=torch.bool)
    for b, s in enumerate(states):
        if s is None:
            continue
        s = torch.tensor(np.asarray(s, dtype=np.float32))  # a copy: host arrays may be read-only
        if s.numel() != state_dim:
            raise ValueError(f"states[{b}]: expected {state_dim} values, got shape {tuple(s.shape)}")
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
