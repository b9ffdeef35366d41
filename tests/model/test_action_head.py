"""The built-in flow-matching DiT head: layout, masking, the flow-matching loss and Euler sampling, by numbers."""

import pytest
import torch

from starvla_twinbrain.model.action_head import ActionHeadConfig, FlowMatchingActionHead, sinusoid
from starvla_twinbrain.model.flow_matching import interpolate, sample_time, velocity_target

COND, T, D, S = 24, 4, 3, 5


def make_head(**overrides) -> FlowMatchingActionHead:
    torch.manual_seed(0)
    cfg = dict(action_dim=D, action_horizon=T, cross_attention_dim=COND, state_dim=S, hidden_size=32, num_layers=3,
               output_dim=32, dropout=0.0, final_dropout=False, num_target_vision_tokens=2, max_seq_len=16)
    cfg.update(overrides)
    return FlowMatchingActionHead(ActionHeadConfig(**cfg)).eval()


def inputs(batch=3, length=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, length, COND, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 4:] = False
    return cond, mask, torch.randn(batch, 1, S, generator=g), torch.rand(batch, T, D, generator=g) * 2 - 1


def test_state_dict_layout_is_starvla_gr00t():
    # The names starVLA's GR00T_ActionHeader uses, so checkpoints load across the two heads with strict=True.
    names = set(make_head(positional_embeddings="sinusoidal").state_dict())
    expected = {
        "model.timestep_encoder.timestep_embedder.linear_1.weight", "model.timestep_encoder.timestep_embedder.linear_2.bias",
        "model.transformer_blocks.0.norm1.linear.weight", "model.transformer_blocks.0.attn1.to_q.weight",
        "model.transformer_blocks.0.attn1.to_k.weight", "model.transformer_blocks.0.attn1.to_out.0.bias",
        "model.transformer_blocks.0.ff.net.0.proj.weight", "model.transformer_blocks.0.ff.net.2.weight",
        "model.transformer_blocks.0.pos_embed.pe", "model.proj_out_1.weight", "model.proj_out_2.weight",
        "state_encoder.layer1.weight", "state_encoder.layer2.bias", "action_encoder.layer1.weight",
        "action_encoder.layer2.weight", "action_encoder.layer3.weight", "action_decoder.layer1.weight",
        "action_decoder.layer2.bias", "future_tokens.weight", "position_embedding.weight",
    }
    assert expected <= names
    head = make_head()
    # Odd blocks self-attend (keys from the 768-wide tokens), even blocks cross-attend to the condition.
    assert head.model.transformer_blocks[0].attn1.to_k.weight.shape[1] == COND
    assert head.model.transformer_blocks[1].attn1.to_k.weight.shape[1] == 768
    assert head.model.proj_out_2.weight.shape == (32, 768)
    assert not any(k.endswith("pos_embed.pe") for k in head.state_dict())


def test_action_encoder_time_features():
    t = torch.tensor([0, 1, 999])
    f = sinusoid(t, 8).double()
    omega = torch.tensor([10000.0 ** (-i / 4) for i in range(4)], dtype=torch.float64)
    ref = torch.cat([torch.sin(t[:, None] * omega), torch.cos(t[:, None] * omega)], dim=-1)
    torch.testing.assert_close(f, ref, atol=1e-3, rtol=0)  # float32 angles up to ~1e3


def test_masked_condition_tokens_are_invisible():
    head = make_head()
    cond, mask, state, actions = inputs()
    x = torch.randn(3, T, D)
    bucket = torch.tensor([10, 500, 900])
    c, st, m = head._inputs(cond, state, mask)
    v1 = head.velocity(c, m, st, x, bucket)
    cond2 = cond.clone()
    cond2[0, 4:] = 1e3 * torch.randn(2, COND)  # only masked positions of sample 0 change
    c2, _, _ = head._inputs(cond2, state, mask)
    v2 = head.velocity(c2, m, st, x, bucket)
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=0)
    cond3 = cond.clone()
    cond3[0, 1] += 1.0  # a visible position changes the output
    v3 = head.velocity(head._inputs(cond3, state, mask)[0], m, st, x, bucket)
    assert (v3[0] - v1[0]).abs().max() > 1e-4
    torch.testing.assert_close(v3[1:], v1[1:], atol=1e-6, rtol=0)


