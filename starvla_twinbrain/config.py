"""Typed, frozen configuration of TwinBrain. Defaults live here and nowhere else.

The starVLA YAML stays the source format (DESIGN §3): host keys are read where starVLA puts them
(``framework.qwenvl.base_vlm``, ``framework.qwenvl.attn_implementation``); TwinBrain-only options live under
``framework.twinbrain``. Every error names the dotted key, the bad value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

ConditionMode = Literal["all_tokens", "action_queries"]
AttentionBackend = Literal["eager", "sdpa", "flash_attention_2"]

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
