"""Typed, frozen configuration of TwinBrain. Defaults live here and nowhere else.

The starVLA YAML stays the source format (DESIGN §3): host keys are read where starVLA puts them
(``framework.qwenvl.base_vlm``, ``framework.qwenvl.attn_implementation``); TwinBrain-only options live under
``framework.twinbrain``. Every error names the dotted key, the bad value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

ConditionMode = Literal["all_tokens", "action_queries"]
StateInto = Literal["right", "head", "both"]
AttentionBackend = Literal["eager", "sdpa", "flash_attention_2", "flex_attention"]
# framework.twinbrain.cross_attention: how the Right Brain sees the Left Brain (README, "Faithfulness to the paper").
#   asymmetric: the paper's AsyMoT, the Right attends over [sg(K_L); K_R], the Left only to itself;
#   none: no Left on the action path: the single-brain model through the same code, prompts and head.
CrossAttention = Literal["asymmetric", "none"]

LEFT_SYSTEM_PROMPT = "You are a helpful robot brain that can understand images and texts."
LEFT_USER_PROMPT = "Instruction: {instruction}"
RIGHT_SYSTEM_PROMPT = (
    "You are a helpful robot brain that can understand images, texts, and robot states.\n"
    "You will be provided with observation, an instruction, and the robot state. Take action to execute the instruction."
)
RIGHT_USER_PROMPT = (
    "Instruction: {instruction}\nRobot Type: {robot_type}\n"
    "Predict the next action for the robot based on the observation, instruction and robot type."
)


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r}: expected one of {' | '.join(map(str, choices))}")


def _check_positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key}={value!r}: expected a positive integer")


# Input limits: what one example may cost. Real instructions are tens of tokens and real robots have 1-4 cameras;
# a prompt of 1024 tokens holds the template (~100), a 2,000-character instruction and four 224x224 images (64
# tokens each in Qwen2.5-VL, 49 in Qwen3-VL). Attention costs the square of it: at the edge of every limit at once
# the tiny CPU model already needs seconds and GBs (README, Serve).
MAX_PROMPT_TOKENS = 1024  # framework.twinbrain.max_prompt_tokens: each brain's whole prompt, image tokens included
MAX_IMAGES_PER_EXAMPLE = 4  # framework.twinbrain.max_images_per_example
MAX_EXAMPLES_PER_REQUEST = 32  # the policy server's default (starvla serve --max-batch)


@dataclass(frozen=True)
class PromptConfig:
    """The paper's prompts (appendix). ``{instruction}`` and ``{robot_type}`` are filled per sample; the images
    come first in each user turn and go through the VLM's own chat template."""

    left_system: str = LEFT_SYSTEM_PROMPT
    left_user: str = LEFT_USER_PROMPT
    right_system: str = RIGHT_SYSTEM_PROMPT
    right_user: str = RIGHT_USER_PROMPT
    default_robot_type: str = "robot"  # used when a sample carries no robot tag

    def __post_init__(self):
        for name in ("left_user", "right_user"):
            if "{instruction}" not in getattr(self, name):
                raise ValueError(f"framework.twinbrain.prompts.{name} must contain '{{instruction}}'")


