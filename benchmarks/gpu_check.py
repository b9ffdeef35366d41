"""The whole GPU path in one run: real-size random models, joint-attention backends, training with resume, and the
cost of TwinBrain against a single brain. Writes one JSON, prints one table, exits 1 when a check fails.

    scripts/gpu_check.sh [--out DIR] [--tiny]      # or: python benchmarks/gpu_check.py ...

Nothing is downloaded. Random-initialised checkpoints of real shape (Qwen2.5-VL-3B, Qwen3-VL-4B; configs below) are
made on the GPU in bf16 with a tiny tokenizer (token ids are all that the tokenizer decides) and 224x224 images.

1. backend: the joint-attention backend selected by default and for the shipped YAMLs' flash_attention_2 request.
2. agreement (both families): eager, sdpa and flex_attention in bf16 on a padded batch of 4 (different prompt
   lengths and image counts, one sample without state) against the eager backend in fp32 on the same weights:
   hidden states and the Right Brain's gradients (first and last text layer, vision merger). Tolerance: each
   backend's normwise relative error at most ``AGREEMENT_FACTOR`` x that of eager in bf16, or ``AGREEMENT_FLOOR``.
3. training (one family): the embedded runtime (``runtime.trainer.train``) trains TwinBrain 30 steps with the shipped
   YAML's head and optimizer on learnable synthetic data: loss finite and falling, Left bit-identical to the base
   checkpoint, Right (language model and vision) moved; a run interrupted after its step-15 checkpoint and resumed
   with ``trainer.is_resume`` ends where the uninterrupted run ends. At real width but ``--train-layers`` layers
   (text and vision): a full-depth checkpoint with AdamW state is ~45 GB, twice per run, on a 64 GB disk.
4. benchmark (one family, full depth): TwinBrain against QwenGR00T (the replica in benchmarks/bench_policy.py: same
   VLM, same head) in one process, bf16 weights, AdamW: train step time and samples/s at batch 16, peak GPU memory
   of each model's step (its weights, gradients and optimizer state, plus the step's own peak), inference latency
   per action chunk at batch 1; with sdpa and flex_attention, with the Right's vision tower frozen
   (``freeze_right_vision``) and with the head's DiT compiled for inference (``compile_action_head``); and the
   low-memory settings (issue 12): LoRA on the Right (``right_lora``, r 16) and LoRA + the int8 Left
   (``left_precision: int8``), each row with its trainable bytes and the bytes its weights really hold (skipped, with
   a note, where peft / torchao are not installed: ``pip install 'starvla-twinbrain[lowmem]'``).

``--tiny``: the same code on CPU at tiny size (runs in CI, tests/test_gpu_check.py). FlexAttention has no backward
on CPU, so flex gradients and flex training steps are skipped there, with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

# Import names of what the check runs (package names in parentheses where they differ).
REQUIRED = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "omegaconf": "omegaconf",
            "diffusers": "diffusers", "tokenizers": "tokenizers",
            "safetensors": "safetensors", "PIL": "pillow", "numpy": "numpy", "tqdm": "tqdm",
            "tensorboard": "tensorboard", "matplotlib": "matplotlib", "packaging": "packaging"}

# Real shapes (the published config.json of each model; only the vocabulary of the tokenizer is tiny).
REAL_MODELS = {
    "qwen2_5_vl": dict(
        name="Qwen2.5-VL-3B", yaml="simpler_bridge_qwen2_5_vl_3b.yaml",
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True,
                  rope_scaling={"type": "default", "rope_type": "default", "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
    ),
    "qwen3_vl": dict(
        name="Qwen3-VL-4B", yaml="simpler_bridge_qwen3_vl_4b.yaml",
        text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                  rope_theta=5e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh"),
    ),
}
FAMILIES = tuple(REAL_MODELS)
LORA = {"r": 16, "alpha": 32}  # benchmarks/bench_policy.py's
LOW_MEMORY_ROWS = {"sdpa, LoRA": {"right_lora": LORA}, "sdpa, LoRA + int8 Left": {"right_lora": LORA, "left_precision": "int8"}}
BACKENDS = ("eager", "sdpa", "flex_attention")
AGREEMENT_FACTOR, AGREEMENT_FLOOR = 2.0, 1e-2
LOSS_RTOL = 1e-3  # resumed vs uninterrupted losses (GPU reductions may reorder; a resume bug moves them by %)
RESUME_DRIFT = 1e-2  # |w_resumed - w_straight| / |w_straight - w_step15|, over all trained weights


@dataclass
class Mode:
    tiny: bool
    device: str
    families: tuple[str, ...]
    train_family: str
    bench_family: str
    train_layers: int
    out: Path
    image: int = 224
    agreement_batch: int = 4
    bench_batch: int = 16
    train_batch: int = 8
    steps: int = 30
    resume_at: int = 15
    repeats: int = 5
    warmup: int = 2
    bench_dtype: object = None  # torch.bfloat16 on the GPU
    checks: list = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return ok


def missing_packages() -> list[str]:
    return [f"{module} (pip: {package})" for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]


# ---------------------------------------------------------------------------------------------------- models


def make_checkpoint(mode: Mode, family: str, root: Path, layers: int | None = None) -> str:
    """A random checkpoint: real shape (``layers``: that many text layers and vision blocks), or tiny."""
    import torch

    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    folder = root / f"{REAL_MODELS[family]['name'] if not mode.tiny else 'tiny-' + family}{f'-{layers}L' if layers else ''}"
    if mode.tiny:
        return str(make_tiny_vlm(folder, family=family, seed=0, image_size=mode.image))
    text, vision = dict(REAL_MODELS[family]["text"]), dict(REAL_MODELS[family]["vision"])
    if layers:
        text["num_hidden_layers"], vision["depth"] = layers, layers
        if "fullatt_block_indexes" in vision:
            vision["fullatt_block_indexes"] = [layers - 1]
        if "deepstack_visual_indexes" in vision:
            vision["deepstack_visual_indexes"] = list(range(min(3, layers)))
    return str(make_tiny_vlm(folder, family=family, seed=0, image_size=mode.image, text_overrides=text,
                             vision_overrides=vision, device=mode.device, dtype=torch.bfloat16))


def examples(n: int, image: int, horizon: int, action_dim: int, state_dim: int | None, seed: int = 0) -> list[dict]:
    """Learnable synthetic samples: the action chunk is a function of the image's colour and the state. Prompt
    lengths and image counts differ (padding); every fifth sample has two images."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 200, 60], [40, 60, 220], [220, 210, 40]])
    tasks = ["pick up the red block", "push the green cube to the left edge of the table", "open the blue drawer",
             "lift"]
    out = []
    for i in range(n):
        c = i % len(colours)
        pixels = np.clip(colours[c] + g.normal(0, 8, (image, image, 3)), 0, 255).astype(np.uint8)
        images = [Image.fromarray(pixels)] * (2 if i % 5 == 4 else 1)
        state = g.uniform(-1, 1, (1, state_dim)).astype(np.float32) if state_dim else None
        base = np.resize(colours[c] / 255.0 * 1.6 - 0.8, action_dim)
        drift = np.resize(state[0], action_dim) if state is not None else 0.0
        action = np.stack([0.5 * base + 0.4 * drift * (t + 1) / horizon for t in range(horizon)]).astype(np.float32)
        out.append({"image": images, "lang": tasks[c], "state": state, "action": action, "robot_type": "widowx"})
    return out