def test_loss_is_flow_matching_mse_with_starvla_rng_order():
    head = make_head()
    cond, mask, state, actions = inputs()
    torch.manual_seed(7)
    loss = head(cond, actions, state, encoder_attention_mask=mask)
    # Same seed: noise first, then times (starVLA's order), then the explicit velocity regression.
    torch.manual_seed(7)
    noise = torch.randn_like(actions)
    t = sample_time(3)
    bucket = (t * 1000).long()
    c, st, m = head._inputs(cond, state, mask)
    pred = head.velocity(c, m, st, interpolate(noise, actions, t), bucket)
    ref = ((pred - velocity_target(noise, actions)) ** 2).mean()
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)


def test_time_sampling_distributions():
    torch.manual_seed(0)
    t = sample_time(20000, distribution="beta")  # GR00T: (s - u)/s, u ~ Beta(1.5, 1) clipped → t ∈ [0, 1], E[t] ≈ 0.4
    assert 0 <= t.min() and t.max() <= 1
    assert abs(t.mean().item() - (1 - 0.6 / 0.999)) < 0.01
    torch.manual_seed(0)
    u = sample_time(20000)  # the default is the paper's: t ~ U[0, 1]
    assert 0 <= u.min() and u.max() <= 1
    quartiles = torch.quantile(u, torch.tensor([0.25, 0.5, 0.75]))
    torch.testing.assert_close(quartiles, torch.tensor([0.25, 0.5, 0.75]), atol=0.01, rtol=0)
    # drawn as starVLA's head draws it with noise_beta_alpha = noise_beta_beta = 1, so both heads agree
    torch.manual_seed(0)
    ref = (0.999 - torch.distributions.Beta(1.0, 1.0).sample((20000,)).clamp(max=0.999)) / 0.999
    assert torch.equal(u, ref)


def test_default_head_trains_with_the_papers_uniform_time():
    assert make_head().config.time_distribution == "uniform"


def test_euler_sampling_matches_explicit_steps():
    head = make_head(num_inference_timesteps=3)
    cond, mask, state, _ = inputs()
    noise = torch.randn(3, T, D)
    out = head.predict_action(cond, state, encoder_attention_mask=mask, noise=noise)
    c, st, m = head._inputs(cond, state, mask)
    x = noise.clone()
    for step, bucket in enumerate([0, 333, 666]):
        x = x + head.velocity(c, m, st, x, torch.full((3,), bucket)) / 3
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


@pytest.mark.slow  # an end-to-end run: the full suite has it, the fast tier stays under 3 minutes
def test_head_learns_a_conditional_mapping():
    # Actions are a fixed function of the condition: a few hundred steps fit it, and sampling recovers it.
    head = make_head(num_layers=1, hidden_size=64, output_dim=64).train()
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(4, 3, COND, generator=g)
    targets = torch.tanh(cond[:, :1, :D].repeat(1, T, 1))
    state = torch.zeros(4, 1, S)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    torch.manual_seed(0)
    first = None
    for _ in range(120):
        loss = head(cond.repeat(4, 1, 1), targets.repeat(4, 1, 1), state.repeat(4, 1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.25 * first
    head.eval()
    torch.manual_seed(1)
    pred = head.predict_action(cond, state)
    assert (pred - targets).abs().mean() < 0.5 * targets.abs().mean()


@pytest.mark.parametrize("overrides, match", [
    (dict(action_model_type="DiT-XL"), "action_model_type"),
    (dict(num_attention_heads=4, attention_head_dim=16), "must equal the DiT-B width 768"),
    (dict(norm_type="layer_norm"), "norm_type"),
    (dict(positional_embeddings="rope"), "positional_embeddings"),
    (dict(action_dim=0), r"^action_dim=0: expected a positive integer"),
])
def test_bad_config_names_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_head(**overrides)


def test_bad_shapes_say_expected_and_got():
    head = make_head()
    cond, mask, state, actions = inputs()
    with pytest.raises(ValueError, match=r"actions: expected \[B, 4, 3\].*got \[3, 5, 3\]"):
        head(cond, torch.zeros(3, 5, 3), state)
    with pytest.raises(ValueError, match=r"state: expected \[B, 1, 5\].*got \[3, 1, 7\]"):
        head(cond, actions, torch.zeros(3, 1, 7))
    with pytest.raises(ValueError, match=r"condition: expected \[B, L, 24\]"):
        head.predict_action(torch.zeros(3, 6, 10), state)
