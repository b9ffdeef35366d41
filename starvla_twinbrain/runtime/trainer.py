"""The embedded training runtime: what starVLA's trainer does, on HF Accelerate, for when starVLA is absent.

One CPU, multi-GPU DDP or DeepSpeed ZeRO-2 (through an accelerate config); the precision policy of
``framework.twinbrain.apply_precision_policy`` (fp32 trainable weights under bf16 autocast on GPU, fp32 on CPU);
per-module learning rates, cosine schedule, clipping, gradient accumulation; a progress bar, TensorBoard (and W&B)
scalars, ``summary.jsonl`` and a loss-curve PNG; atomic checkpoints in starVLA's run-directory layout; exact resume
(``trainer.is_resume``) from accelerate's ``save_state`` (per-rank RNGs incl. CUDA, optimizer shards) plus the
scheduler, data position and loss history.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin, broadcast_object_list, set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..config import (STARVLA_ONLY_DATA_KEYS, UNREAD_DATA_KEYS, DataSection, TrainerSection, config_to_dict, load_section,
                      obs_image_size, warn_once)
from ..host.api import FRAMEWORK_REGISTRY
from ..framework.twinbrain import apply_precision_policy, register
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


# starVLA's trainer.* keys that change nothing for a TwinBrain run under starVLA's own trainer either (dead keys, or
# VLM co-training's): the embedded trainer warns once and goes on, so stock YAMLs run unchanged.
IGNORED_TRAINER_KEYS = ("loss_scale", "max_grad_norm", "weight_decay", "enable_gradient_checkpointing",
                        "gradient_checkpointing")
# Keys of starVLA YAMLs whose only value here is the one this runtime implements.
FIXED_VALUES = {"datasets.vla_data.dataset_py": ("lerobot_datasets",), "datasets.vla_data.lerobot_version": ("v3.0",),
                "is_debug": (False,)}


def check_config_keys(cfg) -> tuple[TrainerSection, DataSection]:
    """The ``trainer`` and ``datasets.vla_data`` sections as this runtime reads them, validated once at start-up:
    one clear error for a key it would otherwise ignore (a silently ignored key is a silently wrong run)."""
    trainer_keys = [f.name for f in fields(TrainerSection)]
    trainer = config_to_dict(OmegaConf.select(cfg, "trainer")) or {}
    for key in list(trainer):
        if key in IGNORED_TRAINER_KEYS:
            warn_once(f"trainer.{key} is ignored (starVLA's trainer does not use it for this framework either)")
            del trainer[key]
        elif key not in trainer_keys:
            close = difflib.get_close_matches(str(key), trainer_keys, n=1)
            hint = f"did you mean trainer.{close[0]}?" if close else f"it reads {', '.join(trainer_keys)}"
            raise ValueError(f"trainer.{key} is not read by the embedded trainer: {hint}")
    for key, allowed in FIXED_VALUES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in allowed:
            raise ValueError(f"{key}={value!r}: the embedded runtime supports only {' | '.join(map(repr, allowed))}")
    data = config_to_dict(OmegaConf.select(cfg, "datasets.vla_data")) or {}
    for key in [k for k in data if k in UNREAD_DATA_KEYS]:
        warn_once(f"datasets.vla_data.{key} is read by neither starVLA's trainer nor the embedded runtime: ignored")
        del data[key]
    for key in [k for k in data if k in STARVLA_ONLY_DATA_KEYS]:
        warn_once(f"datasets.vla_data.{key} is read by starVLA's own data loaders only; the embedded runtime's "
                  "LeRobot loader ignores it")
        del data[key]
    return (load_section(TrainerSection, trainer, "trainer", "read by the embedded trainer"),
            load_section(DataSection, data, "datasets.vla_data", "read by the embedded runtime's data loader"))


def _accelerator_for(trainer: TrainerSection, accelerator: Accelerator | None) -> Accelerator:
    """bf16 autocast over fp32 weights on GPU (under DeepSpeed: its bf16 mode, fp32 master weights), fp32 on CPU;
    ``trainer.gradient_accumulation_steps`` through accelerate's ``accumulate``. A training step is one optimizer
    step; accumulation runs across an epoch's end, so every step sums the same number of batches."""
    steps = trainer.gradient_accumulation_steps
    if accelerator is None:
        plugin = GradientAccumulationPlugin(num_steps=steps, sync_with_dataloader=False)
        gpu = torch.cuda.is_available()
        # cpu=True where there is no GPU: without it accelerate runs each process of a CPU torchrun launch alone
        return Accelerator(cpu=not gpu, mixed_precision="bf16" if gpu else "no", gradient_accumulation_plugin=plugin)
    if accelerator.gradient_accumulation_steps != steps:
        raise ValueError(f"trainer.gradient_accumulation_steps={steps} but the Accelerator passed to train() "
                         f"accumulates {accelerator.gradient_accumulation_steps}: make them agree")
    if steps > 1 and accelerator.gradient_state.sync_with_dataloader:
        raise ValueError("trainer.gradient_accumulation_steps > 1 needs an Accelerator built with "
                         "GradientAccumulationPlugin(..., sync_with_dataloader=False)")
    return accelerator


