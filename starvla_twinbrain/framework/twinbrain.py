"""TwinBrain as a starVLA framework: ``forward(examples) -> {"action_loss"}``, ``predict_action(examples)``.

starVLA's contract (its ``baseframework``): ``__init__(config)`` receives the whole training config (OmegaConf);
one example is ``{"image": [PIL, ...], "lang": str, "action": [T, action_dim] (training), "state": [1, state_dim]
(when datasets.vla_data.include_state)}``. The host owns devices, distribution and optimizers.

Submodules (their attribute paths are what ``trainer.learning_rate.<path>`` and ``trainer.freeze_modules`` name):
``left_brain`` (frozen), ``right_brain`` (``right_brain.visual``, ``right_brain.language_model``),
``state_encoder``, ``action_queries`` (condition: action_queries), ``action_model``. The stock starVLA
learning-rate key ``qwen_vl_interface`` resolves to the Right Brain.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import BACKBONE_KEYS, TwinBrainConfig, TwinBrainSection, config_select, config_set, yaml_keys
from ..model.action_head import FlowMatchingActionHead
from ..model.dual_brain import DualBrainBackbone
from . import left_reference
from ..host.api import STARVLA_AVAILABLE, BaseFramework, starvla_action_model
from . import low_memory as low_memory_setup
from .states import validate_states

logger = logging.getLogger(__name__)

REGISTRY_NAME = "TwinBrain"


def is_twinbrain_name(name) -> bool:
    """``framework.name`` spells TwinBrain: any case, with or without ``_`` / ``-`` (``twinbrain``, ``twin_brain``)."""
    return isinstance(name, str) and name.replace("_", "").replace("-", "").lower() == REGISTRY_NAME.lower()


class _TwinBrainSpellings(dict):
    """A registry's name → class dict in which any spelling of TwinBrain finds it (``dict.__missing__``: only names
    not registered as such reach it, so every other framework's lookup is unchanged)."""

    def __missing__(self, name):
        if is_twinbrain_name(name) and dict.__contains__(self, REGISTRY_NAME):
            return dict.__getitem__(self, REGISTRY_NAME)
        raise KeyError(name)

    def __contains__(self, name) -> bool:  # starVLA's build_framework checks ``name in registry._registry`` first
        return dict.__contains__(self, name) or (is_twinbrain_name(name) and dict.__contains__(self, REGISTRY_NAME))

    def get(self, name, default=None):
        return self[name] if name in self else default


def _load_dtype() -> torch.dtype:
    """The dtype the base checkpoint is read in: bf16 on a CUDA machine (Qwen-VL checkpoints are bf16, so this is
    exact and halves host memory for the two copies), fp32 otherwise. Only the frozen weights keep it: see
    :func:`apply_precision_policy`."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def _frozen_subtrees(module: nn.Module):
    """The largest submodules none of whose parameters train (the Left Brain, a frozen Right vision tower,
    anything in ``trainer.freeze_modules``)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        yield module
        return
    for child in module.children():
        yield from _frozen_subtrees(child)


