"""Flow-matching math shared by training and sampling (stateless).

Time convention (GR00T's, which starVLA's head uses): t = 0 is pure noise ε, t = 1 is the action a;
x_t = (1 − t)·ε + t·a and the velocity is dx/dt = a − ε. (openpi and LeRobot use the opposite direction.)
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from .config import OptionError


def sample_time(
    batch_size: int,
    *,
    distribution: Literal["beta", "uniform"] = "uniform",
    alpha: float = 1.5,
    beta: float = 1.0,
    s: float = 0.999,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training times ``[B]`` (global torch RNG): GR00T's ``t = (s − u) / s`` with u clipped to s, so t ∈ [0, 1].

    "uniform" (the TwinBrainVLA paper's t ~ U[0, 1]): u ~ Beta(1, 1), i.e. uniform; "beta" (GR00T's default):
    u ~ Beta(alpha, beta), which favours small t (noisy inputs). Drawing the uniform case through Beta(1, 1) is
    what starVLA's head does with ``noise_beta_alpha = noise_beta_beta = 1``, so both heads draw the same times."""
    if distribution not in ("beta", "uniform"):
        raise OptionError("time_distribution", f"={distribution!r}: expected beta | uniform")
    if distribution == "uniform":
        alpha, beta = 1.0, 1.0
    u = torch.distributions.Beta(float(alpha), float(beta)).sample((batch_size,)).clamp(max=s)
    return ((s - u) / s).to(device)


def interpolate(noise: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·ε + t·a; ``t`` is ``[B]`` (t = 0 noise, t = 1 action)."""
    t = t.view(-1, *([1] * (actions.ndim - 1))).to(actions.dtype)
    return (1 - t) * noise + t * actions


def velocity_target(noise: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """dx_t/dt = a − ε."""
    return actions - noise


def euler_integrate(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int,
    num_timestep_buckets: int = 1000,
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t_bucket) from t = 0 (noise) to t = 1 (action) in ``num_steps`` equal Euler
    steps; the network sees t discretised into ``num_timestep_buckets`` buckets (``[B]`` long), as in training."""
    if num_steps < 1:
        raise OptionError("num_inference_timesteps", f"={num_steps}: expected >= 1")
    x, dt = noise, 1.0 / num_steps
    for step in range(num_steps):
        bucket = torch.full((x.shape[0],), int(step / num_steps * num_timestep_buckets), device=x.device, dtype=torch.long)
        x = x + dt * velocity(x, bucket)
    return x