@dataclass(frozen=True)
class BackboneConfig:
    """What the dual-brain backbone needs; built from the YAML by the framework, or directly in Python."""

    base_vlm: str  # framework.qwenvl.base_vlm: local path or hub id of a Qwen2.5-VL / Qwen3-VL checkpoint
    attn_implementation: AttentionBackend | None = None  # framework.qwenvl.attn_implementation; None = best available
    condition: ConditionMode = "all_tokens"  # head condition: all valid Right tokens, or N learned query tokens
    num_action_queries: int = 32  # only for condition == "action_queries"
    state_dim: int | None = None  # robot state size; None = no state encoder (no state tokens)
    num_state_tokens: int = 1
    state_hidden_dim: int = 1024  # width of the state-encoder MLP
    freeze_right_vision: bool = False  # keep the Right Brain's vision tower frozen
    gradient_checkpointing: bool = False  # recompute the Right Brain's decoder layers in backward (less memory)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    max_prompt_tokens: int = MAX_PROMPT_TOKENS  # longer prompts are refused before the model runs
    max_images_per_example: int = MAX_IMAGES_PER_EXAMPLE
    cross_attention: CrossAttention = "asymmetric"  # framework.twinbrain.cross_attention

    def __post_init__(self):
        if not isinstance(self.base_vlm, str) or not self.base_vlm.strip():
            raise ValueError(f"framework.qwenvl.base_vlm={self.base_vlm!r}: expected the path or hub id of a Qwen-VL model")
        if self.attn_implementation is not None:
            _check_choice("framework.qwenvl.attn_implementation", self.attn_implementation, get_args(AttentionBackend))
        _check_choice("framework.twinbrain.condition", self.condition, get_args(ConditionMode))
        _check_positive_int("framework.twinbrain.num_action_queries", self.num_action_queries)
        if self.state_dim is not None:
            _check_positive_int("framework.action_model.state_dim", self.state_dim)
        _check_positive_int("framework.twinbrain.num_state_tokens", self.num_state_tokens)
        _check_positive_int("framework.twinbrain.state_hidden_dim", self.state_hidden_dim)
        _check_positive_int("framework.twinbrain.max_prompt_tokens", self.max_prompt_tokens)
        _check_positive_int("framework.twinbrain.max_images_per_example", self.max_images_per_example)
        _check_choice("framework.twinbrain.cross_attention", self.cross_attention, get_args(CrossAttention))


# ----------------------------------------------------------------------------------------------------------
# The starVLA YAML → one typed tree. Only the keys TwinBrain reads; the rest belongs to the host.
# ----------------------------------------------------------------------------------------------------------

LeftBrainStorage = Literal["reference", "copy"]


@dataclass(frozen=True)
class TwinBrainOptions:
    """``framework.twinbrain``: TwinBrain-only options. An unmodified starVLA YAML needs none of them."""

    condition: ConditionMode = "all_tokens"
    num_action_queries: int = 32
    num_state_tokens: int = 1
    state_hidden_dim: int = 1024
    freeze_right_vision: bool = False
    gradient_checkpointing: bool = False
    compile_action_head: bool = False  # torch.compile the head's DiT (it runs num_inference_timesteps times per chunk)
    left_brain_storage: LeftBrainStorage = "reference"  # checkpoints hold a (path, hash) reference, or the weights
    # Where the robot state enters: "right" = state tokens appended to the Right Brain's input (paper eq. 3, the head
    # sees only the Right's hidden states); "head" = the action head's own state token only (GR00T's path, and the
    # released PhysBrain-VLA code's only one); "both" = the two at once.
    state_into: StateInto = "right"
    prompts: PromptConfig = field(default_factory=PromptConfig)
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_images_per_example: int = MAX_IMAGES_PER_EXAMPLE
    truncate_long_prompts: bool = False  # training only: cut an over-long instruction instead of stopping the run
    # The experiment switches (README, "Faithfulness to the paper"); a checkpoint records them (see VARIANT_KEYS).
    cross_attention: CrossAttention = "asymmetric"

    def __post_init__(self):
        _check_choice("framework.twinbrain.left_brain_storage", self.left_brain_storage, get_args(LeftBrainStorage))
        _check_choice("framework.twinbrain.state_into", self.state_into, get_args(StateInto))
        _check_choice("framework.twinbrain.cross_attention", self.cross_attention, get_args(CrossAttention))

    @property
    def variant(self) -> dict:
        """The switches that change what the backbone computes, as a checkpoint records them."""
        return {key: getattr(self, key) for key in VARIANT_KEYS}


VARIANT_KEYS = ("cross_attention",)


