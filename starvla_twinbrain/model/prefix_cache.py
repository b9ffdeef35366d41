"""Shared-prefix keys/values of the Left Brain (``framework.twinbrain.share_prefix``): prefix caching.

Every Left prompt starts with the same tokens: the system turn and the user turn's header, up to the first image
(``<|vision_start|>``). The Left is a plain causal VLM, and batches are left-padded so that each sample's valid
tokens take positions from 0: those tokens' keys/values (after RoPE and Qwen3's q/k norm) are therefore the same in
every sample. They are computed once, for one row, and kept until the Left's weights change (the Left is frozen, so
that is once per loaded model, in training as in inference). Each forward then runs the Left on the rest of each
prompt only (the suffix), with the prefix K/V handed to the stock attention modules as ``past_key_values``:

    plain:   [pad pad | prefix | suffix]          every row computes the prefix
    shared:  [prefix] + [pad pad | suffix]        keys/values of the prefix: one row, expanded to the batch

The Left records ``[prefix; padded suffix]`` K/V into the AsyMoT context, whose Left mask is
``[1 ... 1 | suffix mask]``. The Right attends to every valid Left token whatever their order, so its
result is that of the plain forward to float tolerance (the order of a softmax's terms only).

Why only the Left: a Right query attends to every valid Left token (paper eq. 6), so from the first layer on the
Right's own prefix tokens depend on each sample's Left suffix (its images and instruction); they are not shared.
Nor is the Left's prefix when the Left attends to the Right (bidirectional cross-attention): callers turn sharing
off there.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import DynamicCache

from .asymot_attention import AsyMoTContext, LeftKeysValuesComplete
from .prompts import BrainInputs
from .qwen_compat import past_keys_values_kwarg, rope_position_ids

logger = logging.getLogger(__name__)



def prompt_prefix_ids(processor, messages: list[dict]) -> torch.Tensor:
    """The ids of ``messages``' chat-template text before its first ``<|vision_start|>`` (1-D, long).

    The caller checks that each row of a batch starts with them (token boundaries can differ once text follows),
    so a prefix that does not hold for a batch only turns sharing off for it.
    """
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = text.split("<|vision_start|>", 1)[0]
    return torch.tensor(processor.tokenizer(head, add_special_tokens=False)["input_ids"], dtype=torch.long)


class LeftPrefixCache:
    """The Left's shared prefix and its K/V per text layer, valid for one set of Left weights, device and dtype."""

    def __init__(self, prefix_ids: torch.Tensor):
        self.prefix_ids = prefix_ids
        self._key: tuple | None = None
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.computed = 0  # how many times the prefix K/V were computed (tests; a recompute follows weight changes)

    def __len__(self) -> int:
        return int(self.prefix_ids.numel())

    # ------------------------------------------------------------------ the batch
    def applies(self, left: BrainInputs) -> bool:
        """True when every row's valid tokens start with the prefix (left padding: the prefix follows the pads)."""
        n = len(self)
        ids, mask = left.input_ids, left.attention_mask.bool()
        if n == 0 or ids.shape[1] <= n:
            return False
        lengths = mask.sum(1)
        if bool((lengths <= n).any()):
            return False
        start = ids.shape[1] - lengths  # first valid column of each row
        cols = start[:, None] + torch.arange(n, device=ids.device)
        return bool((ids.gather(1, cols) == self.prefix_ids.to(ids.device)).all())

    # ------------------------------------------------------------------ the prefix K/V
    def _weights_key(self, core: nn.Module, context: AsyMoTContext) -> tuple:
        param = next(core.language_model.parameters())
        dtype = torch.get_autocast_dtype(param.device.type) if torch.is_autocast_enabled(param.device.type) else None
        versions = tuple((p.data_ptr(), p._version) for p in core.language_model.parameters())
        return (param.device, param.dtype, dtype, context.backend, versions)

    def keys_values(self, core: nn.Module, context: AsyMoTContext) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per text layer ``(K, V)`` of the prefix, ``[1, n_kv, P, d]``; computed when the weights changed."""
        key = self._weights_key(core, context)
        if key != self._key:
            device = next(core.parameters()).device
            ids = self.prefix_ids.to(device)[None]
            mask = torch.ones_like(ids)
            positions = rope_position_ids(core, ids, {"attention_mask": mask})
            record = AsyMoTContext(mask, mask, context.backend, stop_after_layer=context.stop_after_layer)
            with torch.no_grad():
                try:
                    core(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                         asymot_context=record)
                except LeftKeysValuesComplete:
                    pass
            self._kv, self._key = dict(record.left_kv), key
            self.computed += 1
            logger.debug("Left prefix K/V computed (%d tokens)", len(self))
        return self._kv

    # ------------------------------------------------------------------ the forward
    def left_valid(self, left: BrainInputs) -> torch.Tensor:
        """The Left mask the AsyMoT context sees: ``[1]*P`` then each row's padded suffix mask."""
        mask = left.attention_mask.bool()
        batch = mask.shape[0]
        suffix = self._drop_prefix(mask, mask)
        return torch.cat([mask.new_ones(batch, len(self)), suffix], dim=1)

    def _drop_prefix(self, mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``value[..., B, L]`` without each row's prefix columns, the pads kept in front: ``[..., B, L - P]``."""
        batch, length = mask.shape
        n = len(self)
        start = length - mask.sum(1)  # [B]
        col = torch.arange(length - n, device=mask.device)[None]  # suffix column
        source = torch.where(col < start[:, None], col, col + n)  # pads stay, the rest shifts past the prefix
        index = source.expand(*value.shape[:-2], batch, length - n)
        return value.gather(-1, index)

    def run_left(self, core: nn.Module, left: BrainInputs, context: AsyMoTContext) -> None:
        """The Left's forward with the shared prefix; records ``[prefix; suffix]`` K/V into ``context``
        (which must have been made with :meth:`left_valid`)."""
        mask = left.attention_mask.bool()
        batch = mask.shape[0]
        positions = rope_position_ids(core, left.input_ids, left.tensors)  # [3, B, L], valid tokens from 0
        tensors = {}
        for name, value in left.tensors.items():  # per-token tensors lose the prefix; images are untouched
            per_token = value.ndim == 2 and value.shape == mask.shape
            tensors[name] = self._drop_prefix(mask, value) if per_token else value
        tensors["attention_mask"] = torch.cat([mask.new_ones(batch, len(self)), tensors["attention_mask"].bool()],
                                              dim=1).to(left.attention_mask.dtype)
        past = DynamicCache()
        for layer, (k, v) in sorted(self.keys_values(core, context).items()):
            past.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        try:
            core(**tensors, position_ids=self._drop_prefix(mask, positions), use_cache=True, asymot_context=context,
                 **{past_keys_values_kwarg(core): past})
        except LeftKeysValuesComplete:
            pass
