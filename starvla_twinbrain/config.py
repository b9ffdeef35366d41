"""The configuration TwinBrain reads, as one typed tree of OmegaConf structured configs (starVLA's YAML is OmegaConf).

    framework.qwenvl        QwenVLSection        the keys TwinBrain reads from starVLA's VLM section
    framework.twinbrain     TwinBrainSection     TwinBrain's own options (the backbone's, model/config.py, and more)
    framework.action_model  ActionModelSection   the GR00T-style head (defaults: the built-in head's = starVLA's)
    datasets.vla_data       DataSection          what the embedded runtime's LeRobot loader reads
    trainer                 TrainerSection       what the embedded trainer reads
    starvla serve           ServeSection         the policy server's options (its command-line flags)

Every field has its one default here (or, for the model core's fields, in ``model/config.py`` /
``model/action_head.py``, which these sections inherit or quote). A section is validated once, when its owner
starts (the framework at construction, the embedded trainer and server at start-up): an unknown key is refused with a
"did you mean", a value of the wrong type is refused (nothing is coerced: ``"10"`` is not 10), and the model core's
errors come back under the YAML key (``OptionError.under``). Keys a section shares with starVLA but the running host
does not implement are warned about once, by name.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Optional

from .model.config import ActionHeadConfig
from .model.config import (  # noqa: F401  (re-exported for users of the YAML tree)
    MAX_IMAGES_PER_EXAMPLE, MAX_PROMPT_TOKENS, VARIANT_KEYS, AttentionBackend, BackboneConfig, BackboneOptions,
    MissingPackage, OptionError, PromptConfig, RightLoraConfig, check_positive_int,
)
from .normalization import Normalization

logger = logging.getLogger(__name__)

MISSING = "???"  # OmegaConf's mandatory value
MAX_EXAMPLES_PER_REQUEST = 32  # the policy server's default (starvla serve --max-batch)

StateInto = Literal["right", "head", "both"]
LeftBrainStorage = Literal["reference", "copy"]
LeftPrecision = Literal["bf16", "int8"]

# ------------------------------------------------------------------------------------------------ framework.*


@dataclass(frozen=True)
class QwenVLSection:
    """``framework.qwenvl``: the keys TwinBrain reads; the section's other keys (``vl_hidden_dim``, ...) are the
    host's and are left alone."""

    base_vlm: str = MISSING  # local path or hub id of a Qwen2.5-VL / Qwen3-VL checkpoint
    attn_implementation: Optional[AttentionBackend] = None  # None = the best available for the device


@dataclass(frozen=True, kw_only=True)
class TwinBrainSection(BackboneOptions):
    """``framework.twinbrain``: TwinBrain-only options. An unmodified starVLA YAML needs none of them."""

    compile_action_head: bool = False  # torch.compile the head's DiT (it runs num_inference_timesteps times per chunk)
    left_brain_storage: LeftBrainStorage = "reference"  # checkpoints hold a (path, hash) reference, or the weights
    # Where the robot state enters: "right" = state tokens appended to the Right Brain's input (paper eq. 3, the head
    # sees only the Right's hidden states); "head" = the action head's own state token only (GR00T's path, and the
    # released PhysBrain-VLA code's only one); "both" = the two at once.
    state_into: StateInto = "right"
    truncate_long_prompts: bool = False  # training only: cut an over-long instruction instead of stopping the run
    right_lora: Optional[RightLoraConfig] = None  # LoRA on the Right Brain (README, "Low-memory training")
    # The frozen Left's weights: "bf16" = as the precision policy stores frozen weights (bf16 on GPU, fp32 on CPU);
    # "int8" = its decoder's linear weights int8 weight-only (torchao), derived from the referenced base at load.
    left_precision: LeftPrecision = "bf16"

    def __post_init__(self):
        super().__post_init__()
        if self.left_precision == "int8" and self.left_brain_storage == "copy":
            raise OptionError("left_precision", "=int8 with left_brain_storage=copy: the int8 Left is derived from "
                              "the referenced base checkpoint at load time, never stored; use left_brain_storage: "
                              "reference")