# framework.action_model defaults: those of starVLA's QwenGR00T, so a QwenGR00T YAML switched to TwinBrain builds
# the same head (and starVLA's DiT, which would otherwise default to sinusoidal block embeddings, agrees).
ACTION_MODEL_DEFAULTS = {
    "action_model_type": "DiT-B",
    "hidden_size": 1024,
    "add_pos_embed": True,
    "max_seq_len": 1024,
    "repeated_diffusion_steps": 8,
    "noise_beta_alpha": 1.5,
    "noise_beta_beta": 1.0,
    "noise_s": 0.999,
    "num_timestep_buckets": 1000,
    "num_inference_timesteps": 4,
    "num_target_vision_tokens": 32,
    "time_distribution": "uniform",  # the paper: t ~ U[0, 1]; "beta" is GR00T's Beta(noise_beta_alpha, noise_beta_beta)
    "diffusion_model_cfg": {
        "dropout": 0.2,
        "final_dropout": True,
        "interleave_self_attention": True,
        "norm_type": "ada_norm",
        "num_layers": 16,
        "output_dim": 1024,
        "positional_embeddings": None,
    },
}


def _with_defaults(section: dict, defaults: dict) -> dict:
    merged = dict(section)
    for key, value in defaults.items():
        if isinstance(value, dict):
            merged[key] = _with_defaults(merged.get(key) or {}, value)
        else:
            merged.setdefault(key, value)
    return merged


# starVLA's LeRobot loader resizes every camera image to 224x224 (whatever the YAML says), so a checkpoint trained
# there has no obs_image_size in its saved config and was trained at 224. The framework never reads the key: under
# starVLA's trainer, reading it would save the YAML's value, which its loader ignored.
DEFAULT_OBS_IMAGE_SIZE = (224, 224)


def obs_image_size(cfg) -> tuple[int, int]:
    """``datasets.vla_data.obs_image_size`` as (height, width): the size every camera image is resized to, in
    training and in serving. One integer (square) or ``[height, width]`` (the order starVLA's server reports as
    ``training_obs_image_size`` and its client reads back); :data:`DEFAULT_OBS_IMAGE_SIZE` when absent."""
    size = config_to_dict(config_select(cfg, "datasets.vla_data.obs_image_size"))
    if size is None:
        return DEFAULT_OBS_IMAGE_SIZE
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"datasets.vla_data.obs_image_size={size!r}: expected a positive integer or [height, width]")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class TwinBrainConfig:
    backbone: BackboneConfig
    options: TwinBrainOptions
    action_model: dict  # framework.action_model, as the YAML gives it (the head validates its own keys)
    include_state: bool  # datasets.vla_data.include_state

    @property
    def head_state_dim(self) -> int | None:
        """The action head's state size: set only when the state goes to the head (``state_into: head | both``)."""
        if self.include_state and self.options.state_into in ("head", "both"):
            return int(self.action_model["state_dim"])
        return None

    @classmethod
    def from_omegaconf(cls, cfg) -> "TwinBrainConfig":
        """Read the keys TwinBrain needs from a starVLA config; errors name the dotted key."""
        def select(key: str, default=None):
            return config_select(cfg, key, default)

        base_vlm = select("framework.qwenvl.base_vlm")
        if base_vlm is None:
            raise ValueError("framework.qwenvl.base_vlm is missing: set it to the path of a Qwen2.5-VL / Qwen3-VL checkpoint")
        action_model = config_to_dict(select("framework.action_model"))
        if not isinstance(action_model, dict):
            raise ValueError("framework.action_model is missing: TwinBrain needs the action head's section")
        action_model = _with_defaults(action_model, ACTION_MODEL_DEFAULTS)
        for key in ("action_dim", "action_horizon"):
            if key not in action_model:
                raise ValueError(f"framework.action_model.{key} is missing")
        include_state = select("datasets.vla_data.include_state", default=False)
        if not isinstance(include_state, bool):
            raise ValueError(f"datasets.vla_data.include_state={include_state!r}: expected true or false")
        if include_state and action_model.get("state_dim") is None:
            raise ValueError("datasets.vla_data.include_state is true but framework.action_model.state_dim is not set")

        raw = config_to_dict(select("framework.twinbrain")) or {}
        options = _build_dataclass(TwinBrainOptions, raw, "framework.twinbrain")
        backbone = BackboneConfig(
            base_vlm=str(base_vlm),
            attn_implementation=select("framework.qwenvl.attn_implementation"),
            condition=options.condition,
            num_action_queries=options.num_action_queries,
            state_dim=int(action_model["state_dim"]) if include_state and options.state_into != "head" else None,
            num_state_tokens=options.num_state_tokens,
            state_hidden_dim=options.state_hidden_dim,
            freeze_right_vision=options.freeze_right_vision,
            gradient_checkpointing=options.gradient_checkpointing,
            prompts=options.prompts,
            max_prompt_tokens=options.max_prompt_tokens,
            max_images_per_example=options.max_images_per_example,
            cross_attention=options.cross_attention,
        )
        return cls(backbone=backbone, options=options, action_model=action_model, include_state=include_state)

    def write_back(self, cfg) -> None:
        """Store the resolved ``framework.twinbrain`` in ``cfg``: starVLA saves only keys that were read, and
        ``from_pretrained`` must rebuild the same model."""
        from dataclasses import asdict

        from omegaconf import OmegaConf

        config_set(cfg.framework, "twinbrain", OmegaConf.create(asdict(self.options)))
        config_set(cfg.framework, "action_model",
                   OmegaConf.merge(config_to_dict(cfg.framework.action_model), self.action_model))
        # read every key back through the host's config so that a tracking host saves all of them
        config_to_dict(cfg.framework.twinbrain), config_to_dict(cfg.framework.action_model)


