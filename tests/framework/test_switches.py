"""The experiment switches through the framework: read from ``framework.twinbrain``, recorded in checkpoints,
and a checkpoint loaded under other switches refused by name."""

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from starvla_twinbrain.framework import TwinBrain
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.framework.twinbrain import VARIANT_KEY
from tests.factories import examples, make_config

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="stand-in host tests; the real starVLA is checked separately")


def build(tiny_vlm, seed=0, **twinbrain) -> TwinBrain:
    torch.manual_seed(seed)
    return TwinBrain(make_config(tiny_vlm, **twinbrain))


def test_none_from_the_yaml_reaches_the_backbone_and_is_saved(tiny_vlm):
    cfg = make_config(tiny_vlm)
    OmegaConf.update(cfg, "framework.twinbrain.cross_attention", "none")
    model = TwinBrain(cfg)
    assert model.backbone.config.cross_attention == "none"
    assert cfg.framework.twinbrain.cross_attention == "none"  # written back: the run's config.yaml carries it
    assert TwinBrain(cfg).twin.options.cross_attention == "none"  # and rebuilds the same model (serving)


def test_none_checkpoint_reloads_with_identical_predictions(tiny_vlm):
    model = build(tiny_vlm, cross_attention="none")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(examples())["action_loss"]
    loss.backward()
    optimizer.step()
    state = model.state_dict()
    assert "left_brain_reference" in state and not any(k.startswith("left_brain.") for k in state)
    other = build(tiny_vlm, seed=5, cross_attention="none")
    other.load_state_dict(copy.deepcopy(state), strict=True)
    model.eval(), other.eval()
    a = model.predict_action(examples(with_action=False), seed=3)["normalized_actions"]
    b = other.predict_action(examples(with_action=False), seed=3)["normalized_actions"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("made, loaded", [({"cross_attention": "none"}, {}), ({}, {"cross_attention": "none"})])
def test_checkpoint_of_another_variant_is_refused_by_name(tiny_vlm, made, loaded):
    state = build(tiny_vlm, **made).state_dict()
    other = build(tiny_vlm, **loaded)
    expected = made.get("cross_attention", "asymmetric")
    with pytest.raises(ValueError, match=rf"trained with framework\.twinbrain\.cross_attention='{expected}'"):
        other.load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match=r"framework\.twinbrain\.cross_attention"):
        other.load_state_dict(state, strict=False)  # starVLA's pretrained_checkpoint loads non-strict


def test_checkpoint_from_before_the_switches(tiny_vlm):
    """Checkpoints without the variant entry were all made with the defaults: they load into a default model and
    are refused by a ``none`` model on a strict load."""
    state = build(tiny_vlm).state_dict()
    del state[VARIANT_KEY]
    build(tiny_vlm, seed=1).load_state_dict(copy.deepcopy(state), strict=True)
    with pytest.raises(ValueError, match=r"cross_attention='asymmetric' \(it predates the option\)"):
        build(tiny_vlm, cross_attention="none").load_state_dict(copy.deepcopy(state), strict=True)


def test_bad_cross_attention_names_the_key(tiny_vlm):
    with pytest.raises(ValueError, match=r"framework\.twinbrain\.cross_attention='one': expected one of asymmetric"):
        TwinBrain(make_config(tiny_vlm, cross_attention="one"))


@pytest.mark.parametrize("twinbrain, message", [
    ({"cross_attention": "both"}, r"framework\.twinbrain\.cross_attention='both': expected one of asymmetric \| bidirectional \| none"),
    ({"cross_layers": "even"}, r"framework\.twinbrain\.cross_layers='even': expected one of all \| odd"),
    ({"left_trainable": "yes"}, r"framework\.twinbrain\.left_trainable='yes': expected true or false"),
    ({"cross_attention": "none", "cross_layers": "odd"}, r"cross_layers='odd' with cross_attention='none'"),
    ({"cross_attention": "none", "left_trainable": True}, r"left_trainable=true with cross_attention='none'"),
])
def test_bad_switches_name_the_key(tiny_vlm, twinbrain, message):
    with pytest.raises(ValueError, match=message):
        TwinBrain(make_config(tiny_vlm, **twinbrain))


