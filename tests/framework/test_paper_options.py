"""Where the paper speaks: the robot type in the Right prompt, the state path (``state_into``), the flow-matching time.

Each test compares what the model computes or reads, not only what it is configured with."""

import numpy as np
import pytest
import torch

from starvla_twinbrain.framework import TwinBrain
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from tests.factories import examples, make_config

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="stand-in host tests; the real starVLA is checked separately")


def right_prompts(model: TwinBrain, batch: list[dict]) -> list[str]:
    """The text the Right Brain receives for ``batch`` (decoded from its input ids)."""
    seen = []
    prepare = model.backbone.prepare

    def recording(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        seen.append(inputs)
        return inputs

    model.backbone.prepare = recording
    try:
        model.predict_action(batch, seed=0)
    finally:
        del model.backbone.prepare
    tokenizer = model.backbone.processor.tokenizer
    return [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(seen[0].right.input_ids, seen[0].right.attention_mask)]


@pytest.fixture(scope="module")
def model(tiny_vlm):
    torch.manual_seed(0)
    return TwinBrain(make_config(tiny_vlm)).eval()


def test_right_prompt_carries_the_robot_type(model):
    batch = examples(3, with_action=False)
    batch[0]["robot_tag"] = "oxe_bridge"  # starVLA's data loader
    batch[1]["robot_type"] = "panda"  # the embedded runtime and the server
    texts = right_prompts(model, batch)
    assert "Robot Type: oxe_bridge\n" in texts[0]
    assert "Robot Type: panda\n" in texts[1]
    assert "Robot Type: robot\n" in texts[2]  # none given: framework.twinbrain.prompts.default_robot_type


def test_robot_type_must_be_a_string(model):
    batch = examples(1, with_action=False)
    batch[0]["robot_type"] = 3
    with pytest.raises(ValueError, match=r"examples\[0\]\['robot_type'\]: expected a non-empty string"):
        model.predict_action(batch)


def _right_hidden(model: TwinBrain, batch: list[dict]) -> torch.Tensor:
    inputs = model.backbone.prepare([ex["image"] for ex in batch], [ex["lang"] for ex in batch], None,
                                    [ex["state"] for ex in batch] if model.backbone.state_encoder is not None else None)
    with torch.no_grad():
        return model.backbone(inputs).hidden_states


@pytest.mark.parametrize("state_into", ["right", "head", "both"])
def test_state_into_routes_the_state(tiny_vlm, state_into):
    torch.manual_seed(0)
    model = TwinBrain(make_config(tiny_vlm, state_into=state_into)).eval()
    to_right, to_head = state_into in ("right", "both"), state_into in ("head", "both")
    assert (model.state_encoder is not None) == to_right
    assert (model.action_model.state_encoder is not None) == to_head

    batch = examples(2, with_action=False)
    moved = [dict(ex, state=ex["state"] + np.float16(1.0)) for ex in batch]
    # The Right Brain's hidden states move with the state exactly when the state enters the Right Brain.
    same_right = torch.equal(_right_hidden(model, batch), _right_hidden(model, moved))
    assert same_right != to_right
    # The actions always depend on the state (through whichever path it takes).
    a = model.predict_action(batch, seed=3)["normalized_actions"]
    b = model.predict_action(moved, seed=3)["normalized_actions"]
    assert not np.allclose(a, b)


def test_head_state_path_reads_the_state_as_given(tiny_vlm):
    """state_into: head feeds the head exactly the example's state (compared with calling the head directly)."""
    torch.manual_seed(0)
    model = TwinBrain(make_config(tiny_vlm, state_into="head")).eval()
    batch = examples(2, with_action=False)
    got = model.predict_action(batch, seed=5)["normalized_actions"]
    out = model.backbone(model.backbone.prepare([ex["image"] for ex in batch], [ex["lang"] for ex in batch]))
    state = torch.tensor(np.stack([ex["state"] for ex in batch]).astype(np.float32))  # [B, 1, D]
    noise = torch.randn(model.action_horizon, model.action_dim, generator=torch.Generator().manual_seed(5))
    want = model.action_model.predict_action(out.hidden_states, state, encoder_attention_mask=out.attention_mask,
                                             noise=noise.expand(2, -1, -1))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=0)


def test_checkpoint_of_another_state_path_is_named(tiny_vlm):
    torch.manual_seed(0)
    both = TwinBrain(make_config(tiny_vlm, state_into="both"))
    right = TwinBrain(make_config(tiny_vlm))
    with pytest.raises(ValueError, match=r"has the action head's state encoder .*state_into='right'.*'both'"):
        right.load_state_dict(both.state_dict(), strict=True)
    right.load_state_dict({k: v for k, v in both.state_dict().items() if not k.startswith("action_model.state_encoder.")},
                          strict=True)  # the rest loads


def test_bad_state_into_names_the_key(tiny_vlm):
    with pytest.raises(ValueError, match=r"framework.twinbrain.state_into='left': expected one of right \| head \| both"):
        TwinBrain(make_config(tiny_vlm, state_into="left"))


def test_default_time_is_the_papers_uniform(model, tiny_vlm):
    assert model.action_model.config.time_distribution == "uniform"
    cfg = make_config(tiny_vlm)
    cfg.framework.action_model.time_distribution = "beta"
    assert TwinBrain(cfg).action_model.config.time_distribution == "beta"