class _WandbLog:
    """``wandb_project`` / ``wandb_entity`` as starVLA's trainer uses them: rank 0 logs to W&B when wandb is
    installed and not disabled (``WANDB_MODE=disabled``); a failed init is a warning, not the end of the run."""

    def __init__(self, cfg, run_dir: Path):
        self.run = None
        project = OmegaConf.select(cfg, "wandb_project")
        if project is None or os.environ.get("WANDB_MODE") == "disabled":
            return
        try:
            import wandb
        except ImportError:
            logger.warning("wandb_project=%r but wandb is not installed: logging to %s only", project,
                           run_dir / "tensorboard")
            return
        try:
            self.run = wandb.init(name=str(cfg.run_id), dir=str(run_dir), project=str(project),
                                  entity=OmegaConf.select(cfg, "wandb_entity"), group="vla-train")
        except Exception as err:  # as starVLA: continue without W&B
            logger.warning("W&B init failed; continuing without W&B: %s", err)

    def log(self, values: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


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

    _, data = check_config_keys(cfg)
    for key in ("data_root_dir", "data_mix"):
        if getattr(data, key) is None:
            raise ValueError(f"datasets.vla_data.{key} is missing: the embedded runtime reads data_root_dir/data_mix")
    action_model = cfg.framework.action_model
    dataset = LeRobotVLADataset(
        Path(data.data_root_dir) / data.data_mix,
        action_horizon=int(action_model.action_horizon),
        include_state=data.include_state,
        image_size=obs_image_size(cfg),
        normalization=data.normalization,
        expected_action_dim=int(action_model.action_dim),
        expected_state_dim=OmegaConf.select(action_model, "state_dim") if data.include_state else None,
        video_backend=data.video_backend,
    )
    return dataset, dataset.statistics


def train(cfg, dataset: Dataset, statistics: dict | None = None, accelerator: Accelerator | None = None) -> TrainResult:
    """Train the framework named by ``cfg.framework.name`` on ``dataset`` (items: starVLA example dicts)."""
    register()
    run = _TrainingRun(cfg, dataset, accelerator)
    if run.trainer.is_resume:
        run.resume()
    run.write_run_files(statistics)
    try:
        run.loop()
    finally:
        run.close()
    return run.finish()


class _TrainingRun:
    """One ``train()`` call: set-up (``__init__``), ``resume``, the optimizer ``step`` and ``save``, each on its own.

    Set-up order matters for exact resume: the model is built under ``seed`` on every process, then each process
    draws its noise from ``seed + rank``; the data order comes from its own sampler generator."""

    def __init__(self, cfg, dataset: Dataset, accelerator: Accelerator | None):
        self.cfg = cfg
        self.trainer, data = trainer, data = check_config_keys(cfg)
        self.accelerator = accelerator = _accelerator_for(trainer, accelerator)
        seed = int(cfg.get("seed", 42))
        set_seed(seed)
        self.run_dir = Path(cfg.run_root_dir) / str(cfg.run_id)
        self.max_steps = trainer.max_train_steps
        batch_size = data.per_device_batch_size
        self.save_interval = trainer.save_interval or self.max_steps
        self.log_every = trainer.logging_frequency
        self.eval_every = trainer.eval_interval or self.max_steps + 1
        self.clip = trainer.gradient_clipping
        self.accumulation = accelerator.gradient_accumulation_steps

        model = FRAMEWORK_REGISTRY[cfg.framework.name](cfg)
        freeze_modules(model, trainer.freeze_modules)
        apply_precision_policy(model, accelerator.device)
        optimizer = build_optimizer(model, trainer)
        self.scheduler = build_scheduler(optimizer, trainer, self.max_steps)
        sampler = EpochShuffleSampler(len(dataset), seed)
        # Its own generator: starting an iterator draws a seed, which must not come from the global RNG that the
        # model samples noise from (a resumed run starts its iterator mid-epoch, at another point of that stream).
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_collate, drop_last=True,
                            num_workers=data.num_workers,
                            generator=torch.Generator().manual_seed(seed))
        # The scheduler stays out of prepare(): accelerate would step it once per process per step. It steps here
        # once per optimizer step, and its state travels in the checkpoint's progress.json.
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        set_seed(seed + accelerator.process_index)  # as starVLA: each process its own noise (the model built alike)
        if len(self.loader) == 0:
            raise ValueError(f"datasets.vla_data.per_device_batch_size={batch_size} is larger than the dataset "
                             f"({len(dataset)} samples)")
        # The weights live in the exported steps_N_pytorch_model.pt (Left by reference), not twice: the state
        # folder keeps the rest (under DeepSpeed, its own checkpoint also holds the weights and their fp32 copy).
        self.hooks = [accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear()),
                      accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())]
        self.step, self.losses, self.loss_steps = 0, [], []
        self.writer = self.wandb_log = self.progress_bar = None

    # ------------------------------------------------------------------ resume
    def resume(self) -> None:
        """Continue from the latest complete checkpoint in the run folder (partial files of a killed run removed)."""
        accelerator, run_dir = self.accelerator, self.run_dir
        if accelerator.is_main_process:
            for path in ckpt.remove_partial_files(run_dir):
                logger.info("removed %s, a partial file left by an interrupted run", path)
        accelerator.wait_for_everyone()
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None:
            logger.info("trainer.is_resume: no complete checkpoint in %s; starting at step 0", run_dir)
            return
        self.step, model_file, state_dir = latest
        progress = _load_trainer_state(accelerator, self.model, model_file, state_dir)
        self.scheduler.load_state_dict(progress["scheduler"])
        self.losses, self.loss_steps = progress["losses"], progress["loss_steps"]
        if accelerator.is_main_process:  # lines logged after this checkpoint by the killed run are redone
            ckpt.truncate_summary(run_dir / "summary.jsonl", self.step)
        logger.info("resumed from %s at step %d", model_file, self.step)

    def write_run_files(self, statistics: dict | None) -> None:
        """config.yaml (as given) and config.full.yaml (resolved), the statistics, TensorBoard and W&B writers."""
        if not self.accelerator.is_main_process:
            return
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(OmegaConf.to_yaml(self.cfg), run_dir / "config.yaml")
        ckpt.atomic_write_text(OmegaConf.to_yaml(self.cfg, resolve=True), run_dir / "config.full.yaml")
        if statistics is not None:
            ckpt.atomic_write_text(json.dumps(statistics, indent=2), run_dir / "dataset_statistics.json")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(run_dir / "tensorboard")
        self.wandb_log = _WandbLog(self.cfg, run_dir)

    # ------------------------------------------------------------------ the loop
    def loop(self) -> None:
        """Optimizer steps until ``max_train_steps``, from wherever ``resume`` left the run: each epoch's batches in
        the sampler's order, skipping those a resumed run has already consumed."""
        accelerator = self.accelerator
        self.model.train()
        batches_per_epoch = len(self.loader)
        consumed = self.step * self.accumulation  # batches drawn so far (checkpoints fall on optimizer steps)
        self.micro_losses: list[torch.Tensor] = []
        self.progress_bar = tqdm(total=self.max_steps, initial=self.step, desc="train",
                                 disable=not accelerator.is_main_process)
        while self.step < self.max_steps:
            epoch, skip = divmod(consumed, batches_per_epoch)
            self.loader.set_epoch(epoch)
            batches = accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            for batch_index, batch in enumerate(batches, start=skip):
                consumed += 1
                if not self.train_on(batch, epoch, batch_index):
                    continue  # gradients accumulate until the last batch of the step
                self.log(batch)
                if self.step % self.save_interval == 0 or self.step == self.max_steps:
                    self.save(self.step)
                if self.step >= self.max_steps:
                    break

    def train_on(self, batch: list[dict], epoch: int, batch_index: int) -> bool:
        """Forward and backward one batch; True when it completed an optimizer step (accumulation done)."""
        accelerator, model = self.accelerator, self.model
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = model(batch)["action_loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"action_loss is {loss.item()} at step {self.step + 1} (epoch {epoch}, batch {batch_index} of "
                    f"the epoch, rank {accelerator.process_index}); stopped before the optimizer step, the last "
                    f"checkpoint in {self.run_dir / 'checkpoints'} is intact"
                )
            accelerator.backward(loss)
            self.micro_losses.append(loss.detach().float())
            if self.clip and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), float(self.clip))
            self.optimizer.step()  # accelerate's wrapper: a no-op until the last accumulated batch
            self.optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            return False
        self.scheduler.step()
        self.step += 1
        return True

    def log(self, batch: list[dict]) -> None:
        """The step's loss (averaged over micro-batches and processes) to the progress bar, summary.jsonl,
        TensorBoard and W&B; every ``eval_interval`` steps the sampled actions' MSE too."""
        accelerator, step = self.accelerator, self.step
        value = accelerator.reduce(torch.stack(self.micro_losses).mean(), reduction="mean").item()
        self.micro_losses.clear()
        self.losses.append(value)
        self.loss_steps.append(step)
        self.progress_bar.update(1)
        lr = self.scheduler.get_last_lr()[0]
        scalars = {"train/action_loss": value, "train/lr": lr}
        if step % self.eval_every == 0:
            scalars["train/action_mse"] = _action_mse(accelerator, self.model, batch)
        if not accelerator.is_main_process:
            return
        for name, scalar in scalars.items():
            self.writer.add_scalar(name, scalar, step)
        self.wandb_log.log(scalars, step)
        if step % self.log_every == 0 or step == self.max_steps:
            self.progress_bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            with open(self.run_dir / "summary.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "action_loss": value, "lr": lr}) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def save(self, at_step: int) -> None:
        """The model file, then the trainer-state folder under a temporary name, renamed last: the checkpoint is
        complete exactly when the folder has its real name."""
        accelerator, run_dir = self.accelerator, self.run_dir
        accelerator.wait_for_everyone()
        state_dict = accelerator.get_state_dict(self.model)
        final = ckpt.state_dir(run_dir, at_step)
        partial = ckpt.partial_name(final)
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            ckpt.atomic_save(state_dict, ckpt.model_file(run_dir, at_step, self.trainer.save_format))
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))  # optimizer (or its shards), each process's RNG states
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            progress = {"step": at_step, "num_processes": accelerator.num_processes,
                        "gradient_accumulation_steps": self.accumulation, "scheduler": self.scheduler.state_dict(),
                        "losses": self.losses, "loss_steps": self.loss_steps}
            (partial / ckpt.PROGRESS_FILE).write_text(json.dumps(progress))
            ckpt.publish_state_dir(partial, final)
            _plot_loss(run_dir, self.loss_steps, self.losses)
            logger.info("checkpoint %s", final)
        accelerator.wait_for_everyone()

    def close(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
        for hook in self.hooks:
            hook.remove()

    def finish(self) -> TrainResult:
        """``final_model/pytorch_model.pt`` (what starVLA's trainer exports) and the writers closed."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.atomic_save(accelerator.get_state_dict(self.model), self.run_dir / "final_model" / "pytorch_model.pt")
            self.writer.close()
            self.wandb_log.finish()
            if self.losses:
                logger.info("done: %d steps, loss %.4f → %.4f; run in %s", self.step, self.losses[0],
                            self.losses[-1], self.run_dir)
        return TrainResult(run_dir=self.run_dir, step=self.step, losses=self.losses)


def _action_mse(accelerator: Accelerator, model, batch: list[dict]) -> float:
    """``trainer.eval_interval``, as in starVLA's trainer: the mean squared error of the actions sampled for the
    current batch against its (normalised) action chunks, averaged over processes."""
    framework = accelerator.unwrap_model(model)
    framework.eval()
    try:
        with accelerator.autocast():
            predicted = np.asarray(framework.predict_action(batch)["normalized_actions"], dtype=np.float32)
    finally:
        framework.train()
    target = np.stack([np.asarray(ex["action"], dtype=np.float32) for ex in batch])
    mse = torch.tensor(float(np.mean((predicted - target) ** 2)), device=accelerator.device)
    return accelerator.reduce(mse, reduction="mean").item()


def _load_trainer_state(accelerator: Accelerator, model, model_file: Path, state_dir: Path) -> dict:
    """Resume from a complete checkpoint. Rank 0 checks the folder's digests; every rank reads its own RNG file
    with weights_only=True first (accelerate skips an unreadable one with an info line); accelerate's load_state
    then restores the optimizer (its weights_only load; DeepSpeed: its shards and the model) and this process's
    RNG states, CUDA included."""
    error = None
    if accelerator.is_main_process:
        try:
            ckpt.verify_manifest(state_dir)
        except ValueError as err:
            error = str(err)
    error = broadcast_object_list([error])[0]
    if error:
        raise ValueError(error)
    progress = ckpt.read_progress(state_dir)
    if progress.get("num_processes") != accelerator.num_processes:
        raise ValueError(f"trainer.is_resume: {state_dir} was written by {progress.get('num_processes')} processes, "
                         f"this run has {accelerator.num_processes}; resume with the same number (data order, RNG "
                         f"streams and optimizer shards are per process)")
    if progress.get("gradient_accumulation_steps") != accelerator.gradient_accumulation_steps:
        raise ValueError(f"trainer.gradient_accumulation_steps={accelerator.gradient_accumulation_steps} but "
                         f"{state_dir} was written with {progress.get('gradient_accumulation_steps')}: resume with "
                         f"the same value")
    ckpt.safe_load(state_dir / f"random_states_{accelerator.process_index}.pkl")
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        accelerator.unwrap_model(model).load_state_dict(ckpt.load_state_dict(model_file), strict=True)
    try:
        accelerator.load_state(str(state_dir))
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"trainer state {state_dir} cannot be read ({type(err).__name__}: {first_line})") from None
    return progress
