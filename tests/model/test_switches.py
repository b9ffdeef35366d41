"""The experiment switches of the backbone (``framework.twinbrain.cross_attention``, ...), numerically."""

import pytest
import torch

from starvla_twinbrain.config import BackboneConfig
from starvla_twinbrain.model.qwen_compat import vlm_core
from tests.model.test_dual_brain import SAMPLES, STATE_DIM, TOL, build, prepare, stock  # noqa: F401 (fixture)


# ---------------------------------------------------------------- cross_attention: none


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_none_is_the_stock_model_on_the_right_prompt(tiny_vlm, stock, backend):  # noqa: F811
    """The single-brain variant: the Right Brain alone computes what the stock VLM computes on the Right prompt
    (padding included), and the Left Brain is not run."""
    backbone = build(tiny_vlm, cross_attention="none", attn_implementation=backend)
    inputs = prepare(backbone, SAMPLES)
    assert not inputs.right.attention_mask.all()  # the batch is padded
    calls = []
    hook = vlm_core(backbone.left_brain).register_forward_pre_hook(lambda *_: calls.append("left"))
    with torch.no_grad():
        got = backbone(inputs)
        want = vlm_core(stock)(**inputs.right.tensors).last_hidden_state
    hook.remove()
    assert calls == []
    valid = inputs.right.attention_mask.bool()
    assert torch.equal(got.attention_mask, valid)
    torch.testing.assert_close(got.hidden_states[valid], want[valid], **TOL)


def test_none_ignores_the_left_and_trains_the_right(tiny_vlm):
    backbone = build(tiny_vlm, cross_attention="none", state_dim=STATE_DIM)
    base = prepare(backbone, SAMPLES[:1])
    other = prepare(backbone, [dict(SAMPLES[0], lang="stack the cups")])
    swapped = type(base)(other.left, base.right, base.state, base.state_valid)
    out = backbone(base)
    with torch.no_grad():
        assert torch.equal(out.hidden_states, backbone(swapped).hidden_states)
    out.hidden_states[out.attention_mask].square().mean().backward()
    assert all(p.grad is None for p in backbone.left_brain.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.state_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.right_brain.language_model.parameters())


def test_none_differs_from_asymmetric(tiny_vlm):
    """The switch reaches the computation (the same weights give other outputs)."""
    outs = {}
    for mode in ("asymmetric", "none"):
        backbone = build(tiny_vlm, cross_attention=mode)
        with torch.no_grad():
            outs[mode] = backbone(prepare(backbone, SAMPLES)).hidden_states
    assert (outs["asymmetric"] - outs["none"]).abs().max() > 1e-3


def test_cross_attention_value_is_checked(tiny_vlm):
    with pytest.raises(ValueError, match=r"framework\.twinbrain\.cross_attention='left': expected one of asymmetric \| "):
        BackboneConfig(base_vlm=tiny_vlm, cross_attention="left")
