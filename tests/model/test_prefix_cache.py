"""Shared-prefix K/V of the Left Brain (framework.twinbrain.share_prefix): the same numbers as the plain forward.

Reference: the same backbone with share_prefix off (every row computes its own prefix). Tolerances are those of
float reordering: the hidden states to 1e-5; the gradients to 1e-5 overall (normwise) and 1e-3 per tensor (the
Qwen3-VL DeepStack mergers' small gradients move by ~2e-4 between eager and sdpa too).
"""

import dataclasses

import pytest
import torch

from starvla_twinbrain.config import BackboneConfig, TwinBrainOptions
from starvla_twinbrain.model.prefix_cache import LeftPrefixCache
from starvla_twinbrain.model.qwen_compat import vlm_core
from tests.factories import BACKBONE_SAMPLES as SAMPLES
from tests.factories import FP32_TOL as TOL
from tests.factories import STATE_DIM
from tests.factories import build_backbone as build
from tests.factories import prepare_backbone as prepare


def run(backbone, inputs, share: bool, backward: bool = True):
    """Hidden states, mask, a loss of the valid hidden states and the Right's gradients, with sharing on/off."""
    backbone.config = dataclasses.replace(backbone.config, share_prefix=share)
    backbone.zero_grad(set_to_none=True)
    out = backbone(inputs)
    loss = (out.hidden_states[out.attention_mask].float() ** 2).mean()
    grads = {}
    if backward:
        loss.backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
    return out.hidden_states.detach(), out.attention_mask, loss.detach(), grads


def assert_same(shared, plain):
    hidden, mask, loss, grads = shared
    torch.testing.assert_close(mask, plain[1])
    torch.testing.assert_close(hidden[mask], plain[0][mask], **TOL)
    torch.testing.assert_close(loss, plain[2], rtol=1e-5, atol=0)
    assert grads.keys() == plain[3].keys()
    num = sum(((grads[n] - plain[3][n]) ** 2).sum() for n in grads).sqrt()
    den = sum((g ** 2).sum() for g in plain[3].values()).sqrt()
    assert num / max(den, 1e-12) < 1e-5
    for name, grad in grads.items():
        want = plain[3][name]
        assert (grad - want).norm() <= 1e-3 * want.norm() + 1e-7, name


def test_left_prompts_share_a_prefix(tiny_vlm):
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    ids, mask = inputs.left.input_ids, inputs.left.attention_mask.bool()
    assert len(set(mask.sum(1).tolist())) == len(SAMPLES)  # different lengths: left padding in every test here
    tokenizer = backbone.processor.tokenizer
    prefix = tokenizer.decode(backbone.left_prefix.prefix_ids)
    assert prefix.startswith("<|im_start|>system\n" + backbone.config.prompts.left_system)
    assert prefix.endswith("<|im_start|>user\n")
    for b in range(len(SAMPLES)):
        row = ids[b][mask[b]]
        assert torch.equal(row[: len(backbone.left_prefix)], backbone.left_prefix.prefix_ids)
    assert backbone.shares_prefix(inputs.left)


@pytest.mark.parametrize("condition", ["all_tokens", "action_queries"])
def test_shared_prefix_equals_plain_with_gradients(tiny_vlm, condition):
    backbone = build(tiny_vlm, state_dim=STATE_DIM, condition=condition, num_action_queries=3)
    inputs = prepare(backbone, SAMPLES)
    assert_same(run(backbone, inputs, True), run(backbone, inputs, False))
    assert backbone.left_prefix.computed == 1


@pytest.mark.parametrize("backend", ["eager", "flex_attention"])
def test_shared_prefix_equals_plain_other_backends(tiny_vlm, backend):
    backbone = build(tiny_vlm, state_dim=STATE_DIM, attn_implementation=backend)
    inputs = prepare(backbone, SAMPLES)
    with torch.no_grad():  # flex_attention: no backward on CPU
        shared, plain = run(backbone, inputs, True, False), run(backbone, inputs, False, False)
    assert backbone.backend == backend
    torch.testing.assert_close(shared[0][shared[1]], plain[0][plain[1]], **TOL)


