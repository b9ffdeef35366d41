"""A small visual question-answering set whose answers are fixed by the scene, to run `starvla eval vqa` end to end.

    python -m eval.vqa.make_set runs/vqa_set --scenes 8

Each scene is a table top with one coloured square (the synthetic dataset's renderer); three questions per scene
ask its colour, its side and its height in the image. Written as ``questions.jsonl`` (one ``{"image", "question",
"answers"}`` per line, image paths relative to the file) and ``images/*.png``. A real measurement of preserved
general skills needs a real VLM and a real VQA set (e.g. VQAv2, TextVQA) in the same JSONL layout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from starvla_twinbrain.runtime.synthetic import COLOURS, _render

COLOUR_NAMES = ["red", "green", "blue"]


def questions_for(target: np.ndarray, colour: str) -> list[tuple[str, list[str]]]:
    """Questions whose answers follow from the square's colour and its position (x right, y down, in [-1, 1])."""
    return [
        ("What colour is the square? Answer with one word.", [colour]),
        ("Is the square on the left or the right of the image? Answer left or right.",
         ["left" if target[0] < 0 else "right"]),
        ("Is the square in the top or the bottom half of the image? Answer top or bottom.",
         ["top" if target[1] < 0 else "bottom"]),
    ]


def make_vqa_set(out: str | Path, scenes: int = 8, size: int = 224, seed: int = 0) -> Path:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(scenes):
        kind = i % len(COLOURS)
        target = rng.uniform(-0.8, 0.8, 2)
        target[np.abs(target) < 0.15] = 0.3  # keep the square clearly on one side
        name = f"images/{i:03d}.png"
        Image.fromarray(_render(target, COLOURS[kind], size)).save(out / name)
        for question, answers in questions_for(target, COLOUR_NAMES[kind]):
            lines.append(json.dumps({"image": name, "question": question, "answers": answers}))
    path = out / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write questions.jsonl and images/ into")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = make_vqa_set(args.out, args.scenes, args.size, args.seed)
    print(f"{sum(1 for _ in path.open())} questions written to {path}")


if __name__ == "__main__":
    main()
