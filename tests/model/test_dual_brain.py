"""The dual-brain backbone on tiny Qwen2.5-VL / Qwen3-VL: numbers against the stock model and invariants."""

import pytest
import torch

from starvla_twinbrain.config import BackboneConfig
from starvla_twinbrain.model.asymot_attention import AsyMoTContext
from starvla_twinbrain.model.dual_brain import DualBrainBackbone
from starvla_twinbrain.model.qwen_compat import vlm_core
from tests.factories import BACKBONE_SAMPLES as SAMPLES
from tests.factories import FP32_TOL as TOL
from tests.factories import STATE_DIM, random_image
from tests.factories import build_backbone as build
from tests.factories import prepare_backbone as prepare

def valid_rows(output, b):
    return output.hidden_states[b][output.attention_mask[b]]


def test_left_brain_equals_stock_bit_for_bit(tiny_vlm, stock):
    backbone = build(tiny_vlm)
    inputs = prepare(backbone, SAMPLES)
    left = inputs.left.tensors
    with torch.no_grad():
        want = stock(**left, output_hidden_states=True)
        context = AsyMoTContext(inputs.left.attention_mask, inputs.right.attention_mask, backbone.backend)
        got_core = vlm_core(backbone.left_brain)(**left, asymot_context=context)  # the recording pass
        got = backbone.left_brain(**left, output_hidden_states=True)  # the Left alone
    assert len(context.left_kv) == stock.config.text_config.num_hidden_layers
    assert torch.equal(got_core.last_hidden_state, vlm_core(stock)(**left).last_hidden_state)
    assert torch.equal(got.logits, want.logits)
    for a, b in zip(got.hidden_states, want.hidden_states):
        assert torch.equal(a, b)
    gen = dict(max_new_tokens=4, do_sample=False)
    assert torch.equal(backbone.left_brain.generate(**left, **gen), stock.generate(**left, **gen))


def test_chat_is_the_base_vlm(tiny_vlm, stock):
    backbone = build(tiny_vlm)
    answer = backbone.chat([random_image(5)], "What is on the table?", max_new_tokens=5)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is on the table?"}]}]
    proc = backbone.processor
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = proc(text=[text], images=[random_image(5)], return_tensors="pt")
    out = stock.generate(**enc, max_new_tokens=5, do_sample=False)
    assert answer == proc.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)[0]


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex_attention"])
def test_right_with_left_masked_out_equals_stock(tiny_vlm, stock, backend):
    backbone = build(tiny_vlm, attn_implementation=backend)
    inputs = prepare(backbone, SAMPLES)
    left_hidden_out = torch.zeros_like(inputs.left.attention_mask, dtype=torch.bool)
    context = AsyMoTContext(left_hidden_out, inputs.right.attention_mask, backend)
    with torch.no_grad():
        vlm_core(backbone.left_brain)(**inputs.left.tensors, asymot_context=context)
        got = backbone.right_brain(**inputs.right.tensors, asymot_context=context).last_hidden_state
        want = vlm_core(stock)(**inputs.right.tensors).last_hidden_state
    valid = inputs.right.attention_mask.bool()
    torch.testing.assert_close(got[valid], want[valid], **TOL)


def test_forward_equals_the_stock_input_path(tiny_vlm):
    """backbone.forward feeds embeddings + explicit M-RoPE positions; the stock call feeds token ids (the plain
    Left: the shared prefix is exact to float tolerance, tests/model/test_prefix_cache.py)."""
    backbone = build(tiny_vlm, share_prefix=False)
    inputs = prepare(backbone, SAMPLES)
    with torch.no_grad():
        got = backbone(inputs)
        context = AsyMoTContext(inputs.left.attention_mask, inputs.right.attention_mask, backbone.backend)
        vlm_core(backbone.left_brain)(**inputs.left.tensors, asymot_context=context)
        want = backbone.right_brain(**inputs.right.tensors, asymot_context=context).last_hidden_state
    mask = got.attention_mask
    torch.testing.assert_close(got.hidden_states[mask], want[mask], rtol=0, atol=0)


