"""Against the real starVLA (skipped where it is not importable, as in CI). Run in an environment with a starVLA
checkout on the path, e.g. ``PYTHONPATH=<starVLA checkout> python -m pytest tests/host`` (see scripts/starvla_host).

Checks: importing the package registers TwinBrain; starVLA's ``build_framework`` builds it with starVLA's own GR00T
head; the built-in head equals starVLA's numerically with exchanged weights; TwinBrain checkpoints move between
the two heads with ``strict=True``; ``baseframework.from_pretrained`` loads a run written by the embedded trainer."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("starVLA")

import starvla_twinbrain  # noqa: E402,F401  (registers TwinBrain)
from starvla_twinbrain.framework import twinbrain as twinbrain_module  # noqa: E402
from starvla_twinbrain.model.action_head import ActionHeadConfig, FlowMatchingActionHead  # noqa: E402
from tests.factories import random_image  # noqa: E402

HEAD_ARGS = {f.name for f in dataclasses.fields(ActionHeadConfig)}

ROOT = Path(__file__).parents[2]
STATE_DIM, HORIZON, ACTION_DIM = 7, 4, 7


def tiny_config(base_vlm: str):
    cfg = OmegaConf.load(ROOT / "configs" / "tiny_cpu.yaml")
    cfg.framework.qwenvl.base_vlm = base_vlm
    return cfg


def examples(n=2, seed=0):
    g = np.random.default_rng(seed)
    return [{"image": [random_image(seed + b)], "lang": "pick up the block",
             "state": g.standard_normal((1, STATE_DIM)).astype(np.float16),
             "action": g.uniform(-1, 1, (HORIZON, ACTION_DIM)).astype(np.float16)} for b in range(n)]


def test_import_registers_twinbrain_in_starvla():
    from starVLA.model.tools import FRAMEWORK_REGISTRY

    assert FRAMEWORK_REGISTRY._registry["TwinBrain"] is twinbrain_module.TwinBrain
    for spelling in ("twinbrain", "twin_brain", "TWINBRAIN"):  # build_framework: `name in _registry`, then []
        assert spelling in FRAMEWORK_REGISTRY._registry
        assert FRAMEWORK_REGISTRY[spelling] is twinbrain_module.TwinBrain
    with pytest.raises(KeyError):  # other names still miss
        FRAMEWORK_REGISTRY["twinbrains"]


def _heads(positional_embeddings, state_dim):
    from starVLA.model.modules.action_model.GR00T_ActionHeader import get_action_model

    section = {"action_model_type": "DiT-B", "hidden_size": 64, "action_dim": ACTION_DIM, "state_dim": state_dim,
               "action_horizon": HORIZON, "add_pos_embed": True, "max_seq_len": 32, "num_target_vision_tokens": 3,
               "num_inference_timesteps": 3, "noise_beta_alpha": 1.5, "noise_beta_beta": 1.0, "noise_s": 0.999,
               "num_timestep_buckets": 1000,
               "diffusion_model_cfg": {"cross_attention_dim": 48, "dropout": 0.2, "final_dropout": True,
                                       "interleave_self_attention": True, "norm_type": "ada_norm", "num_layers": 3,
                                       "output_dim": 64, "positional_embeddings": positional_embeddings}}
    torch.manual_seed(0)
    theirs = get_action_model(OmegaConf.create({"framework": {"action_model": section}})).eval()
    flat = {**section, **section["diffusion_model_cfg"], "time_distribution": "beta"}  # starVLA's head: Beta(1.5, 1)
    del flat["diffusion_model_cfg"]
    ours = FlowMatchingActionHead(ActionHeadConfig(**{k: v for k, v in flat.items() if k in HEAD_ARGS})).eval()
    return theirs, ours


@pytest.mark.parametrize("positional_embeddings, state_dim", [(None, STATE_DIM), ("sinusoidal", STATE_DIM), (None, None)])
def test_builtin_head_equals_starvla_gr00t_head(positional_embeddings, state_dim):
    theirs, ours = _heads(positional_embeddings, state_dim)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(3, 6, 48, generator=g)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 3:] = False
    state = torch.randn(3, 1, STATE_DIM, generator=g) if state_dim else None
    actions = torch.rand(3, HORIZON, ACTION_DIM, generator=g) * 2 - 1
    for seed in range(3):
        torch.manual_seed(seed)
        ref = theirs(cond, actions, state, encoder_attention_mask=mask)
        torch.manual_seed(seed)
        got = ours(cond, actions, state, encoder_attention_mask=mask)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    torch.manual_seed(5)
    ref = theirs.predict_action(cond, state, encoder_attention_mask=mask)
    torch.manual_seed(5)
    got = ours.predict_action(cond, state, encoder_attention_mask=mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # and back: starVLA's head takes the built-in head's weights
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_build_framework_uses_starvla_head_and_checkpoints_cross_load(qwen25, monkeypatch):
    from starVLA.model.framework.base_framework import build_framework
    from starVLA.model.modules.action_model.GR00T_ActionHeader import FlowmatchingActionHead as StarVLAHead

    torch.manual_seed(0)
    model = build_framework(tiny_config(qwen25)).eval()
    assert isinstance(model, twinbrain_module.TwinBrain) and isinstance(model.action_model, StarVLAHead)
    model.train()
    loss = model(examples())["action_loss"]
    assert torch.isfinite(loss)
    model.eval()

    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", False)  # what the embedded runtime builds
    torch.manual_seed(1)
    embedded = twinbrain_module.TwinBrain(tiny_config(qwen25)).eval()
    assert isinstance(embedded.action_model, FlowMatchingActionHead)
    embedded.load_state_dict(model.state_dict(), strict=True)  # starVLA-trained → embedded
    torch.manual_seed(3)
    a = model.predict_action(examples())["normalized_actions"]
    torch.manual_seed(3)
    b = embedded.predict_action(examples())["normalized_actions"]
    assert a.dtype == np.float32 and a.shape == (2, HORIZON, ACTION_DIM)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    model.load_state_dict(embedded.state_dict(), strict=True)  # embedded → starVLA


@pytest.mark.parametrize("time_distribution, state_into", [("uniform", "right"), ("beta", "both"), ("uniform", "head")])
def test_both_hosts_train_the_same_loss(qwen25, monkeypatch, time_distribution, state_into):
    """starVLA's head follows the paper's uniform time (built with Beta(1, 1)) and the state path: with the same
    weights and seed, the loss under starVLA equals the embedded runtime's."""
    from starVLA.model.framework.base_framework import build_framework

    cfg = tiny_config(qwen25)
    cfg.framework.action_model.time_distribution = time_distribution
    cfg.framework.twinbrain.state_into = state_into
    torch.manual_seed(0)
    model = build_framework(cfg).train()
    concentrations = (model.action_model.beta_dist.concentration1.item(), model.action_model.beta_dist.concentration0.item())
    assert concentrations == ((1.0, 1.0) if time_distribution == "uniform" else (1.5, 1.0))
    assert (model.action_model.state_encoder is not None) == (state_into != "right")
    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", False)
    embedded = twinbrain_module.TwinBrain(cfg).train()
    embedded.load_state_dict(model.state_dict(), strict=True)
    for module in (model, embedded):  # dropout off, so that only the flow-matching draws are random
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    torch.manual_seed(4)
    want = model(examples())["action_loss"]
    torch.manual_seed(4)
    got = embedded(examples())["action_loss"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_stock_config_gives_starvla_optimizer_groups_of_trainable_parameters_only(qwen25):
    # A stock starVLA YAML (no state; learning rates for base / qwen_vl_interface / action_model; nothing frozen):
    # starVLA's build_param_lr_groups ignores requires_grad, so without the Left in trainer.freeze_modules its 'base'
    # group held the frozen Left alone, and DeepSpeed ZeRO-2 failed on it once emptied of frozen parameters.
    from starVLA.model.framework.base_framework import build_framework
    from starVLA.training.trainer_utils.trainer_tools import build_param_lr_groups

    cfg = tiny_config(qwen25)
    cfg.datasets.vla_data.include_state = False
    cfg.trainer.learning_rate = {"base": 1.0e-5, "qwen_vl_interface": 1.0e-5, "action_model": 1.0e-4}
    del cfg.trainer["freeze_modules"]
    torch.manual_seed(0)
    model = build_framework(cfg)
    groups = build_param_lr_groups(model=model, cfg=cfg)
    assert cfg.trainer.freeze_modules == "left_brain"
    assert [g["name"] for g in groups] == ["qwen_vl_interface", "action_model"]
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_starvla_trainers_tracked_config_is_read_and_saved_whole(qwen25, tmp_path):
    # starVLA's trainer wraps the config (AccessTrackedConfig) and saves only keys that were read: TwinBrain must
    # read through the wrapper, and the saved config.yaml must rebuild the same model.
    from starVLA.model.framework.base_framework import build_framework
    from starVLA.training.trainer_utils.config_tracker import wrap_config

    from starvla_twinbrain.config import TwinBrainConfig

    cfg = wrap_config(tiny_config(qwen25))
    torch.manual_seed(0)
    model = build_framework(cfg)
    saved = tmp_path / "config.yaml"
    cfg.save_accessed_config(saved, use_original_values=False)
    reread = OmegaConf.load(saved)
    twin = TwinBrainConfig.from_omegaconf(reread)
    assert twin.backbone == model.twin.backbone and twin.options == model.twin.options
    dit = dataclasses.replace(twin.action_model.diffusion_model_cfg, cross_attention_dim=None)  # set from the VLM
    assert dataclasses.replace(twin.action_model, diffusion_model_cfg=dit) == model.twin.action_model
    assert reread.framework.action_model.repeated_diffusion_steps == 4
    assert reread.framework.action_model.diffusion_model_cfg.cross_attention_dim == model.backbone.hidden_size
    rebuilt = build_framework(reread)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_from_pretrained_loads_an_embedded_run(qwen25, tmp_path, monkeypatch):
    from starVLA.model.framework.base_framework import baseframework

    from starvla_twinbrain.runtime.trainer import train

    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", False)
    cfg = tiny_config(qwen25)
    cfg.run_root_dir, cfg.run_id = str(tmp_path), "embedded"
    cfg.trainer.max_train_steps, cfg.trainer.save_interval = 2, 2
    cfg.datasets.vla_data.per_device_batch_size = 2
    result = train(cfg, examples(4), {"synthetic": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}})
    trained = twinbrain_module.TwinBrain(OmegaConf.load(result.run_dir / "config.yaml")).eval()
    ckpt = result.run_dir / "checkpoints" / "steps_2_pytorch_model.pt"
    trained.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True)
    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", True)

    loaded = baseframework.from_pretrained(str(ckpt)).eval()  # starVLA's loader, starVLA's head
    assert loaded.norm_stats["synthetic"]["action"]["q99"] == [1.0] * 7
    torch.manual_seed(4)
    a = loaded.predict_action(examples())["normalized_actions"]
    torch.manual_seed(4)
    b = trained.predict_action(examples())["normalized_actions"]
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("switches", [{"cross_attention": "none"},
                                      {"cross_attention": "bidirectional", "cross_layers": "odd"},
                                      {"left_trainable": True}])