def apply_precision_policy(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The precision policy (README, "Precision"), applied in place for the device the model will run on.

    - GPU: frozen subtrees in bf16 (no gradients, no optimizer state: bf16 loses nothing there and halves their
      memory); every trainable parameter in fp32, the optimizer's master copy. The host runs the forward pass
      under bf16 autocast (the embedded runtime through accelerate, starVLA's trainer with ``torch.autocast``);
      under DeepSpeed its bf16 mode keeps its own fp32 master weights. AdamW on bf16 weights is what this
      prevents: at lr 1e-5 most updates are below bf16's resolution and vanish.
    - CPU: everything fp32 (no autocast there).
    Where the bf16 Left meets the fp32 Right, AsyMoT casts the Left's keys/values to the Right's dtype.
    """
    on_gpu = torch.device(device).type == "cuda"
    for subtree in _frozen_subtrees(model):
        subtree.to(torch.bfloat16 if on_gpu else torch.float32)
    _trainable_in_fp32(model)
    return model


def _trainable_in_fp32(model: nn.Module) -> None:
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def build_action_head(config, twin: TwinBrainConfig, cross_attention_dim: int) -> nn.Module:
    """starVLA's GR00T head when starVLA is importable, else the built-in head of the same design.

    Both are built from one resolved ``framework.action_model``: the condition width is the VLM's hidden size, the
    head has a state encoder only when the state goes to the head (``state_into``), and the paper's uniform time is
    drawn by starVLA's head as Beta(1, 1) (the built-in head draws it the same way)."""
    from omegaconf import OmegaConf

    action_model = config_select(config, "framework.action_model")
    config_set(action_model.diffusion_model_cfg, "cross_attention_dim", cross_attention_dim)  # saved with the run
    if STARVLA_AVAILABLE:
        section = twin.head_section(cross_attention_dim)
        if section["time_distribution"] == "uniform":
            section["noise_beta_alpha"] = section["noise_beta_beta"] = 1.0
            logger.info("flow-matching time: uniform (framework.action_model.time_distribution, the paper's): starVLA's "
                        "GR00T head draws it as Beta(1, 1), so noise_beta_alpha/noise_beta_beta are not used")
        return starvla_action_model(OmegaConf.create({"framework": {"action_model": section}}))
    return FlowMatchingActionHead(twin.head_config(cross_attention_dim))


def declare_left_frozen(config, left_trainable: bool = False) -> None:
    """Add ``left_brain`` to the run's ``trainer.freeze_modules`` (kept when already there; no ``trainer``: no-op).

    starVLA's trainer builds its optimizer groups from ``trainer.learning_rate`` and ``trainer.freeze_modules`` without
    looking at ``requires_grad``. With a stock config (no state encoder; rates for base / qwen_vl_interface /
    action_model) the frozen Left alone would fill the ``base`` group, which DeepSpeed ZeRO empties of frozen
    parameters and then fails on (``torch.cat(): expected a non-empty list of Tensors``).

    ``left_trainable`` (``framework.twinbrain.left_trainable``): the Left trains, so it is not added, and a
    ``freeze_modules`` that names it contradicts the switch."""
    trainer = config_select(config, "trainer")
    if trainer is None:
        return
    spec = config_select(trainer, "freeze_modules", "")
    if not isinstance(spec, str):
        raise ValueError(f"trainer.freeze_modules={spec!r}: expected a comma-separated string of attribute paths, "
                         "e.g. \"right_brain.visual,action_model\"")
    paths = [path.strip() for path in spec.split(",") if path.strip()]
    if left_trainable:
        if "left_brain" in paths:
            raise ValueError(f"trainer.freeze_modules={spec!r} names left_brain but framework.twinbrain.left_trainable "
                             "is true: remove one of the two")
        return
    if "left_brain" not in paths:
        config_set(trainer, "freeze_modules", ",".join([*paths, "left_brain"]))


class InferenceCompiledDiT:
    """``framework.twinbrain.compile_action_head``: the head's DiT through ``torch.compile``, for inference only.

    ``with compiled.active(action_model): action_model.predict_action(...)`` swaps the compiled DiT in for the call;
    both heads (built-in and starVLA's) keep it at ``action_model.model``. It shares the parameters, so checkpoints
    are unchanged. Training stays eager: with torch 2.13.0 the compiled training graph of this DiT gave wrong
    outputs for padded conditions once shapes were dynamic (2.11 and 2.14.1 were right), and on CPU it saved
    nothing. Shapes are dynamic because the condition length changes from batch to batch; the first calls compile
    (tens of seconds on CPU).
    """

    def __init__(self):
        self._compiled: nn.Module | None = None

    @contextlib.contextmanager
    def active(self, action_model: nn.Module):
        dit = getattr(action_model, "model", None)
        if not isinstance(dit, nn.Module):
            raise ValueError("framework.twinbrain.compile_action_head: this action head has no DiT at action_model.model")
        if self._compiled is None or self._compiled._orig_mod is not dit:
            self._compiled = torch.compile(dit, dynamic=True)
            logger.info("action head: DiT compiled with torch.compile for inference (dynamic shapes)")
        action_model.model = self._compiled
        try:
            yield
        finally:
            action_model.model = dit


class TwinBrain(BaseFramework):
    """Frozen Left Brain + trainable Right Brain (AsyMoT) + flow-matching action head.

    Owner: the backbone, registered after its modules' own names (``left_brain`` ...), which torch lists them under
    (parameters, keys unchanged); its ``train()`` is the only override; two hooks keep ``backbone.*`` off checkpoints.
    """

    def __init__(self, config, **kwargs):
        super().__init__()
        self.twin = TwinBrainConfig.from_omegaconf(config)
        self.twin.write_back(config)
        declare_left_frozen(config, self.twin.options.left_trainable)
        if self.twin.options.left_trainable:
            logger.info("framework.twinbrain.left_trainable: the Left Brain trains too; checkpoints store its weights")
        self.config = config
        with yaml_keys(BACKBONE_KEYS):  # the model core's errors name its arguments; the user wrote YAML keys
            backbone = DualBrainBackbone(self.twin.backbone, dtype=_load_dtype())
        builder = backbone.prompt_builder
        builder.limit_names = {name: f"framework.twinbrain.{name}" for name in builder.limit_names}
        self.left_brain = backbone.left_brain
        self.right_brain = backbone.right_brain
        self.state_encoder = backbone.state_encoder
        self.action_queries = backbone.action_queries
        self.backbone = backbone  # after its modules: they keep the names above; its train() runs after theirs
        self.action_model = build_action_head(config, self.twin, backbone.hidden_size)
        self.compiled_head = InferenceCompiledDiT() if self.twin.options.compile_action_head else None
        self.action_horizon = self.twin.action_model.action_horizon
        self.action_dim = self.twin.action_model.action_dim
        self.repeated_diffusion_steps = self.twin.action_model.repeated_diffusion_steps
        with yaml_keys(BACKBONE_KEYS):
            low_memory_setup.setup(self)  # framework.twinbrain.right_lora / left_precision (framework/low_memory.py)
        _trainable_in_fp32(self)  # from the start (a bf16 read is exact for bf16 checkpoints); frozen ones as read
        self.register_state_dict_post_hook(_drop_backbone_copy)
        self.register_state_dict_post_hook(_store_left_by_reference)
        self.register_load_state_dict_pre_hook(_check_left_reference)
        self.register_load_state_dict_pre_hook(_check_state_path)
        self.register_state_dict_post_hook(_store_variant)
        self.register_load_state_dict_pre_hook(_check_variant)
        self.register_load_state_dict_post_hook(_accept_backbone_copy)
        self.register_load_state_dict_post_hook(_accept_left_by_reference)

    @property
    def left_brain_sha256(self) -> str:
        """The base checkpoint's content hash: computed (or read from the machine's cache) only when a checkpoint
        stores or checks the Left's reference, not at construction."""
        return left_reference.base_checkpoint_hash(self.twin.qwenvl.base_vlm)

    # starVLA's trainer resolves learning-rate keys by attribute path; stock YAMLs name the VLM this way.
    @property
    def qwen_vl_interface(self) -> nn.Module:
        return self.right_brain

    @property
    def right_brain_frozen_base(self) -> nn.Module:
        """The Right Brain's subtrees that do not train (with LoRA: all but the adapters), gathered for
        ``trainer.freeze_modules`` (see framework/low_memory.py). Not registered: nothing is stored twice."""
        return nn.ModuleList(_frozen_subtrees(self.right_brain))

    @property
    def left_precision(self) -> str:
        """What the Left Brain's decoder weights are now (``int8 weight-only ...``, ``bfloat16``, ``float32``)."""
        from ..model.low_memory import left_precision

        return left_precision(self.left_brain)

    def supports_training_tag(self, tag: str) -> bool:
        return tag == "vla"  # no VLM co-training: the Left Brain keeps the general skills

    # ------------------------------------------------------------------ inputs
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.right_brain.parameters())
        return param.device, param.dtype

    def _condition(self, examples: Sequence[dict], truncate: bool = False):
        """The Right Brain's final hidden states for a batch, and the head's state ``[B, 1, state_dim]`` (or None)."""
        if not examples:
            raise ValueError("examples: expected a non-empty list of example dicts")
        for b, ex in enumerate(examples):
            for key in ("image", "lang"):
                if key not in ex:
                    raise ValueError(f"examples[{b}] has no {key!r}: expected keys 'image' and 'lang'")
        states = validate_states(examples, self.twin.action_model.state_dim, self.twin.include_state)
        device, dtype = self._device_dtype()
        inputs = self.backbone.prepare(
            [ex["image"] for ex in examples], [ex["lang"] for ex in examples], _robot_types(examples),
            states if self.backbone.state_encoder is not None else None, [_source(ex) for ex in examples], truncate,
        ).to(device, dtype)
        out = self.backbone(inputs)
        head_state = None
        if self.twin.head_state_dim is not None:
            head_state = states[:, None].to(device, dtype)  # [B, 1, D]
        return out, head_state

    def _actions(self, examples: Sequence[dict]) -> torch.Tensor:
        actions = []
        for b, ex in enumerate(examples):
            if "action" not in ex:
                raise ValueError(f"examples[{b}] has no 'action': training needs [T, action_dim] action chunks")
            a = np.asarray(ex["action"], dtype=np.float32)
            if a.shape != (self.action_horizon, self.action_dim):
                raise ValueError(
                    f"examples[{b}]['action']: expected shape [{self.action_horizon}, {self.action_dim}] "
                    f"(framework.action_model.action_horizon, action_dim), got {list(a.shape)}"
                )
            if not np.isfinite(a).all():
                raise ValueError(f"examples[{b}]['action']: contains NaN or inf")
            actions.append(a)
        device, dtype = self._device_dtype()
        return torch.from_numpy(np.stack(actions)).to(device, dtype)

    # ------------------------------------------------------------------ contract
    def forward(self, examples: list[dict], **kwargs) -> dict:
        """Flow-matching loss. The VLM pair runs once; the head sees the batch ``repeated_diffusion_steps`` times."""
        actions = self._actions(examples)
        out, state = self._condition(examples, truncate=self.twin.options.truncate_long_prompts)
        r = self.repeated_diffusion_steps
        loss = self.action_model(
            out.hidden_states.repeat(r, 1, 1),
            actions.repeat(r, 1, 1),
            state.repeat(r, 1, 1) if state is not None else None,
            encoder_attention_mask=out.attention_mask.repeat(r, 1),
        )
        return {"action_loss": loss}

    @torch.no_grad()
    def predict_action(self, examples: list[dict], seed: int | None = None, **kwargs) -> dict:
        """``{"normalized_actions": float32 [B, T, action_dim]}``. Unknown kwargs (``use_ddim``, ``unnorm_key``,
        ...) are accepted and ignored; un-normalisation is the server's job.

        ``seed`` fixes the sampling noise. With the built-in head every example starts from the noise of that seed,
        so an example's actions do not depend on the rest of the batch; starVLA's head draws its own noise, so there
        the seed is applied to torch's global generator (reproducible for the same batch)."""
        out, state = self._condition(examples)
        noise_kwargs = {}
        if seed is not None:
            if isinstance(self.action_model, FlowMatchingActionHead):
                device, dtype = self._device_dtype()
                one = torch.randn(self.action_horizon, self.action_dim, generator=torch.Generator().manual_seed(seed))
                noise_kwargs["noise"] = one.expand(len(examples), -1, -1).to(device, dtype)
            else:
                torch.manual_seed(seed)
        with self.compiled_head.active(self.action_model) if self.compiled_head else contextlib.nullcontext():
            actions = self.action_model.predict_action(out.hidden_states, state,
                                                       encoder_attention_mask=out.attention_mask, **noise_kwargs)
        return {"normalized_actions": actions.float().cpu().numpy()}

    def chat(self, images, question: str, **kwargs) -> str:
        """Ask the Left Brain (the unmodified base VLM) about images."""
        return self.backbone.chat(images, question, **kwargs)


def _robot_types(examples: Sequence[dict]) -> list[str | None]:
    """The robot type of each example for the Right prompt's "Robot Type:" line: ``robot_type`` (the embedded
    runtime, serving) or starVLA's ``robot_tag`` (its data loader's embodiment tag); None = the prompts' default."""
    types = []
    for b, ex in enumerate(examples):
        value = ex.get("robot_type", ex.get("robot_tag"))
        if hasattr(value, "value"):  # starVLA's EmbodimentTag enum
            value = value.value
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"examples[{b}]['robot_type']: expected a non-empty string, got {value!r}")
        types.append(value)
    return types


