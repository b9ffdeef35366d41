"""Low-memory training: LoRA adapters on the Right Brain (``peft``) and a weight-only int8 Left Brain (``torchao``).

Both act on the backbone's modules in place, so attribute paths stay what hosts name (``right_brain.language_model``,
``left_brain``) and the AsyMoT attention functions are untouched: LoRA wraps the ``q/k/v/o`` projection modules, whose
outputs the stock attention module still hands to the registered (joint) attention function as K/V; int8 changes
only how the Left's linear weights are stored.

* LoRA (``peft.inject_adapter_in_model``, no ``PeftModel`` wrapper): each targeted ``nn.Linear`` becomes a
  ``peft`` LoRA layer whose frozen base sits at ``<name>.base_layer`` and whose adapters are ``<name>.lora_A/B``.
  ``lora_B`` starts at zero, so the adapted model equals the plain one at init. peft freezes everything in the
  Right but the adapters. Targets are matched by name suffix inside the decoder (and, when asked, inside the vision
  tower) only: Qwen2.5-VL's vision MLP also has ``gate_proj``/``up_proj``/``down_proj``.
* int8 Left (torchao ``Int8WeightOnlyConfig``: per-output-row symmetric int8, dequantised in the matmul; runs on
  CPU and GPU, the maintained successor of torch's own weight-only quantisation): the Left's *text decoder* linear
  layers only. Its vision tower stays as it is, so a frozen Right tower still shares its features bit for bit, and
  its embedding stays tied to the LM head (``chat``).
"""

from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from .config import MissingPackage, OptionError, RightLoraConfig
from .qwen_compat import vlm_core

logger = logging.getLogger(__name__)

EXTRA = "starvla-twinbrain[lowmem]"  # setup.py's extra carrying peft and torchao


def require(package: str, option: str):
    """Import ``package`` for ``option`` (``right_lora``, ``left_precision=int8``), or one error saying what to
    install."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        field, _, value = option.partition("=")
        raise MissingPackage(field, f"{'=' + value if value else ''} needs the {package!r} package ({err}); install "
                             f"it with pip install '{EXTRA}'") from None


# ---------------------------------------------------------------------------------------------------- LoRA


def lora_target_names(right_brain: nn.Module, lora: RightLoraConfig) -> list[str]:
    """Full module names (relative to ``right_brain``) of the ``nn.Linear`` layers to adapt. Every requested
    suffix must match at least one layer, else the YAML names a module this model does not have."""
    names = []
    for where, suffixes, key in (("language_model", lora.target_modules, "target_modules"),
                                 ("visual", lora.vision_target_modules, "vision_target_modules")):
        if not suffixes:
            continue
        found = {s: [] for s in suffixes}
        for name, module in getattr(right_brain, where).named_modules():
            last = name.rsplit(".", 1)[-1]
            if last in found and isinstance(module, nn.Linear):
                found[last].append(f"{where}.{name}")
        missing = [s for s, hits in found.items() if not hits]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in getattr(right_brain, where).named_modules()
                             if isinstance(m, nn.Linear)})
            raise OptionError(f"right_lora.{key}", f": {missing} name no linear layer of "
                             f"right_brain.{where} (its linear layers: {linear})")
        names += [n for hits in found.values() for n in hits]
    return names


def apply_right_lora(right_brain: nn.Module, lora: RightLoraConfig) -> list[str]:
    """Inject LoRA adapters into ``right_brain`` in place; only the adapters stay trainable in it. Returns the
    adapted module names."""
    peft = require("peft", "right_lora")
    targets = lora_target_names(right_brain, lora)
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=float(lora.dropout),
                             target_modules=targets, bias="none")
    peft.inject_adapter_in_model(config, right_brain)
    return targets


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def has_lora(module: nn.Module) -> bool:
    return any(is_lora_parameter(name) for name, _ in module.named_parameters())


# ---------------------------------------------------------------------------------------------------- int8 Left


def quantize_left_int8(left_brain: nn.Module) -> list[str]:
    """The Left's text-decoder linear weights to int8 weight-only, in place. Returns their names (relative to
    ``left_brain``).

    They become buffers, not parameters: they never train, and distributed engines broadcast every parameter
    from rank 0 at start (DeepSpeed's ``_broadcast_model``), which torchao's tensors do not support. Every rank
    derives the same int8 weights from the same base, so there is nothing to broadcast. DDP also broadcasts
    buffers; the framework lists these in ``_ddp_params_and_buffers_to_ignore``."""
    require("torchao", "left_precision=int8")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    decoder = vlm_core(left_brain).language_model
    quantize_(decoder, Int8WeightOnlyConfig())  # default filter: every nn.Linear
    prefix = {id(m): n for n, m in left_brain.named_modules()}
    names = []
    for module in decoder.modules():
        if isinstance(module, nn.Linear) and is_quantized(module.weight):
            weight = module.weight.detach()
            del module.weight  # the Parameter
            module.register_buffer("weight", weight)
            names.append(f"{prefix[id(module)]}.weight")
    return names


def is_quantized(tensor: torch.Tensor) -> bool:
    """A torchao tensor subclass (int8 data + scales behind a float-looking tensor)."""
    return type(tensor) is not torch.Tensor and type(tensor) is not nn.Parameter and hasattr(tensor, "__tensor_flatten__")


def left_precision(left_brain: nn.Module) -> str:
    """What the Left's decoder weights are now: ``int8`` (weight-only, computing in the activations' dtype) or the
    float dtype (``bfloat16``, ``float32``)."""
    weight = vlm_core(left_brain).language_model.layers[0].self_attn.q_proj.weight
    if is_quantized(weight):
        return f"int8 weight-only (torchao), computing in {str(weight.dtype).replace('torch.', '')}"
    return str(weight.dtype).replace("torch.", "")


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really holds: for a torchao subclass its inner tensors (int8 data, scales), not
    ``numel * element_size`` of the float dtype it presents."""
    if is_quantized(tensor):
        inner, _ = tensor.__tensor_flatten__()
        return sum(storage_bytes(getattr(tensor, name)) for name in inner)
    return tensor.numel() * tensor.element_size()


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each tensor once)."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += storage_bytes(t)
    return total