def test_switches_under_starvla(qwen25, tmp_path, switches):
    """The ablation switches from the YAML under starVLA's trainer: read through its tracked config, saved in
    config.yaml, rebuilt with the same predictions; a trainable Left lands in starVLA's optimizer groups."""
    from starVLA.model.framework.base_framework import build_framework
    from starVLA.training.trainer_utils.config_tracker import wrap_config
    from starVLA.training.trainer_utils.trainer_tools import build_param_lr_groups

    cfg = tiny_config(qwen25)
    cfg.framework.twinbrain = OmegaConf.merge(cfg.framework.twinbrain, switches)
    cfg = wrap_config(cfg)
    torch.manual_seed(0)
    model = build_framework(cfg)
    assert all(getattr(model.backbone.config, key) == value for key, value in switches.items())
    model.train()
    assert torch.isfinite(model(examples())["action_loss"])
    left = {id(p) for p in model.left_brain.parameters()}
    in_groups = {id(p) for g in build_param_lr_groups(model=model, cfg=cfg) for p in g["params"]}
    if switches.get("left_trainable"):
        assert left <= in_groups and "left_brain" not in cfg.trainer.freeze_modules
    else:
        assert not left & in_groups
    saved = tmp_path / "config.yaml"
    cfg.save_accessed_config(saved, use_original_values=False)
    reread = OmegaConf.load(saved)
    assert all(reread.framework.twinbrain[key] == value for key, value in switches.items())
    torch.manual_seed(5)
    rebuilt = build_framework(reread)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    torch.manual_seed(4)
    a = model.predict_action(examples())["normalized_actions"]
    torch.manual_seed(4)
    b = rebuilt.predict_action(examples())["normalized_actions"]
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------- low-memory training
LORA = {"r": 4, "alpha": 8}