def training_config(mode: Mode, vlm: str, run_root: Path, run_id: str, **trainer):
    """The shipped YAML of the family (tiny: configs/tiny_cpu.yaml) on a random checkpoint."""
    from omegaconf import OmegaConf

    name = "tiny_cpu.yaml" if mode.tiny else REAL_MODELS[mode.train_family]["yaml"]
    cfg = OmegaConf.load(ROOT / "configs" / name)
    cfg.framework.qwenvl.base_vlm = vlm
    cfg.run_root_dir, cfg.run_id = str(run_root), run_id
    vla = cfg.datasets.vla_data
    vla.per_device_batch_size, vla.num_workers, vla.obs_image_size = mode.train_batch, 0, [mode.image, mode.image]
    cfg.trainer = OmegaConf.merge(cfg.trainer, {"max_train_steps": mode.steps, "num_warmup_steps": 3,
                                                "logging_frequency": 5, **trainer})
    return cfg


# ---------------------------------------------------------------------------------------------------- 1-2. attention


def normwise_error(got, want) -> float:
    want = want.double()
    return float((got.double() - want).norm() / want.norm().clamp_min(1e-30))


def attention_agreement(mode: Mode, family: str, vlm: str) -> dict:
    import torch

    from starvla_twinbrain.config import BackboneConfig
    from starvla_twinbrain.model.dual_brain import DualBrainBackbone

    torch.manual_seed(0)
    samples = examples(mode.agreement_batch, mode.image, 4, 7, 7)
    samples[1]["state"] = None  # a sample without state: its slot is masked
    samples[2]["image"] = samples[2]["image"] * 2  # two images: a longer prompt in both brains
    backbone = DualBrainBackbone(BackboneConfig(base_vlm=vlm, state_dim=7)).to(mode.device, torch.bfloat16).eval()
    report = {"default_backend": backbone.backend}
    backbone.set_attn_implementation("flash_attention_2")
    report["flash_attention_2_request"] = backbone.backend
    inputs = backbone.prepare([s["image"] for s in samples], [s["lang"] for s in samples],
                              [s["robot_type"] for s in samples], [s["state"] for s in samples])
    layers = backbone.right_brain.language_model.layers
    watched = [n for n, p in backbone.right_brain.named_parameters() if p.requires_grad and (
        n.startswith(("language_model.layers.0.", f"language_model.layers.{len(layers) - 1}.")) or "merger" in n)]
    params = dict(backbone.right_brain.named_parameters())

    def run(dtype, with_grad: bool):
        backbone.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(with_grad):
            out = backbone(inputs.to(mode.device, dtype))
            mask = out.attention_mask
            hidden = out.hidden_states[mask].float()
            if with_grad:
                weights = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1)).to(hidden.device)
                (hidden * weights).sum().div(hidden.shape[0]).backward()
        grads = {n: params[n].grad.detach().float().clone() for n in watched} if with_grad else None
        return hidden.detach(), grads

    results = {}
    for name in BACKENDS:
        backbone.set_attn_implementation(name)
        with_grad = not (name == "flex_attention" and mode.device == "cpu")
        results[name] = run(torch.bfloat16, with_grad)
        report.setdefault("ran", {})[name] = backbone.backend
    backbone.float()
    backbone.set_attn_implementation("eager")
    ref_hidden, ref_grads = run(torch.float32, True)
    del backbone
    cat = lambda grads: torch.cat([grads[n].flatten() for n in watched])  # noqa: E731
    errors = {}
    for name, (hidden, grads) in results.items():
        errors[name] = {"hidden": normwise_error(hidden, ref_hidden),
                        "grad": normwise_error(cat(grads), cat(ref_grads)) if grads else None}
    report["errors_vs_fp32_eager"] = errors
    bound = {k: max(AGREEMENT_FACTOR * errors["eager"][k], AGREEMENT_FLOOR) for k in ("hidden", "grad")}
    report["tolerance"] = bound
    for name in ("sdpa", "flex_attention"):
        for kind in ("hidden", "grad"):
            err = errors[name][kind]
            if err is None:
                report.setdefault("notes", []).append(f"{name} {kind}: skipped, FlexAttention has no backward on CPU")
                continue
            mode.check(f"{family} {name} {kind} in bf16", err <= bound[kind],
                       f"normwise error {err:.2e} vs fp32 eager (eager bf16: {errors['eager'][kind]:.2e}; "
                       f"tolerance {bound[kind]:.2e})")
    mode.check(f"{family} backends ran", report["ran"] == {b: b for b in BACKENDS}, f"{report['ran']}")
    if mode.device == "cuda":
        torch.cuda.empty_cache()
    return report


