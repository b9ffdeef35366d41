"""The embedded training runtime: what starVLA's trainer does, on HF Accelerate, for when starVLA is absent.

One CPU, multi-GPU DDP or DeepSpeed ZeRO-2 (through an accelerate config); bf16 autocast on GPU, fp32 on CPU;
per-module learning rates, cosine schedule, clipping; a progress bar, TensorBoard scalars, ``summary.jsonl`` and a
loss-curve PNG; atomic checkpoints in starVLA's run-directory layout; exact resume (``trainer.is_resume``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..framework.host_api import FRAMEWORK_REGISTRY
from ..framework.twinbrain import register
from . import checkpoint as ckpt
from .optim import build_optimizer, build_scheduler, freeze_modules

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised instead of stepping the optimizer on a NaN/inf loss; the weights stay as they were."""


class EpochShuffleSampler(Sampler[int]):
    """A permutation per epoch from ``seed + epoch``: the data order is a pure function of (seed, epoch), so a
    resumed run sees exactly the batches the uninterrupted run would have seen."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


def _collate(batch: list[dict]) -> list[dict]:
    return batch  # starVLA frameworks take a list of example dicts


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _plot_loss(run_dir: Path, steps: list[int], losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=1)
    ax.set(xlabel="step", ylabel="action_loss (flow matching)", yscale="log", title=run_dir.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = run_dir / ".loss_curve.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(run_dir / "loss_curve.png")


def dataset_from_config(cfg) -> tuple[Dataset, dict]:
    """``datasets.vla_data``: the LeRobot dataset at ``data_root_dir / data_mix`` (a folder), and its statistics."""
    from .data import LeRobotVLADataset

    vla = cfg.datasets.vla_data
    for key in ("data_root_dir", "data_mix"):
        if OmegaConf.select(vla, key) is None:
            raise ValueError(f"datasets.vla_data.{key} is missing: the embedded runtime reads data_root_dir/data_mix")
    size = OmegaConf.select(vla, "obs_image_size", default=224)
    include_state = bool(OmegaConf.select(vla, "include_state", default=False))
    dataset = LeRobotVLADataset(
        Path(vla.data_root_dir) / str(vla.data_mix),
        action_horizon=int(cfg.framework.action_model.action_horizon),
        include_state=include_state,
        image_size=tuple(size) if not isinstance(size, int) else size,
        normalization=OmegaConf.select(vla, "normalization", default="q99"),
        expected_action_dim=int(cfg.framework.action_model.action_dim),
        expected_state_dim=OmegaConf.select(cfg, "framework.action_model.state_dim") if include_state else None,
        video_backend=OmegaConf.select(vla, "video_backend"),
    )
    return dataset, dataset.statistics


def train(cfg, dataset: Dataset, statistics: dict | None = None, accelerator: Accelerator | None = None) -> TrainResult:
    """Train the framework named by ``cfg.framework.name`` on ``dataset`` (items: starVLA example dicts)."""
    register()
    accelerator = accelerator or Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    seed = int(cfg.get("seed", 42))
    set_seed(seed)
    run_dir = Path(cfg.run_root_dir) / str(cfg.run_id)
    max_steps = int(trainer_cfg["max_train_steps"])
    batch_size = int(OmegaConf.select(cfg, "datasets.vla_data.per_device_batch_size", default=8))
    save_interval = int(trainer_cfg.get("save_interval", max_steps))
    log_every = int(trainer_cfg.get("logging_frequency", 10))

    model = FRAMEWORK_REGISTRY[cfg.framework.name](cfg)
    freeze_modules(model, trainer_cfg.get("freeze_modules"))
    optimizer = build_optimizer(model, trainer_cfg)
    scheduler = build_scheduler(optimizer, trainer_cfg, max_steps)
    sampler = EpochShuffleSampler(len(dataset), seed)
    # Its own generator: starting an iterator draws a seed, which must not come from the global RNG that the model
    # samples noise from (a resumed run starts its iterator mid-epoch, at another point of that RNG's stream).
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_collate, drop_last=True,
                        num_workers=int(OmegaConf.select(cfg, "datasets.vla_data.num_workers", default=0)),
                        generator=torch.Generator().manual_seed(seed))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if len(loader) == 0:
        raise ValueError(f"datasets.vla_data.per_device_batch_size={batch_size} is larger than the dataset ({len(dataset)} samples)")

    step, losses, loss_steps = 0, [], []
    if trainer_cfg.get("is_resume"):
        if accelerator.is_main_process:
            for path in ckpt.remove_partial_files(run_dir):
                logger.info("removed %s, a partial file left by an interrupted run", path)
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is not None:
            step, model_file, state_file = latest
            accelerator.unwrap_model(model).load_state_dict(ckpt.load_state_dict(model_file), strict=True)
            state = ckpt.load_trainer_state(state_file)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            losses, loss_steps = state["losses"], state["loss_steps"]
            _set_rng_state(state["rng"][accelerator.process_index] if isinstance(state["rng"], list) else state["rng"])
            if accelerator.is_main_process:  # lines logged after this checkpoint by the killed run are redone
                ckpt.truncate_summary(run_dir / "summary.jsonl", step)
            logger.info("resumed from %s at step %d", model_file, step)
        else:
            logger.info("trainer.is_resume: no complete checkpoint in %s; starting at step 0", run_dir)

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(OmegaConf.to_yaml(cfg), run_dir / "config.yaml")
        ckpt.atomic_write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.full.yaml")
        if statistics is not None:
            ckpt.atomic_write_text(json.dumps(statistics, indent=2), run_dir / "dataset_statistics.json")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(run_dir / "tensorboard")
    clip = trainer_cfg.get("gradient_clipping")

    def save(at_step: int) -> None:
        accelerator.wait_for_everyone()
        state_dict = accelerator.get_state_dict(model)
        rng = accelerator.gather_for_metrics([_rng_state()], use_gather_object=True)
        if accelerator.is_main_process:
            trainer_state = {"step": at_step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "losses": losses, "loss_steps": loss_steps, "rng": rng}
            path = ckpt.save_checkpoint(run_dir, at_step, state_dict, trainer_state, trainer_cfg.get("save_format", "pt"))
            _plot_loss(run_dir, loss_steps, losses)
            logger.info("checkpoint %s", path)

    model.train()
    batches_per_epoch = len(loader)
    progress = tqdm(total=max_steps, initial=step, desc="train", disable=not accelerator.is_main_process)
    try:
        while step < max_steps:
            epoch, skip = divmod(step, batches_per_epoch)
            loader.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch_index, batch in enumerate(batches, start=skip):
                with accelerator.autocast():
                    loss = model(batch)["action_loss"]
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"action_loss is {loss.item()} at step {step + 1} (epoch {epoch}, batch {batch_index} of the "
                        f"epoch, rank {accelerator.process_index}); stopped before the optimizer step, the last "
                        f"checkpoint in {run_dir / 'checkpoints'} is intact"
                    )
                accelerator.backward(loss)
                if clip:
                    accelerator.clip_grad_norm_(model.parameters(), float(clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = accelerator.reduce(loss.detach(), reduction="mean").item()
                losses.append(value)
                loss_steps.append(step)
                progress.update(1)
                if accelerator.is_main_process:
                    writer.add_scalar("train/action_loss", value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    if step % log_every == 0 or step == max_steps:
                        progress.set_postfix(loss=f"{value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                        with open(run_dir / "summary.jsonl", "a") as f:
                            f.write(json.dumps({"step": step, "action_loss": value, "lr": scheduler.get_last_lr()[0]}) + "\n")
                if step % save_interval == 0 or step == max_steps:
                    save(step)
                if step >= max_steps:
                    break
    finally:
        progress.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.atomic_save(accelerator.get_state_dict(model), run_dir / "final_model" / "pytorch_model.pt")
        writer.close()
        if losses:
            logger.info("done: %d steps, loss %.4f → %.4f; run in %s", step, losses[0], losses[-1], run_dir)
    return TrainResult(run_dir=run_dir, step=step, losses=losses)
