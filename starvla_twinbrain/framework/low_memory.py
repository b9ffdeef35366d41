"""LoRA Right Brain and int8 Left in the framework: setup, what starVLA's trainer freezes, what checkpoints hold.

- ``framework.twinbrain.right_lora``: after setup the trainable parameters are the Right's adapters, the state
  encoder, the action queries and the head. The Right's frozen base weights are the base checkpoint's (the Right is
  read from ``base_vlm`` like the Left and never updated), so a checkpoint stores them the way it stores the Left:
  by the reference (path + content hash) alone. It holds the adapters, the head and the state encoder.
- starVLA's trainer puts every parameter not under ``trainer.freeze_modules`` into an optimizer group (it does not
  look at ``requires_grad``), so the run declares ``right_brain_frozen_base`` (the Right's frozen subtrees, an
  attribute of the framework) frozen as it declares ``left_brain``: its groups then hold exactly the trainable set.
- ``framework.twinbrain.left_precision: int8``: the Left's decoder is quantised right after it is read, so a
  checkpoint never holds it (the reference does) and loading re-derives it from the referenced weights.
"""

from __future__ import annotations

import logging

from ..config import config_select, config_set
from ..model import low_memory

logger = logging.getLogger(__name__)

FROZEN_RIGHT_PATH = "right_brain_frozen_base"
RIGHT_PREFIX = "right_brain."


def declare_right_base_frozen(config) -> None:
    """Add ``right_brain_frozen_base`` to ``trainer.freeze_modules`` (LoRA runs; no ``trainer``: no-op)."""
    trainer = config_select(config, "trainer")
    if trainer is None:
        return
    spec = config_select(trainer, "freeze_modules", "")
    paths = [path.strip() for path in str(spec).split(",") if path.strip()]
    if FROZEN_RIGHT_PATH not in paths:
        config_set(trainer, "freeze_modules", ",".join([*paths, FROZEN_RIGHT_PATH]))


def setup(model) -> None:
    """Apply ``right_lora`` and ``left_precision`` to a freshly built framework (its head already built, so the
    random initialisation of everything else is that of the plain model)."""
    options = model.twin.options
    if options.right_lora is not None:
        targets = low_memory.apply_right_lora(model.right_brain, options.right_lora)
        declare_right_base_frozen(model.config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        adapters = sum(p.numel() for n, p in model.right_brain.named_parameters() if low_memory.is_lora_parameter(n))
        logger.info("LoRA on the Right Brain: r=%d alpha=%d on %d linear layers; %.2fM adapter parameters, "
                    "%.2fM trainable in all (head and state encoder train fully)", options.right_lora.r,
                    options.right_lora.alpha, len(targets), adapters / 1e6, trainable / 1e6)
    if options.left_precision == "int8":
        before = low_memory.module_bytes(model.left_brain)
        names = low_memory.quantize_left_int8(model.left_brain)
        # DDP (accelerate's multi-process runs) must not broadcast them either: identical on every rank by construction
        model._ddp_params_and_buffers_to_ignore = [f"left_brain.{n}" for n in names]
        after = low_memory.module_bytes(model.left_brain)
        logger.info("Left Brain: %d decoder linear layers int8 weight-only (torchao): %.1f MB -> %.1f MB",
                    len(names), before / 2**20, after / 2**20)


def right_stored_by_reference(module) -> bool:
    return module.twin.options.right_lora is not None and module.twin.options.left_brain_storage == "reference"


def drop_right_base(module, state_dict, prefix) -> None:
    """State-dict post hook (LoRA + reference storage): keep only the Right's adapters."""
    if not right_stored_by_reference(module):
        return
    right = prefix + RIGHT_PREFIX
    for key in [k for k in state_dict if k.startswith(right) and not low_memory.is_lora_parameter(k)]:
        del state_dict[key]


def accept_right_base_by_reference(module, incompatible_keys, loaded_by_reference: bool, prefix: str) -> None:
    """Load post hook: the Right's base weights missing from a by-reference LoRA checkpoint are the base's, already
    in place (the reference was checked); anything else missing stays an error."""
    if loaded_by_reference and right_stored_by_reference(module):
        right = prefix + RIGHT_PREFIX
        incompatible_keys.missing_keys[:] = [
            k for k in incompatible_keys.missing_keys if not (k.startswith(right) and not low_memory.is_lora_parameter(k))]
