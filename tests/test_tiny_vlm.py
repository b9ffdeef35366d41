"""The offline tiny checkpoints: loadable, processor-consistent, deterministic."""

import json

import pytest
import torch

from starvla_twinbrain.cli import main as cli_main
from starvla_twinbrain.model.processing import family_of, load_processor
from starvla_twinbrain.model.qwen_compat import load_vlm
from starvla_twinbrain.tiny_vlm import make_tiny_vlm
from tests.factories import random_image


def test_tokenizer_and_config_agree(tiny_vlm):
    processor = load_processor(tiny_vlm)
    tok = processor.tokenizer
    config = json.loads(open(f"{tiny_vlm}/config.json").read())
    assert tok.convert_tokens_to_ids("<|image_pad|>") == config["image_token_id"]
    assert tok.convert_tokens_to_ids("<|vision_start|>") == config["vision_start_token_id"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "Instruction: put the spoon on the towel.\nRobot Type: widowx"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_processor_expands_image_tokens_and_model_runs(tiny_vlm):
    processor = load_processor(tiny_vlm)
    messages = [{"role": "system", "content": [{"type": "text", "text": "You are a robot."}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "pick up the block"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a robot.<|im_end|>")
    assert "<|vision_start|><|image_pad|><|vision_end|>pick up the block" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = processor(text=[text], images=[random_image(0)], return_tensors="pt")
    grid = enc["image_grid_thw"][0]
    n_image_tokens = int((enc["input_ids"] == processor.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4 == 4  # merge size 2 x 2
    model = load_vlm(tiny_vlm, family_of(tiny_vlm), "sdpa").eval()
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()
    with torch.no_grad():
        first = model.generate(**enc, max_new_tokens=3, do_sample=False)
        second = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert torch.equal(first, second)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_weights_are_a_function_of_the_seed(tmp_path, family):
    paths = [make_tiny_vlm(tmp_path / name, family=family, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (load_vlm(str(p), family, "sdpa").state_dict() for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cli_make_tiny_vlm(tmp_path, capsys):
    out = tmp_path / "tiny-Qwen3-VL"
    assert cli_main(["make-tiny-vlm", str(out), "--family", "qwen3_vl", "--hidden-size", "32"]) == 0
    assert family_of(str(out)) == "qwen3_vl"
    assert json.loads((out / "config.json").read_text())["text_config"]["hidden_size"] == 32
    assert str(out) in capsys.readouterr().out