TwinBrainOptions = TwinBrainSection  # the name earlier releases used

_HEAD = {f.name: f.default for f in fields(ActionHeadConfig)}  # the built-in head's defaults = starVLA's QwenGR00T's


@dataclass(frozen=True)
class DiffusionModelSection:
    """``framework.action_model.diffusion_model_cfg``: the DiT."""

    num_layers: int = _HEAD["num_layers"]
    output_dim: int = _HEAD["output_dim"]
    dropout: float = _HEAD["dropout"]
    final_dropout: bool = _HEAD["final_dropout"]
    interleave_self_attention: bool = _HEAD["interleave_self_attention"]
    norm_type: str = _HEAD["norm_type"]
    positional_embeddings: Optional[str] = _HEAD["positional_embeddings"]
    max_num_positional_embeddings: int = _HEAD["max_num_positional_embeddings"]
    num_attention_heads: Optional[int] = None  # None: the action_model_type's
    attention_head_dim: Optional[int] = None
    attention_bias: bool = _HEAD["attention_bias"]
    activation_fn: str = _HEAD["activation_fn"]
    norm_eps: float = _HEAD["norm_eps"]
    cross_attention_dim: Optional[int] = None  # the VLM's hidden size: set by the framework, whatever is given


@dataclass(frozen=True)
class ActionModelSection:
    """``framework.action_model``: the flow-matching head. The defaults are starVLA's QwenGR00T's, so a QwenGR00T
    YAML switched to TwinBrain builds the same head."""

    action_dim: int = MISSING
    action_horizon: int = MISSING
    state_dim: Optional[int] = None  # needed when datasets.vla_data.include_state is true
    action_model_type: str = _HEAD["action_model_type"]
    hidden_size: int = _HEAD["hidden_size"]
    add_pos_embed: bool = _HEAD["add_pos_embed"]
    max_seq_len: int = _HEAD["max_seq_len"]
    repeated_diffusion_steps: int = 8  # the head sees each batch this many times per step (new noise and times)
    noise_beta_alpha: float = _HEAD["noise_beta_alpha"]
    noise_beta_beta: float = _HEAD["noise_beta_beta"]
    noise_s: float = _HEAD["noise_s"]
    num_timestep_buckets: int = _HEAD["num_timestep_buckets"]
    num_inference_timesteps: int = _HEAD["num_inference_timesteps"]
    num_target_vision_tokens: int = _HEAD["num_target_vision_tokens"]
    time_distribution: Literal["beta", "uniform"] = _HEAD["time_distribution"]
    diffusion_model_cfg: DiffusionModelSection = field(default_factory=DiffusionModelSection)
    # starVLA's head reads these; the built-in one does not (warned once when set)
    action_hidden_dim: Optional[int] = None
    future_action_window_size: Optional[int] = None
    past_action_window_size: Optional[int] = None


STARVLA_ONLY_HEAD_KEYS = ("action_hidden_dim", "future_action_window_size", "past_action_window_size")
# None means "the type's default" for these: not passed on (starVLA's DiT would take the None)
_UNSET_WHEN_NONE = ("state_dim", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
                    *STARVLA_ONLY_HEAD_KEYS)

# ------------------------------------------------------------------------------------------------ datasets, trainer, serve


@dataclass(frozen=True)
class DataSection:
    """``datasets.vla_data`` as the embedded runtime reads it (under starVLA the section is its data loader's; the
    framework reads only ``include_state``)."""

    dataset_py: str = "lerobot_datasets"  # the only one the embedded runtime implements
    data_root_dir: Optional[str] = None  # needed to train from the YAML (starvla train)
    data_mix: Optional[str] = None  # a LeRobot v3.0 dataset folder under data_root_dir
    include_state: bool = False
    obs_image_size: Optional[Any] = None  # an integer or [height, width]; None: 224x224 (see obs_image_size)
    per_device_batch_size: int = 8
    normalization: Normalization = "q99"
    video_backend: Optional[str] = None
    num_workers: int = 0
    lerobot_version: str = "v3.0"  # likewise


