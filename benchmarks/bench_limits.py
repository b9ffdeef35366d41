"""What a request at each input limit's edge costs the policy server, and what a refused one costs: wall time and
the server's peak memory, measured on a `starvla serve` process.

    python benchmarks/bench_limits.py [--ckpt RUN/final_model/pytorch_model.pt] [--device cpu] [--json OUT.json]

Without ``--ckpt`` it trains a tiny run (the test suite's: tiny Qwen2.5-VL, 64×64 images) for 2 steps. The server
answers one request first; then each request goes to a fresh connection after a ping. Time: the round trip of the
already packed message. Memory: the server's peak RSS during the request (VmHWM, reset through
/proc/PID/clear_refs before it) over its RSS before it. Edges: the longest prompt that fits (max_prompt_tokens in
the Right Brain's prompt), max_batch examples, max_images images, all three at once, and a chat at max_new_tokens;
refusals: a 100,000-character instruction, one image too many, a message limit's worth of examples. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
WORDS = "pick up the red block and put it in the blue bowl next to the green spoon "


def _peak_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


def _memory_mb(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def _tiny_run(root: Path) -> Path:
    from starvla_twinbrain.runtime.trainer import train
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm
    from tests.factories import learnable_examples, make_cfg, serving_statistics

    vlm = str(make_tiny_vlm(root / "tiny-Qwen2.5-VL", family="qwen2_5_vl"))
    data = learnable_examples(8)
    result = train(make_cfg(vlm, root, "bench_limits", max_train_steps=2, save_interval=100), data, serving_statistics(data))
    return result.run_dir / "final_model" / "pytorch_model.pt"


def _longest_fitting_instruction(ckpt: Path, limit: int, images: list[np.ndarray]) -> tuple[str, int]:
    """The most words of WORDS, repeated, whose Right Brain prompt with ``images`` is at most ``limit`` tokens."""
    from omegaconf import OmegaConf

    from starvla_twinbrain.config import PromptConfig
    from starvla_twinbrain.model.processing import load_processor
    from starvla_twinbrain.model.prompts import PromptBuilder

    cfg = OmegaConf.load(ckpt.parents[1] / "config.yaml")
    builder = PromptBuilder(load_processor(cfg.framework.qwenvl.base_vlm), PromptConfig(), max_prompt_tokens=10**9)
    length = lambda text: int(builder([images], [text])[1].attention_mask.sum())  # noqa: E731
    words = WORDS.split()
    low, high = 1, limit
    while low < high:  # binary search on the word count
        mid = (low + high + 1) // 2
        if length(" ".join((words * (limit // len(words) + 1))[:mid])) <= limit:
            low = mid
        else:
            high = mid - 1
    text = " ".join((words * (limit // len(words) + 1))[:low])
    return text, length(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import websockets.sync.client

    from starvla_twinbrain.serving import msgpack_numpy
    from starvla_twinbrain.serving.client import PolicyClient
    from starvla_twinbrain.serving.server import MAX_MESSAGE_BYTES

    scratch = tempfile.TemporaryDirectory()
    ckpt = Path(args.ckpt) if args.ckpt else _tiny_run(Path(scratch.name))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("STARVLA_POLICY_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "starvla_twinbrain.cli", "serve", "--ckpt", str(ckpt), "--port",
                               str(port), "--device", args.device], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    rows = []
    try:
        with PolicyClient("127.0.0.1", port, connect_timeout=300) as client:
            meta = client.metadata
        limits, size = meta["limits"], meta["training_obs_image_size"] or [224, 224]
        image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
        state = np.zeros((1, meta["state_dim"]), np.float32) if meta["include_state"] else None
        B, N = limits["max_batch"], limits["max_images_per_example"]
        longest, tokens = _longest_fitting_instruction(ckpt, limits["max_prompt_tokens"], [image])
        longest_n, tokens_n = _longest_fitting_instruction(ckpt, limits["max_prompt_tokens"], [image] * N)

        def example(lang="pick up the red block", images=1):
            ex = {"image": [image] * images, "lang": lang}
            return ex if state is None else {**ex, "state": state}

        with PolicyClient("127.0.0.1", port) as client:  # warm-up: first-call allocations stay out of the table
            client.predict_action([example()] * 2)
        one = len(msgpack_numpy.packb(example()))
        requests = {
            "one example (baseline)": {"examples": [example()]},
            f"prompt at the limit ({tokens} tokens, 1 image)": {"examples": [example(longest)]},
            f"{B} examples": {"examples": [example()] * B},
            f"{N} images per example": {"examples": [example(images=N)]},
            f"{B} examples x {N} images, {tokens_n}-token prompts": {"examples": [example(longest_n, images=N)] * B},
            f"chat, {limits['max_new_tokens']} new tokens": {"type": "chat", "payload": {
                "image": [image], "question": "What is on the table?", "max_new_tokens": limits["max_new_tokens"]}},
            "refused: 100,000-character instruction": {"examples": [example((WORDS * 1400)[:100_000])]},
            f"refused: {N + 1} images": {"examples": [example(images=N + 1)]},
            "refused: a message limit's worth of examples": {"examples": [example()] * ((MAX_MESSAGE_BYTES - 4096) // one)},
        }
        for name, message in requests.items():
            frame = msgpack_numpy.packb(message)  # packed before the clock starts
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as ws:
                ws.recv()  # metadata
                ws.send(msgpack_numpy.packb({"type": "ping"}))
                ws.recv()
                _peak_reset(server.pid)
                before = _memory_mb(server.pid)["VmRSS"]
                start = time.perf_counter()
                ws.send(frame)
                reply = msgpack_numpy.unpackb(ws.recv(timeout=3600))
                seconds = time.perf_counter() - start
                extra = max(_memory_mb(server.pid)["VmHWM"] - before, 0.0)  # VmRSS can drop below its reset value
            del frame
            if reply["status"] != "ok":
                status = "error: " + reply["error"]["message"][:60]
            elif "answer" in reply["data"]:
                status = f"ok, answer of {len(reply['data']['answer'])} characters"
            else:
                status = f"ok, actions {list(np.shape(reply['data']['actions']))}"
            rows.append({"request": name, "seconds": round(seconds, 3), "peak_extra_mb": round(extra, 1), "status": status})
            print(f"{name:55s} {seconds:8.2f} s {extra:8.1f} MB  {status}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    if args.json:
        Path(args.json).write_text(json.dumps({"limits": limits, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
