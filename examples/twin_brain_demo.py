"""TwinBrain backbone on CPU in under a minute: a tiny Qwen2.5-VL made locally, no network.

    python examples/twin_brain_demo.py [--family qwen3_vl] [--steps 20]

It builds the dual-brain backbone, trains the Right Brain and state encoder for a few steps to map each
observation to a target vector (a stand-in for the action head, which comes with the framework), then shows that
the Left Brain is bit-identical to the base VLM and still answers questions about an image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from starvla_twinbrain.config import BackboneConfig
from starvla_twinbrain.model.dual_brain import DualBrainBackbone
from starvla_twinbrain.model.qwen_compat import load_vlm
from starvla_twinbrain.tiny_vlm import make_tiny_vlm


def synthetic_batch(batch: int, state_dim: int, seed: int = 0):
    """Coloured images; the target depends on the image colour and the state, so it is learnable."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (batch, 3), generator=g)
    images = [[Image.new("RGB", (56, 56), tuple(int(c) for c in colours[b]))] for b in range(batch)]
    states = torch.randn(batch, state_dim, generator=g)
    targets = torch.cat([colours.float() / 255.0, states[:, :2]], dim=1)
    langs = ["pick up the block" if b % 2 else "put the cup in the sink" for b in range(batch)]
    return images, langs, states, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["qwen2_5_vl", "qwen3_vl"], default="qwen2_5_vl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = {"qwen2_5_vl": "tiny-Qwen2.5-VL", "qwen3_vl": "tiny-Qwen3-VL"}[args.family]
        base = str(make_tiny_vlm(Path(tmp) / folder, family=args.family, seed=0))
        print(f"[1/4] tiny {args.family} written to {base}")

        backbone = DualBrainBackbone(BackboneConfig(base_vlm=base, state_dim=7))
        readout = torch.nn.Linear(backbone.hidden_size, 5)
        left_before = {k: v.clone() for k, v in backbone.left_brain.state_dict().items()}
        n_train = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
        n_left = sum(p.numel() for p in backbone.left_brain.parameters())
        print(f"[2/4] backbone: backend {backbone.backend}, trainable {n_train:,} params, frozen Left {n_left:,}")

        images, langs, states, targets = synthetic_batch(args.batch, 7)
        inputs = backbone.prepare(images, langs, ["widowx"] * args.batch, states)
        params = [p for p in backbone.parameters() if p.requires_grad] + list(readout.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        backbone.train()
        start = time.perf_counter()
        for step in range(args.steps):
            out = backbone(inputs)
            mask = out.attention_mask.unsqueeze(-1).float()
            pooled = (out.hidden_states * mask).sum(1) / mask.sum(1)
            loss = torch.nn.functional.mse_loss(readout(pooled), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step == 0 or (step + 1) % 5 == 0:
                print(f"      step {step + 1:3d}  loss {loss.item():.4f}")
        print(f"[3/4] {args.steps} steps in {time.perf_counter() - start:.1f}s")

        same = all(torch.equal(v, left_before[k]) for k, v in backbone.left_brain.state_dict().items())
        stock = load_vlm(base, backbone.family, "sdpa").eval()
        same_as_base = all(torch.equal(a, b) for a, b in zip(backbone.left_brain.parameters(), stock.parameters()))
        answer = backbone.chat([images[0][0]], "What colour is the image?", max_new_tokens=8)
        print(f"[4/4] Left Brain unchanged by training: {same}; equal to the base VLM: {same_as_base}")
        print(f"      Left Brain chat (random tiny weights, so the words are noise): {answer!r}")


if __name__ == "__main__":
    main()