# ---------------------------------------------------------------------------------------------------- 3. training


class Interrupted(Exception):
    pass


class InterruptAfter:
    """A map-style dataset that raises once the run asks for more than ``items`` samples (a crash between two
    checkpoints, in the process; the trainer's resume is what is checked, not the signal)."""

    def __init__(self, data: list, items: int):
        self.data, self.items, self.served = data, items, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.served += 1
        if self.served > self.items:
            raise Interrupted
        return self.data[i]


@contextlib.contextmanager
def deterministic():
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def training_check(mode: Mode, vlm: str, work: Path) -> dict:
    import numpy as np
    import torch

    from starvla_twinbrain.model.processing import family_of
    from starvla_twinbrain.model.qwen_compat import load_vlm
    from starvla_twinbrain.runtime import checkpoint as ckpt
    from starvla_twinbrain.runtime.trainer import train

    probe = training_config(mode, vlm, work, "probe")
    head = probe.framework.action_model
    data = examples(4 * mode.train_batch, mode.image, int(head.action_horizon), int(head.action_dim),
                    int(head.state_dim))
    common = dict(save_interval=mode.resume_at)
    storage = {"framework": {"twinbrain": {"left_brain_storage": "copy"}}}  # the trained Left is in the checkpoint

    def config(run_id: str, **trainer):
        from omegaconf import OmegaConf

        return OmegaConf.merge(training_config(mode, vlm, work, run_id, **common, **trainer), storage)

    report = {"vlm": vlm, "steps": mode.steps, "batch": mode.train_batch, "resume_at": mode.resume_at}
    with deterministic():
        start = time.perf_counter()
        straight = train(config("straight"), data)
        report["straight_s"] = time.perf_counter() - start
        final_straight = ckpt.load_state_dict(straight.run_dir / "final_model" / "pytorch_model.pt")
        try:
            # One batch more than the checkpointed steps: the loader may fetch a batch ahead; either way the run
            # dies after its step-15 checkpoint and before step 17.
            train(config("resumed"), InterruptAfter(data, (mode.resume_at + 1) * mode.train_batch))
            interrupted = False
        except Interrupted:
            interrupted = True
        latest = ckpt.latest_checkpoint(work / "resumed")
        if not (interrupted and latest is not None and latest[0] == mode.resume_at):
            raise RuntimeError(f"the interrupted run left no step-{mode.resume_at} checkpoint (latest: {latest})")
        at_resume = ckpt.load_state_dict(latest[1])
        resumed = train(config("resumed", is_resume=True), data)
        final_resumed = ckpt.load_state_dict(resumed.run_dir / "final_model" / "pytorch_model.pt")

    losses = np.array(straight.losses)
    report["losses"] = straight.losses
    report["resumed_losses"] = resumed.losses
    window = max(mode.steps // 3, 1)
    first, last = float(losses[:window].mean()), float(losses[-window:].mean())
    mode.check("training loss finite and falling", bool(np.isfinite(losses).all()) and last < first,
               f"mean of first {window} steps {first:.4f} -> last {window} {last:.4f}")

    base = load_vlm(vlm, family_of(vlm), "sdpa").state_dict()
    left_same = all(torch.equal(final_straight[f"left_brain.{k}"].cpu(), v.to(final_straight[f'left_brain.{k}'].dtype))
                    for k, v in base.items())
    mode.check("Left Brain bit-identical to the base checkpoint after training", left_same,
               f"{len(base)} tensors compared")
    moved = {"language_model": [0, 0], "visual": [0, 0]}
    for key, value in base.items():
        if not key.startswith("model."):
            continue
        right_key = "right_brain." + key[len("model."):]
        part = "visual" if ".visual." in f".{right_key}" else "language_model"
        moved[part][1] += 1
        moved[part][0] += int(not torch.equal(final_straight[right_key].cpu().to(value.dtype), value))
    report["right_tensors_moved"] = {k: f"{m}/{n}" for k, (m, n) in moved.items()}
    mode.check("Right Brain moved (language model and vision tower)",
               all(m >= n / 2 for m, n in moved.values()), f"tensors changed: {report['right_tensors_moved']}")

    same_steps = resumed.step == straight.step == mode.steps
    loss_gap = float(np.max(np.abs(np.array(resumed.losses) - losses) / np.abs(losses))) if same_steps else float("inf")
    trained = [k for k in final_straight if k.startswith(("right_brain.", "action_model.", "state_encoder."))
               and final_straight[k].is_floating_point()]
    drift = sum(float((final_resumed[k].double() - final_straight[k].double()).norm() ** 2) for k in trained) ** 0.5
    travel = sum(float((final_straight[k].double() - at_resume[k].double()).norm() ** 2) for k in trained) ** 0.5
    report.update(resume_loss_gap=loss_gap, resume_weight_drift=drift, travel_after_resume_step=travel)
    mode.check(f"resume from step {mode.resume_at} ends equal to the uninterrupted run",
               same_steps and loss_gap <= LOSS_RTOL and drift <= RESUME_DRIFT * travel,
               f"max relative loss gap {loss_gap:.1e} (tolerance {LOSS_RTOL:.0e}); weights |resumed - straight| "
               f"{drift:.3e} vs their travel after step {mode.resume_at}: {travel:.3e} (tolerance {RESUME_DRIFT:.0e}x)")
    shutil.rmtree(work / "straight", ignore_errors=True)
    shutil.rmtree(work / "resumed", ignore_errors=True)
    return report


# ---------------------------------------------------------------------------------------------------- 4. benchmark


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(calls: dict, repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds of each call, timed in alternation round by round (drift hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _bytes(tensors) -> int:
    from starvla_twinbrain.model.low_memory import storage_bytes  # int8 weights: their int8 data and scales

    return sum(storage_bytes(t) for t in tensors if t is not None)


class TrainStep:
    """forward + backward + AdamW over the trainable parameters (as bench_policy.py), with its memory."""

    def __init__(self, model, batch, device: str):
        import torch

        self.model, self.batch, self.device = model, batch, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5)

    def __call__(self):
        loss = self.model(self.batch)["action_loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def peak_memory_gib(self) -> float | None:
        """Weights + gradients + optimizer state of this model, plus the peak a step adds on top (GPU only)."""
        import torch

        if self.device != "cuda":
            return None
        state = [t for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        resident = _bytes(self.model.parameters()) + _bytes(p.grad for p in self.params) + _bytes(state)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self()
        torch.cuda.synchronize()
        return (resident + torch.cuda.max_memory_allocated() - before) / 2**30


def benchmark(mode: Mode, vlm: str) -> dict:
    import torch

    from bench_policy import QwenGR00TReplica
    from starvla_twinbrain.framework.twinbrain import InferenceCompiledDiT, TwinBrain

    cfg = training_config(mode, vlm, mode.out / "runs", "bench")
    cfg.framework.qwenvl.attn_implementation = None
    head = cfg.framework.action_model
    batch = examples(mode.bench_batch, mode.image, int(head.action_horizon), int(head.action_dim), int(head.state_dim))
    one = batch[:1]
    torch.manual_seed(0)
    models = {"single": QwenGR00TReplica(cfg).to(mode.device, mode.bench_dtype),
              "twin": TwinBrain(cfg).to(mode.device, mode.bench_dtype)}
    report = {"vlm": vlm, "batch": mode.bench_batch, "repeats": mode.repeats, "dtype": str(mode.bench_dtype), "rows": {}}
    warmup = mode.warmup

    def train_row(label: str, names):
        steps = {name: TrainStep(models[name], batch, mode.device) for name in names}
        times = _timed(steps, mode.repeats, warmup, mode.device)
        for name, step in steps.items():
            row = report["rows"].setdefault(label, {}).setdefault(name, {})
            row.update(step_s=times[name], samples_per_s=mode.bench_batch / times[name],
                       peak_gib=step.peak_memory_gib(), trainable_gib=_bytes(step.params) / 2**30,
                       weights_gib=_bytes(models[name].parameters()) / 2**30)
            print(f"benchmark {label} {name}: train step {times[name] * 1e3:.1f} ms", flush=True)
        del steps
        for model in models.values():
            model.zero_grad(set_to_none=True)
        if mode.device == "cuda":
            torch.cuda.empty_cache()

    def infer_row(label: str, names):
        for model in models.values():
            model.eval()
        times = _timed({n: (lambda m=models[n]: m.predict_action(one)) for n in names}, mode.repeats * 2, warmup,
                       mode.device)
        for name in names:
            report["rows"].setdefault(label, {}).setdefault(name, {})["infer_s"] = times[name]
            print(f"benchmark {label} {name}: one chunk {times[name] * 1e3:.1f} ms", flush=True)
        for model in models.values():
            model.train()

    twin = models["twin"]
    for model in models.values():
        model.train()
    # Frozen vision first, while the Right's tower still equals the Left's (then one tower serves both brains).
    from starvla_twinbrain.model.qwen_compat import vlm_core

    vision = {"single": vlm_core(models["single"].qwen_vl_interface).visual, "twin": twin.right_brain.visual}
    for tower in vision.values():
        tower.requires_grad_(False)
    twin.backbone.set_attn_implementation("sdpa")
    report["vision_shared_when_frozen"] = twin.backbone.vision_is_shared()
    train_row("sdpa, vision frozen", ["single", "twin"])
    for tower in vision.values():
        tower.requires_grad_(True)
    train_row("sdpa", ["single", "twin"])
    infer_row("sdpa", ["single", "twin"])
    twin.backbone.set_attn_implementation("flex_attention")
    if mode.device == "cpu":
        report.setdefault("notes", []).append("flex_attention train step skipped: FlexAttention has no backward on CPU")
    else:
        train_row("flex_attention", ["twin"])
    infer_row("flex_attention", ["twin"])
    report["flex_backend"] = twin.backbone.backend
    twin.backbone.set_attn_implementation("sdpa")
    for model in models.values():
        model.compiled_head = InferenceCompiledDiT()
    infer_row("sdpa, head compiled", ["single", "twin"])
    report["parameters_m"] = {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in models.items()}

    # Low-memory settings: each TwinBrain built fresh (same seed, same batch) in place of the full one.
    missing = [m for m in ("peft", "torchao") if importlib.util.find_spec(m) is None]
    if missing:
        report.setdefault("notes", []).append(f"LoRA / int8 Left rows skipped: {missing} not installed "
                                              "(pip install 'starvla-twinbrain[lowmem]')")
    else:
        for label, settings in LOW_MEMORY_ROWS.items():
            models.pop("twin", None)
            twin = None
            if mode.device == "cuda":
                torch.cuda.empty_cache()
            low = training_config(mode, vlm, mode.out / "runs", "bench")
            low.framework.qwenvl.attn_implementation = "sdpa"
            for key, value in settings.items():
                low.framework.twinbrain[key] = value
            torch.manual_seed(0)
            models["twin"] = TwinBrain(low).to(mode.device, mode.bench_dtype).train()
            train_row(label, ["twin"])
            report["rows"][label]["twin"]["left_precision"] = models["twin"].left_precision
    del models, twin
    if mode.device == "cuda":
        torch.cuda.empty_cache()
    return report


# ---------------------------------------------------------------------------------------------------- main


def print_table(result: dict) -> None:
    bench = result.get("benchmark")
    print("\n== checks ==")
    for c in result["checks"]:
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    if not bench:
        return
    print(f"\n== benchmark: {Path(bench['vlm']).name}, batch {bench['batch']} (inference: 1), {result['device']} ==")
    print(f"{'variant':28}{'model':8}{'step ms':>10}{'samples/s':>11}{'peak GiB':>10}{'train GiB':>10}"
          f"{'weights GiB':>12}{'chunk ms':>10}")
    for label, row in bench["rows"].items():
        for name, r in row.items():
            cells = [(r.get("step_s"), 1e3, 10), (r.get("samples_per_s"), 1, 11), (r.get("peak_gib"), 1, 10),
                     (r.get("trainable_gib"), 1, 10), (r.get("weights_gib"), 1, 12), (r.get("infer_s"), 1e3, 10)]
            print(f"{label:28}{name:8}" + "".join(f"{v * scale:{w}.1f}" if v is not None else f"{'-':>{w}}"
                                                  for v, scale, w in cells))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (CI)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="folder for gpu_check.json")
    parser.add_argument("--families", default=",".join(FAMILIES), help="families of the agreement check")
    parser.add_argument("--train-family", default="qwen2_5_vl", choices=FAMILIES)
    parser.add_argument("--bench-family", default="qwen2_5_vl", choices=FAMILIES)
    parser.add_argument("--train-layers", type=int, default=4, help="text layers and vision blocks of the training check")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: agreement,training,benchmark")
    parser.add_argument("--work", type=Path, help="scratch folder for checkpoints (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = missing_packages()
    if missing:
        print("gpu_check: missing Python packages: " + ", ".join(missing) + "\nOn a machine without network, bring "
              "them as wheels: scripts/gpu_wheels.sh here, then carry .whl (scripts/gpu_check.sh installs it).",
              file=sys.stderr)
        return 2
    import torch
    import transformers

    families = tuple(f for f in args.families.split(",") if f)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        print(f"--families: unknown {unknown}, expected from {FAMILIES}", file=sys.stderr)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --tiny for the CPU rehearsal", file=sys.stderr)
        return 2
    mode = Mode(tiny=args.tiny, device="cpu" if args.tiny else "cuda", families=families,
                train_family=args.train_family, bench_family=args.bench_family, train_layers=args.train_layers,
                out=args.out)
    mode.bench_dtype = torch.bfloat16
    if args.tiny:  # a rehearsal of the code, not a measurement: small batches, one timed round, fp32 (CPU bf16
        # kernels are slow and say nothing about the GPU)
        mode.image, mode.train_batch, mode.bench_batch, mode.repeats, mode.warmup = 56, 4, 4, 1, 1
        mode.steps, mode.resume_at = 10, 5
        mode.bench_dtype = torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"mode": "tiny (CPU)" if args.tiny else "real size (GPU)", "torch": torch.__version__,
              "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name() if mode.device == "cuda" else "cpu",
              "tolerances": {"agreement_factor": AGREEMENT_FACTOR, "agreement_floor": AGREEMENT_FLOOR,
                             "resume_loss_rtol": LOSS_RTOL, "resume_weight_drift": RESUME_DRIFT},
              "seconds": {}}
    work_ctx = contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="gpu_check_")
    with work_ctx as work:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)

        def section(name: str, run):
            if name in skip:
                return
            start = time.perf_counter()
            try:
                result[name] = run()
            except Exception as error:  # one failing section must not hide the others' results
                import traceback

                traceback.print_exc()
                mode.check(f"{name} ran", False, f"{type(error).__name__}: {error}"[:500])
            result["seconds"][name] = round(time.perf_counter() - start, 1)

        vlms: dict[str, str] = {}
        section("models", lambda: {f: vlms.setdefault(f, make_checkpoint(mode, f, work))
                                   for f in sorted(set(families) | {mode.bench_family})})
        section("agreement", lambda: {f: attention_agreement(mode, f, vlms[f]) for f in families})
        section("training", lambda: training_check(
            mode, make_checkpoint(mode, mode.train_family, work, None if mode.tiny else mode.train_layers),
            work / "train"))
        section("benchmark", lambda: benchmark(mode, vlms[mode.bench_family]))
    result["checks"] = mode.checks
    result["ok"] = all(c["ok"] for c in mode.checks)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    print_table(result)
    print(f"\n{'ALL CHECKS PASSED' if result['ok'] else 'SOME CHECKS FAILED'}; seconds per section: "
          f"{result['seconds']}; JSON: {args.out / 'gpu_check.json'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume check
    sys.exit(main())
