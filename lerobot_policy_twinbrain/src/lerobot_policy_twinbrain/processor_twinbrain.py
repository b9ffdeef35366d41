"""``make_twinbrain_pre_post_processors``: LeRobot's standard pipelines, nothing TwinBrain-specific.

Pre: rename → add batch dimension → device → ``NormalizerProcessorStep`` (state and action: MIN_MAX, see
``configuration_twinbrain``). Post: ``UnnormalizerProcessorStep`` → CPU. Images and task strings pass through;
``TwinBrainPolicy`` turns them into the VLM's inputs with the model's own processor.
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.processor import PolicyAction, PolicyProcessorPipeline, make_default_pre_post_processors

from .configuration_twinbrain import TwinBrainConfig


def make_twinbrain_pre_post_processors(
    config: TwinBrainConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    return make_default_pre_post_processors(config, dataset_stats)