def _source(example: dict) -> str:
    """Where a training example came from, for errors: the embedded runtime's LeRobot rows carry their episode and
    frame; starVLA's examples their robot tag."""
    parts = [f"{name} {example[key]}" for key, name in (("episode_index", "episode"), ("frame_index", "frame"),
                                                        ("robot_tag", "robot tag")) if example.get(key) is not None]
    return f" ({', '.join(parts)})" if parts else ""


# -------------------------------------------------------------------------- checkpoint hooks


BACKBONE_PREFIX = "backbone."  # the same modules as left_brain.*, right_brain.*, ...: never stored


def _drop_backbone_copy(module: TwinBrain, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + BACKBONE_PREFIX)]:
        del state_dict[key]


def _store_left_by_reference(module: TwinBrain, state_dict, prefix, local_metadata):
    if module.twin.options.left_brain_storage != "reference":
        return
    low_memory_setup.drop_right_base(module, state_dict, prefix)  # LoRA: the Right's base is the referenced one
    if module.twin.options.left_trainable:
        return  # a trained Left is no longer the base checkpoint: its weights are stored
    left = prefix + left_reference.LEFT_PREFIX
    for key in [k for k in state_dict if k.startswith(left)]:
        del state_dict[key]
    state_dict[prefix + left_reference.REFERENCE_KEY] = left_reference.encode_reference(
        module.twin.qwenvl.base_vlm, module.left_brain_sha256
    )


