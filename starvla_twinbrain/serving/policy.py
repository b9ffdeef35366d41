"""A trained checkpoint as a served policy: the object behind the websocket server.

It checks every request before the model sees it (one error naming the field and what was expected), runs the
framework's ``predict_action`` and un-normalises the actions with the run's ``dataset_statistics.json``, as
starVLA's ``PolicyServerWrapper`` does. Like starVLA's server it never normalises state: clients send state in
training format; the statistics travel in the metadata (``state_statistics``) so a client can normalise it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from ..config import MAX_EXAMPLES_PER_REQUEST, DataSection, TwinBrainConfig, config_select, obs_image_size
from ..framework.states import validate_states
from ..model.prompts import InputTooLarge
from ..normalization import unnormalize

logger = logging.getLogger(__name__)

# What one request may ask for; the prompt limits (tokens, images per example) come from the run's config.
MAX_IMAGE_SIDE = 4096
MAX_NEW_TOKENS = 512
MAX_ROBOT_TYPE_CHARS = 256  # a name for the Right prompt's "Robot Type:" line


class RequestError(ValueError):
    """A request the policy cannot answer; the message names the field and what was expected."""


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here (use auto or cpu)")
    return torch.device(device)


def _image(value: Any, where: str, size: tuple[int, int] | None) -> Image.Image:
    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("RGB"))
    if not isinstance(value, np.ndarray):
        raise RequestError(f"{where}: expected a uint8 numpy array [H, W, 3], got {type(value).__name__}")
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[-1] != 3:
        raise RequestError(f"{where}: expected a uint8 array [H, W, 3], got {value.dtype} {list(value.shape)}")
    h, w = value.shape[:2]
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise RequestError(f"{where}: image of {h}x{w}; expected each side in 1..{MAX_IMAGE_SIDE}")
    image = Image.fromarray(np.ascontiguousarray(value))
    # Training resized every camera image to obs_image_size; do the same here.
    return image.resize((size[1], size[0]), Image.BILINEAR) if size and (h, w) != size else image


def _images(value: Any, where: str, size: tuple[int, int] | None, max_images: int) -> list[Image.Image]:
    if value is None:
        raise RequestError(f"{where}: missing; expected a list of uint8 images [H, W, 3]")
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise RequestError(f"{where}: empty list; expected at least one image")
    if len(items) > max_images:
        raise RequestError(f"{where}: {len(items)} images; at most {max_images} per example (starvla serve --max-images)")
    return [_image(img, f"{where}[{i}]", size) for i, img in enumerate(items)]


class ServedPolicy:
    """``predict_action(examples, unnorm_key=None, **kwargs) -> {"actions": float32 [B, T, D]}``, ``chat``,
    ``metadata``; built from a checkpoint with :meth:`from_checkpoint` or around a loaded framework."""

    def __init__(self, model: torch.nn.Module, config, statistics: dict | None, ckpt_path: str = "",
                 unnorm_key: str | None = None, max_batch: int = MAX_EXAMPLES_PER_REQUEST,
                 max_images: int | None = None):
        self.model = model.eval()
        self.config = config
        self.statistics = statistics or {}
        self.ckpt_path = str(ckpt_path)
        twin = TwinBrainConfig.from_omegaconf(config)  # the run's sections, typed (validated when it was trained)
        self.action_chunk_size = twin.action_model.action_horizon
        self.action_dim = twin.action_model.action_dim
        self.include_state = twin.include_state
        self.state_dim = twin.state_dim
        self.normalization = config_select(config, "datasets.vla_data.normalization", DataSection().normalization)
        self.image_size = obs_image_size(config)  # (height, width) training used; 224 for starVLA-trained runs
        if unnorm_key is not None and unnorm_key not in self.statistics:
            raise ValueError(f"unnorm_key {unnorm_key!r} is not in the run's statistics {sorted(self.statistics)}")
        self.default_unnorm_key = unnorm_key or (next(iter(self.statistics)) if len(self.statistics) == 1 else None)
        self.max_prompt_tokens = twin.options.max_prompt_tokens
        trained_max = twin.options.max_images_per_example
        self.max_images = trained_max if max_images is None else max_images
        self.max_batch = max_batch
        for name, value in (("--max-batch", max_batch), ("--max-images", self.max_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if self.max_images > trained_max:  # the model's own check would refuse them anyway
            raise ValueError(f"--max-images={self.max_images}: the run allows at most {trained_max} "
                             f"(framework.twinbrain.max_images_per_example)")

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, device: str = "auto", bf16: bool = False,
                        unnorm_key: str | None = None, compile_head: bool = False,
                        max_batch: int = MAX_EXAMPLES_PER_REQUEST, max_images: int | None = None) -> "ServedPolicy":
        from ..framework.twinbrain import InferenceCompiledDiT
        from ..framework.pretrained import load_framework

        target = pick_device(device)
        if bf16 and target.type != "cuda":
            logger.warning("--bf16 on %s: bfloat16 is meant for GPUs; on CPU it is slow and less precise", target)
        model = load_framework(ckpt_path)
        # Serving precision follows the serving device and --bf16 alone, whatever the machine or the checkpoint:
        # bf16 with --bf16, else fp32 (so `--device cpu` on a GPU machine serves fp32).
        model = model.to(target, dtype=torch.bfloat16 if bf16 else torch.float32)
        if compile_head and model.compiled_head is None:
            model.compiled_head = InferenceCompiledDiT()
        # the run's config.yaml, as loaded
        return cls(model, model.config, model.norm_stats, ckpt_path, unnorm_key, max_batch, max_images)

    @property
    def metadata(self) -> dict:
        """Sent to every client on connect (starVLA's keys, plus what a client needs to build observations)."""
        param = next(self.model.parameters())
        return {
            "env": "starvla_policy_server",
            "server": "starvla-twinbrain",
            "framework": str(OmegaConf.select(self.config, "framework.name")),
            "ckpt_path": self.ckpt_path,
            "action_chunk_size": self.action_chunk_size,
            "action_dim": self.action_dim,
            "include_state": self.include_state,
            "state_dim": self.state_dim,
            "available_unnorm_keys": sorted(self.statistics),
            "default_unnorm_key": self.default_unnorm_key,
            "normalization": self.normalization,
            "state_statistics": {k: v["state"] for k, v in self.statistics.items() if "state" in v},
            "training_data_mix": OmegaConf.select(self.config, "datasets.vla_data.data_mix"),
            "training_obs_image_size": list(self.image_size),
            "device": str(param.device),
            "dtype": str(param.dtype).replace("torch.", ""),
            "compiled_head": getattr(self.model, "compiled_head", None) is not None,
            "left_precision": self.left_precision,
            "right_lora": OmegaConf.select(self.config, "framework.twinbrain.right_lora") is not None,
            "request_types": ["infer", "ping", "chat"],
            "limits": self.limits,
        }

    @property
    def left_precision(self) -> str | None:
        """The Left Brain's weight precision (``framework.twinbrain.left_precision``): it is the Left that chats."""
        return getattr(self.model, "left_precision", None)

    @property
    def limits(self) -> dict:
        """What one request may ask for; more is answered with an error naming the field and the limit."""
        return {"max_batch": self.max_batch, "max_images_per_example": self.max_images,
                "max_prompt_tokens": self.max_prompt_tokens, "max_image_side": MAX_IMAGE_SIDE,
                "max_new_tokens": MAX_NEW_TOKENS}

    # ------------------------------------------------------------------ checks
    def _states(self, examples: list[dict]) -> list[np.ndarray] | None:
        """The examples' states as ``float32 [1, state_dim]``: the framework's check (presence, shape, finite), then
        the wire format's (a float array, in the training normalisation)."""
        try:
            states = validate_states(examples, self.state_dim, self.include_state)
        except ValueError as err:
            raise RequestError(str(err)) from None
        if states is None:
            return None
        for b, ex in enumerate(examples):
            value = ex["state"]
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                got = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
                raise RequestError(f"examples[{b}]['state']: expected a float array [1, {self.state_dim}], got {got}")
        return [state.numpy().reshape(1, self.state_dim) for state in states]

    def default_robot_type(self, unnorm_key: str) -> str | None:
        """The robot type training used for this statistics key: the embedded runtime records the dataset's
        (``robot_type``, null for the prompts' default); starVLA keys its statistics by the robot tag itself."""
        entry = self.statistics.get(unnorm_key, {})
        return entry["robot_type"] if "robot_type" in entry else unnorm_key

    def check_examples(self, examples: Any, default_robot_type: str | None = None) -> list[dict]:
        """Validated copies of the request's examples, images as PIL at the training size. An example's optional
        ``robot_type`` (the Right prompt's "Robot Type:") defaults to ``default_robot_type``."""
        if not isinstance(examples, (list, tuple)) or not examples:
            raise RequestError(f"examples: expected a non-empty list of dicts, got {type(examples).__name__}"
                               + (" (empty)" if isinstance(examples, (list, tuple)) else ""))
        if len(examples) > self.max_batch:
            raise RequestError(f"examples: {len(examples)} examples; at most {self.max_batch} per request "
                               f"(starvla serve --max-batch)")
        checked = []
        for b, ex in enumerate(examples):
            where = f"examples[{b}]"
            if not isinstance(ex, dict):
                raise RequestError(f"{where}: expected a dict with 'image' and 'lang', got {type(ex).__name__}")
            lang = ex.get("lang")
            if not isinstance(lang, str) or not lang.strip():
                raise RequestError(f"{where}.lang: expected a non-empty instruction string, got {lang!r}")
            item = {"image": _images(ex.get("image"), f"{where}.image", self.image_size, self.max_images), "lang": lang}
            robot_type = ex.get("robot_type", default_robot_type)
            if robot_type is not None:
                if not isinstance(robot_type, str) or not robot_type.strip() or len(robot_type) > MAX_ROBOT_TYPE_CHARS:
                    got = f"a string of {len(robot_type)} characters" if isinstance(robot_type, str) else repr(robot_type)
                    raise RequestError(f"{where}.robot_type: expected a non-empty string of at most "
                                       f"{MAX_ROBOT_TYPE_CHARS} characters, got {got}")
                item["robot_type"] = robot_type
            checked.append(item)
        states = self._states(examples)
        for item, state in zip(checked, states or ()):
            item["state"] = state
        return checked

    def _unnorm_key(self, unnorm_key: str | None) -> str:
        key = unnorm_key if unnorm_key is not None else self.default_unnorm_key
        if key is None:
            raise RequestError(f"unnorm_key: required, this run has statistics for {sorted(self.statistics)}")
        if key not in self.statistics:
            raise RequestError(f"unnorm_key: {key!r} is not one of {sorted(self.statistics)}")
        return key

    # ------------------------------------------------------------------ requests
    def predict_action(self, examples: Any = None, unnorm_key: str | None = None, seed: int | None = None,
                       **kwargs) -> dict:
        """Un-normalised action chunks. ``seed`` fixes the sampled noise (see the framework's ``predict_action``);
        other kwargs go to the framework, which ignores what it does not use (e.g. ``use_ddim``)."""
        key = self._unnorm_key(unnorm_key)
        checked = self.check_examples(examples, self.default_robot_type(key))
        stats = self.statistics[key]["action"]
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError(f"seed: expected an integer, got {seed!r}")
        try:  # the prompt's length is checked by the model's own tokenisation, before it runs
            normalized = self.model.predict_action(checked, seed=seed, **kwargs)["normalized_actions"]
        except InputTooLarge as err:
            raise RequestError(str(err)) from None
        normalized = np.asarray(normalized, dtype=np.float32)
        actions = unnormalize(normalized, stats, self.normalization)
        if not np.isfinite(actions).all():  # never send a silently wrong action
            raise RuntimeError("the model produced non-finite actions")
        return {"actions": actions}

    def chat(self, image: Any = None, question: Any = None, max_new_tokens: Any = 64, **kwargs) -> dict:
        """The Left Brain (the base VLM, unchanged by training) answers a question about images."""
        if not isinstance(question, str) or not question.strip():
            raise RequestError(f"question: expected a non-empty string, got {question!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 0 < max_new_tokens <= MAX_NEW_TOKENS:
            raise RequestError(f"max_new_tokens: expected an integer in 1..{MAX_NEW_TOKENS}, got {max_new_tokens!r}")
        images = _images(image, "image", None, self.max_images)
        if kwargs:
            raise RequestError(f"chat: unknown fields {sorted(kwargs)}; expected image, question, max_new_tokens")
        try:
            return {"answer": self.model.chat(images, question, max_new_tokens=max_new_tokens),
                    "left_precision": self.left_precision}  # which Left answered: int8 or as the base
        except InputTooLarge as err:
            raise RequestError(str(err)) from None

