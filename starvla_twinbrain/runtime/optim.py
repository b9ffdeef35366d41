"""starVLA's optimisation recipe: per-module learning rates by attribute path, freezing, AdamW, cosine schedule.

Unlike starVLA's trainer, a path that names no module is an error, not a silent no-op.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import get_scheduler

logger = logging.getLogger(__name__)


def resolve_module(model: nn.Module, path: str, key: str) -> nn.Module:
    module = model
    for part in path.split("."):
        if not hasattr(module, part) or not isinstance(getattr(module, part), nn.Module):
            children = ", ".join(name for name, _ in model.named_children())
            raise ValueError(f"{key}: {path!r} names no module of the model (top-level modules: {children})")
        module = getattr(module, part)
    return module


def freeze_modules(model: nn.Module, spec: str | None) -> list[str]:
    """``trainer.freeze_modules``: comma-separated attribute paths whose parameters stop training."""
    paths = [p.strip() for p in (spec or "").split(",") if p.strip()]
    for path in paths:
        resolve_module(model, path, "trainer.freeze_modules").requires_grad_(False)
    return paths


def param_groups(model: nn.Module, learning_rate) -> list[dict]:
    """``trainer.learning_rate``: ``{base: lr, <attr.path>: lr, ...}`` or one number. Trainable parameters only;
    the most specific path wins; everything unnamed gets ``base``."""
    if isinstance(learning_rate, (int, float)):
        learning_rate = {"base": float(learning_rate)}
    learning_rate = dict(learning_rate)
    if "base" not in learning_rate:
        raise ValueError("trainer.learning_rate.base is missing: the rate for modules not named explicitly")
    base = float(learning_rate.pop("base"))
    owner: dict[int, tuple[int, str]] = {}  # param id -> (path depth, path)
    for path in learning_rate:
        module = resolve_module(model, path, f"trainer.learning_rate.{path}")
        for p in module.parameters():
            depth = path.count(".") + 1
            if id(p) not in owner or owner[id(p)][0] < depth:
                owner[id(p)] = (depth, path)
    groups: dict[str, list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(owner.get(id(p), (0, "base"))[1], []).append(p)
    rates = {"base": base, **{k: float(v) for k, v in learning_rate.items()}}
    return [{"params": params, "lr": rates[name], "name": name} for name, params in groups.items()]


def build_optimizer(model: nn.Module, trainer_cfg) -> torch.optim.Optimizer:
    opt = trainer_cfg.get("optimizer", {}) or {}
    name = opt.get("name", "AdamW")
    if name != "AdamW":
        raise ValueError(f"trainer.optimizer.name={name!r}: expected AdamW")
    groups = param_groups(model, trainer_cfg.get("learning_rate", 1e-5))
    for g in groups:
        logger.info("lr group %-28s lr %.2e  %d tensors", g["name"], g["lr"], len(g["params"]))
    return torch.optim.AdamW(
        groups, betas=tuple(opt.get("betas", (0.9, 0.95))), eps=float(opt.get("eps", 1e-8)),
        weight_decay=float(opt.get("weight_decay", 0.0)),
    )


def build_scheduler(optimizer: torch.optim.Optimizer, trainer_cfg, max_steps: int):
    """transformers' schedulers by name (starVLA's ``lr_scheduler_type``), e.g. ``cosine_with_min_lr``."""
    kind = trainer_cfg.get("lr_scheduler_type", "cosine_with_min_lr")
    specific = dict(trainer_cfg.get("scheduler_specific_kwargs", {}) or {})
    return get_scheduler(
        kind, optimizer, num_warmup_steps=int(trainer_cfg.get("num_warmup_steps", 0)),
        num_training_steps=max_steps, scheduler_specific_kwargs=specific or None,
    )
