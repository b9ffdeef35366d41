"""The built-in GR00T-style flow-matching DiT action head, used where starVLA's own head is not importable.

It has the design, the call API **and the state-dict layout** of starVLA's ``GR00T_ActionHeader`` (commit
0ed0aad), so a checkpoint trained with either head loads into the other with ``strict=True``; the host-check test
(``tests/host/``) compares the two numerically where starVLA is installed::

    state [B,1,S] ─► state_encoder ───────────┐
    future_tokens (learned) [N] ──────────────┤
    x_t [B,T,D], t ─► action_encoder (+pos) ──┴─► tokens ─► model (DiT) ─► action_decoder ─► velocity [B,T,D]
                                                             │  blocks: adaptive LayerNorm on the timestep,
                                   condition [B,L,C] + mask ─┘  even: cross-attention to the condition,
                                                                odd: self-attention (interleave_self_attention)

Training: ``head(condition, actions, state, encoder_attention_mask=mask)`` → MSE(v̂, a − ε) (the framework repeats
the batch ``repeated_diffusion_steps`` times). Inference: ``head.predict_action(condition, state, mask)`` runs
``num_inference_timesteps`` Euler steps from noise; the condition is computed once by the caller.
Time convention: t = 0 noise, t = 1 action (see :mod:`.flow_matching`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, TimestepEmbedding, Timesteps
from torch import nn

from .config import ActionHeadConfig
from .flow_matching import euler_integrate, interpolate, sample_time, velocity_target

logger = logging.getLogger(__name__)

def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[..., dim]`` = [sin(p·ω), cos(p·ω)], ω_i = 10000^(−i / (dim/2)): the action encoder's time features."""
    half = dim // 2
    omega = torch.exp(-torch.arange(half, dtype=torch.float32, device=positions.device)
                      * (torch.log(torch.tensor(10000.0)) / half))
    angles = positions.float()[..., None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.layer1 = nn.Linear(d_in, d_hidden)
        self.layer2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.layer2(F.relu(self.layer1(x)))


class ActionEncoder(nn.Module):
    """Noisy actions + time bucket → tokens: W3 · swish(W2 · [W1·a ; sinusoid(t)])."""

    def __init__(self, action_dim: int, width: int):
        super().__init__()
        self.layer1 = nn.Linear(action_dim, width)
        self.layer2 = nn.Linear(2 * width, width)
        self.layer3 = nn.Linear(width, width)

    def forward(self, actions: torch.Tensor, t_bucket: torch.Tensor) -> torch.Tensor:
        a = self.layer1(actions)
        tau = sinusoid(t_bucket[:, None].expand(-1, actions.shape[1]), a.shape[-1]).to(a.dtype)
        return self.layer3(F.silu(self.layer2(torch.cat([a, tau], dim=-1))))


class TimestepEncoder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=width)

    def forward(self, t_bucket: torch.Tensor) -> torch.Tensor:
        dtype = self.timestep_embedder.linear_1.weight.dtype
        return self.timestep_embedder(self.time_proj(t_bucket).to(dtype))


class AdaNorm(nn.Module):
    """LayerNorm (no affine) scaled and shifted by the timestep embedding: norm(x)·(1 + scale) + shift."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.linear = nn.Linear(width, 2 * width)
        self.norm = nn.LayerNorm(width, eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Adaptive-norm attention (to the condition, or self) + feed-forward, both residual."""

    def __init__(self, c: ActionHeadConfig, cross_dim: int | None):
        super().__init__()
        width, heads, head_dim = c.size
        self.norm1 = AdaNorm(width, c.norm_eps)
        self.pos_embed = (SinusoidalPositionalEmbedding(width, max_seq_length=c.max_num_positional_embeddings)
                          if c.positional_embeddings == "sinusoidal" else None)
        self.attn1 = Attention(query_dim=width, heads=heads, dim_head=head_dim, dropout=c.dropout,
                               bias=c.attention_bias, cross_attention_dim=cross_dim, out_bias=True)
        self.norm3 = nn.LayerNorm(width, c.norm_eps, elementwise_affine=False)
        self.ff = FeedForward(width, dropout=c.dropout, activation_fn=c.activation_fn, final_dropout=c.final_dropout)
        self.final_dropout = nn.Dropout(c.dropout) if c.final_dropout else None

    def forward(self, x, temb, condition=None, condition_mask=None):
        h = self.norm1(x, temb)
        if self.pos_embed is not None:
            h = self.pos_embed(h)
        h = self.attn1(h, encoder_hidden_states=condition, attention_mask=condition_mask)
        if self.final_dropout is not None:
            h = self.final_dropout(h)
        x = x + h
        return x + self.ff(self.norm3(x))


