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


def build_optimizer(model: nn.Module, trainer) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, in ``trainer.learning_rate``'s groups (``trainer``: a TrainerSection)."""
    groups = param_groups(model, trainer.learning_rate)
    for g in groups:
        logger.info("lr group %-28s lr %.2e  %d tensors", g["name"], g["lr"], len(g["params"]))
    opt = trainer.optimizer
    return torch.optim.AdamW(groups, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, trainer, max_steps: int):
    """transformers' schedulers by name (starVLA's ``lr_scheduler_type``), e.g. ``cosine_with_min_lr``."""
    specific = dict(trainer.scheduler_specific_kwargs or {})
    return get_scheduler(
        trainer.lr_scheduler_type, optimizer, num_warmup_steps=trainer.num_warmup_steps,
        num_training_steps=max_steps, scheduler_specific_kwargs=specific or None,
    )
