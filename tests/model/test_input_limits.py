"""Input limits checked before the model runs: each brain's prompt length (framework.twinbrain.max_prompt_tokens,
counted by the VLM's own processor), images per example, and the model's context. Errors name the field, its size
and the limit; in training an over-long row is named by its episode and frame, or truncated when configured."""

import numpy as np
import pytest
import torch

from starvla_twinbrain.config import BackboneConfig, PromptConfig
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.model.dual_brain import DualBrainBackbone
from starvla_twinbrain.model.processing import load_processor
from starvla_twinbrain.model.prompts import MAX_CHARS_PER_TOKEN, InputTooLarge, PromptBuilder, left_messages, right_messages

IMAGE = np.full((56, 56, 3), 120, np.uint8)
WORDS = "pick up the red block and put it in the blue bowl next to the green spoon "


def builder(tiny_vlm, limit, max_images=2):
    return PromptBuilder(load_processor(tiny_vlm), PromptConfig(), max_prompt_tokens=limit, max_images=max_images)


def prompt_lengths(processor, instruction: str, images: list) -> tuple[int, int]:
    """Each brain's prompt length, counted another way: one chat template and processor call per brain."""
    def count(messages):
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return processor(text=[text], images=images, return_tensors="pt")["input_ids"].shape[1]
    prompts = PromptConfig()
    return count(left_messages(prompts, instruction, len(images))), count(right_messages(prompts, instruction, "robot", len(images)))


def test_prompt_at_the_limit_passes_and_one_token_over_is_refused(tiny_vlm):
    instruction = WORDS * 3
    left, right = prompt_lengths(load_processor(tiny_vlm), instruction, [IMAGE])
    assert right > left  # the Right Brain's template is the longer one, so it sets the edge
    at_limit = builder(tiny_vlm, right)
    got_left, got_right = at_limit([[IMAGE]], [instruction])
    assert got_left.attention_mask.sum().item() == left and got_right.attention_mask.sum().item() == right
    with pytest.raises(InputTooLarge, match=rf"examples\[0\]\.lang: the Right Brain's prompt is {right} tokens "
                                            rf"\(template, instruction and 1 image\); "
                                            rf"max_prompt_tokens is {right - 1}"):
        builder(tiny_vlm, right - 1)([[IMAGE]], [instruction])


def test_the_second_example_is_named(tiny_vlm):
    short = prompt_lengths(load_processor(tiny_vlm), "go", [IMAGE])[1]
    with pytest.raises(InputTooLarge, match=r"examples\[1\]\.lang \(episode 4, frame 9\): the Right Brain's"):
        builder(tiny_vlm, short + 5)([[IMAGE], [IMAGE]], ["go", WORDS], sources=["", " (episode 4, frame 9)"])


def test_text_that_cannot_fit_is_refused_without_tokenising(tiny_vlm, monkeypatch):
    pb = builder(tiny_vlm, 100)
    monkeypatch.setattr(pb, "_encode_pair", lambda *a: pytest.fail("tokenised an instruction that cannot fit"))
    text = "a" * 100_000
    with pytest.raises(InputTooLarge, match=rf"examples\[0\]\.lang: 100000 characters; at most "
                                            rf"{100 * MAX_CHARS_PER_TOKEN} \({MAX_CHARS_PER_TOKEN} per token"):
        pb([[IMAGE]], [text])


def test_too_many_images_are_refused_before_processing(tiny_vlm):
    with pytest.raises(InputTooLarge, match=r"examples\[0\]\.image: 3 images; at most 2 per example "
                                            r"\(max_images_per_example\)"):
        builder(tiny_vlm, 2048, max_images=2)([[IMAGE] * 3], ["go"])


def test_truncation_keeps_the_start_of_the_instruction_and_fits(tiny_vlm):
    processor = load_processor(tiny_vlm)
    limit = prompt_lengths(processor, WORDS, [IMAGE])[1]  # room for one copy of WORDS
    left, right = builder(tiny_vlm, limit)([[IMAGE], [IMAGE]], [WORDS * 20, "go"], truncate=True)
    lengths = right.attention_mask.sum(1).tolist()
    assert lengths[0] <= limit and limit - lengths[0] <= 2 and lengths[1] == prompt_lengths(processor, "go", [IMAGE])[1]
    text = processor.tokenizer.decode(right.input_ids[0][right.attention_mask[0].bool()])
    kept = text.split("Instruction: ")[1].split("\nRobot Type")[0]
    assert len(kept) > 0.8 * len(WORDS) and (WORDS * 20).startswith(kept)
    # the Left Brain sees the same truncated instruction
    assert f"Instruction: {kept}<" in processor.tokenizer.decode(left.input_ids[0][left.attention_mask[0].bool()])


def test_truncation_cannot_make_room_for_too_many_image_tokens(tiny_vlm):
    with pytest.raises(InputTooLarge, match=r"examples\[0\]\.image: 2 images make the prompt longer than"):
        builder(tiny_vlm, 60)([[IMAGE, IMAGE]], ["go " * 20], truncate=True)


def test_limit_beyond_the_model_context_is_a_config_error(tiny_vlm):
    with pytest.raises(ValueError, match=r"^max_prompt_tokens=5000: more than the model's context \(4096"):
        DualBrainBackbone(BackboneConfig(base_vlm=tiny_vlm, state_dim=3, max_prompt_tokens=5000))


def test_chat_question_over_the_limit_is_refused_before_generating(tiny_vlm, monkeypatch):
    backbone = DualBrainBackbone(BackboneConfig(base_vlm=tiny_vlm, max_prompt_tokens=64))
    monkeypatch.setattr(backbone.left_brain, "generate", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(InputTooLarge, match=r"question: the Left Brain's prompt is \d+ tokens .* is 64"):
        backbone.chat([IMAGE], WORDS * 4, max_new_tokens=2)


@pytest.mark.skipif(STARVLA_AVAILABLE, reason="stand-in host")
def test_training_refuses_an_over_long_row_naming_episode_and_frame_or_truncates_when_configured(tiny_vlm):
    from tests.factories import examples, make_config

    from starvla_twinbrain.framework import TwinBrain

    batch = examples(2)
    batch[1].update(lang=WORDS * 20, episode_index=7, frame_index=31)
    torch.manual_seed(0)
    model = TwinBrain(make_config(tiny_vlm, max_prompt_tokens=256))
    with pytest.raises(InputTooLarge, match=r"examples\[1\]\.lang \(episode 7, frame 31\): the Right Brain's prompt "
                                            r"is \d+ tokens .*max_prompt_tokens is 256"):
        model(batch)
    torch.manual_seed(0)
    truncating = TwinBrain(make_config(tiny_vlm, max_prompt_tokens=256, truncate_long_prompts=True))
    assert torch.isfinite(truncating(batch)["action_loss"])
    with pytest.raises(InputTooLarge):  # inference never truncates: a served request is refused
        truncating.predict_action([{k: v for k, v in ex.items() if k != "action"} for ex in batch])
