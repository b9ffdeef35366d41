"""``--policy.type=twinbrain``: LeRobot's config for TwinBrain.

The TwinBrain options and the action head are the starVLA YAML's sections, passed through as they are
(``--policy.twinbrain='{"state_hidden_dim": 64}'``, ``--policy.action_model='{"hidden_size": 128, ...}'``) and
validated by ``starvla_twinbrain`` itself when the policy is built, so defaults and checks live in one place.
``action_dim`` and ``state_dim`` come from the dataset's features and ``action_horizon`` from ``chunk_size``.

Normalisation: state and action use LeRobot's ``MIN_MAX`` mode, which maps the dataset's [min, max] to [-1, 1],
as starVLA's ``min_max`` does, from ``meta/stats.json``: the head's flow-matching targets stay in [-1, 1] like
starVLA's. A constant dimension maps to -1 (starVLA passes it through); both are exact round trips. starVLA's
default, ``q99`` (= LeRobot's ``QUANTILES``), is not the default here because LeRobot's version neither clips nor
guards a dimension whose q01 equals its q99 while its values vary: on ``make_synthetic_dataset``'s data it
normalised the state's colour code to -2e8. Choose it with ``--policy.normalization_mapping='{"VISUAL":
"IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}'``. Cameras stay float [0, 1] (IDENTITY): the VLM's own
processor normalises pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lerobot.configs import FeatureType, NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig, CosineDecayWithWarmupSchedulerConfig
from lerobot.utils.constants import ACTION, OBS_STATE


@PreTrainedConfig.register_subclass("twinbrain")
@dataclass
class TwinBrainConfig(PreTrainedConfig):
    # The base VLM (framework.qwenvl.base_vlm): a local Qwen2.5-VL / Qwen3-VL checkpoint or a cached hub id. The Left
    # Brain is this checkpoint, unchanged; checkpoints store it by reference (path + sha256), not its weights.
    base_vlm: str = ""
    attn_implementation: str | None = None  # framework.qwenvl.attn_implementation; None = best available

    # framework.twinbrain and framework.action_model sections of the starVLA YAML (see module docstring).
    twinbrain: dict[str, Any] = field(default_factory=dict)
    action_model: dict[str, Any] = field(default_factory=dict)

    n_obs_steps: int = 1
    chunk_size: int = 16  # framework.action_model.action_horizon
    n_action_steps: int = 16  # actions of each chunk that select_action plays before predicting again
    include_state: bool = True  # feed observation.state to the Right Brain and the head (datasets.vla_data.include_state)
    robot_type: str | None = None  # the Right Brain's "Robot Type:" prompt; None = framework.twinbrain.prompts default
    image_size: tuple[int, int] | None = None  # resize cameras to (height, width) first, as starVLA's obs_image_size

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MIN_MAX,
            "ACTION": NormalizationMode.MIN_MAX,
        }
    )

    # Training presets: the paper's AdamW (betas 0.9/0.95, weight decay 1e-8, clip 1.0) with its two learning
    # rates, the Right Brain's (optimizer_lr_right_brain) and that of the state encoder and head (optimizer_lr).
    optimizer_lr: float = 1e-4
    optimizer_lr_right_brain: float = 1e-5
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-8
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 2_000
    scheduler_decay_steps: int = 40_000
    scheduler_decay_lr: float = 5e-7

    def __post_init__(self):
        super().__post_init__()
        for name in ("chunk_size", "n_action_steps", "n_obs_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"--policy.{name}={value!r}: expected a positive integer")
        if self.n_obs_steps != 1:
            raise ValueError(f"--policy.n_obs_steps={self.n_obs_steps}: TwinBrain sees the current frame only (1)")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"--policy.n_action_steps={self.n_action_steps} is larger than --policy.chunk_size="
                             f"{self.chunk_size}: a chunk has only chunk_size actions to play")
        for name in ("twinbrain", "action_model"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"--policy.{name}: expected a mapping (JSON object), got {getattr(self, name)!r}")
        for key in ("action_dim", "state_dim", "action_horizon"):
            if key in self.action_model:
                source = "--policy.chunk_size" if key == "action_horizon" else "the dataset's features"
                raise ValueError(f"--policy.action_model.{key}: set by {source}, leave it out")

    def validate_features(self) -> None:
        if not self.base_vlm:
            raise ValueError("--policy.base_vlm is empty: set it to the path of a Qwen2.5-VL / Qwen3-VL checkpoint")
        if not self.image_features:
            raise ValueError(f"policy input features {list(self.input_features or {})} have no camera "
                             "(FeatureType.VISUAL): TwinBrain needs at least one image")
        if self.action_feature is None:
            raise ValueError(f"policy output features {list(self.output_features or {})} have no {ACTION!r}")
        if self.include_state and self.robot_state_feature is None:
            raise ValueError(f"--policy.include_state=true but the input features have no {OBS_STATE!r} "
                             f"(they are {list(self.input_features or {})}); set --policy.include_state=false")

    def framework_config(self):
        """The starVLA-schema config (OmegaConf) that ``starvla_twinbrain``'s ``TwinBrain`` is built from."""
        from omegaconf import OmegaConf

        self.validate_features()
        action_model = {**self.action_model, "action_dim": int(self.action_feature.shape[-1]),
                        "action_horizon": self.chunk_size}
        if self.include_state:
            action_model["state_dim"] = int(self.robot_state_feature.shape[-1])
        qwenvl = {"base_vlm": self.base_vlm}
        if self.attn_implementation is not None:
            qwenvl["attn_implementation"] = self.attn_implementation
        return OmegaConf.create({
            "framework": {"name": "TwinBrain", "qwenvl": qwenvl, "action_model": action_model,
                          "twinbrain": dict(self.twinbrain)},
            "datasets": {"vla_data": {"include_state": self.include_state}},
        })

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, betas=self.optimizer_betas, eps=self.optimizer_eps,
                           weight_decay=self.optimizer_weight_decay, grad_clip_norm=self.optimizer_grad_clip_norm)

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(peak_lr=self.optimizer_lr, decay_lr=self.scheduler_decay_lr,
                                                    num_warmup_steps=self.scheduler_warmup_steps,
                                                    num_decay_steps=self.scheduler_decay_steps)

    @property
    def observation_delta_indices(self) -> None:
        return None  # the current frame only

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))  # the chunk starts at the current frame, as starVLA's

    @property
    def reward_delta_indices(self) -> None:
        return None
