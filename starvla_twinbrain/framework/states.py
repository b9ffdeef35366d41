"""The robot state, checked once, where examples enter the framework (``forward``, ``predict_action``; the policy
server checks a request with the same function before the model runs). The model core past this point takes the
stacked tensor and only refuses a wrong size, a programming error."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def validate_states(examples: Sequence[dict], state_dim: int | None, include_state: bool) -> torch.Tensor | None:
    """``float32 [B, state_dim]`` from ``examples[b]['state']`` (each ``[state_dim]`` or ``[1, state_dim]``, numbers
    that are all finite), or None when the run has no state (``datasets.vla_data.include_state`` false: a state an
    example carries is then not used). Errors name the example and what was expected."""
    if not include_state:
        return None
    missing = [b for b, ex in enumerate(examples) if ex.get("state") is None]
    if missing:
        raise ValueError(f"examples{missing} have no 'state' but datasets.vla_data.include_state is true")
    out = torch.empty(len(examples), state_dim, dtype=torch.float32)
    for b, ex in enumerate(examples):
        where, value = f"examples[{b}]['state']", ex["state"]
        try:
            state = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected numbers, [{state_dim}] or [1, {state_dim}], got "
                             f"{type(value).__name__}") from None
        if state.size != state_dim or state.ndim > 2 or (state.ndim == 2 and state.shape[0] != 1):
            raise ValueError(f"{where}: expected shape [{state_dim}] or [1, {state_dim}] "
                             f"(framework.action_model.state_dim), got {tuple(state.shape)}")
        if not np.isfinite(state).all():
            raise ValueError(f"{where}: contains NaN or inf")
        out[b] = torch.tensor(state.reshape(state_dim))  # a copy: host arrays may be read-only
    return out