# datasets.vla_data keys of starVLA's own loaders that the embedded runtime does not implement: warned once.
STARVLA_ONLY_DATA_KEYS = ("CoT_prompt", "default_image_resolution", "image_size", "obs", "action_mode",
                          "sequential_step_sampling", "delete_pause_frame", "action_mode_apply_keys",
                          "action_mode_state_map", "default_prompt")
# Keys in most stock starVLA YAMLs that no code reads, starVLA's included: warned once (so those YAMLs run unchanged).
UNREAD_DATA_KEYS = ("action_type", "load_all_data_for_training")


@dataclass(frozen=True)
class OptimizerSection:
    name: Literal["AdamW"] = "AdamW"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainerSection:
    """``trainer`` as the embedded trainer reads it (starVLA's keys; under starVLA the section is its trainer's)."""

    max_train_steps: int = 1
    num_warmup_steps: int = 0
    save_interval: Optional[int] = None  # None: at the end only
    eval_interval: Optional[int] = None  # None: never
    logging_frequency: int = 10
    learning_rate: Any = 1e-5  # one rate, or {base: ..., <module path>: ...}
    lr_scheduler_type: str = "cosine_with_min_lr"  # transformers' get_scheduler names
    scheduler_specific_kwargs: Any = None  # e.g. {min_lr: 1.0e-6}
    freeze_modules: str = ""  # comma-separated attribute paths
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    gradient_clipping: Optional[float] = None
    gradient_accumulation_steps: int = 1
    is_resume: bool = False
    save_format: Literal["pt", "safetensors"] = "pt"

    def __post_init__(self):
        for name in ("max_train_steps", "logging_frequency", "gradient_accumulation_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("save_interval", "eval_interval"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.num_warmup_steps < 0:
            raise OptionError("num_warmup_steps", f"={self.num_warmup_steps}: expected >= 0")


@dataclass(frozen=True)
class ServeSection:
    """``starvla serve``'s options; the command's flags take their defaults from here."""

    port: int = 10093
    host: str = "127.0.0.1"
    device: str = "auto"  # auto (GPU when present, else CPU) | cpu | cuda[:N]
    bf16: bool = False
    compile_head: bool = False
    max_batch: int = MAX_EXAMPLES_PER_REQUEST
    max_images: Optional[int] = None  # None: the run's framework.twinbrain.max_images_per_example
    unnorm_key: Optional[str] = None
    idle_timeout: Optional[float] = None


# ------------------------------------------------------------------------------------------------ reading sections


def load_section(kind, raw, key: str, what: str = "a TwinBrain option"):
    """``raw`` (a mapping from the YAML, or None) as a ``kind`` instance: OmegaConf merges it into the structured
    schema (unknown keys and bad choices refused), a strict type check first (OmegaConf would turn ``"10"`` into 10),
    then the dataclass's own checks; every error names ``key.<field>``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    raw = config_to_dict(raw)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{key}={raw!r}: expected a mapping")
    _check_types(kind, raw, key, what)
    try:
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(kind), raw), resolve=True)
        return _instantiate(kind, merged, key)
    except OptionError as err:
        raise err.under(f"{key}.{err.field}") from None
    except ConfigKeyError as err:  # _check_types has named unknown keys; this is a safety net
        raise ValueError(f"{key}.{err.full_key} is not {what}") from None
    except OmegaConfBaseException as err:
        raise ValueError(f"{key}.{err.full_key}={_lookup(raw, err.full_key)!r}: {str(err).splitlines()[0]}") from None


def _instantiate(kind, data: dict, key: str):
    """The (nested) dataclass from OmegaConf's merged, validated container. (Not ``OmegaConf.to_object``: starVLA's
    trainer replaces ``OmegaConf.to_container`` with a version that lacks the arguments to_object passes.)"""
    hints = typing.get_type_hints(kind)
    values = {}
    for name, value in data.items():
        if value == MISSING:
            raise ValueError(f"{key}.{name} is missing")
        expected = _unwrap_optional(hints[name])
        if is_dataclass(expected) and isinstance(value, dict):
            value = _instantiate(expected, value, f"{key}.{name}")
        elif typing.get_origin(expected) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return kind(**values)


def _lookup(raw: dict, dotted: str):
    for part in str(dotted).split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _check_types(kind, raw: dict, key: str, what: str) -> None:
    """Unknown keys (with a suggestion) and values of the wrong type, before OmegaConf would coerce them."""
    hints = typing.get_type_hints(kind)
    required = {f.name for f in fields(kind) if f.default == MISSING}
    for name, value in raw.items():
        if name not in hints:
            close = difflib.get_close_matches(str(name), list(hints), n=1)
            hint = f" Did you mean {key}.{close[0]}?" if close else f" Known keys: {', '.join(hints)}."
            raise ValueError(f"{key}.{name} is not {what}.{hint}")
        expected = _unwrap_optional(hints[name])
        if value is None and expected is hints[name] and expected is not Any:  # not Optional
            raise ValueError(f"{key}.{name}=None: expected {_describe(expected, name in required)}")
        if value is None or expected is Any:
            continue
        if is_dataclass(expected):
            if not isinstance(value, dict):
                raise ValueError(f"{key}.{name}={value!r}: expected a mapping")
            _check_types(expected, value, f"{key}.{name}", what)
        elif not _is_instance(value, expected):
            raise ValueError(f"{key}.{name}={value!r}: expected {_describe(expected, name in required)}")


def _unwrap_optional(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def _is_instance(value, expected) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if typing.get_origin(expected) is Literal:
        return value in typing.get_args(expected)
    if typing.get_origin(expected) in (tuple, list):
        return isinstance(value, (list, tuple))
    return True


def _describe(expected, required: bool = False) -> str:
    if expected is int and required:  # the sizes a section cannot do without (action_dim, action_horizon)
        return "a positive integer"
    if typing.get_origin(expected) is Literal:
        return f"one of {' | '.join(map(str, typing.get_args(expected)))}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(expected, "a list")


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_WARNED: set[str] = set()


@dataclass(frozen=True)
class TwinBrainConfig:
    """The framework's view of the run's config: its three sections, and whether samples carry a state."""

    qwenvl: QwenVLSection
    options: TwinBrainSection
    action_model: ActionModelSection
    include_state: bool  # datasets.vla_data.include_state

    @property
    def state_dim(self) -> int | None:
        return self.action_model.state_dim if self.include_state else None

    @property
    def head_state_dim(self) -> int | None:
        """The action head's state size: set only when the state goes to the head (``state_into: head | both``)."""
        return self.state_dim if self.options.state_into in ("head", "both") else None

    @property
    def backbone(self) -> BackboneConfig:
        """The model core's config: the options plus the model and the Right's state size; errors come back under
        their YAML key."""
        options = {f.name: getattr(self.options, f.name) for f in fields(BackboneOptions)}
        with yaml_keys(BACKBONE_KEYS):
            return BackboneConfig(base_vlm=self.qwenvl.base_vlm, attn_implementation=self.qwenvl.attn_implementation,
                                  state_dim=self.state_dim if self.options.state_into != "head" else None, **options)

    def head_section(self, cross_attention_dim: int) -> dict:
        """``framework.action_model`` as the heads take it: resolved, unset keys left out, the condition width and
        the head's state size filled in."""
        section = _without_unset(asdict(self.action_model))
        section["diffusion_model_cfg"]["cross_attention_dim"] = cross_attention_dim
        section["state_dim"] = self.head_state_dim  # None: no state encoder in the head (starVLA's reads the key)
        return section

    def head_config(self, cross_attention_dim: int) -> ActionHeadConfig:
        """The built-in head's config (``diffusion_model_cfg`` flattened in); starVLA-only keys are warned about."""
        for name in STARVLA_ONLY_HEAD_KEYS:
            if getattr(self.action_model, name) is not None:
                warn_once(f"framework.action_model.{name} is read by starVLA's GR00T head only; the built-in head "
                           "(starVLA not installed) ignores it")
        section = self.head_section(cross_attention_dim)
        section.update(section.pop("diffusion_model_cfg"))
        for name in (*STARVLA_ONLY_HEAD_KEYS, "repeated_diffusion_steps"):
            section.pop(name, None)
        with yaml_keys(HEAD_KEYS):
            return ActionHeadConfig(**section)

    @classmethod
    def from_omegaconf(cls, cfg) -> "TwinBrainConfig":
        """The framework's sections of a starVLA config (OmegaConf or starVLA's access-tracked config)."""
        if config_select(cfg, "framework.qwenvl.base_vlm") is None:
            raise ValueError("framework.qwenvl.base_vlm is missing: set it to the path of a Qwen2.5-VL / Qwen3-VL checkpoint")
        if config_select(cfg, "framework.action_model") is None:
            raise ValueError("framework.action_model is missing: TwinBrain needs the action head's section")
        qwenvl = {k: v for k, v in (config_to_dict(config_select(cfg, "framework.qwenvl")) or {}).items()
                  if k in ("base_vlm", "attn_implementation")}  # the section's other keys are the host's
        include_state = config_select(cfg, "datasets.vla_data.include_state", default=False)
        if not isinstance(include_state, bool):
            raise ValueError(f"datasets.vla_data.include_state={include_state!r}: expected true or false")
        twin = cls(
            qwenvl=load_section(QwenVLSection, qwenvl, "framework.qwenvl"),
            options=load_section(TwinBrainSection, config_select(cfg, "framework.twinbrain"), "framework.twinbrain"),
            action_model=load_section(ActionModelSection, config_select(cfg, "framework.action_model"),
                                      "framework.action_model", "a key of the action head's section"),
            include_state=include_state,
        )
        if include_state and twin.action_model.state_dim is None:
            raise ValueError("datasets.vla_data.include_state is true but framework.action_model.state_dim is not set")
        twin.backbone  # the model core's checks, now rather than after the VLM has loaded
        return twin

    def write_back(self, cfg) -> None:
        """Store the resolved ``framework.twinbrain`` and ``framework.action_model`` in ``cfg``: starVLA saves only
        keys that were read, and ``from_pretrained`` must rebuild the same model."""
        from omegaconf import OmegaConf

        config_set(cfg.framework, "twinbrain", OmegaConf.create(_tuples_as_lists(asdict(self.options))))
        config_set(cfg.framework, "action_model", OmegaConf.create(_without_unset(asdict(self.action_model))))
        # read every key back through the host's config so that a tracking host saves all of them
        config_to_dict(cfg.framework.twinbrain), config_to_dict(cfg.framework.action_model)