def test_left_stops_after_its_last_keys_values(tiny_vlm):
    """In the twin forward the Left ends once its last layer's K/V are recorded: that layer's attention output, MLP
    and the final norm never run, and the Right's output is exactly that of a Left run to the end."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM, share_prefix=False)
    inputs = prepare(backbone, SAMPLES)
    text = vlm_core(backbone.left_brain).language_model
    calls = []
    hooks = [text.layers[-1].mlp.register_forward_hook(lambda *_: calls.append("last mlp")),
             text.norm.register_forward_hook(lambda *_: calls.append("final norm")),
             text.layers[0].mlp.register_forward_hook(lambda *_: calls.append("first mlp"))]
    with torch.no_grad():
        got = backbone(inputs)
    for hook in hooks:
        hook.remove()
    assert calls == ["first mlp"]
    with torch.no_grad():
        backbone.num_text_layers += 1  # no layer matches: the Left runs to the end
        full = backbone(inputs)
    assert torch.equal(got.hidden_states, full.hidden_states)


@pytest.mark.parametrize("backend", ["sdpa", "flex_attention"])
def test_backends_agree(tiny_vlm, backend):
    """Whole-model inference against the eager reference (flex: forward only on CPU, see test_asymot_attention)."""
    outs = {}
    for name in ("eager", backend):
        backbone = build(tiny_vlm, attn_implementation=name, state_dim=STATE_DIM)
        with torch.no_grad():
            outs[name] = backbone(prepare(backbone, SAMPLES))
        assert backbone.backend == name
    assert torch.equal(outs["eager"].attention_mask, outs[backend].attention_mask)
    mask = outs["eager"].attention_mask
    torch.testing.assert_close(outs["eager"].hidden_states[mask], outs[backend].hidden_states[mask], **TOL)


def test_backend_follows_the_weights_device_and_dtype(tiny_vlm, monkeypatch, caplog):
    """Hosts build the model on CPU and move it (starVLA, accelerate): the backend is chosen for where the weights
    are when it runs. A stand-in policy picks eager for float64 weights (as the real one picks flash-attn for a GPU
    in bf16); after the cast the model runs eager, in text and vision, exactly like a model built eager."""
    from starvla_twinbrain.model import dual_brain

    real = dual_brain.resolve_backend
    monkeypatch.setattr(dual_brain, "resolve_backend",
                        lambda requested, device, dtype: "eager" if dtype == torch.float64 else real(requested, device, dtype))
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES)
    with caplog.at_level("INFO", logger=dual_brain.__name__):
        with torch.no_grad():
            backbone(inputs)
            backbone(inputs)
        assert backbone.backend == "sdpa"
        backbone.to(torch.float64)
        with torch.no_grad():
            got = backbone(inputs.to("cpu", torch.float64))
    assert backbone.backend == "eager"
    for vlm in (backbone.left_brain, backbone.right_brain):
        assert vlm.config.vision_config._attn_implementation == "eager"
    assert backbone.left_brain.config.text_config._attn_implementation == "asymot_left_eager"
    assert backbone.right_brain.config.text_config._attn_implementation == "asymot_right_eager"
    choices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TwinBrain joint attention")]
    assert len(choices) == 2 and "sdpa" in choices[0] and "eager" in choices[1] and "torch.float64" in choices[1], choices

    monkeypatch.undo()
    reference = build(tiny_vlm, state_dim=STATE_DIM, attn_implementation="eager").to(torch.float64)
    with torch.no_grad():
        want = reference(inputs.to("cpu", torch.float64))
    assert torch.equal(got.hidden_states, want.hidden_states)


def test_backend_follows_the_autocast_dtype(tiny_vlm, monkeypatch):
    """fp32 trainable weights under bf16 autocast (the precision policy on a GPU) compute attention in bf16: the
    backend is chosen for bf16 (what flash-attn needs), not for the fp32 master weights."""
    from starvla_twinbrain.model import dual_brain

    seen = []
    real = dual_brain.resolve_backend

    def recording(requested, device, dtype):
        seen.append(dtype)
        return real(requested, device, dtype)

    monkeypatch.setattr(dual_brain, "resolve_backend", recording)
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    inputs = prepare(backbone, SAMPLES[:1])
    with torch.no_grad():
        backbone(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            backbone(inputs)
        backbone(inputs)
    assert seen == [torch.float32, torch.bfloat16, torch.float32]


def test_flex_training_on_cpu_is_refused(tiny_vlm):
    backbone = build(tiny_vlm, attn_implementation="flex_attention")
    out = None
    with pytest.raises(NotImplementedError, match=r"attn_implementation='flex_attention'.*no backward pass on CPU"):
        out = backbone(prepare(backbone, SAMPLES[:1]))
    assert out is None


def test_batch_invariance(tiny_vlm):
    """A sample's outputs are the same alone and between a longer and a shorter neighbour."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    with torch.no_grad():
        batch = backbone(prepare(backbone, SAMPLES))
        for b in range(len(SAMPLES)):
            alone = backbone(prepare(backbone, [SAMPLES[b]]))
            torch.testing.assert_close(valid_rows(batch, b), valid_rows(alone, 0), **TOL)