@pytest.mark.parametrize("stock", [True, False], ids=["stock-lr-keys", "tiny-yaml"])
def test_lora_int8_gives_starvla_optimizer_groups_of_exactly_the_trainable_set(qwen25, stock):
    # With LoRA the Right's base weights are frozen; starVLA's build_param_lr_groups ignores requires_grad, so the
    # framework declares them (right_brain_frozen_base) in trainer.freeze_modules next to the Left.
    pytest.importorskip("peft"), pytest.importorskip("torchao")
    from starVLA.model.framework.base_framework import build_framework
    from starVLA.training.trainer_utils.config_tracker import wrap_config
    from starVLA.training.trainer_utils.trainer_tools import build_param_lr_groups

    cfg = tiny_config(qwen25)
    if stock:
        cfg.datasets.vla_data.include_state = False
        cfg.trainer.learning_rate = {"base": 1.0e-5, "qwen_vl_interface": 1.0e-5, "action_model": 1.0e-4}
        del cfg.trainer["freeze_modules"]
    cfg.framework.twinbrain.right_lora = LORA
    cfg.framework.twinbrain.left_precision = "int8"
    cfg = wrap_config(cfg)  # as starVLA's trainer hands it over (its tracked config; lists, never tuples)
    torch.manual_seed(0)
    model = build_framework(cfg)
    groups = build_param_lr_groups(model=model, cfg=cfg)
    assert cfg.trainer.freeze_modules.split(",")[-2:] == ["left_brain", "right_brain_frozen_base"]
    in_groups = sorted(id(p) for g in groups for p in g["params"])
    assert in_groups == sorted(id(p) for p in model.parameters() if p.requires_grad)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(".lora_" in names[i] or names[i].startswith(("action_model.", "state_encoder.")) for i in in_groups)
    assert [g["name"] for g in groups] == (["qwen_vl_interface", "action_model"] if stock
                                           else ["right_brain", "action_model", "base"])
    assert model.left_precision.startswith("int8")


