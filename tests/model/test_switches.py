"""The experiment switches of the backbone (``framework.twinbrain.cross_attention``, ...), numerically."""

import pytest
import torch

from starvla_twinbrain.config import BackboneConfig
from starvla_twinbrain.model.qwen_compat import vlm_core
from tests.factories import BACKBONE_SAMPLES as SAMPLES
from tests.factories import FP32_TOL as TOL
from tests.factories import STATE_DIM
from tests.factories import build_backbone as build
from tests.factories import prepare_backbone as prepare


# ---------------------------------------------------------------- cross_attention: none


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_none_is_the_stock_model_on_the_right_prompt(tiny_vlm, stock, backend):
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
    with pytest.raises(ValueError, match=r"^cross_attention='left': expected one of asymmetric \| "):
        BackboneConfig(base_vlm=tiny_vlm, cross_attention="left")


# ---------------------------------------------------------------- an explicit float64 reference of the twin model
#
# Both brains' stock models run whole, each with a test attention function that computes, in float64 and with
# explicit scores, its rows of the concatenated sequence [Left; Right] under the block mask of the variant:
#
#                 Left keys                         Right keys
#   Left rows   | causal, valid (and itself)      | valid, if bidirectional and the layer is joint |
#   Right rows  | valid, if the layer is joint    | causal, valid (and itself)                     |
#
# The brains take turns (Left, Right, Left, ...), each using the other's latest K/V of the same layer. This is a
# fixed-point iteration: every round makes at least one more layer exact, so after num_layers + 1 rounds nothing
# changes any more (checked). It shares no code with the backbone's lockstep driver, masks or kernels.

_ACTIVE_REFERENCE = []


class MoTReference:
    def __init__(self, backbone, inputs, bidirectional: bool, joint_layers):
        import copy

        from starvla_twinbrain.model.qwen_compat import set_text_attention, set_vision_attention

        self.left = copy.deepcopy(vlm_core(backbone.left_brain)).double().eval()
        self.right = copy.deepcopy(backbone.right_brain).double().eval()
        for vlm, name in ((self.left, "reference_left"), (self.right, "reference_right")):
            set_text_attention(vlm, name)
            set_vision_attention(vlm, "sdpa")  # stock eager takes its softmax in float32
        self.inputs = inputs
        self.bidirectional = bidirectional
        self.joint_layers = joint_layers
        self.kv = {"left": {}, "right": {}}

    def attend(self, brain, layer, query, key, value, scaling):
        self.kv[brain][layer] = (key, value)
        other = "right" if brain == "left" else "left"
        valid = {"left": self.inputs.left.attention_mask.bool(), "right": self.inputs.right.attention_mask.bool()}
        n_left, n_right = valid["left"].shape[1], valid["right"].shape[1]
        joint = self.joint_layers is None or layer in self.joint_layers
        sees_other = joint and (brain == "right" or self.bidirectional)
        if self.kv[other].get(layer) is None:  # the first round: the other brain has not run yet
            shape = (key.shape[0], key.shape[1], n_left if other == "left" else n_right, key.shape[3])
            self.kv[other][layer] = (key.new_zeros(shape), value.new_zeros(shape))
        k_other, v_other = self.kv[other][layer]
        keys = [k_other, key] if brain == "right" else [key, k_other]
        values = [v_other, value] if brain == "right" else [value, v_other]
        k, v = torch.cat(keys, dim=2), torch.cat(values, dim=2)  # [B, n_kv, L_l + L_r, d]: Left first

        # The block mask of the concatenated sequence, then this brain's rows.
        total = n_left + n_right
        idx = torch.arange(total)
        is_left = idx < n_left
        same = is_left[:, None] == is_left[None, :]
        causal = idx[None, :] <= idx[:, None]
        key_valid = torch.cat([valid["left"], valid["right"]], dim=1)[:, None, :]  # [B, 1, total]
        cross_ok = torch.zeros(total, total, dtype=torch.bool)
        if joint:
            cross_ok[n_left:, :n_left] = True  # Right rows over Left keys
            if self.bidirectional:
                cross_ok[:n_left, n_left:] = True
        mask = ((same & causal) | cross_ok)[None] & key_valid
        mask = mask | torch.eye(total, dtype=torch.bool)[None]
        rows = slice(0, n_left) if brain == "left" else slice(n_left, total)
        mask = mask[:, rows][:, None]  # [B, 1, L_brain, total]

        n_rep = query.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        scores = (query.double() @ k.double().transpose(2, 3)) * scaling
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return (probs @ v.double()).transpose(1, 2).contiguous(), None

    def __call__(self, max_rounds: int) -> torch.Tensor:
        """Rounds until no K/V of either brain changes (then the next round would repeat this one exactly)."""
        _ACTIVE_REFERENCE[:] = [self]
        before = None
        try:
            with torch.no_grad():
                for _ in range(max_rounds):
                    self.left(**self.inputs.left.tensors)
                    out = self.right(**self.inputs.right.tensors).last_hidden_state
                    now = {(brain, layer): kv for brain in self.kv for layer, kv in self.kv[brain].items()}
                    if before is not None and all(torch.equal(now[k][i], before[k][i]) for k in now for i in (0, 1)):
                        return out
                    before = now
        finally:
            _ACTIVE_REFERENCE.clear()
        raise AssertionError(f"the reference did not reach its fixed point in {max_rounds} rounds")


