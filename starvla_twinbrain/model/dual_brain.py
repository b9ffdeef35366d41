"""The dual-brain backbone: a frozen Left Brain and a trainable Right Brain joined by AsyMoT attention.

::

    images + instruction ──► Left prompt ──► Left Brain (frozen, no_grad) ─┐ K_L, V_L per layer (detached)
                       │                                                   ▼
                       └──► Right prompt ─► Right Brain ◄── [state tokens] [action queries]
                                              │  Q_R over [sg(K_L); K_R], [sg(V_L); V_R]
                                              ▼
                             final hidden states [B, L, H] + mask ──► action head (cross-attention)

The experiment switches (``framework.twinbrain.*``, README "Faithfulness to the paper"):
  * ``cross_attention``: ``asymmetric`` is the picture above; ``bidirectional`` also lets the Left's queries attend
    over ``[K_L; sg(K_R)]``, so the brains advance in lockstep (the Left driven layer by layer from the Right's
    attention: :mod:`.lockstep`); ``none`` runs the Right alone with its stock attention (the Left is not run; it
    stays loaded for ``chat``).
  * ``cross_layers``: ``all`` or ``odd`` (joint attention on layers 1, 3, 5, ...; on the even ones each brain
    attends to its own tokens with its stock attention, and the Left stops after the last odd layer's K/V).
  * ``left_trainable``: the Left runs with gradients and its K/V (and, bidirectional, the Right's K/V it sees) are
    not detached, so the Right's loss trains it.

Shapes: B batch, L_l / L_r Left / Right tokens (L_r includes appended slots), H text hidden size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .config import BackboneConfig, OptionError
from .asymot_attention import (
    AsyMoTContext,
    Backend,
    LeftKeysValuesComplete,
    left_implementation,
    resolve_backend,
    right_implementation,
    stock_backend,
)
from .lockstep import LeftStepper, no_grad_unless
from .prefix_cache import LeftPrefixCache, prompt_prefix_ids
from .processing import family_of, load_processor
from .prompts import BrainInputs, PromptBuilder, left_messages, to_pil
from .qwen_compat import (
    enable_activation_checkpointing,
    load_vlm,
    rope_position_ids,
    set_text_attention,
    set_vision_attention,
    text_hidden_size,
    vlm_core,
)
from .state_encoder import StateEncoder, stack_states

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def image_features_computed_once(source: nn.Module, target: nn.Module):
    """Within the block, ``target.get_image_features(...)`` returns what ``source.get_image_features`` computed last.

    Used when the Right's vision tower is frozen and equal to the Left's: same weights and the same pixels give the
    same features, so computing them twice is waste. The stock method is overridden on the two instances only, for
    the block; whatever it returns (it differs between transformers versions and families, DeepStack features
    included) is passed through unchanged.
    """
    stock = source.get_image_features
    computed = []

    def record(*args, **kwargs):
        computed[:] = [stock(*args, **kwargs)]
        return computed[0]

    def reuse(*args, **kwargs):
        if not computed:
            raise RuntimeError("the Right Brain asked for image features before the Left Brain computed them")
        return computed[0]

    source.get_image_features, target.get_image_features = record, reuse
    try:
        yield
    finally:
        del source.get_image_features, target.get_image_features


@dataclass
class TwinBrainInputs:
    """A tokenised batch for both brains. ``state``: ``[B, state_dim]`` (zeros where ``state_valid`` is False)."""

    left: BrainInputs
    right: BrainInputs
    state: torch.Tensor | None = None
    state_valid: torch.Tensor | None = None  # bool[B]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TwinBrainInputs":
        move = (lambda t: None if t is None else t.to(device))
        return TwinBrainInputs(self.left.to(device, dtype), self.right.to(device, dtype), move(self.state), move(self.state_valid))


@dataclass
class BackboneOutput:
    hidden_states: torch.Tensor  # [B, L, H]: the Right Brain's final hidden states (after the final norm)
    attention_mask: torch.Tensor  # bool[B, L]: True = a real token the action head may attend to


class DualBrainBackbone(nn.Module):
    """Two copies of one Qwen-VL: ``left_brain`` (frozen generalist) and ``right_brain`` (trainable, sees state).

    Attribute paths are API (starVLA's ``trainer.learning_rate.<path>`` / ``trainer.freeze_modules``):
    ``left_brain`` (a full ``*ForConditionalGeneration``, usable for chat), ``right_brain`` (the ``Qwen*VLModel``
    without LM head: ``right_brain.visual``, ``right_brain.language_model``), ``state_encoder``, ``action_queries``.
    """

    def __init__(self, config: BackboneConfig, dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.family = family_of(config.base_vlm)
        self.processor = load_processor(config.base_vlm)
        self.prompt_builder = PromptBuilder(self.processor, config.prompts, config.max_prompt_tokens,
                                            config.max_images_per_example)

        # Loaded with a backend that runs anywhere; the real one is chosen for the device and dtype the weights
        # have when the model runs (hosts move it after construction): see `backend`.
        loading = "eager" if config.attn_implementation == "eager" else "sdpa"
        left = load_vlm(config.base_vlm, self.family, loading, dtype)
        right = load_vlm(config.base_vlm, self.family, loading, dtype)
        left.requires_grad_(config.left_trainable)
        self.left_brain = left.eval()
        self.right_brain = vlm_core(right)  # the Right never produces text: its LM head is dropped
        if config.freeze_right_vision:
            self.right_brain.visual.requires_grad_(False)
        if config.gradient_checkpointing:  # the AsyMoT context is a call keyword, so recomputation sees it too
            enable_activation_checkpointing(self.right_brain)

        self._backend: Backend = loading
        self._backend_for: tuple[torch.device, torch.dtype] | None = None  # (device, dtype) it was resolved for
        self._use_backend(loading)
        self.hidden_size = text_hidden_size(left)
        self.num_text_layers = len(vlm_core(left).language_model.layers)
        if config.cross_layers == "odd" and self.num_text_layers < 2:
            raise OptionError("cross_layers", f"='odd': {config.base_vlm!r} has "
                             f"{self.num_text_layers} text layer(s), so no odd layer to join the brains on")
        self._vision_check: tuple[tuple, bool] = ((), False)  # (parameter versions, towers identical)
        self.state_encoder = (
            StateEncoder(config.state_dim, self.hidden_size, config.num_state_tokens, config.state_hidden_dim)
            if config.state_dim is not None
            else None
        )
        self.action_queries = (
            nn.Parameter(torch.randn(config.num_action_queries, self.hidden_size, dtype=dtype) * 0.02)
            if config.condition == "action_queries"
            else None
        )
        context = left.config.text_config.max_position_embeddings
        if config.max_prompt_tokens + self.num_extra_slots > context:
            raise OptionError("max_prompt_tokens", f"={config.max_prompt_tokens}: more than the model's context "
                             f"({context} positions, text_config.max_position_embeddings) less the Right Brain's "
                             f"{self.num_extra_slots} state / action-query slots")
        # The Left's system turn and user header, computed once for all rows (see .prefix_cache)
        self.left_prefix = LeftPrefixCache(prompt_prefix_ids(self.processor, left_messages(config.prompts, "", 1)))
        self._slot_token_id = self.processor.tokenizer.pad_token_id
        if self._slot_token_id is None:
            raise OptionError("base_vlm", f"={config.base_vlm!r}: the tokenizer has no pad token")
        logger.info("TwinBrain backbone: %s from %s", self.family, config.base_vlm)

    # ------------------------------------------------------------------ attention backend
    @property
    def backend(self) -> Backend:
        """The joint-attention backend for the device the weights are on and the dtype attention computes in now.

        Resolved (and logged) once per change of device or dtype, so a model built on CPU and moved to a GPU by its
        host (starVLA, accelerate) gets the GPU's backend at its first forward. Cheap: one parameter is looked at.
        """
        param = next(self.right_brain.parameters())
        # The dtype attention computes in: the autocast dtype where the host runs under autocast (fp32 trainable
        # weights with bf16 autocast on a GPU, the precision policy), else the weights' own.
        dtype = param.dtype
        if torch.is_autocast_enabled(param.device.type):
            dtype = torch.get_autocast_dtype(param.device.type)
        placement = (param.device, dtype)
        if placement != self._backend_for:
            backend = resolve_backend(self.config.attn_implementation, param.device, dtype)
            self._use_backend(backend)
            self._backend_for = placement
            logger.info("TwinBrain joint attention: %s (weights on %s, computing in %s; vision towers: %s)",
                        backend, param.device, dtype, stock_backend(backend))
        return self._backend

    def set_attn_implementation(self, requested: str | None) -> None:
        """Request another joint-attention backend (``None``: the default); it takes effect at the next forward.
        For A/B checks and benchmarks of one model under several backends."""
        self.config = dataclasses.replace(self.config, attn_implementation=requested)  # validated there
        self._backend_for = None

    def _use_backend(self, backend: Backend) -> None:
        set_text_attention(self.left_brain, left_implementation(backend))
        set_text_attention(self.right_brain, right_implementation(backend))
        for vlm in (self.left_brain, self.right_brain):  # Left and Right share no config object
            set_vision_attention(vlm, stock_backend(backend))
        self._backend = backend

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "DualBrainBackbone":
        super().train(mode)
        self.left_brain.train(mode and self.config.left_trainable)  # a frozen Left: no dropout, ever
        return self

    @property
    def joint_layers(self) -> range | None:
        """The text layers with joint attention (``cross_layers``); None: all of them."""
        return None if self.config.cross_layers == "all" else range(1, self.num_text_layers, 2)

    def vision_is_shared(self) -> bool:
        """True when the Right's vision tower is frozen and holds the Left's weights, so one tower's features serve
        both brains (bit-identical to running both). Re-checked whenever a parameter changes (version counter)."""
        right = list(self.right_brain.visual.parameters())
        left = list(vlm_core(self.left_brain).visual.parameters())
        if any(p.requires_grad for p in right + left):  # a trainable Left's features carry its own gradient
            return False
        key = tuple((p.data_ptr(), p._version) for p in right + left)
        if key != self._vision_check[0]:
            same = len(left) == len(right) and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(left, right))
            self._vision_check = (key, same)
        return self._vision_check[1]

    @property
    def num_extra_slots(self) -> int:
        n_state = self.config.num_state_tokens if self.state_encoder is not None else 0
        n_query = self.config.num_action_queries if self.action_queries is not None else 0
        return n_state + n_query

    # ------------------------------------------------------------------ inputs
    def prepare(
        self,
        images: Sequence[Sequence],
        instructions: Sequence[str],
        robot_types: Sequence[str | None] | None = None,
        states: Sequence | torch.Tensor | None = None,
        sources: Sequence[str] | None = None,
        truncate: bool = False,
    ) -> TwinBrainInputs:
        """Tokenise raw samples for both brains and append the Right's state / action-query slots.

        ``states[b]``: ``[state_dim]`` or ``[1, state_dim]`` array/tensor, or None for a sample without state
        (that sample gets no state token: its slot is masked, never a zero vector pretending to be a state).
        A sample over the input limits raises ``InputTooLarge`` naming it and ``sources[b]`` (see ``PromptBuilder``);
        ``truncate`` shortens an over-long instruction instead.
        """
        left, right = self.prompt_builder(images, instructions, robot_types, sources, truncate)
        batch = left.input_ids.shape[0]
        state, state_valid = self._collect_states(states, batch)
        if self.state_encoder is not None:
            right = right.append_slots(self.config.num_state_tokens, self._slot_token_id, state_valid)
        if self.action_queries is not None:
            right = right.append_slots(self.config.num_action_queries, self._slot_token_id, torch.ones(batch, dtype=torch.bool))
        return TwinBrainInputs(left, right, state, state_valid)

    def _collect_states(self, states, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.state_encoder is None:
            if states is not None and any(s is not None for s in states):
                raise ValueError(
                    "examples carry 'state' but this backbone has no state encoder (state_dim is None)"
                )
            return None, None
        if states is None:
            states = [None] * batch
        if len(states) != batch:
            raise ValueError(f"got {len(states)} states for a batch of {batch}")
        return stack_states(states, self.config.state_dim)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: TwinBrainInputs) -> BackboneOutput:
        right = inputs.right
        if self.config.cross_attention == "none":  # the single-brain model: the Left is not on the action path
            _ = self.backend  # the Right's stock attention for the weights' device and dtype
            right_hidden = self._right_forward(inputs, None)
        else:
            right_hidden = self._twin_forward(inputs)
        if self.action_queries is not None:
            n = self.config.num_action_queries
            return BackboneOutput(right_hidden[:, -n:],
                                  torch.ones(right_hidden.shape[0], n, dtype=torch.bool, device=right_hidden.device))
        return BackboneOutput(right_hidden, right.attention_mask.bool())

    def _twin_forward(self, inputs: TwinBrainInputs) -> torch.Tensor:
        """The Left, then the Right with AsyMoT joint attention over the Left's recorded K/V (bidirectional: the
        Left's stock forward stops before its first layer, and the Right's attention advances it layer by layer)."""
        left, right = inputs.left, inputs.right
        joint_layers = self.joint_layers
        trainable = self.config.left_trainable
        share = self.shares_prefix(left)
        context = AsyMoTContext(self.left_prefix.left_valid(left) if share else left.attention_mask,
                                right.attention_mask, self.backend,
                                stop_after_layer=self.num_text_layers - 1 if joint_layers is None else joint_layers[-1],
                                joint_layers=joint_layers, bidirectional=self.config.cross_attention == "bidirectional",
                                left_trainable=trainable)
        left_core = vlm_core(self.left_brain)
        shared_vision = (
            image_features_computed_once(left_core, self.right_brain)
            if self.vision_is_shared() and self._same_images(left, right) else contextlib.nullcontext()
        )
        with shared_vision:
            if context.bidirectional:
                LeftStepper(left_core, left.tensors, context, grad=trainable)
            else:
                # A frozen Left stores nothing for backward; its K/V reach the Right detached.
                with no_grad_unless(trainable):
                    self._left_forward(left, context, share)
            return self._right_forward(inputs, context)

    def shares_prefix(self, left: BrainInputs) -> bool:
        """Whether this batch's Left runs with the shared prefix K/V (``framework.twinbrain.share_prefix``).
        Only where the Left is a frozen plain causal VLM: a Left that attends to the Right (bidirectional) has
        per-sample prefix K/V, and a trainable Left needs gradients through them (the cache holds none)."""
        return (self.config.share_prefix and self.config.cross_attention == "asymmetric"
                and not self.config.left_trainable and self.left_prefix.applies(left))

    def _left_forward(self, left: BrainInputs, context: AsyMoTContext, share: bool) -> None:
        """The Left's forward: records its per-layer K/V into ``context``, nothing else."""
        left_core = vlm_core(self.left_brain)
        if share:
            self.left_prefix.run_left(left_core, left, context)
            return
        try:
            left_core(**left.tensors, use_cache=False, asymot_context=context)
        except LeftKeysValuesComplete:  # the Left's last K/V are recorded; the rest of its forward is unused
            pass

    @staticmethod
    def _same_images(left: BrainInputs, right: BrainInputs) -> bool:
        keys = ("pixel_values", "image_grid_thw")
        if any(left.tensors.get(k) is None or right.tensors.get(k) is None for k in keys):
            return False
        return all(torch.equal(left.tensors[k], right.tensors[k]) for k in keys)

    def _right_forward(self, inputs: TwinBrainInputs, context: AsyMoTContext | None) -> torch.Tensor:
        """The Right Brain's final hidden states. ``context`` None: the Right alone, with its stock attention and
        the stock causal + padding mask (``cross_attention: none``)."""
        right = inputs.right
        embeds = self.right_brain.get_input_embeddings()(right.input_ids)  # [B, L_r, H]
        extra = []
        if self.state_encoder is not None:
            if inputs.state is None:
                raise ValueError("the backbone has a state encoder but the inputs carry no state tensor")
            extra.append(self.state_encoder(inputs.state).to(embeds.dtype))
        if self.action_queries is not None:
            extra.append(self.action_queries.to(embeds.dtype).expand(embeds.shape[0], -1, -1))
        if extra:
            embeds = torch.cat([embeds[:, : embeds.shape[1] - self.num_extra_slots], *extra], dim=1)

        # Embeddings only (the image slots still hold the image-token embedding, which is how the model finds them);
        # the positions come from the token ids, so the appended slots are ordinary text positions. Where every
        # layer is joint the padding mask is left out: the joint mask lives in the context, so the stock
        # per-forward mask is not built; layers with stock attention need it.
        stock_layers = context is None or context.joint_layers is not None
        dropped = ("input_ids",) if stock_layers else ("input_ids", "attention_mask")
        tensors = {k: v for k, v in right.tensors.items() if k not in dropped}
        position_ids = rope_position_ids(self.right_brain, right.input_ids, right.tensors)
        joint = {} if context is None else {"asymot_context": context}
        out = self.right_brain(**tensors, inputs_embeds=embeds, position_ids=position_ids, use_cache=False, **joint)
        return out.last_hidden_state

    # ------------------------------------------------------------------ the preserved generalist
    def chat(self, images: Sequence, question: str, max_new_tokens: int = 64, **generate_kwargs) -> str:
        """Answer a question about images with the Left Brain: the unmodified base VLM, greedy by default."""
        _ = self.backend  # the stock Left answers, with the vision backend for the weights' device and dtype
        return vlm_chat(self.left_brain, self.processor, images, question, max_new_tokens, self.prompt_builder,
                        **generate_kwargs)


@torch.no_grad()
def vlm_chat(vlm: nn.Module, processor, images: Sequence, question: str, max_new_tokens: int = 64,
             limits: PromptBuilder | None = None, **generate_kwargs) -> str:
    """One user turn (images, then the question) through ``processor``'s chat template; ``vlm.generate``'s answer.
    The Left Brain's chat and the base model's (``starvla eval vqa``) go through this same function; ``limits``
    checks the question, the image count and the prompt's tokens before anything runs."""
    if limits is not None:
        limits.check_text(question, "question")
        limits.check_image_count(len(images), "image")
    pil = [to_pil(img, f"image[{i}]") for i, img in enumerate(images)]
    messages = [{"role": "user", "content": [{"type": "image"} for _ in pil] + [{"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = processor(text=[text], images=pil or None, return_tensors="pt")
    if limits is not None:
        limits.check_tokens(encoded["input_ids"].shape[1], "question", "Left Brain's", len(pil))
    encoded = encoded.to(next(vlm.parameters()).device)
    generate_kwargs.setdefault("do_sample", False)
    out = vlm.generate(**encoded, max_new_tokens=max_new_tokens, **generate_kwargs)
    return processor.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)[0]