def test_from_pretrained_loads_an_embedded_lora_int8_run(qwen25, tmp_path, monkeypatch):
    # The checkpoint holds adapters, head and state encoder (+ the reference); starVLA's loader rebuilds LoRA and
    # the int8 Left from the run's config and loads it strictly (what starVLA's server_policy.py does).
    pytest.importorskip("peft"), pytest.importorskip("torchao")
    from starVLA.model.framework.base_framework import baseframework

    from starvla_twinbrain.runtime.trainer import train

    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", False)
    cfg = tiny_config(qwen25)
    cfg.framework.twinbrain.right_lora = LORA
    cfg.framework.twinbrain.left_precision = "int8"
    cfg.run_root_dir, cfg.run_id = str(tmp_path), "embedded-lora"
    cfg.trainer.max_train_steps, cfg.trainer.save_interval = 2, 2
    cfg.datasets.vla_data.per_device_batch_size = 2
    result = train(cfg, examples(4), {"synthetic": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}})
    ckpt = result.run_dir / "checkpoints" / "steps_2_pytorch_model.pt"
    state = torch.load(ckpt, map_location="cpu")
    assert all(".lora_" in k or k.startswith(("action_model.", "state_encoder.")) or k in ("left_brain_reference", "twinbrain_variant")
               for k in state)
    trained = twinbrain_module.TwinBrain(OmegaConf.load(result.run_dir / "config.yaml")).eval()
    trained.load_state_dict(state, strict=True)
    monkeypatch.setattr(twinbrain_module, "STARVLA_AVAILABLE", True)

    loaded = baseframework.from_pretrained(str(ckpt)).eval()
    assert loaded.left_precision.startswith("int8") and any(".lora_B." in n for n, _ in loaded.named_parameters())
    torch.manual_seed(4)
    a = loaded.predict_action(examples())["normalized_actions"]
    torch.manual_seed(4)
    b = trained.predict_action(examples())["normalized_actions"]
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