# The host hands __init__ either an OmegaConf DictConfig or starVLA's AccessTrackedConfig (its trainer wraps the
# config to save only the keys a run read). Both support ``key in node``, ``node[key]``, ``keys()`` and item
# assignment, and reading through them marks keys as used, so these helpers use nothing else.


def _is_mapping(node) -> bool:
    from omegaconf import DictConfig

    inner = node.unwrap() if hasattr(node, "unwrap") else node
    return isinstance(inner, (DictConfig, dict))


def _is_sequence(node) -> bool:
    from omegaconf import ListConfig

    inner = node.unwrap() if hasattr(node, "unwrap") else node
    return isinstance(inner, (ListConfig, list, tuple))


def config_select(cfg, dotted: str, default=None):
    """``cfg.a.b.c`` or ``default`` if any part is missing."""
    node = cfg
    for part in dotted.split("."):
        if node is None or not _is_mapping(node) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def config_to_dict(node):
    """A plain (resolved) dict/list/value from a config node; None stays None."""
    if node is None:
        return None
    if _is_mapping(node):
        return {str(k): config_to_dict(node[k]) for k in list(node.keys())}
    if _is_sequence(node):
        return [config_to_dict(v) for v in node]
    return node


def config_set(node, key: str, value) -> None:
    """``node[key] = value``, also where the config is in struct mode."""
    from omegaconf import open_dict

    inner = node.unwrap() if hasattr(node, "unwrap") else node
    with open_dict(inner):
        node[key] = value


def _build_dataclass(kind, raw: dict, prefix: str):
    """A (nested) frozen dataclass from a dict; unknown keys are errors with a suggestion."""
    import difflib
    from dataclasses import fields, is_dataclass

    if not isinstance(raw, dict):
        raise ValueError(f"{prefix}: expected a mapping, got {raw!r}")
    known = {f.name: f for f in fields(kind)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {prefix}.{close[0]}?" if close else f" Known keys: {', '.join(known)}."
            raise ValueError(f"{prefix}.{key} is not a TwinBrain option.{hint}")
    values = {}
    for key, value in raw.items():
        default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default
        if is_dataclass(default):
            values[key] = _build_dataclass(type(default), value, f"{prefix}.{key}")
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{prefix}.{key}={value!r}: expected true or false")
        elif isinstance(default, int) and not isinstance(default, bool) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{prefix}.{key}={value!r}: expected an integer")
        else:
            values[key] = value
    try:
        return kind(**values)
    except ValueError as err:
        raise ValueError(str(err)) from None
