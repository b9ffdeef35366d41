"""The typed configuration tree (starvla_twinbrain/config.py): one default per field, unknown keys and wrong types
refused by YAML key, the model core's errors named by its own arguments and re-raised under the YAML key."""

import dataclasses
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from starvla_twinbrain import config as tree
from starvla_twinbrain.config import TwinBrainConfig
from starvla_twinbrain.model.config import ActionHeadConfig, BackboneConfig, BackboneOptions, OptionError

TINY = Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml"

# A QwenGR00T YAML as starVLA ships them (examples/simBenchmarks/*/train_files), switched to TwinBrain: its dead and
# starVLA-only keys included.
STOCK = {
    "run_id": "stock", "run_root_dir": "runs", "seed": 42, "wandb_entity": "me", "wandb_project": None, "is_debug": False,
    "framework": {
        "name": "TwinBrain",
        "qwenvl": {"base_vlm": "some/Qwen2.5-VL-3B", "attn_implementation": "flash_attention_2", "vl_hidden_dim": 2048},
        "dino": {"dino_backbone": "dinov2_vits14"},
        "action_model": {
            "action_model_type": "DiT-B", "action_hidden_dim": 1024, "hidden_size": 1024, "add_pos_embed": True,
            "max_seq_len": 1024, "action_dim": 7, "state_dim": 7, "future_action_window_size": 15, "action_horizon": 16,
            "past_action_window_size": 0, "repeated_diffusion_steps": 8, "noise_beta_alpha": 1.5,
            "noise_beta_beta": 1.0, "noise_s": 0.999, "num_timestep_buckets": 1000, "num_inference_timesteps": 4,
            "num_target_vision_tokens": 32,
            "diffusion_model_cfg": {"cross_attention_dim": 2048, "dropout": 0.2, "final_dropout": True,
                                    "interleave_self_attention": True, "norm_type": "ada_norm", "num_layers": 16,
                                    "output_dim": 1024, "positional_embeddings": None},
        },
    },
    "datasets": {"vla_data": {
        "dataset_py": "lerobot_datasets", "data_root_dir": "data", "data_mix": "bridge", "action_type": "delta_qpos",
        "CoT_prompt": "Your task is {instruction}.", "default_image_resolution": [3, 224, 224],
        "per_device_batch_size": 16, "load_all_data_for_training": True, "obs": ["image_0"], "include_state": False,
    }},
    "trainer": {
        "max_train_steps": 100000, "num_warmup_steps": 5000, "save_interval": 10000,
        "eval_interval": 100, "learning_rate": {"base": 2.5e-5, "qwen_vl_interface": 1.0e-5, "action_model": 1.0e-4},
        "lr_scheduler_type": "cosine_with_min_lr", "scheduler_specific_kwargs": {"min_lr": 1.0e-6},
        "freeze_modules": "", "loss_scale": {"vla": 1.0, "vlm": 0.1}, "max_grad_norm": 1.0, "warmup_ratio": 0.1,
        "weight_decay": 0.0, "logging_frequency": 100, "gradient_clipping": 1.0, "gradient_accumulation_steps": 1,
        "optimizer": {"name": "AdamW", "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-8},
    },
}


def with_value(base: dict, dotted: str, value):
    cfg = OmegaConf.create(base)
    OmegaConf.update(cfg, dotted, value, force_add=True)
    return cfg


def test_each_default_is_defined_once():
    """The YAML sections take the model core's defaults, never a copy: the head's section quotes ActionHeadConfig's,
    framework.twinbrain inherits the backbone's options."""
    head = {f.name: f.default for f in dataclasses.fields(ActionHeadConfig)}
    section = tree.ActionModelSection()
    for f in dataclasses.fields(tree.ActionModelSection):
        if f.name in head and head[f.name] is not dataclasses.MISSING:
            assert getattr(section, f.name) == head[f.name], f.name
    dit = tree.DiffusionModelSection()
    for f in dataclasses.fields(tree.DiffusionModelSection):
        if f.name in head and head[f.name] is not dataclasses.MISSING:
            assert getattr(dit, f.name) == head[f.name], f.name
    assert issubclass(tree.TwinBrainSection, BackboneOptions)
    backbone = {f.name for f in dataclasses.fields(BackboneOptions)}
    own = {f.name for f in dataclasses.fields(tree.TwinBrainSection)} - backbone
    assert own == {"compile_action_head", "left_brain_storage", "state_into", "truncate_long_prompts", "right_lora",
                   "left_precision"}


def test_the_backbone_config_is_the_section_plus_the_model():
    cfg = OmegaConf.load(TINY)
    cfg.framework.twinbrain.cross_layers = "odd"
    twin = TwinBrainConfig.from_omegaconf(cfg)
    backbone = twin.backbone
    assert backbone.base_vlm == cfg.framework.qwenvl.base_vlm and backbone.attn_implementation == "sdpa"
    assert backbone.state_dim == 7 and backbone.cross_layers == "odd" and backbone.state_hidden_dim == 64
    for f in dataclasses.fields(BackboneOptions):
        assert getattr(backbone, f.name) == getattr(twin.options, f.name), f.name


@pytest.mark.parametrize("key, value, message", [
    # the example: a misspelt head key used to be dropped with a debug log
    ("framework.action_model.num_inference_timestep", 10,
     r"framework\.action_model\.num_inference_timestep is not a key of the action head's section\. "
     r"Did you mean framework\.action_model\.num_inference_timesteps\?"),
    ("framework.action_model.diffusion_model_cfg.num_layer", 2,
     r"framework\.action_model\.diffusion_model_cfg\.num_layer is not .* Did you mean "
     r"framework\.action_model\.diffusion_model_cfg\.num_layers\?"),
    ("framework.twinbrain.prompts.left_sytem", "x", r"framework\.twinbrain\.prompts\.left_sytem is not a TwinBrain "
                                                    r"option\. Did you mean framework\.twinbrain\.prompts\.left_system\?"),
    # nothing is coerced
    ("framework.action_model.num_inference_timesteps", "10", r"num_inference_timesteps='10': expected an integer"),
    ("framework.twinbrain.share_prefix", 1, r"framework\.twinbrain\.share_prefix=1: expected true or false"),
    ("framework.action_model.noise_s", True, r"framework\.action_model\.noise_s=True: expected a number"),
    ("framework.action_model.time_distribution", "normal",
     r"framework\.action_model\.time_distribution='normal': expected one of beta \| uniform"),
    ("framework.qwenvl.attn_implementation", "flash3",
     r"framework\.qwenvl\.attn_implementation='flash3': expected one of eager \| sdpa"),
    # the model core's own checks, named by YAML key
    ("framework.twinbrain.cross_attention", "none", None),
    ("framework.action_model.action_model_type", "DiT-XL", r"framework\.action_model\.action_model_type='DiT-XL'"),
    ("framework.action_model.diffusion_model_cfg.norm_type", "layer_norm",
     r"framework\.action_model\.diffusion_model_cfg\.norm_type='layer_norm': expected ada_norm"),
    ("framework.twinbrain.prompts.right_user", "no placeholder",
     r"framework\.twinbrain\.prompts\.right_user must contain '\{instruction\}'"),
])
def test_bad_keys_and_values_are_named_by_yaml_key(key, value, message):
    cfg = with_value(OmegaConf.to_container(OmegaConf.load(TINY)), key, value)
    if message is None:  # a valid value: no error
        TwinBrainConfig.from_omegaconf(cfg).head_config(64)
        return
    with pytest.raises(ValueError, match=message):
        twin = TwinBrainConfig.from_omegaconf(cfg)
        twin.backbone, twin.head_config(64)


def test_combinations_are_checked_by_the_model_core_and_named_by_the_framework():
    with pytest.raises(OptionError, match=r"^cross_layers='odd' with cross_attention='none'") as err:
        BackboneConfig(base_vlm="x", cross_attention="none", cross_layers="odd")
    assert err.value.field == "cross_layers" and "framework" not in str(err.value)
    cfg = OmegaConf.load(TINY)
    cfg.framework.twinbrain.cross_attention, cfg.framework.twinbrain.cross_layers = "none", "odd"
    with pytest.raises(ValueError, match=r"^framework\.twinbrain\.cross_layers='odd' with cross_attention='none'"):
        TwinBrainConfig.from_omegaconf(cfg)


def test_head_errors_name_the_head_argument_in_python_and_the_yaml_key_from_yaml():
    with pytest.raises(OptionError, match=r"^norm_type='rms'"):
        ActionHeadConfig(action_dim=7, action_horizon=4, cross_attention_dim=8, norm_type="rms")
    cfg = OmegaConf.load(TINY)
    cfg.framework.action_model.action_horizon = 100  # over max_seq_len 64
    with pytest.raises(ValueError, match=r"^framework\.action_model\.action_horizon=100 exceeds max_seq_len=64"):
        TwinBrainConfig.from_omegaconf(cfg).head_config(64)


def test_a_stock_starvla_yaml_builds_and_its_host_only_keys_are_warned_once(caplog):
    """starVLA's own QwenGR00T YAML, switched to TwinBrain: the framework reads its sections; the embedded runtime
    accepts the keys starVLA ignores too and warns once, by name, about those only starVLA implements."""
    from starvla_twinbrain.runtime.trainer import check_config_keys

    cfg = OmegaConf.create(STOCK)
    twin = TwinBrainConfig.from_omegaconf(cfg)
    assert twin.action_model.action_horizon == 16 and twin.action_model.future_action_window_size == 15
    assert twin.qwenvl.attn_implementation == "flash_attention_2" and twin.state_dim is None
    section = twin.head_section(cross_attention_dim=2048)
    assert section["state_dim"] is None and section["diffusion_model_cfg"]["cross_attention_dim"] == 2048
    assert "num_attention_heads" not in section["diffusion_model_cfg"]  # unset: starVLA's DiT takes the type's
    tree._WARNED.clear()
    with caplog.at_level(logging.WARNING):
        twin.head_config(2048), twin.head_config(2048)
        with pytest.raises(ValueError, match=r"trainer\.warmup_ratio is not read by the embedded trainer"):
            check_config_keys(cfg)
        del cfg.trainer.warmup_ratio
        trainer, data = check_config_keys(cfg)
        check_config_keys(cfg)
    assert trainer.max_train_steps == 100000 and trainer.optimizer.betas == (0.9, 0.95)
    assert data.per_device_batch_size == 16 and data.data_mix == "bridge"
    warned = [r.getMessage() for r in caplog.records]
    for key in ("framework.action_model.future_action_window_size", "trainer.loss_scale", "trainer.max_grad_norm",
                "datasets.vla_data.action_type", "datasets.vla_data.CoT_prompt", "datasets.vla_data.obs"):
        assert sum(m.startswith(key + " ") for m in warned) == 1, (key, warned)


def test_trainer_and_data_sections_are_typed():
    from starvla_twinbrain.runtime.trainer import check_config_keys

    cfg = OmegaConf.load(TINY)
    trainer, data = check_config_keys(cfg)
    assert isinstance(trainer, tree.TrainerSection) and trainer.save_format == "pt" and trainer.gradient_clipping == 1.0
    assert data.obs_image_size == [64, 64] and data.normalization == "q99"
    for key, value, message in [("trainer.max_train_steps", "200", r"trainer\.max_train_steps='200': expected an integer"),
                                ("trainer.save_interval", 0, r"trainer\.save_interval=0: expected a positive integer"),
                                ("trainer.optimizer.name", "SGD", r"trainer\.optimizer\.name='SGD': expected one of AdamW"),
                                ("datasets.vla_data.normalization", "z", r"normalization='z': expected one of q99 \| min_max"),
                                ("datasets.vla_data.per_device_batch_siz", 4,
                                 r"datasets\.vla_data\.per_device_batch_siz is not read by the embedded runtime's data "
                                 r"loader\. Did you mean datasets\.vla_data\.per_device_batch_size\?")]:
        with pytest.raises(ValueError, match=message):
            check_config_keys(with_value(OmegaConf.to_container(cfg), key, value))


def test_serve_flags_take_their_defaults_from_the_serve_section():
    from starvla_twinbrain.cli import build_parser

    args = build_parser().parse_args(["serve", "--ckpt", "x.pt"])
    section = tree.ServeSection()
    for f in dataclasses.fields(section):
        assert getattr(args, f.name) == getattr(section, f.name), f.name
