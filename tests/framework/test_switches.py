"""The experiment switches through the framework: read from ``framework.twinbrain``, recorded in checkpoints,
and a checkpoint loaded under other switches refused by name."""

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from starvla_twinbrain.framework import TwinBrain
from starvla_twinbrain.framework.host_api import STARVLA_AVAILABLE
from starvla_twinbrain.framework.twinbrain import VARIANT_KEY
from tests.framework.test_twinbrain_framework import examples, make_config

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
