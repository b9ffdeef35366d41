"""Tiny random Qwen2.5-VL / Qwen3-VL checkpoints, made locally (no network), for tests, CPU demos and benchmarks.

A checkpoint here is what a real one is: ``config.json`` + safetensors weights, a fast tokenizer with Qwen's
special tokens and the family's chat template, and the Qwen image processor. Only the sizes are small: a
byte-level BPE of a few hundred tokens trained on a built-in corpus, and a two-block vision tower.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, Qwen2_5_VLConfig, Qwen2TokenizerFast, Qwen3VLConfig

from .model.processing import image_processor_class
from .model.qwen_compat import VLM_CLASSES

FAMILIES = ("qwen2_5_vl", "qwen3_vl")

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

CORPUS = [
    "You are a helpful assistant.",
    "You are a helpful robot brain that can understand images and texts.",
    "You are a helpful robot brain that can understand images, texts, and robot states.",
    "You will be provided with observation, an instruction, and the robot state. Take action to execute the instruction.",
    "Instruction: pick up the red block and put it in the bowl.",
    "Robot Type: widowx franka panda gr1 google robot",
    "Predict the next action for the robot based on the observation, instruction and robot type.",
    "put the spoon on the towel. put the carrot on the plate. stack the green cube on the yellow cube.",
    "put the eggplant in the basket. open the drawer. close the drawer. lift the cube. move left right up down.",
    "What is on the table? There is a cup, a plate, a spoon and a block. The image shows a kitchen.",
    "system user assistant yes no the a an of to in on and is are it this that what which colour color",
    "0 1 2 3 4 5 6 7 8 9 red green blue yellow white black orange purple",
]

# Qwen2.5-VL's chat template (default system prompt when none is given).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL's chat template, without tools or thinking: no default system prompt.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _make_tokenizer(vocab_size: int, chat_template: str, corpus=None, pre_tokenizer=None) -> PreTrainedTokenizerBase:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4 if corpus is None else corpus, trainer)
    bpe.add_special_tokens(SPECIAL_TOKENS)  # after the BPE vocabulary, as in Qwen
    tokenizer = Qwen2TokenizerFast(  # the processors check the tokenizer class
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        padding_side="left",
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _config(family: str, tok: PreTrainedTokenizerBase, hidden_size: int, num_layers: int, num_heads: int,
            num_kv_heads: int, text_overrides: dict | None = None, vision_overrides: dict | None = None):
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    head_dim = hidden_size // num_heads
    quarter = head_dim // 2 // 4  # M-RoPE sections (t, h, w) sum to head_dim / 2
    mrope = [head_dim // 2 - 2 * quarter, quarter, quarter]
    text = dict(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=4096,
        bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                  spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_5_vl":
        text["rope_scaling"] = {"type": "default", "rope_type": "default", "mrope_section": mrope}
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[1], tokens_per_second=2)
    else:
        text.update(head_dim=head_dim, rope_scaling={"rope_type": "default", "mrope_section": mrope, "mrope_interleaved": True})
        vision.update(patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0, 1])
    text.update(text_overrides or {})
    vision.update(vision_overrides or {})
    config_class = Qwen2_5_VLConfig if family == "qwen2_5_vl" else Qwen3VLConfig
    return config_class(text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"], **ids)


def make_tiny_vlm(
    out_dir: str | Path,
    family: str = "qwen2_5_vl",
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    corpus=None,
    pre_tokenizer=None,
    image_size: int = 56,
    text_overrides: dict | None = None,
    vision_overrides: dict | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a random tiny checkpoint of ``family`` into ``out_dir``; the same seed gives the same weights.

    ``image_size`` is the side the image processor keeps (larger images are scaled down to it): with the default
    56 (Qwen2.5-VL, 14 px patches) or 64 (Qwen3-VL, 16 px patches) an image becomes 4 visual tokens.
    ``text_overrides`` / ``vision_overrides`` replace entries of the text / vision config (a real model's shape:
    see ``benchmarks/gpu_check.py``); the tokenizer stays tiny, so token ids stay below its size. ``device`` and
    ``dtype``: where and in what the random weights are made (a real-size model is made on a GPU in bf16).
    ``corpus`` (an iterable of strings) and ``pre_tokenizer`` (a ``tokenizers`` pre-tokenizer): what the BPE is
    trained on and how text is split first. By default a built-in corpus of prompt words, split byte-level, which
    makes prompts several times longer than Qwen's tokenizer does (benchmarks/bench_policy.py trains on English).
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {' | '.join(FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    template = QWEN2_5_VL_CHAT_TEMPLATE if family == "qwen2_5_vl" else QWEN3_VL_CHAT_TEMPLATE
    tokenizer = _make_tokenizer(vocab_size, template, corpus, pre_tokenizer)
    config = _config(family, tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, text_overrides,
                     vision_overrides)

    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            torch.set_default_dtype(dtype or default_dtype)  # made in dtype: no full-precision copy first
            with torch.device(device):
                model = VLM_CLASSES[family](config)
        finally:
            torch.set_default_dtype(default_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    patch = 14 if family == "qwen2_5_vl" else 16
    side = max(round(image_size / (2 * patch)), 1) * 2 * patch  # a multiple of patch * merge size
    pixels = side * side
    image_processor = image_processor_class()(
        patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=pixels // 4, max_pixels=pixels,
        size={"shortest_edge": pixels // 4, "longest_edge": pixels},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(template)
    return out
