"""Preserved general skills, measured: a checkpoint's Left Brain and the base VLM answer the same questions.

    starvla eval vqa --ckpt RUN/final_model/pytorch_model.pt --data runs/vqa_set/questions.jsonl

The paper's claim is that the frozen Left Brain keeps the base model's general skills while a single fine-tuned VLM
loses them. For every question (JSONL: ``{"image": path relative to the file, "question": str, "answers": [str]}``)
the Left Brain answers through the policy server's ``chat`` and the base model (``framework.qwenvl.base_vlm``)
through the same chat code; reported: exact-match accuracy of each (answers normalised: lower case, punctuation and
articles removed) and how many answers are identical. A TwinBrain checkpoint should answer exactly as its base
model; a run whose Left was trained (or a single-brain run) shows how far it drifted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ARTICLES)


def exact_match(prediction: str, answers: list[str]) -> bool:
    return normalize_answer(prediction) in {normalize_answer(a) for a in answers}


def load_questions(path: str | Path) -> list[dict]:
    """The JSONL set, each line checked (the error names the line and the field)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file (expected a JSONL question set)")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with image, question, answers")
        for key, kind in (("image", str), ("question", str), ("answers", list)):
            if not isinstance(item.get(key), kind):
                raise ValueError(f"{where}: '{key}' must be a {kind.__name__}, got {item.get(key)!r}")
        if not item["answers"] or not all(isinstance(a, str) for a in item["answers"]):
            raise ValueError(f"{where}: 'answers' must be a non-empty list of strings")
        image = path.parent / item["image"]
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image {image} not found")
        items.append({**item, "image_path": str(image)})
    if not items:
        raise ValueError(f"--data {path}: no questions")
    return items


class BaseModel:
    """The base VLM the checkpoint's brains were made from, answering through the Left Brain's chat code."""

    def __init__(self, base_vlm: str, device, dtype):
        from starvla_twinbrain.model.processing import family_of, load_processor
        from starvla_twinbrain.model.qwen_compat import load_vlm

        self.vlm = load_vlm(base_vlm, family_of(base_vlm), "sdpa", dtype).to(device).eval()
        self.processor = load_processor(base_vlm)

    def chat(self, image: np.ndarray, question: str, max_new_tokens: int) -> str:
        from starvla_twinbrain.model.dual_brain import vlm_chat

        return vlm_chat(self.vlm, self.processor, [image], question, max_new_tokens)


def evaluate(policy, base: BaseModel, items: list[dict], max_new_tokens: int = 16, progress: bool = True) -> dict:
    """``policy``: a ServedPolicy (its ``chat`` is what the server answers with); returns the results dict."""
    from tqdm import tqdm

    records = []
    for item in tqdm(items, desc="vqa", unit="question", disable=not progress):
        image = np.asarray(Image.open(item["image_path"]).convert("RGB"))
        left = policy.chat(image=[image], question=item["question"], max_new_tokens=max_new_tokens)["answer"]
        reference = base.chat(image, item["question"], max_new_tokens)
        records.append({"image": item["image"], "question": item["question"], "answers": item["answers"],
                        "left_brain": left, "base_model": reference,
                        "left_correct": exact_match(left, item["answers"]),
                        "base_correct": exact_match(reference, item["answers"]), "identical": left == reference})
    n = len(records)
    return {
        "questions": n,
        "left_brain_accuracy": sum(r["left_correct"] for r in records) / n,
        "base_model_accuracy": sum(r["base_correct"] for r in records) / n,
        "identical_answers": sum(r["identical"] for r in records),
        "records": records,
    }


def summary_table(results: dict) -> str:
    n = results["questions"]
    return "\n".join([
        "| answered by | exact match |",
        "|---|---|",
        f"| checkpoint's Left Brain | {results['left_brain_accuracy']:.1%} |",
        f"| base model | {results['base_model_accuracy']:.1%} |",
        f"\nidentical answers: {results['identical_answers']}/{n}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="starvla eval vqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a checkpoint file (RUN/checkpoints/steps_N_pytorch_model.pt)")
    parser.add_argument("--data", required=True, help="questions.jsonl (python -m eval.vqa.make_set makes a small one)")
    parser.add_argument("--out", help="results JSON (default: vqa_results.json beside the data)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = parser.parse_args(argv)

    from starvla_twinbrain.serving.policy import ServedPolicy

    try:
        items = load_questions(args.data)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"starvla eval vqa: error: {err}") from None
    policy = ServedPolicy.from_checkpoint(args.ckpt, device=args.device)
    base_vlm = str(policy.config.framework.qwenvl.base_vlm)
    left = next(policy.model.left_brain.parameters())
    base = BaseModel(base_vlm, left.device, left.dtype)  # as the Left runs, so that only the weights can differ
    results = evaluate(policy, base, items, args.max_new_tokens)
    results.update(ckpt=str(args.ckpt), base_vlm=base_vlm, data=str(args.data))
    out = Path(args.out) if args.out else Path(args.data).with_name("vqa_results.json")
    out.write_text(json.dumps(results, indent=2))
    print(summary_table(results))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