def _check_left_reference(module: TwinBrain, state_dict, prefix, *args):
    tensor = state_dict.pop(prefix + left_reference.REFERENCE_KEY, None)
    module._loaded_left_by_reference = tensor is not None
    module._loaded_with_prefix = prefix  # TwinBrain may sit inside another module (e.g. LeRobot's policy: "model.")
    if tensor is not None:
        reference = left_reference.decode_reference(tensor)
        left_reference.check_reference(reference, module.twin.qwenvl.base_vlm, module.left_brain_sha256)


def _check_state_path(module: TwinBrain, state_dict, prefix, local_metadata, strict, *args):
    """A checkpoint whose state path differs from the config's is named as such, not as a list of key mismatches
    (strict loads only: a partial load, e.g. starVLA's ``reload_modules``, may leave modules out on purpose)."""
    if not strict:
        return
    for name, owner in (("state_encoder.", module), ("action_model.state_encoder.", module.action_model)):
        in_checkpoint = any(k.startswith(prefix + name) for k in state_dict)
        in_model = getattr(owner, "state_encoder", None) is not None
        if in_checkpoint != in_model:
            where = "the Right Brain's state encoder" if name == "state_encoder." else "the action head's state encoder"
            raise ValueError(
                f"the checkpoint {'has' if in_checkpoint else 'lacks'} {where} ({name}*) but this model, with "
                f"framework.twinbrain.state_into={module.twin.options.state_into!r} and datasets.vla_data.include_state="
                f"{str(module.twin.include_state).lower()}, {'lacks' if in_checkpoint else 'has'} it: set state_into to "
                f"the run's ('both' for runs made before the option existed)")


