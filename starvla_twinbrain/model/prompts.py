"""Left / Right prompts (the paper's appendix) tokenised with the VLM's own processor and chat template.

Both brains see the same images. Batches are left-padded, so the Right Brain's extra slots (state tokens, action
queries) are appended at the end of every row and each brain computes its own M-RoPE positions from 0.

Every prompt is bounded before the model runs: at most ``max_images`` images per example and ``max_prompt_tokens``
tokens per brain (template, instruction and image tokens). Attention costs the square of the length, so one
over-long instruction could otherwise take all the memory of a server or a training run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .config import MAX_IMAGES_PER_EXAMPLE, MAX_PROMPT_TOKENS, PromptConfig

logger = logging.getLogger(__name__)

# English averages about 4 characters per token. Text longer than this many characters per allowed token cannot be
# a real instruction and is refused without tokenising it (tokenising 100 kB alone takes ~0.2 s).
MAX_CHARS_PER_TOKEN = 16
TRUNCATION_ATTEMPTS = 5


class InputTooLarge(ValueError):
    """An example over an input limit; the message names the field, its size and the limit."""


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
    rounded to uint8 as a camera frame would be, resized (bilinear) to ``size`` = (height, width) when given (the
    order of ``datasets.vla_data.obs_image_size``)."""
    if not isinstance(chw, torch.Tensor) or not chw.is_floating_point() or chw.ndim != 3 or chw.shape[0] != 3:
        got = f"{chw.dtype} {list(chw.shape)}" if isinstance(chw, torch.Tensor) else type(chw).__name__
        raise ValueError(f"{where}: expected a float tensor [3, H, W] with values in [0, 1], got {got}")
    hwc = (chw.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(hwc)
    if size is None:
        return image
    height, width = size  # PIL sizes are (width, height)
    return image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)


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
    """Turns raw samples (images, instruction, robot type) into the two brains' token batches, within the limits."""

    def __init__(self, processor, prompts: PromptConfig, max_prompt_tokens: int = MAX_PROMPT_TOKENS,
                 max_images: int = MAX_IMAGES_PER_EXAMPLE):
        self.processor = processor
        self.prompts = prompts
        self.max_prompt_tokens = max_prompt_tokens
        self.max_images = max_images
        # The limits' names in errors: the backbone's arguments; a host names them as its users wrote them
        self.limit_names = {"max_prompt_tokens": "max_prompt_tokens", "max_images_per_example": "max_images_per_example"}
        self.processor.tokenizer.padding_side = "left"

    # ------------------------------------------------------------------ limits
    @property
    def max_chars(self) -> int:
        return self.max_prompt_tokens * MAX_CHARS_PER_TOKEN

    def check_text(self, text: str, where: str, source: str = "") -> None:
        """Refuse text that cannot fit, by its length alone (no tokenising)."""
        if len(text) > self.max_chars:
            raise InputTooLarge(
                f"{where}{source}: {len(text)} characters; at most {self.max_chars} ({MAX_CHARS_PER_TOKEN} per token "
                f"of {self.limit_names['max_prompt_tokens']}={self.max_prompt_tokens}), refused before tokenising")

    def check_image_count(self, count: int, where: str, source: str = "") -> None:
        if count > self.max_images:
            raise InputTooLarge(
                f"{where}{source}: {count} images; at most {self.max_images} per example ({self.limit_names['max_images_per_example']})")

    def check_tokens(self, tokens: int, where: str, brain: str, num_images: int, source: str = "") -> None:
        if tokens > self.max_prompt_tokens:
            raise InputTooLarge(
                f"{where}{source}: the {brain} prompt is {tokens} tokens (template, instruction and {num_images} "
                f"image{'s' * (num_images != 1)}); {self.limit_names['max_prompt_tokens']} is {self.max_prompt_tokens}")

    def _truncated(self, instruction: str, excess: int) -> str:
        """The start of ``instruction`` without its last ``excess`` tokens ("" when that is all of it). Cut at a
        character offset, not by decoding ids: a token holding half a character would decode to U+FFFD."""
        offsets = self.processor.tokenizer(instruction, add_special_tokens=False,
                                           return_offsets_mapping=True)["offset_mapping"]
        keep = len(offsets) - excess
        return instruction[: offsets[keep - 1][1]].rstrip() if keep > 0 else ""

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
        sources: Sequence[str] | None = None,
        truncate: bool = False,
    ) -> tuple[BrainInputs, BrainInputs]:
        """``images[b]``: the images of sample b (PIL or uint8 HWC arrays). Returns (left, right) batches.

        A sample over the limits raises :class:`InputTooLarge` naming it and ``sources[b]`` (where it came from,
        e.g. " (episode 3, frame 12)"). With ``truncate`` an over-long instruction loses its end instead (too many
        images are always an error: a camera is not optional)."""
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} image lists for {len(instructions)} instructions")
        robot_types = robot_types if robot_types is not None else [None] * len(instructions)
        sources = sources if sources is not None else [""] * len(instructions)
        instructions, pil = list(instructions), []
        for b, (sample_images, instruction) in enumerate(zip(images, instructions)):
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"examples[{b}]['lang']: expected a non-empty instruction string, got {instruction!r}")
            if len(instruction) > self.max_chars and truncate:
                instructions[b] = instruction[: self.max_chars]
            self.check_text(instructions[b], f"examples[{b}].lang", sources[b])
            if isinstance(sample_images, (Image.Image, np.ndarray)):
                sample_images = [sample_images]
            self.check_image_count(len(sample_images), f"examples[{b}].image", sources[b])
            pil.append([to_pil(img, f"examples[{b}]['image'][{i}]") for i, img in enumerate(sample_images)])

        left, right = self._encode_pair(pil, instructions, robot_types)
        for attempt in range(TRUNCATION_ATTEMPTS):  # a cut can tokenise differently at its end: check again
            lengths = {"Left Brain's": left.attention_mask.sum(1).tolist(),
                       "Right Brain's": right.attention_mask.sum(1).tolist()}
            excess = {b: max(n[b] for n in lengths.values()) - self.max_prompt_tokens for b in range(len(pil))}
            over = [b for b, e in excess.items() if e > 0]
            if not over:
                return left, right
            if not truncate or attempt == TRUNCATION_ATTEMPTS - 1:
                b = over[0]
                brain = max(lengths, key=lambda k: lengths[k][b])
                self.check_tokens(lengths[brain][b], f"examples[{b}].lang", brain, len(pil[b]), sources[b])
            for b in over:
                instructions[b] = self._truncated(instructions[b], excess[b] + attempt)
                if not instructions[b]:
                    raise InputTooLarge(f"examples[{b}].image{sources[b]}: {len(pil[b])} images make the prompt "
                                        f"longer than {self.limit_names['max_prompt_tokens']}={self.max_prompt_tokens} tokens")
                logger.warning("examples[%d]%s: instruction truncated by %d tokens to fit %s=%d", b, sources[b],
                               excess[b] + attempt, self.limit_names["max_prompt_tokens"], self.max_prompt_tokens)
            left, right = self._encode_pair(pil, instructions, robot_types)
        raise AssertionError("unreachable: the last attempt raises")

    def _encode_pair(self, pil: list[list[Image.Image]], instructions: list[str],
                     robot_types: Sequence[str | None]) -> tuple[BrainInputs, BrainInputs]:
        flat = [image for sample in pil for image in sample]
        left = [left_messages(self.prompts, text, len(imgs)) for imgs, text in zip(pil, instructions)]
        right = [right_messages(self.prompts, text, robot_type or self.prompts.default_robot_type, len(imgs))
                 for imgs, text, robot_type in zip(pil, instructions, robot_types)]
        return self._encode(left, flat), self._encode(right, flat)
