"""The built-in GR00T-style flow-matching DiT action head (used where starVLA's own head is not available).

Same design and call API as starVLA's ``GR00T_ActionHeader``::

    state [B,1,S] ─► state MLP ──────────┐
    future tokens (learned) [N] ─────────┤
    x_t [B,T,D], t ─► action encoder ────┴─► tokens ─► DiT blocks ─► action decoder ─► velocity [B,T,D]
                                                        │  timestep-conditioned adaptive LayerNorm
                              condition [B,L,C] + mask ─┘  even blocks: cross-attention to the condition,
                                                           odd blocks: self-attention (interleave_self_attention)

Training: ``head(condition, actions, state, encoder_attention_mask=mask)`` → MSE(v̂, a − ε) (the framework repeats
the batch ``repeated_diffusion_steps`` times). Inference: ``head.predict_action(condition, state, mask)`` runs
``num_inference_timesteps`` Euler steps from noise; the condition is computed once by the caller.
Time convention: t = 0 noise, t = 1 action (see :mod:`.flow_matching`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.normalization import AdaLayerNorm
from torch import nn

from .flow_matching import euler_integrate, interpolate, sample_time, velocity_target

logger = logging.getLogger(__name__)

# starVLA's sizes: width, heads, head dim.
DIT_SIZES = {"DiT-B": (768, 12, 64), "DiT-L": (1536, 32, 48)}


@dataclass(frozen=True)
class ActionHeadConfig:
    """``framework.action_model`` (with ``diffusion_model_cfg`` flattened in). Errors name the YAML key."""

    action_dim: int
    action_horizon: int
    cross_attention_dim: int
    state_dim: int | None = None
    action_model_type: str = "DiT-B"
    num_attention_heads: int | None = None  # overrides the type's size (tiny heads for CPU)
    attention_head_dim: int | None = None
    hidden_size: int = 1024  # MLP width of the state encoder and action decoder
    num_layers: int = 16
    dropout: float = 0.2
    final_dropout: bool = True
    interleave_self_attention: bool = True
    norm_type: str = "ada_norm"
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    num_timestep_buckets: int = 1000
    num_inference_timesteps: int = 4
    num_target_vision_tokens: int = 32
    add_pos_embed: bool = True
    max_seq_len: int = 1024
    time_distribution: Literal["beta", "uniform"] = "beta"

    def __post_init__(self):
        for key in ("action_dim", "action_horizon", "cross_attention_dim", "hidden_size", "num_layers",
                    "num_timestep_buckets", "num_inference_timesteps", "num_target_vision_tokens", "max_seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"framework.action_model.{key}={value!r}: expected a positive integer")
        if self.action_model_type not in DIT_SIZES and not (self.num_attention_heads and self.attention_head_dim):
            raise ValueError(f"framework.action_model.action_model_type={self.action_model_type!r}: expected one of "
                             f"{' | '.join(DIT_SIZES)} (or set diffusion_model_cfg.num_attention_heads and attention_head_dim)")
        if self.norm_type != "ada_norm":
            raise ValueError(f"framework.action_model.diffusion_model_cfg.norm_type={self.norm_type!r}: expected ada_norm")
        if self.time_distribution not in ("beta", "uniform"):
            raise ValueError(f"framework.action_model.time_distribution={self.time_distribution!r}: expected beta | uniform")
        if self.add_pos_embed and self.action_horizon > self.max_seq_len:
            raise ValueError(f"framework.action_model.action_horizon={self.action_horizon} exceeds max_seq_len={self.max_seq_len}")

    @property
    def size(self) -> tuple[int, int, int]:
        """(width, heads, head dim) of the DiT."""
        if self.num_attention_heads and self.attention_head_dim:
            return self.num_attention_heads * self.attention_head_dim, self.num_attention_heads, self.attention_head_dim
        return DIT_SIZES[self.action_model_type]

    @classmethod
    def from_section(cls, section: dict) -> "ActionHeadConfig":
        """From ``framework.action_model`` with ``diffusion_model_cfg`` merged in; host-only keys are left alone."""
        known = {f.name for f in dataclasses.fields(cls)}
        ignored = sorted(set(section) - known)
        if ignored:
            logger.debug("built-in action head ignores framework.action_model keys %s", ignored)
        return cls(**{k: v for k, v in section.items() if k in known})


class _MLP(nn.Sequential):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


class _Block(nn.Module):
    """Adaptive-norm attention (cross to the condition, or self) + feed-forward, both residual."""

    def __init__(self, width: int, heads: int, head_dim: int, cross_dim: int | None, dropout: float, final_dropout: bool):
        super().__init__()
        self.norm1 = AdaLayerNorm(width, output_dim=2 * width, chunk_dim=1)
        self.attn = Attention(query_dim=width, cross_attention_dim=cross_dim, heads=heads, dim_head=head_dim,
                              dropout=dropout, bias=True, out_bias=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.ff = FeedForward(width, dropout=dropout, activation_fn="gelu-approximate", final_dropout=final_dropout)
        self.is_cross = cross_dim is not None

    def forward(self, x, temb, condition, condition_bias):
        h = self.norm1(x, temb=temb)
        if self.is_cross:
            h = self.attn(h, encoder_hidden_states=condition, attention_mask=condition_bias)
        else:
            h = self.attn(h)
        x = x + h
        return x + self.ff(self.norm2(x))


class FlowMatchingActionHead(nn.Module):
    def __init__(self, config: ActionHeadConfig):
        super().__init__()
        self.config = config
        width, heads, head_dim = config.size
        self.state_encoder = _MLP(config.state_dim, config.hidden_size, width) if config.state_dim else None
        self.action_in = nn.Linear(config.action_dim, width)
        self.action_time = nn.Linear(2 * width, width)  # [action; sinusoidal t] → width (GR00T's action encoder)
        self.action_out = nn.Linear(width, width)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.future_tokens = nn.Embedding(config.num_target_vision_tokens, width)
        nn.init.normal_(self.future_tokens.weight, std=0.02)
        self.position_embedding = nn.Embedding(config.max_seq_len, width) if config.add_pos_embed else None
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.timestep_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.timestep_embedding = TimestepEmbedding(256, width)
        self.blocks = nn.ModuleList(
            _Block(width, heads, head_dim,
                   None if (config.interleave_self_attention and i % 2 == 1) else config.cross_attention_dim,
                   config.dropout, config.final_dropout)
            for i in range(config.num_layers)
        )
        self.norm_out = AdaLayerNorm(width, output_dim=2 * width, chunk_dim=1)
        self.action_decoder = _MLP(width, config.hidden_size, config.action_dim)

    # ------------------------------------------------------------------ checks
    def _check(self, condition, state, actions=None):
        c = self.config
        if condition.ndim != 3 or condition.shape[-1] != c.cross_attention_dim:
            raise ValueError(f"condition: expected [B, L, {c.cross_attention_dim}] "
                             f"(diffusion_model_cfg.cross_attention_dim), got {list(condition.shape)}")
        if actions is not None and (actions.ndim != 3 or actions.shape[1:] != (c.action_horizon, c.action_dim)):
            raise ValueError(f"actions: expected [B, {c.action_horizon}, {c.action_dim}] "
                             f"(framework.action_model.action_horizon, action_dim), got {list(actions.shape)}")
        if (state is None) != (self.state_encoder is None):
            raise ValueError("state: the head was built with framework.action_model.state_dim="
                             f"{c.state_dim} but got {'no state' if state is None else 'a state'}")
        if state is not None and (state.ndim != 3 or state.shape[1:] != (1, c.state_dim)):
            raise ValueError(f"state: expected [B, 1, {c.state_dim}] (framework.action_model.state_dim), "
                             f"got {list(state.shape)}")

    # ------------------------------------------------------------------ network
    def velocity(self, condition, condition_bias, state, x_t, t_bucket) -> torch.Tensor:
        """Predicted velocity ``[B, T, D]`` at noisy actions ``x_t`` and time buckets ``t_bucket`` ``[B]``."""
        dtype = self.action_in.weight.dtype
        a = self.action_in(x_t.to(dtype))
        tau = self.time_proj(t_bucket).to(dtype)[:, None].expand_as(a)
        a = self.action_out(F.silu(self.action_time(torch.cat([a, tau], dim=-1))))
        if self.position_embedding is not None:
            a = a + self.position_embedding.weight[: a.shape[1]]
        tokens = [self.future_tokens.weight.expand(a.shape[0], -1, -1), a]
        if self.state_encoder is not None:
            tokens.insert(0, self.state_encoder(state.to(dtype)))
        x = torch.cat(tokens, dim=1)
        temb = self.timestep_embedding(self.timestep_proj(t_bucket).to(dtype))
        condition = condition.to(dtype)
        for block in self.blocks:
            x = block(x, temb, condition, condition_bias)
        return self.action_decoder(self.norm_out(x, temb=temb)[:, -a.shape[1]:])

    @staticmethod
    def _bias(mask: torch.Tensor | None, condition: torch.Tensor) -> torch.Tensor | None:
        """True/1 = may attend → the additive bias diffusers' Attention takes, ``[B, 1, L]``."""
        if mask is None:
            return None
        bias = torch.zeros(mask.shape, dtype=condition.dtype, device=condition.device)
        return bias.masked_fill(~mask.bool(), torch.finfo(condition.dtype).min)[:, None, :]

    def forward(self, condition, actions, state=None, encoder_attention_mask=None, *, noise=None, t=None) -> torch.Tensor:
        """Flow-matching loss for one (already repeated) batch; ``noise``/``t`` may be fixed for reproducibility."""
        self._check(condition, state, actions)
        c = self.config
        actions = actions.to(self.action_in.weight.dtype)
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        if t is None:
            t = sample_time(actions.shape[0], distribution=c.time_distribution, alpha=c.noise_beta_alpha,
                            beta=c.noise_beta_beta, s=c.noise_s, device=actions.device)
        t = t.to(actions.device, actions.dtype)
        x_t = interpolate(noise, actions, t)
        bucket = (t * c.num_timestep_buckets).long()
        pred = self.velocity(condition, self._bias(encoder_attention_mask, condition), state, x_t, bucket)
        return F.mse_loss(pred.float(), velocity_target(noise, actions).float())

    @torch.no_grad()
    def predict_action(self, condition, state=None, encoder_attention_mask=None, *, noise=None) -> torch.Tensor:
        """Actions ``[B, T, D]`` from ``num_inference_timesteps`` Euler steps starting at ``noise`` (default N(0, I))."""
        self._check(condition, state)
        c = self.config
        if noise is None:
            noise = torch.randn(condition.shape[0], c.action_horizon, c.action_dim, device=condition.device,
                                dtype=self.action_in.weight.dtype)
        bias = self._bias(encoder_attention_mask, condition)
        return euler_integrate(lambda x, b: self.velocity(condition, bias, state, x, b), noise,
                               c.num_inference_timesteps, c.num_timestep_buckets)
