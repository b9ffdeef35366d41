"""The model core's own configuration: what the dual-brain backbone computes. No YAML here.

Errors are :class:`OptionError`: they name this module's arguments (``cross_layers='odd': ...``). A host that builds
the backbone from its own configuration file maps ``OptionError.field`` to its key (the framework adds
``framework.twinbrain.`` and friends, see ``starvla_twinbrain/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

ConditionMode = Literal["all_tokens", "action_queries"]
AttentionBackend = Literal["eager", "sdpa", "flash_attention_2", "flex_attention"]
# How the two brains see each other. asymmetric: the paper's AsyMoT, the Right attends over [sg(K_L); K_R], the Left
# only to itself; bidirectional: the Left also attends over [K_L; sg(K_R)] (the released code's ablation mode);
# none: no Left on the action path (the single-brain model through the same code, prompts and head).
CrossAttention = Literal["asymmetric", "bidirectional", "none"]
# The text layers with joint attention: all, or the odd ones (1, 3, 5, ...; the released code's rotation_mot "1");
# on the others each brain attends to its own tokens only.
CrossLayers = Literal["all", "odd"]

# Input limits: what one example may cost. Real instructions are tens of tokens and real robots have 1-4 cameras;
# a prompt of 1024 tokens holds the template (~100), a 2,000-character instruction and four 224x224 images (64
# tokens each in Qwen2.5-VL, 49 in Qwen3-VL). Attention costs the square of it: at the edge of every limit at once
# the tiny CPU model already needs seconds and GBs (README, Serve).
MAX_PROMPT_TOKENS = 1024
MAX_IMAGES_PER_EXAMPLE = 4

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
# The decoder's linear projections of both families (Qwen2.5-VL and Qwen3-VL name them alike).
LORA_DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class OptionError(ValueError):
    """A bad argument: ``field`` is its name here (``prompts.left_user``, ``cross_layers``), ``str(err)`` starts
    with it; hosts re-raise it under their own key with :meth:`under`."""

    def __init__(self, field: str, rest: str):
        super().__init__(f"{field}{rest}")
        self.field, self.rest = field, rest

    def under(self, key: str) -> ValueError:
        """The same message, naming ``key`` (the host's name of ``field``) instead."""
        return ValueError(f"{key}{self.rest}")


class MissingPackage(ImportError):
    """An option needs a package that is not installed; ``field`` names the option, as in :class:`OptionError`."""

    def __init__(self, field: str, rest: str):
        super().__init__(f"{field}{rest}")
        self.field, self.rest = field, rest

    def under(self, key: str) -> ImportError:
        return ImportError(f"{key}{self.rest}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise OptionError(name, f"={value!r}: expected one of {' | '.join(map(str, choices))}")


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OptionError(name, f"={value!r}: expected a positive integer")


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
                raise OptionError(f"prompts.{name}", " must contain '{instruction}'")


@dataclass(frozen=True)
class RightLoraConfig:
    """LoRA adapters (the ``peft`` library) on the Right Brain. Module names are matched by suffix within the
    decoder / the vision tower only."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_DECODER_TARGETS  # in right_brain.language_model
    vision_target_modules: tuple[str, ...] = ()  # in right_brain.visual; empty: the Right's tower stays frozen

    def __post_init__(self):
        check_positive_int("right_lora.r", self.r)
        check_positive_int("right_lora.alpha", self.alpha)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise OptionError("right_lora.dropout", f"={self.dropout!r}: expected a number in [0, 1)")
        for name in ("target_modules", "vision_target_modules"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) and v.strip() for v in value):
                raise OptionError(f"right_lora.{name}", f"={value!r}: expected a list of module names, e.g. [q_proj, v_proj]")
            object.__setattr__(self, name, tuple(value))  # lists arrive from YAML; hashable and saved alike
        if not self.target_modules and not self.vision_target_modules:
            raise OptionError("right_lora", ": target_modules and vision_target_modules are both empty: nothing to adapt")


@dataclass(frozen=True, kw_only=True)
class BackboneOptions:
    """How the backbone computes, beyond which model it loads. Each field's default is the paper's setting."""

    condition: ConditionMode = "all_tokens"  # head condition: all valid Right tokens, or N learned query tokens
    num_action_queries: int = 32  # only for condition == "action_queries"
    num_state_tokens: int = 1
    state_hidden_dim: int = 1024  # width of the state-encoder MLP
    freeze_right_vision: bool = False  # keep the Right Brain's vision tower frozen
    gradient_checkpointing: bool = False  # recompute the Right Brain's decoder layers in backward (less memory)
    share_prefix: bool = True  # the Left's common prompt prefix: K/V computed once, not per row (exact)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    max_prompt_tokens: int = MAX_PROMPT_TOKENS  # each brain's whole prompt, image tokens included; longer is refused
    max_images_per_example: int = MAX_IMAGES_PER_EXAMPLE
    cross_attention: CrossAttention = "asymmetric"
    cross_layers: CrossLayers = "all"
    left_trainable: bool = False  # the ablation where the Left learns too (its K/V keep their gradient)

    def __post_init__(self):
        check_choice("condition", self.condition, get_args(ConditionMode))
        for name in ("num_action_queries", "num_state_tokens", "state_hidden_dim", "max_prompt_tokens",
                     "max_images_per_example"):
            check_positive_int(name, getattr(self, name))
        for name in ("freeze_right_vision", "gradient_checkpointing", "share_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"={getattr(self, name)!r}: expected true or false")
        check_switches(self.cross_attention, self.cross_layers, self.left_trainable)
        if self.gradient_checkpointing and self.left_trainable and self.cross_attention == "bidirectional":
            # The trainable Left is advanced from inside the Right's layers, so a recomputation would miss its graph.
            raise OptionError("gradient_checkpointing", "=true is not supported with cross_attention='bidirectional' "
                              "and left_trainable=true: set gradient_checkpointing: false")

    @property
    def variant(self) -> dict:
        """The switches that change what the backbone computes, as a checkpoint records them."""
        return {key: getattr(self, key) for key in VARIANT_KEYS}


VARIANT_KEYS = ("cross_attention", "cross_layers", "left_trainable")


def check_switches(cross_attention, cross_layers, left_trainable) -> None:
    """The values of the experiment switches, and the combinations that have no meaning."""
    check_choice("cross_attention", cross_attention, get_args(CrossAttention))
    check_choice("cross_layers", cross_layers, get_args(CrossLayers))
    if not isinstance(left_trainable, bool):
        raise OptionError("left_trainable", f"={left_trainable!r}: expected true or false")
    if cross_attention == "none" and cross_layers != "all":
        raise OptionError("cross_layers", f"={cross_layers!r} with cross_attention='none': there is no joint "
                          "attention to place on layers; leave cross_layers at 'all'")
    if cross_attention == "none" and left_trainable:
        raise OptionError("left_trainable", "=true with cross_attention='none': the Left Brain is not on the action "
                          "path, so it would get no gradient; set left_trainable: false")


@dataclass(frozen=True, kw_only=True)
class BackboneConfig(BackboneOptions):
    """What the dual-brain backbone needs: the model to load twice, and the options."""

    base_vlm: str  # local path or hub id of a Qwen2.5-VL / Qwen3-VL checkpoint
    attn_implementation: Optional[AttentionBackend] = None  # None = the best available for the device
    state_dim: Optional[int] = None  # robot state size; None = no state encoder (no state tokens)

    def __post_init__(self):
        if not isinstance(self.base_vlm, str) or not self.base_vlm.strip():
            raise OptionError("base_vlm", f"={self.base_vlm!r}: expected the path or hub id of a Qwen-VL model")
        if self.attn_implementation is not None:
            check_choice("attn_implementation", self.attn_implementation, get_args(AttentionBackend))
        if self.state_dim is not None:
            check_positive_int("state_dim", self.state_dim)
        super().__post_init__()


# starVLA's DiT sizes: width (input_embedding_dim), heads, head dim.
DIT_SIZES = {"DiT-B": (768, 12, 64), "DiT-L": (1536, 32, 48)}


@dataclass(frozen=True)
class ActionHeadConfig:
    """The head's arguments (starVLA's ``framework.action_model`` with ``diffusion_model_cfg`` flattened in); the
    defaults are starVLA's QwenGR00T defaults. Errors (:class:`OptionError`) name the argument."""

    action_dim: int
    action_horizon: int
    cross_attention_dim: int
    state_dim: int | None = None
    action_model_type: str = "DiT-B"
    hidden_size: int = 1024  # MLP width of the state encoder and action decoder
    add_pos_embed: bool = True
    max_seq_len: int = 1024
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    num_timestep_buckets: int = 1000
    num_inference_timesteps: int = 4
    num_target_vision_tokens: int = 32
    time_distribution: Literal["beta", "uniform"] = "uniform"  # the paper's; "beta": GR00T's Beta(alpha, beta)
    # diffusion_model_cfg
    num_layers: int = 16
    output_dim: int = 1024
    dropout: float = 0.2
    final_dropout: bool = True
    interleave_self_attention: bool = True
    norm_type: str = "ada_norm"
    positional_embeddings: str | None = None
    max_num_positional_embeddings: int = 512
    num_attention_heads: int | None = None  # default: the type's; heads × head dim must equal its width
    attention_head_dim: int | None = None
    attention_bias: bool = True
    activation_fn: str = "gelu-approximate"
    norm_eps: float = 1e-5

    def __post_init__(self):
        for key in ("action_dim", "action_horizon", "cross_attention_dim", "hidden_size", "num_layers", "output_dim",
                    "num_timestep_buckets", "num_inference_timesteps", "num_target_vision_tokens", "max_seq_len"):
            check_positive_int(key, getattr(self, key))
        check_choice("action_model_type", self.action_model_type, DIT_SIZES)
        width, heads, head_dim = self.size
        if heads * head_dim != width:
            raise OptionError(
                "num_attention_heads", f" × attention_head_dim = "
                f"{heads} × {head_dim} must equal the {self.action_model_type} width {width}")
        if self.norm_type != "ada_norm":
            raise OptionError("norm_type", f"={self.norm_type!r}: expected ada_norm")
        if self.positional_embeddings not in (None, "sinusoidal"):
            raise OptionError("positional_embeddings", f"={self.positional_embeddings!r}: expected null or sinusoidal")
        check_choice("time_distribution", self.time_distribution, ("beta", "uniform"))
        if self.add_pos_embed and self.action_horizon > self.max_seq_len:
            raise OptionError("action_horizon", f"={self.action_horizon} exceeds max_seq_len={self.max_seq_len}")

    @property
    def size(self) -> tuple[int, int, int]:
        """(width, heads, head dim) of the DiT."""
        width, heads, head_dim = DIT_SIZES[self.action_model_type]
        return width, self.num_attention_heads or heads, self.attention_head_dim or head_dim