def test_the_left_matters(tiny_vlm):
    """Changing only the Left's input changes the Right's output."""
    backbone = build(tiny_vlm)
    base = prepare(backbone, SAMPLES[:1])
    other = prepare(backbone, [dict(SAMPLES[0], images=[random_image(9)], lang="stack the cups")])
    base_left_swapped = type(base)(other.left, base.right, base.state, base.state_valid)
    with torch.no_grad():
        a, b = backbone(base), backbone(base_left_swapped)
    assert (a.hidden_states - b.hidden_states).abs().max() > 1e-3


def test_state_tokens(tiny_vlm):
    backbone = build(tiny_vlm, state_dim=STATE_DIM, num_state_tokens=2)
    inputs = prepare(backbone, SAMPLES)
    # Sample 1 has no state: its state slots are masked out, everything else is a real token.
    extra = inputs.right.attention_mask[:, -2:]
    assert extra.tolist() == [[1, 1], [0, 0], [1, 1]]
    with torch.no_grad():
        out = backbone(inputs)
        inputs.state[0] += 1.0
        inputs.state[1] += 100.0  # garbage where there is no state must not matter
        moved = backbone(inputs)
    assert (valid_rows(out, 0) - valid_rows(moved, 0)).abs().max() > 1e-3
    torch.testing.assert_close(valid_rows(out, 1), valid_rows(moved, 1), rtol=0, atol=0)


def test_action_queries_condition(tiny_vlm):
    backbone = build(tiny_vlm, condition="action_queries", num_action_queries=3, state_dim=STATE_DIM)
    out = backbone(prepare(backbone, SAMPLES))
    assert out.hidden_states.shape == (3, 3, backbone.hidden_size)
    assert out.attention_mask.all()
    out.hidden_states.square().mean().backward()
    assert backbone.action_queries.grad is not None and backbone.action_queries.grad.abs().sum() > 0


