"""Every Qwen2.5-VL / Qwen3-VL and transformers 4.57 / 5.x difference the backbone meets, and nothing else."""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version
from transformers import PreTrainedModel, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

TRANSFORMERS_5 = Version(transformers.__version__) >= Version("5.0.0.dev0")

VLM_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}


def load_vlm(path: str, family: str, attn_implementation: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The stock ``*ForConditionalGeneration`` with one stock attention backend for text and vision."""
    dtype_kwarg = "dtype" if TRANSFORMERS_5 else "torch_dtype"
    kwargs = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs[dtype_kwarg] = dtype
    return VLM_CLASSES[family].from_pretrained(path, **kwargs)


def set_text_attention(vlm: PreTrainedModel, implementation: str) -> None:
    """Point the text decoder (only) at a registered attention function; the vision tower keeps its own.

    The text model and its attention modules share one config object (4.57 and 5.x), read at every call.
    """
    vlm.config.text_config._attn_implementation = implementation


def set_vision_attention(vlm: PreTrainedModel, implementation: str) -> None:
    """Point the vision tower at a stock attention implementation; like the text config, read at every call."""
    vlm.config.vision_config._attn_implementation = implementation


def vlm_core(vlm: PreTrainedModel) -> PreTrainedModel:
    """The ``Qwen*VLModel`` inside ``*ForConditionalGeneration``: vision tower + text decoder, no LM head."""
    return vlm.model


def text_hidden_size(vlm: PreTrainedModel) -> int:
    return vlm.config.text_config.hidden_size


def rope_position_ids(core: PreTrainedModel, input_ids: torch.Tensor, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (M-)RoPE positions ``[3, B, L]`` the stock model computes from ``input_ids`` (valid tokens from 0).

    Needed when the model is called with ``inputs_embeds`` only (Qwen3-VL refuses ``input_ids`` next to them).
    transformers 5.x also needs ``mm_token_type_ids`` (0 text, 1 image, 2 video); without it, it would silently
    fall back to 1-D positions.
    """
    kwargs = dict(input_ids=input_ids, image_grid_thw=tensors.get("image_grid_thw"),
                  attention_mask=tensors.get("attention_mask"))
    if TRANSFORMERS_5:
        kwargs["mm_token_type_ids"] = tensors.get("mm_token_type_ids")
        if kwargs["mm_token_type_ids"] is None:
            config = core.config
            kwargs["mm_token_type_ids"] = (input_ids == config.image_token_id).int() + 2 * (input_ids == config.video_token_id).int()
    position_ids, _ = core.get_rope_index(**kwargs)
    return position_ids


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant checkpointing of every decoder layer (5.x renamed the method)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def past_keys_values_kwarg(core: PreTrainedModel) -> str:
    """The model call's keyword for given K/V: ``cache`` in late 5.x (``past_key_values`` deprecated), else
    ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(core).forward).parameters else "past_key_values"