def test_switches_from_the_yaml_reach_the_backbone(tiny_vlm):
    cfg = make_config(tiny_vlm)
    for key, value in (("cross_attention", "bidirectional"), ("cross_layers", "odd"), ("left_trainable", True)):
        OmegaConf.update(cfg, f"framework.twinbrain.{key}", value)
    model = TwinBrain(cfg)
    config = model.backbone.config
    assert (config.cross_attention, config.cross_layers, config.left_trainable) == ("bidirectional", "odd", True)
    assert model.state_dict()[VARIANT_KEY].numel() > 0


# ---------------------------------------------------------------- left_trainable


def test_left_trainable_is_not_declared_frozen(tiny_vlm):
    cfg = make_config(tiny_vlm, left_trainable=True)
    cfg.trainer.freeze_modules = "right_brain.visual"
    model = TwinBrain(cfg)
    assert cfg.trainer.freeze_modules == "right_brain.visual"
    assert all(p.requires_grad for p in model.left_brain.parameters())
    cfg = make_config(tiny_vlm, left_trainable=True)
    cfg.trainer.freeze_modules = "left_brain"
    with pytest.raises(ValueError, match=r"trainer\.freeze_modules='left_brain' names left_brain but "
                                         r"framework\.twinbrain\.left_trainable is true"):
        TwinBrain(cfg)


def test_precision_policy_keeps_a_trainable_left_in_fp32(tiny_vlm):
    from starvla_twinbrain.framework.twinbrain import apply_precision_policy

    model = apply_precision_policy(build(tiny_vlm, left_trainable=True, freeze_right_vision=True), "cuda")
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.left_brain.parameters())
    assert all(p.dtype == torch.bfloat16 for p in model.right_brain.visual.parameters())  # frozen: bf16
    frozen = apply_precision_policy(build(tiny_vlm), "cuda")
    assert all(p.dtype == torch.bfloat16 for p in frozen.left_brain.parameters())


@pytest.mark.parametrize("cross_attention", ["asymmetric", "bidirectional"])
def test_left_trainable_checkpoint_stores_the_trained_left(tiny_vlm, cross_attention):
    """After training steps the Left has moved; the checkpoint holds its weights (not a reference to the base) and
    reloads with identical predictions; a frozen-Left model refuses it by name."""
    model = build(tiny_vlm, cross_attention=cross_attention, left_trainable=True)
    base = {k: v.clone() for k, v in model.left_brain.state_dict().items()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(2):
        optimizer.zero_grad()
        model(examples(seed=step))["action_loss"].backward()
        optimizer.step()
    state = model.state_dict()
    assert "left_brain_reference" not in state
    moved = [k for k in base if not torch.equal(state["left_brain." + k], base[k])]
    assert any("language_model.layers.0" in k for k in moved)

    other = build(tiny_vlm, seed=9, cross_attention=cross_attention, left_trainable=True)
    other.load_state_dict(copy.deepcopy(state), strict=True)
    model.eval(), other.eval()
    a = model.predict_action(examples(with_action=False), seed=3)["normalized_actions"]
    b = other.predict_action(examples(with_action=False), seed=3)["normalized_actions"]
    np.testing.assert_array_equal(a, b)
    fresh = build(tiny_vlm, seed=9, cross_attention=cross_attention, left_trainable=True)
    fresh.load_state_dict({k: v for k, v in copy.deepcopy(state).items() if not k.startswith("left_brain.")},
                          strict=False)  # all but the trained Left: other actions
    fresh.eval()
    assert not np.array_equal(fresh.predict_action(examples(with_action=False), seed=3)["normalized_actions"], a)

    with pytest.raises(ValueError, match=r"trained with framework\.twinbrain\.left_trainable=True"):
        build(tiny_vlm, cross_attention=cross_attention, left_brain_storage="copy").load_state_dict(state, strict=True)