def test_left_frozen_right_trained(tiny_vlm):
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    backbone.train()
    assert not backbone.left_brain.training and backbone.right_brain.training
    left_before = {k: v.clone() for k, v in backbone.left_brain.state_dict().items()}
    right_before = {k: v.clone() for k, v in backbone.right_brain.state_dict().items()}
    state_before = {k: v.clone() for k, v in backbone.state_encoder.state_dict().items()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert not any(p is q for p in trainable for q in backbone.left_brain.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    inputs = prepare(backbone, SAMPLES)
    for _ in range(3):
        out = backbone(inputs)
        loss = out.hidden_states[out.attention_mask].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in backbone.left_brain.named_parameters():
        assert p.grad is None and not p.requires_grad, name
        assert torch.equal(p, left_before[name]), name
    for name, buf in backbone.left_brain.state_dict().items():
        assert torch.equal(buf, left_before[name]), name
    changed = [k for k, v in backbone.right_brain.state_dict().items() if not torch.equal(v, right_before[k])]
    assert any("language_model" in k for k in changed) and any("visual" in k for k in changed)
    assert all(not torch.equal(v, state_before[k]) for k, v in backbone.state_encoder.state_dict().items())


def test_gradient_checkpointing_gives_the_same_gradients(tiny_vlm):
    grads = {}
    for checkpointing in (False, True):
        backbone = build(tiny_vlm, state_dim=STATE_DIM, gradient_checkpointing=checkpointing)
        backbone.train()
        out = backbone(prepare(backbone, SAMPLES))
        out.hidden_states[out.attention_mask].square().mean().backward()
        grads[checkpointing] = {n: p.grad for n, p in backbone.named_parameters() if p.requires_grad}
    assert backbone.right_brain.language_model.gradient_checkpointing
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, **TOL, msg=name)


def test_freeze_right_vision(tiny_vlm):
    backbone = build(tiny_vlm, freeze_right_vision=True)
    assert not any(p.requires_grad for p in backbone.right_brain.visual.parameters())
    assert all(p.requires_grad for p in backbone.right_brain.language_model.parameters())


def test_frozen_right_vision_reuses_the_left_image_features(tiny_vlm):
    """A frozen Right vision tower with the Left's weights is not run: the Left's features serve both brains, with
    the same outputs and gradients, bit for bit. Any change to the weights turns the sharing off."""
    backbone = build(tiny_vlm, state_dim=STATE_DIM, freeze_right_vision=True)
    inputs = prepare(backbone, SAMPLES)
    calls = []
    hooks = [backbone.right_brain.visual.register_forward_pre_hook(lambda *_: calls.append("right")),
             vlm_core(backbone.left_brain).visual.register_forward_pre_hook(lambda *_: calls.append("left"))]

    def run():
        backbone.zero_grad(set_to_none=True)
        out = backbone(inputs)
        out.hidden_states[out.attention_mask].square().mean().backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
        return out.hidden_states.detach(), grads

    assert backbone.vision_is_shared()
    shared, shared_grads = run()
    assert calls == ["left"]
    calls.clear()
    backbone.vision_is_shared = lambda: False  # both towers run, as without sharing
    separate, separate_grads = run()
    del backbone.vision_is_shared
    assert calls == ["left", "right"]
    assert torch.equal(shared, separate)
    assert shared_grads.keys() == separate_grads.keys()
    assert all(torch.equal(shared_grads[n], separate_grads[n]) for n in shared_grads)

    with torch.no_grad():  # e.g. a checkpoint with another Right vision tower was loaded
        next(backbone.right_brain.visual.parameters()).add_(0.01)
    assert not backbone.vision_is_shared()
    calls.clear()
    backbone(inputs)
    assert calls == ["left", "right"]
    for hook in hooks:
        hook.remove()
    assert not build(tiny_vlm).vision_is_shared()  # a trainable Right vision tower always runs


# ---------------------------------------------------------------- bad input


def test_missing_base_vlm(tmp_path):
    with pytest.raises(ValueError, match=r"^base_vlm=.*no Qwen-VL checkpoint there"):
        DualBrainBackbone(BackboneConfig(base_vlm=str(tmp_path / "does-not-exist")))


def test_non_qwen_vl_base_vlm(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"^base_vlm=.*llama"):
        DualBrainBackbone(BackboneConfig(base_vlm=str(tmp_path)))


def test_unknown_attention_backend(tiny_vlm):
    with pytest.raises(ValueError, match=r"^attn_implementation='flash'.*eager \| sdpa \| flash_attention_2"):
        BackboneConfig(base_vlm=tiny_vlm, attn_implementation="flash")


def test_wrong_state_size(tiny_vlm):
    # A user's state is checked where examples enter the framework (tests/framework: test_bad_state_names_the_example)
    backbone = build(tiny_vlm, state_dim=STATE_DIM)
    with pytest.raises(ValueError, match=rf"state: expected shape \[B, {STATE_DIM}\]"):
        backbone.state_encoder(torch.zeros(2, STATE_DIM + 1))


def test_state_without_state_dim(tiny_vlm):
    backbone = build(tiny_vlm)
    with pytest.raises(ValueError, match=r"no state encoder \(state_dim is None\)"):
        backbone.prepare([[random_image(0)]], ["go"], None, [[0.0] * 3])