class DiT(nn.Module):
    def __init__(self, c: ActionHeadConfig):
        super().__init__()
        width = c.size[0]
        self.interleave_self_attention = c.interleave_self_attention
        self.timestep_encoder = TimestepEncoder(width)
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(c, None if self._is_self_attention(i) else c.cross_attention_dim) for i in range(c.num_layers))
        self.norm_out = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(width, 2 * width)
        self.proj_out_2 = nn.Linear(width, c.output_dim)

    def _is_self_attention(self, index: int) -> bool:
        return self.interleave_self_attention and index % 2 == 1

    def forward(self, tokens, condition, condition_mask, t_bucket):
        temb = self.timestep_encoder(t_bucket)
        x = tokens
        for i, block in enumerate(self.transformer_blocks):
            if self._is_self_attention(i):
                x = block(x, temb)
            else:
                x = block(x, temb, condition, condition_mask)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=1)
        return self.proj_out_2(self.norm_out(x) * (1 + scale[:, None]) + shift[:, None])


class FlowMatchingActionHead(nn.Module):
    def __init__(self, config: ActionHeadConfig):
        super().__init__()
        self.config = config
        width = config.size[0]
        self.model = DiT(config)
        self.state_encoder = MLP(config.state_dim, config.hidden_size, width) if config.state_dim else None
        self.action_encoder = ActionEncoder(config.action_dim, width)
        self.action_decoder = MLP(config.output_dim, config.hidden_size, config.action_dim)
        self.future_tokens = nn.Embedding(config.num_target_vision_tokens, width)
        nn.init.normal_(self.future_tokens.weight, std=0.02)
        if config.add_pos_embed:
            self.position_embedding = nn.Embedding(config.max_seq_len, width)
            nn.init.normal_(self.position_embedding.weight, std=0.02)

    # ------------------------------------------------------------------ checks
    def _check(self, condition, state, actions=None):
        c = self.config
        if condition.ndim != 3 or condition.shape[-1] != c.cross_attention_dim:
            raise ValueError(f"condition: expected [B, L, {c.cross_attention_dim}] "
                             f"(diffusion_model_cfg.cross_attention_dim), got {list(condition.shape)}")
        if actions is not None and (actions.ndim != 3 or actions.shape[1:] != (c.action_horizon, c.action_dim)):
            raise ValueError(f"actions: expected [B, {c.action_horizon}, {c.action_dim}] "
                             f"(action_horizon, action_dim), got {list(actions.shape)}")
        if state is not None and self.state_encoder is None:
            raise ValueError("state: got a state but the head was built without one (state_dim is None)")
        if state is not None and (state.ndim != 3 or state.shape[1:] != (1, c.state_dim)):
            raise ValueError(f"state: expected [B, 1, {c.state_dim}] (state_dim), "
                             f"got {list(state.shape)}")

    # ------------------------------------------------------------------ network
    def velocity(self, condition, condition_mask, state_tokens, x_t, t_bucket) -> torch.Tensor:
        """Predicted velocity ``[B, T, D]`` at noisy actions ``x_t`` and time buckets ``t_bucket`` ``[B]``."""
        a = self.action_encoder(x_t, t_bucket)
        if self.config.add_pos_embed:
            a = a + self.position_embedding.weight[: a.shape[1]]
        tokens = [self.future_tokens.weight.expand(a.shape[0], -1, -1), a]
        if state_tokens is not None:
            tokens.insert(0, state_tokens)
        out = self.model(torch.cat(tokens, dim=1), condition, condition_mask, t_bucket)
        return self.action_decoder(out)[:, -a.shape[1]:]

    def _inputs(self, condition, state, mask):
        dtype = self.action_encoder.layer1.weight.dtype
        state_tokens = self.state_encoder(state.to(dtype)) if state is not None else None
        mask = mask.bool() if mask is not None else None  # True = may attend
        return condition.to(dtype), state_tokens, mask

    def forward(self, condition, actions, state=None, encoder_attention_mask=None, *, noise=None, t=None) -> torch.Tensor:
        """Flow-matching loss for one (already repeated) batch; ``noise``/``t`` may be fixed for reproducibility.
        Draws noise then times from the global RNG in the same order as starVLA's head."""
        self._check(condition, state, actions)
        c = self.config
        actions = actions.to(self.action_encoder.layer1.weight.dtype)
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        if t is None:
            t = sample_time(actions.shape[0], distribution=c.time_distribution, alpha=c.noise_beta_alpha,
                            beta=c.noise_beta_beta, s=c.noise_s, device=actions.device)
        t = t.to(actions.device, actions.dtype)
        bucket = (t * c.num_timestep_buckets).long()
        condition, state_tokens, mask = self._inputs(condition, state, encoder_attention_mask)
        pred = self.velocity(condition, mask, state_tokens, interpolate(noise, actions, t), bucket)
        return F.mse_loss(pred.float(), velocity_target(noise, actions).float())

    @torch.no_grad()
    def predict_action(self, condition, state=None, encoder_attention_mask=None, *, noise=None) -> torch.Tensor:
        """Actions ``[B, T, D]`` from ``num_inference_timesteps`` Euler steps starting at ``noise`` (default N(0, I))."""
        self._check(condition, state)
        c = self.config
        if noise is None:
            noise = torch.randn(condition.shape[0], c.action_horizon, c.action_dim, device=condition.device,
                                dtype=self.action_encoder.layer1.weight.dtype)
        condition, state_tokens, mask = self._inputs(condition, state, encoder_attention_mask)
        return euler_integrate(lambda x, b: self.velocity(condition, mask, state_tokens, x, b), noise,
                               c.num_inference_timesteps, c.num_timestep_buckets)

