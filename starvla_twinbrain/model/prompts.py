"""Left / Right prompts (the paper's appendix) tokenised with the VLM's own processor and chat template.

Both brains see the same images. Batches are left-padded, so the Right Brain's extra slots (state tokens, action
queries) are appended at the end of every row and each brain computes its own M-RoPE positions from 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..config import PromptConfig


def _user_turn(text: str, num_images: int) -> list[dict]:
    return [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]


def left_messages(prompts: PromptConfig, instruction: str, num_images: int) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": prompts.left_system}]},
        {"role": "user", "content": _user_turn(prompts.left_user.format(instruction=instruction), num_images)},
    ]


def right_messages(prompts: PromptConfig, instruction: str, robot_type: str, num_images: int) -> list[dict]:
    text = prompts.right_user.format(instruction=instruction, robot_type=robot_type)
    return [
        {"role": "system", "content": [{"type": "text", "text": prompts.right_system}]},
        {"role": "user", "content": _user_turn(text, num_images)},
    ]


def to_pil(image, where: str) -> Image.Image:
    """PIL or uint8 ``[H, W, 3]`` array → RGB PIL. Anything else is an error naming ``where``."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{where}: expected a uint8 array of shape [H, W, 3], got {image.dtype} {image.shape}")
        return Image.fromarray(image)
    raise TypeError(f"{where}: expected a PIL image or a uint8 numpy array, got {type(image).__name__}")


def image_tensor_to_pil(chw: torch.Tensor, where: str, size: tuple[int, int] | None = None) -> Image.Image:
    """A float ``[3, H, W]`` image in [0, 1] (how LeRobot datasets and processors give cameras) → RGB PIL,
    rounded to uint8 as a camera frame would be, resized (bilinear) to ``size`` = (width, height) when given."""
    if not isinstance(chw, torch.Tensor) or not chw.is_floating_point() or chw.ndim != 3 or chw.shape[0] != 3:
        got = f"{chw.dtype} {list(chw.shape)}" if isinstance(chw, torch.Tensor) else type(chw).__name__
        raise ValueError(f"{where}: expected a float tensor [3, H, W] with values in [0, 1], got {got}")
    hwc = (chw.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(hwc)
    return image if size is None or image.size == tuple(size) else image.resize(tuple(size), Image.BILINEAR)


@dataclass
class BrainInputs:
    """One brain's batch: the keyword arguments of the Qwen-VL model call.

    ``input_ids`` / ``attention_mask``: ``[B, L]`` (left-padded, 1 = real token); ``pixel_values`` and
    ``image_grid_thw`` as the processor makes them; ``mm_token_type_ids`` ``[B, L]`` on transformers 5.x.
    """

    tensors: dict[str, torch.Tensor]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.tensors["attention_mask"]

    def append_slots(self, count: int, token_id: int, valid: torch.Tensor) -> "BrainInputs":
        """Append ``count`` text slots (id ``token_id``) to every row; ``valid``: ``bool[B]`` or ``bool[B, count]``."""
        batch = self.input_ids.shape[0]
        valid = valid.reshape(batch, -1).expand(batch, count)
        tensors = dict(self.tensors)
        for key, value in self.tensors.items():
            if value.ndim == 2 and value.shape == self.input_ids.shape:  # per-token keys
                fill = {"input_ids": token_id, "attention_mask": None}.get(key, 0)
                extra = valid.to(value.dtype) if fill is None else torch.full((batch, count), fill, dtype=value.dtype)
                tensors[key] = torch.cat([value, extra.to(value.device)], dim=1)
        return BrainInputs(tensors)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "BrainInputs":
        moved = {}
        for key, value in self.tensors.items():
            cast = dtype if (dtype is not None and value.is_floating_point()) else None
            moved[key] = value.to(device=device, dtype=cast) if cast else value.to(device)
        return BrainInputs(moved)


class PromptBuilder:
    """Turns raw samples (images, instruction, robot type) into the two brains' token batches."""

    def __init__(self, processor, prompts: PromptConfig):
        self.processor = processor
        self.prompts = prompts
        self.processor.tokenizer.padding_side = "left"

    def _encode(self, conversations: list[list[dict]], images: list[Image.Image]) -> BrainInputs:
        texts = [
            self.processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            for conv in conversations
        ]
        encoded = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return BrainInputs({k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)})

    def __call__(
        self,
        images: Sequence[Sequence],
        instructions: Sequence[str],
        robot_types: Sequence[str | None] | None = None,
    ) -> tuple[BrainInputs, BrainInputs]:
        """``images[b]``: the images of sample b (PIL or uint8 HWC arrays). Returns (left, right) batches."""
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} image lists for {len(instructions)} instructions")
        robot_types = robot_types if robot_types is not None else [None] * len(instructions)
        flat, left, right = [], [], []
        for b, (sample_images, instruction, robot_type) in enumerate(zip(images, instructions, robot_types)):
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"examples[{b}]['lang']: expected a non-empty instruction string, got {instruction!r}")
            if isinstance(sample_images, (Image.Image, np.ndarray)):
                sample_images = [sample_images]
            pil = [to_pil(img, f"examples[{b}]['image'][{i}]") for i, img in enumerate(sample_images)]
            flat.extend(pil)
            left.append(left_messages(self.prompts, instruction, len(pil)))
            right.append(
                right_messages(self.prompts, instruction, robot_type or self.prompts.default_robot_type, len(pil))
            )
        return self._encode(left, flat), self._encode(right, flat)