# The YAML key of each model-core argument the framework passes on (OptionError.field → key).
BACKBONE_KEYS = {"base_vlm": "framework.qwenvl.base_vlm", "attn_implementation": "framework.qwenvl.attn_implementation",
                 "state_dim": "framework.action_model.state_dim", "": "framework.twinbrain"}
HEAD_KEYS = {**{f.name: f"framework.action_model.diffusion_model_cfg.{f.name}" for f in fields(DiffusionModelSection)},
             "": "framework.action_model"}


@contextlib.contextmanager
def yaml_keys(keys: dict):
    """``with yaml_keys(KEYS): build(...)``: an :class:`OptionError` from the model core is re-raised under its
    YAML key: ``KEYS[field]``, else ``KEYS[""] + "." + field``."""
    try:
        yield
    except (OptionError, MissingPackage) as err:
        head = err.field.split(".")[0]
        key = keys[head] + err.field[len(head):] if head in keys else f"{keys['']}.{err.field}"
        raise err.under(key) from None


def _without_unset(section: dict) -> dict:
    out = {}
    for name, value in section.items():
        if isinstance(value, dict):
            out[name] = _without_unset(value)
        elif not (value is None and name in _UNSET_WHEN_NONE):
            out[name] = value
    return out


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


def _tuples_as_lists(value):
    """YAML has lists; omegaconf 2.4 would keep a tuple (right_lora.target_modules) as a TupleConfig, which
    starVLA's tracked config cannot iterate."""
    if isinstance(value, dict):
        return {k: _tuples_as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tuples_as_lists(v) for v in value]
    return value


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