# The switches a checkpoint was trained with (framework.twinbrain.cross_attention, ...), as one small uint8 entry of
# JSON: they change no parameter name, so without it a checkpoint would load into another variant without a word.
VARIANT_KEY = "twinbrain_variant"
PRE_SWITCH_VARIANT = TwinBrainSection().variant  # checkpoints made before the switches existed were all the default


def _store_variant(module: TwinBrain, state_dict, prefix, local_metadata):
    payload = json.dumps(module.twin.options.variant, sort_keys=True).encode()
    state_dict[prefix + VARIANT_KEY] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).clone()


def _check_variant(module: TwinBrain, state_dict, prefix, *args):
    """Refuse, by key, a checkpoint trained with other switches; one without the entry was made before the switches
    existed, with the defaults. (torch hands load pre-hooks ``strict=True`` whatever the caller passed, so strict
    and non-strict loads, e.g. starVLA's ``pretrained_checkpoint``, are checked alike; starVLA's ``reload_modules``
    loads submodules, which this hook does not see.)"""
    tensor = state_dict.pop(prefix + VARIANT_KEY, None)
    saved = PRE_SWITCH_VARIANT if tensor is None else json.loads(bytes(tensor.cpu().to(torch.uint8).tolist()).decode())
    ours = module.twin.options.variant
    differ = [key for key in ours if saved.get(key, PRE_SWITCH_VARIANT[key]) != ours[key]]
    if differ:
        made = ", ".join(f"framework.twinbrain.{k}={saved.get(k, PRE_SWITCH_VARIANT[k])!r}" for k in differ)
        here = ", ".join(f"{ours[k]!r}" for k in differ)
        raise ValueError(f"the checkpoint was trained with {made}{' (it predates the option)' if tensor is None else ''}"
                         f" but this model has {here}: set the same value(s) to load it")