def _reference_attention(brain):
    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        return _ACTIVE_REFERENCE[0].attend(brain, module.layer_idx, query, key, value, scaling)

    return attention


def _register_reference():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for brain in ("left", "right"):
        AttentionInterface.register(f"reference_{brain}", _reference_attention(brain))
        AttentionMaskInterface.register(f"reference_{brain}", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


_register_reference()


@pytest.fixture(scope="module")
def deep_vlm(tiny_vlm, tmp_path_factory):
    """The tiny model of ``tiny_vlm``'s family with 5 text layers: odd layers 1 and 3 are joint, and the Left can stop
    after layer 3 with layer 4 still to run on the Right."""
    from starvla_twinbrain.model.processing import family_of
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    family = family_of(tiny_vlm)
    return str(make_tiny_vlm(tmp_path_factory.mktemp("deep") / f"tiny5-{family}", family=family, num_layers=5))


def _against_reference(path, backend, **switches):
    """The backbone against the reference: in float64 with sdpa; in float32 with eager, whose stock form turns fully
    masked padding rows into NaN in float64 (finfo.min + a negative score = -inf), which then reach valid rows."""
    dtype = torch.float64 if backend == "sdpa" else torch.float32
    tolerance = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else TOL
    backbone = build(path, attn_implementation=backend, **switches).to(dtype)
    inputs = prepare(backbone, SAMPLES).to("cpu", dtype)
    assert not inputs.left.attention_mask.all() and not inputs.right.attention_mask.all()  # padded on both sides
    with torch.no_grad():
        got = backbone(inputs)
    reference = MoTReference(backbone, inputs, switches.get("cross_attention") == "bidirectional",
                             backbone.joint_layers)
    want = reference(max_rounds=backbone.num_text_layers + 2)
    valid = got.attention_mask
    torch.testing.assert_close(got.hidden_states[valid], want[valid].to(dtype), **tolerance)
    return got


def test_reference_reproduces_asymmetric(tiny_vlm):
    """The reference itself, on the paper's AsyMoT (tested against the stock model elsewhere)."""
    _against_reference(tiny_vlm, "sdpa")


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_bidirectional_equals_the_reference(deep_vlm, backend):
    got = _against_reference(deep_vlm, backend, cross_attention="bidirectional")
    # and it is another computation than the asymmetric one
    asymmetric = build(deep_vlm, attn_implementation=backend).to(got.hidden_states.dtype)
    with torch.no_grad():
        other = asymmetric(prepare(asymmetric, SAMPLES).to("cpu", got.hidden_states.dtype))
    assert (got.hidden_states - other.hidden_states)[got.attention_mask].abs().max() > 1e-4


@pytest.mark.parametrize("cross_attention", ["asymmetric", "bidirectional"])
def test_odd_layers_equal_the_reference(deep_vlm, cross_attention):
    _against_reference(deep_vlm, "sdpa", cross_attention=cross_attention, cross_layers="odd")


# ---------------------------------------------------------------- cross_layers: odd


def test_odd_even_layers_are_what_none_computes(deep_vlm, monkeypatch):
    """On even layers the Right runs its stock attention (exactly ``none``'s path: layer 0, which both see with the
    same input, gives the same output bit for bit); the joint kernels run on odd layers only; the Left stops after
    the last odd layer's K/V."""
    from starvla_twinbrain.model import asymot_attention

    stock_layers = []
    real = asymot_attention.stock_attention_function

    def recording(backend, module):
        stock_layers.append((module.config is right_config, module.layer_idx))
        return real(backend, module)

    outputs = {}
    for mode, layers in (("none", "all"), ("asymmetric", "odd")):
        # share_prefix off: the layer calls counted here are one Left pass (the shared prefix would add its own).
        backbone = build(deep_vlm, cross_attention=mode, cross_layers=layers, share_prefix=False)
        right_layers = backbone.right_brain.language_model.layers
        right_config = right_layers[0].self_attn.config
        seen = []
        hooks = [layer.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
                 for layer in right_layers]
        left = vlm_core(backbone.left_brain).language_model
        left_calls = []
        hooks += [left.layers[i].mlp.register_forward_hook(lambda *_, i=i: left_calls.append(i)) for i in range(5)]
        stock_layers.clear()
        monkeypatch.setattr(asymot_attention, "stock_attention_function", recording)
        with torch.no_grad():
            backbone(prepare(backbone, SAMPLES))
        monkeypatch.undo()
        for hook in hooks:
            hook.remove()
        outputs[mode] = seen
        if mode == "asymmetric":
            # the Right's even layers take the stock function; the Left's (asymmetric) all but the last it runs
            assert [layer for is_right, layer in stock_layers if is_right] == [0, 2, 4]
            assert [layer for is_right, layer in stock_layers if not is_right] == [0, 1, 2]
            assert left_calls == [0, 1, 2]  # layer 3's K/V recorded, then the Left stops
    assert torch.equal(outputs["none"][0], outputs["asymmetric"][0])
    assert not torch.equal(outputs["none"][1], outputs["asymmetric"][1])


def test_odd_needs_two_layers(tmp_path):
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    path = make_tiny_vlm(tmp_path / "tiny-Qwen2.5-VL", num_layers=1)
    with pytest.raises(ValueError, match=r"^cross_layers='odd'.*1 text layer"):
        build(str(path), cross_layers="odd")


# ---------------------------------------------------------------- bidirectional: backends, training


def test_bidirectional_flex_agrees_with_sdpa(tiny_vlm):
    """flex_attention (and flash-attn on GPUs) run the Right's joint attention; the Left's side is sdpa."""
    outs = {}
    for backend in ("sdpa", "flex_attention"):
        backbone = build(tiny_vlm, cross_attention="bidirectional", attn_implementation=backend, state_dim=STATE_DIM)
        with torch.no_grad():
            outs[backend] = backbone(prepare(backbone, SAMPLES))
    mask = outs["sdpa"].attention_mask
    torch.testing.assert_close(outs["flex_attention"].hidden_states[mask], outs["sdpa"].hidden_states[mask], **TOL)


@pytest.mark.parametrize("cross_attention, left_trainable", [("bidirectional", False), ("asymmetric", True)])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_vlm, cross_attention, left_trainable):
    """Recomputing the Right's layers in backward reuses the Left's recorded K/V (bidirectional: the Left is
    advanced once, in the first pass); a trainable Left's gradients are the same too."""
    grads = {}
    for checkpointing in (False, True):
        backbone = build(tiny_vlm, cross_attention=cross_attention, state_dim=STATE_DIM,
                         gradient_checkpointing=checkpointing, left_trainable=left_trainable)
        backbone.train()
        out = backbone(prepare(backbone, SAMPLES))
        out.hidden_states[out.attention_mask].square().mean().backward()
        grads[checkpointing] = {n: p.grad for n, p in backbone.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    assert any(name.startswith("left_brain.") for name in grads[True]) == left_trainable
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, **TOL, msg=name)


