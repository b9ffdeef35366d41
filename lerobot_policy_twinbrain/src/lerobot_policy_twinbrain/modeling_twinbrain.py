"""``TwinBrainPolicy``: starvla_twinbrain's ``TwinBrain`` framework behind LeRobot's ``PreTrainedPolicy`` API.

The model is ``self.model``, the same ``TwinBrain`` that ``starvla train`` / starVLA train; this module only turns
LeRobot batches into its examples (``batch_to_examples``) and adds LeRobot's action queue. Saving goes through
LeRobot's ``save_pretrained`` (safetensors ``save_model``, which calls ``state_dict()``): ``TwinBrain``'s state-dict
hook replaces the Left Brain's weights by its ``left_brain_reference`` entry there, and its load hooks check that
reference against ``--policy.base_vlm`` in ``from_pretrained``, so ``model.safetensors`` holds no Left Brain.
"""

from __future__ import annotations

from collections import deque

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor

from starvla_twinbrain.framework.twinbrain import TwinBrain
from starvla_twinbrain.model.prompts import image_tensor_to_pil

from .configuration_twinbrain import TwinBrainConfig

TASK = "task"


def batch_to_examples(batch: dict, config: TwinBrainConfig, with_action: bool) -> list[dict]:
    """A (pre-processed, so normalised) LeRobot batch → TwinBrain examples ``{"image": [PIL per camera], "lang",
    "state": [1, S], "action": [T, A], "robot_type"}``, cameras in the order of ``config.image_features``."""
    cameras = list(config.image_features)
    missing = [key for key in cameras + [TASK] + ([OBS_STATE] if config.include_state else [])
               + ([ACTION] if with_action else []) if key not in batch]
    if missing:
        raise ValueError(f"batch has no {missing} (it has {sorted(batch)}): TwinBrain needs "
                         f"{cameras + [TASK] + ([OBS_STATE] if config.include_state else [])}")
    size = len(batch[cameras[0]])
    tasks = batch[TASK]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if len(tasks) != size or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"batch[{TASK!r}]: expected {size} task strings, got {batch[TASK]!r}")
    examples = []
    for b in range(size):
        example = {
            "image": [image_tensor_to_pil(batch[key][b], f"batch[{key!r}][{b}]", config.image_size) for key in cameras],
            "lang": tasks[b],
        }
        if config.robot_type is not None:
            example["robot_type"] = config.robot_type
        if config.include_state:
            example["state"] = batch[OBS_STATE][b].detach().float().cpu().numpy().reshape(1, -1)
        if with_action:
            example["action"] = batch[ACTION][b].detach().float().cpu().numpy()
        examples.append(example)
    return examples


class TwinBrainPolicy(PreTrainedPolicy):
    config_class = TwinBrainConfig
    name = "twinbrain"

    def __init__(self, config: TwinBrainConfig, **kwargs):
        # kwargs: make_policy also passes dataset_stats / dataset_meta; LeRobot's processors do the normalisation.
        super().__init__(config)
        self.model = TwinBrain(config.framework_config())
        self.reset()

    def reset(self):
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def get_optim_params(self) -> list[dict]:
        """Two groups: the Right Brain at ``optimizer_lr_right_brain``, the rest (state encoder, action queries,
        head) at the optimizer's ``lr``. The frozen Left Brain is in neither."""
        right = [p for p in self.model.right_brain.parameters() if p.requires_grad]
        right_ids = {id(p) for p in right}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in right_ids]
        return [{"params": right, "lr": self.config.optimizer_lr_right_brain}, {"params": rest}]

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        if reduction != "mean":
            raise ValueError(f"reduction={reduction!r}: TwinBrain's flow-matching loss is a batch mean ('mean' only)")
        loss = self.model(batch_to_examples(batch, self.config, with_action=True))["action_loss"]
        return loss, {"action_loss": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], seed: int | None = None, **kwargs) -> Tensor:
        """Normalised actions ``[B, chunk_size, action_dim]`` on the policy's device (the post-processor
        un-normalises). ``seed`` fixes the sampling noise, as in ``TwinBrain.predict_action``."""
        self.eval()
        examples = batch_to_examples(batch, self.config, with_action=False)
        actions = self.model.predict_action(examples, seed=seed)["normalized_actions"]
        return torch.from_numpy(actions).to(batch[next(iter(self.config.image_features))].device)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], seed: int | None = None, **kwargs) -> Tensor:
        """One action ``[B, action_dim]``: the next of the queued chunk; a new chunk every ``n_action_steps``."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, seed=seed)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))  # queue of [B, action_dim], in time order
        return self._action_queue.popleft()
