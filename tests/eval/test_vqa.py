"""`starvla eval vqa`: a checkpoint's Left Brain answers exactly as its base model; a drifted Left is caught."""

import json

import numpy as np
import pytest
import torch

from eval.vqa.evaluate import BaseModel, evaluate, exact_match, load_questions, main, normalize_answer
from eval.vqa.make_set import make_vqa_set
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.serving.policy import ServedPolicy

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime run")


def test_exact_match_normalisation():
    assert normalize_answer("The Red.") == "red" and normalize_answer("  a  LEFT side!") == "left side"
    assert exact_match("Red.", ["red"]) and exact_match("the right", ["left", "right"])
    assert not exact_match("reddish", ["red"]) and not exact_match("", ["red"])


def test_set_answers_follow_the_scene(tmp_path):
    items = load_questions(make_vqa_set(tmp_path / "set", scenes=3, size=64))
    assert len(items) == 9
    from PIL import Image

    for colour_q, side_q, height_q in zip(items[0::3], items[1::3], items[2::3]):
        image = np.asarray(Image.open(colour_q["image_path"]))
        ys, xs = np.nonzero((np.abs(image.astype(int) - 235).sum(-1)) > 30)  # the square's pixels
        rgb = image[ys[0], xs[0]]
        assert colour_q["answers"] == [["red", "green", "blue"][int(np.argmax(rgb))]]
        assert side_q["answers"] == ["left" if xs.mean() < 32 else "right"]
        assert height_q["answers"] == ["top" if ys.mean() < 32 else "bottom"]


def test_starvla_eval_vqa_needs_ckpt_and_data(capsys):
    from starvla_twinbrain.cli import main as cli

    with pytest.raises(SystemExit, match="--ckpt .* and --data .* are required"):
        cli(["eval", "vqa", "--data", "q.jsonl"])


def test_bad_question_file_names_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"image": "x.png", "question": "q", "answers": ["a"]}\n{"image": "x.png", "question": 3}\n')
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"q.jsonl:2: 'question' must be a str"):
        load_questions(path)


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return trained_run


@pytest.mark.slow
def test_left_brain_answers_as_the_base_model_and_drift_is_caught(checkpoint, tmp_path, capsys):
    data = make_vqa_set(tmp_path / "set", scenes=2, size=64)
    out = tmp_path / "results.json"
    assert main(["--ckpt", str(checkpoint), "--data", str(data), "--out", str(out), "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    results = json.loads(out.read_text())
    assert results["questions"] == 6 and results["identical_answers"] == 6  # the Left is the base model
    records = results["records"]
    assert results["left_brain_accuracy"] == sum(exact_match(r["left_brain"], r["answers"]) for r in records) / 6
    assert "identical answers: 6/6" in capsys.readouterr().out

    # A Left Brain that was trained (here: perturbed) no longer answers as the base model does.
    policy = ServedPolicy.from_checkpoint(checkpoint, device="cpu")
    with torch.no_grad():
        for p in policy.model.left_brain.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    left = next(policy.model.left_brain.parameters())
    base = BaseModel(str(policy.config.framework.qwenvl.base_vlm), left.device, left.dtype)
    drifted = evaluate(policy, base, load_questions(data), max_new_tokens=4, progress=False)
    assert drifted["identical_answers"] < 6