def _accept_backbone_copy(module: TwinBrain, incompatible_keys):
    """The backbone's modules load under their own names (``left_brain.*``, ...), never as ``backbone.*``."""
    backbone = getattr(module, "_loaded_with_prefix", "") + BACKBONE_PREFIX
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(backbone)]


def _accept_left_by_reference(module: TwinBrain, incompatible_keys):
    if getattr(module, "_loaded_left_by_reference", False):
        left = getattr(module, "_loaded_with_prefix", "") + left_reference.LEFT_PREFIX
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(left)]
    low_memory_setup.accept_right_base_by_reference(module, incompatible_keys,
                                                    getattr(module, "_loaded_left_by_reference", False),
                                                    getattr(module, "_loaded_with_prefix", ""))


def register() -> None:
    """Add TwinBrain to the host's registry (starVLA's when importable). Idempotent; refuses to overwrite a
    different class registered under the same name."""
    from ..host.api import FRAMEWORK_REGISTRY

    existing = FRAMEWORK_REGISTRY._registry.get(REGISTRY_NAME)
    if existing is not None and existing is not TwinBrain:
        raise RuntimeError(f"framework name {REGISTRY_NAME!r} is already registered to "
                           f"{existing.__module__}.{existing.__name__}")
    FRAMEWORK_REGISTRY.register(REGISTRY_NAME)(TwinBrain)
    if not isinstance(FRAMEWORK_REGISTRY._registry, _TwinBrainSpellings):  # starVLA looks names up with []
        FRAMEWORK_REGISTRY._registry = _TwinBrainSpellings(FRAMEWORK_REGISTRY._registry)