def test_bidirectional_trainable_left_refuses_gradient_checkpointing(tiny_vlm):
    """The trainable Left is advanced from inside the Right's layers: a recomputation of those would miss its graph."""
    with pytest.raises(ValueError, match=r"gradient_checkpointing=true is not supported with "
                                         r"cross_attention='bidirectional' and left_trainable=true"):
        BackboneConfig(base_vlm=tiny_vlm, cross_attention="bidirectional", left_trainable=True,
                       gradient_checkpointing=True)


# ---------------------------------------------------------------- left_trainable


@pytest.mark.parametrize("cross_attention", ["asymmetric", "bidirectional"])
def test_left_trainable_moves_the_left(tiny_vlm, cross_attention):
    """The ablation the paper argues against: the Right's loss reaches the Left through the K/V it passes (not
    detached), so an optimizer moves the Left's text layers; frozen, the same run leaves them untouched."""
    moved = {}
    for trainable in (False, True):
        backbone = build(tiny_vlm, cross_attention=cross_attention, left_trainable=trainable, state_dim=STATE_DIM)
        backbone.train()
        assert backbone.left_brain.training == trainable
        before = {k: v.clone() for k, v in backbone.left_brain.state_dict().items()}
        optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-2)
        inputs = prepare(backbone, SAMPLES)
        for _ in range(2):
            out = backbone(inputs)
            optimizer.zero_grad()
            out.hidden_states[out.attention_mask].square().mean().backward()
            optimizer.step()
        moved[trainable] = [k for k, v in backbone.left_brain.state_dict().items() if not torch.equal(v, before[k])]
    assert moved[False] == []
    assert any("layers.0.self_attn.k_proj" in k for k in moved[True])
    assert any("visual" in k for k in moved[True])  # the Left's own image features feed its K/V
    assert not any("lm_head" in k for k in moved[True])  # nothing the Right uses comes from the LM head