def test_shared_prefix_one_observation(tiny_vlm):
    """Inference: batch 1, no padding; the prefix K/V come from the cache from the second call on."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM).eval()
    with torch.no_grad():
        for sample in SAMPLES:
            inputs = prepare(backbone, [sample])
            shared, plain = run(backbone, inputs, True, False), run(backbone, inputs, False, False)
            torch.testing.assert_close(shared[0], plain[0], **TOL)
    assert backbone.left_prefix.computed == 1


def test_prefix_recomputed_when_left_weights_change(tiny_vlm):
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    run(backbone, inputs, True, False)
    layer = vlm_core(backbone.left_brain).language_model.layers[0]
    with torch.no_grad():
        layer.self_attn.k_proj.weight.mul_(1.5)  # in place: same storage, new version
    shared = run(backbone, inputs, True)
    assert backbone.left_prefix.computed == 2
    assert_same(shared, run(backbone, inputs, False))
    # a new tensor in place of the old one (load_state_dict with assign, a host's swap) is noticed too
    layer.self_attn.k_proj.weight = torch.nn.Parameter(layer.self_attn.k_proj.weight.detach() * 0.5,
                                                       requires_grad=False)
    shared = run(backbone, inputs, True)
    assert backbone.left_prefix.computed == 3
    assert_same(shared, run(backbone, inputs, False))


def test_the_right_still_sees_the_left_through_the_prefix(tiny_vlm):
    """The shared prefix K/V are the Left's: zeroing them in the cache changes the Right's output."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    with torch.no_grad():
        before = run(backbone, inputs, True, False)[0]
        for k, v in backbone.left_prefix._kv.values():
            k.zero_(), v.zero_()
        after = run(backbone, inputs, True, False)[0]
    assert (before - after).abs().max() > 1e-3


def test_a_batch_without_the_prefix_runs_plain(tiny_vlm):
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    ids, mask = inputs.left.input_ids, inputs.left.attention_mask.bool()
    b = 1
    first = int((~mask[b]).sum())  # the row's first valid column
    ids[b, first + 2] = backbone.processor.tokenizer.convert_tokens_to_ids("<|box_start|>")
    assert not backbone.shares_prefix(inputs.left)
    shared, plain = run(backbone, inputs, True, False), run(backbone, inputs, False, False)
    assert torch.equal(shared[0], plain[0])  # the same (plain) path
    assert backbone.left_prefix.computed == 0


def test_applies_checks_every_row():
    cache = LeftPrefixCache(torch.tensor([7, 8]))
    from starvla_twinbrain.model.prompts import BrainInputs

    def inputs(rows):
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return BrainInputs({"input_ids": ids, "attention_mask": mask})

    assert cache.applies(inputs([[7, 8, 1], [7, 8, 1, 2, 3]]))
    assert not cache.applies(inputs([[7, 8, 1], [7, 9, 1, 2, 3]]))
    assert not cache.applies(inputs([[7, 8], [7, 8, 1, 2, 3]]))  # nothing after the prefix
    left = inputs([[7, 8, 1], [7, 8, 1, 2, 3]])
    # pads stay in front, the prefix columns go: [pad pad 7 8 1] -> [pad pad 1]
    assert cache._drop_prefix(left.attention_mask, left.input_ids).tolist() == [[0, 0, 1], [1, 2, 3]]
    assert cache.left_valid(left).int().tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]


def test_share_prefix_option():
    assert TwinBrainOptions().share_prefix is True and BackboneConfig(base_vlm="x").share_prefix is True
    from omegaconf import OmegaConf

    from starvla_twinbrain.config import TwinBrainConfig

    cfg = OmegaConf.create({"framework": {"qwenvl": {"base_vlm": "x"}, "action_model": {"action_dim": 7,
                            "action_horizon": 4}, "twinbrain": {"share_prefix": False}}})
    assert TwinBrainConfig.from_omegaconf(cfg).backbone.share_prefix is False
    cfg.framework.twinbrain.share_prefix = "yes"
    with pytest.raises(ValueError, match="framework.twinbrain.share_prefix"):
        TwinBrainConfig.from_omegaconf(cfg)


def test_shared_prefix_left_stops_after_its_last_keys_values(tiny_vlm):
    """The prefix pass and the suffix pass both end at the last layer's K/V; the prefix pass runs once."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    text = vlm_core(backbone.left_brain).language_model
    calls = []
    hooks = [text.layers[-1].mlp.register_forward_hook(lambda *_: calls.append("last mlp")),
             text.norm.register_forward_hook(lambda *_: calls.append("final norm")),
             text.layers[0].mlp.register_forward_hook(lambda *_: calls.append("first mlp"))]
    with torch.no_grad():
        backbone(inputs)
        assert calls == ["first mlp", "first mlp"]  # the prefix (one row), then the suffixes
        backbone(inputs)
    for hook in hooks:
        hook.remove()
    assert calls == ["first mlp"] * 3
