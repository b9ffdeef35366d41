"""TwinBrain against starVLA's framework contract, with the local stand-in host (CI cannot install starVLA)."""

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from starvla_twinbrain.framework import TwinBrain, register
from starvla_twinbrain.framework.states import validate_states
from starvla_twinbrain.host.api import FRAMEWORK_REGISTRY, STARVLA_AVAILABLE
from tests.factories import ACTION_DIM, HORIZON, STATE_DIM, examples, make_config

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="stand-in host tests; the real starVLA is checked separately")

@pytest.fixture(scope="module")
def model(tiny_vlm):
    torch.manual_seed(0)
    return TwinBrain(make_config(tiny_vlm))


def test_registered_once_and_found_under_any_spelling():
    register()
    register()  # idempotent
    assert [name for name, cls in FRAMEWORK_REGISTRY._registry.items() if cls is TwinBrain] == ["TwinBrain"]
    for name in ("TwinBrain", "twinbrain", "TWINBRAIN", "twin_brain", "Twin-Brain", "tWiNbRaIn"):
        assert FRAMEWORK_REGISTRY[name] is TwinBrain
        # starVLA's build_framework first asks ``name in FRAMEWORK_REGISTRY._registry``
        assert name in FRAMEWORK_REGISTRY._registry and FRAMEWORK_REGISTRY._registry.get(name) is TwinBrain
    for name in ("twinbrains", "twin brain", "QwenGR00T_twinbrain"):
        with pytest.raises(KeyError):
            FRAMEWORK_REGISTRY[name]
        assert name not in FRAMEWORK_REGISTRY._registry and FRAMEWORK_REGISTRY._registry.get(name) is None


def test_register_refuses_to_overwrite_another_class():
    class Other:
        pass

    FRAMEWORK_REGISTRY._registry["TwinBrain"] = Other
    try:
        with pytest.raises(RuntimeError, match="already registered"):
            register()
    finally:
        FRAMEWORK_REGISTRY._registry["TwinBrain"] = TwinBrain


def test_submodule_paths(model):
    names = {name for name, _ in model.named_children()}
    assert {"left_brain", "right_brain", "state_encoder", "action_model"} <= names
    assert model.qwen_vl_interface is model.right_brain
    assert not any(k.startswith("backbone.") for k in model.state_dict())


def test_one_owner_per_module(model):
    """The backbone is registered (after its modules): parameters keep the names users type, each listed once;
    attribute paths resolve as starVLA's trainer resolves them; the frozen Left never enters train mode."""
    assert dict(model.named_children())["backbone"] is model.backbone
    names = [name for name, _ in model.named_parameters()]
    assert not any(n.startswith("backbone.") for n in names) and len(names) == len(set(names))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.backbone.parameters()) + sum(
        p.numel() for p in model.action_model.parameters())
    for path in ("left_brain", "right_brain", "right_brain.visual", "state_encoder", "action_model",
                 "qwen_vl_interface"):
        assert model.get_submodule(path) is eval("model." + path), path
    was_training = model.training
    for mode in (True, False, True):
        model.train(mode)
        assert not model.left_brain.training
        assert model.right_brain.training == mode and model.action_model.training == mode
    model.train(was_training)
    missing, unexpected = model.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected


def stock_config(base_vlm: str):
    """A starVLA Bridge-style YAML: no state, the stock learning-rate keys, nothing frozen by the user."""
    cfg = make_config(base_vlm)
    cfg.datasets.vla_data.include_state = False
    cfg.trainer.learning_rate = {"base": 1.0e-5, "qwen_vl_interface": 1.0e-5, "action_model": 1.0e-4}
    cfg.trainer.freeze_modules = ""
    return cfg


def host_param_groups(model, cfg) -> dict[str, list]:
    """The groups starVLA's trainer builds (its documented rule, not its code): each ``trainer.learning_rate`` path
    gets its module's parameters minus those under ``trainer.freeze_modules``; all other non-frozen parameters go
    to ``base``, whatever their ``requires_grad``."""
    frozen = {id(p) for path in cfg.trainer.freeze_modules.split(",") if path.strip()
              for p in model.get_submodule(path.strip()).parameters()}
    groups, used = {}, set(frozen)
    for path in (k for k in cfg.trainer.learning_rate if k != "base"):
        params = [p for p in getattr(model, path).parameters() if id(p) not in used]
        groups[path] = params
        used |= {id(p) for p in params}
    groups["base"] = [p for p in model.parameters() if id(p) not in used]
    return {name: params for name, params in groups.items() if params}


def test_stock_config_host_groups_hold_only_trainable_parameters(tiny_vlm):
    # Without the Left in trainer.freeze_modules, 'base' would hold the frozen Left alone, and DeepSpeed ZeRO, which
    # drops frozen parameters, fails on the empty group (torch.cat(): expected a non-empty list of Tensors).
    cfg = stock_config(tiny_vlm)
    torch.manual_seed(0)
    model = TwinBrain(cfg)
    assert cfg.trainer.freeze_modules == "left_brain"
    groups = host_param_groups(model, cfg)
    assert all(p.requires_grad for params in groups.values() for p in params)
    in_groups = sorted(id(p) for params in groups.values() for p in params)
    assert in_groups == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each trainable one, once
    assert sum(p.numel() for params in groups.values() for p in params) == sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("left_brain."))


@pytest.mark.parametrize("spec, expected", [
    ("", "left_brain"),
    (None, "left_brain"),
    ("right_brain.visual", "right_brain.visual,left_brain"),
    (" left_brain , action_model", " left_brain , action_model"),  # already there: left as written
])
def test_left_brain_added_to_freeze_modules(spec, expected):
    from starvla_twinbrain.framework.twinbrain import declare_left_frozen

    cfg = OmegaConf.create({"trainer": {"freeze_modules": spec}})
    declare_left_frozen(cfg)
    declare_left_frozen(cfg)  # idempotent
    assert cfg.trainer.freeze_modules == expected


def test_freeze_modules_of_the_wrong_type_is_refused():
    from starvla_twinbrain.framework.twinbrain import declare_left_frozen

    declare_left_frozen(OmegaConf.create({"framework": {}}))  # no trainer section (a served run): nothing to do
    with pytest.raises(ValueError, match=r"trainer\.freeze_modules=\['right_brain'\]: expected a comma-separated string"):
        declare_left_frozen(OmegaConf.create({"trainer": {"freeze_modules": ["right_brain"]}}))


def test_forward_returns_scalar_action_loss(model):
    model.train()
    out = model(examples())
    assert set(out) == {"action_loss"} and out["action_loss"].ndim == 0
    assert torch.isfinite(out["action_loss"])
    out["action_loss"].backward()
    assert all(p.grad is None for p in model.left_brain.parameters())
    assert model.right_brain.language_model.layers[0].self_attn.q_proj.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_predict_action_contract(model):
    model.eval()
    torch.manual_seed(0)
    out = model.predict_action(examples(with_action=False), use_ddim=True, num_ddim_steps=10, unnorm_key="x")
    actions = out["normalized_actions"]
    assert isinstance(actions, np.ndarray) and actions.dtype == np.float32
    assert actions.shape == (3, HORIZON, ACTION_DIM) and np.isfinite(actions).all()


def test_vlm_pair_runs_once_per_observation(model):
    """Both brains run once per predict_action call, whatever the number of Euler steps (pre-hooks: the Left's
    forward ends early, once its last K/V are recorded)."""
    calls = {"left": 0, "right": 0}
    hooks = [
        model.left_brain.model.register_forward_pre_hook(lambda *a: calls.__setitem__("left", calls["left"] + 1)),
        model.right_brain.register_forward_pre_hook(lambda *a: calls.__setitem__("right", calls["right"] + 1)),
    ]
    try:
        model.predict_action(examples(n=2, with_action=False))
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"left": 1, "right": 1}


def test_checkpoint_stores_left_by_reference_and_reloads(model, tiny_vlm):
    state = model.state_dict()
    assert not any(k.startswith("left_brain.") for k in state)
    assert "left_brain_reference" in state
    n_full = sum(p.numel() for p in model.parameters())
    n_saved = sum(v.numel() for k, v in state.items() if k not in ("left_brain_reference", "twinbrain_variant"))
    n_left = sum(p.numel() for p in model.left_brain.parameters())
    assert n_saved == n_full - n_left

    torch.manual_seed(123)  # a differently initialised model: loading must make it identical
    other = TwinBrain(make_config(tiny_vlm))
    other.load_state_dict(copy.deepcopy(state), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key
    model.eval(), other.eval()
    torch.manual_seed(7)
    a = model.predict_action(examples(with_action=False))["normalized_actions"]
    torch.manual_seed(7)
    b = other.predict_action(examples(with_action=False))["normalized_actions"]
    np.testing.assert_array_equal(a, b)


def test_reference_to_another_base_is_refused(model, tmp_path):
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    other_base = make_tiny_vlm(tmp_path / "other-Qwen2.5-VL", family="qwen2_5_vl", seed=99)
    other = TwinBrain(make_config(str(other_base)))
    with pytest.raises(ValueError, match=r"left_brain_reference.*framework\.qwenvl\.base_vlm"):
        other.load_state_dict(model.state_dict(), strict=True)


def test_self_contained_copy(tiny_vlm):
    torch.manual_seed(0)
    copy_model = TwinBrain(make_config(tiny_vlm, left_brain_storage="copy"))
    state = copy_model.state_dict()
    assert any(k.startswith("left_brain.") for k in state) and "left_brain_reference" not in state
    copy_model.load_state_dict(state, strict=True)


@pytest.mark.slow
def test_compiled_head_matches_the_eager_head(model, tiny_vlm):
    """framework.twinbrain.compile_action_head: predict_action runs the DiT through torch.compile and gives the
    eager actions; parameter names (so checkpoints) are unchanged, and training stays eager, bit for bit."""
    compiled = TwinBrain(make_config(tiny_vlm, compile_action_head=True))
    compiled.load_state_dict(model.state_dict(), strict=True)
    model.eval(), compiled.eval()
    obs = examples(n=4, with_action=False)
    want = model.predict_action(obs, seed=3)["normalized_actions"]
    for n in (4, 1, 3):  # new batch sizes reuse the dynamic-shape graph
        got = compiled.predict_action(obs[:n], seed=3)["normalized_actions"]
        np.testing.assert_allclose(got, want[:n], rtol=1e-4, atol=1e-5)
    assert list(compiled.state_dict()) == list(model.state_dict())
    assert type(compiled.action_model.model) is type(model.action_model.model)  # swapped back after the call

    losses, grads = {}, {}
    for name, m in (("eager", model), ("compiled", compiled)):
        m.train()
        m.zero_grad(set_to_none=True)
        torch.manual_seed(11)  # the same flow-matching noise and times
        loss = m(examples())["action_loss"]
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    assert losses["compiled"] == losses["eager"]
    assert grads["eager"].keys() == grads["compiled"].keys() and grads["eager"]
    for key, grad in grads["eager"].items():
        assert torch.equal(grads["compiled"][key], grad), key


# ---------------------------------------------------------------- bad configuration and input


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("framework.twinbrain.conditon", "all_tokens", r"framework\.twinbrain\.conditon is not a TwinBrain option\. Did you mean framework\.twinbrain\.condition\?"),
        ("framework.twinbrain.condition", "cls", r"framework\.twinbrain\.condition='cls': expected one of all_tokens \| action_queries"),
        ("framework.twinbrain.num_state_tokens", 0, r"framework\.twinbrain\.num_state_tokens=0: expected a positive integer"),
        ("framework.twinbrain.freeze_right_vision", "no", r"framework\.twinbrain\.freeze_right_vision='no': expected true or false"),
        ("framework.qwenvl.attn_implementation", "sdpa2", r"framework\.qwenvl\.attn_implementation='sdpa2'.*eager \| sdpa \| flash_attention_2"),
        ("framework.qwenvl.base_vlm", None, r"framework\.qwenvl\.base_vlm is missing"),
        ("datasets.vla_data.include_state", "yes", r"datasets\.vla_data\.include_state='yes': expected true or false"),
        ("framework.action_model.action_dim", None, r"framework\.action_model\.action_dim=None: expected a positive integer"),
        ("framework.action_model.action_model_type", "DiT-S", r"framework\.action_model\.action_model_type='DiT-S': expected one of DiT-B \| DiT-L"),
    ],
)
def test_bad_config_names_the_key(tiny_vlm, key, value, message):
    cfg = make_config(tiny_vlm)
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ValueError, match=message):
        TwinBrain(cfg)


def test_unknown_framework_name_lists_the_registered_ones():
    register()
    with pytest.raises(KeyError, match=r"framework\.name='QwenGR00T' is not registered; registered: .*TwinBrain"):
        FRAMEWORK_REGISTRY["QwenGR00T"]


def test_action_of_wrong_shape(model):
    bad = examples(n=1)
    bad[0]["action"] = np.zeros((HORIZON + 1, ACTION_DIM), dtype=np.float16)
    with pytest.raises(ValueError, match=rf"examples\[0\]\['action'\]: expected shape \[{HORIZON}, {ACTION_DIM}\].*got \[{HORIZON + 1}, {ACTION_DIM}\]"):
        model(bad)


def test_missing_state_when_included(model):
    bad = examples(n=2)
    del bad[1]["state"]
    with pytest.raises(ValueError, match=r"examples\[1\] have no 'state' but datasets\.vla_data\.include_state is true"):
        model(bad)


@pytest.mark.parametrize("state, pattern", [
    ([0.0] * (STATE_DIM + 2), rf"examples\[1\]\['state'\]: expected shape \[{STATE_DIM}\].*got \({STATE_DIM + 2},\)"),
    (np.zeros((2, STATE_DIM)), rf"examples\[1\]\['state'\]: expected shape \[{STATE_DIM}\] or \[1, {STATE_DIM}\].*got \(2, {STATE_DIM}\)"),
    ([float("nan")] * STATE_DIM, r"examples\[1\]\['state'\]: contains NaN or inf"),
    ("up", r"examples\[1\]\['state'\]: expected numbers"),
])
def test_bad_state_names_the_example(model, state, pattern):
    """The state is checked once, where examples enter the framework (training and inference alike)."""
    bad = examples(n=2, with_action=False)
    bad[1]["state"] = state
    with pytest.raises(ValueError, match=pattern):
        model.predict_action(bad)
    with pytest.raises(ValueError, match=pattern):
        validate_states(bad, STATE_DIM, include_state=True)


# -------------------------------------------------------------------------- precision policy


def test_bf16_left_meets_fp32_right_through_asymot(model):
    """The GPU policy (dtypes only; the tensors stay on the CPU): the frozen Left in bf16, every trainable weight
    in fp32. Where they meet, the Left's keys/values are cast to the Right's dtype: the Right's hidden states
    equal those of an all-fp32 model holding the same (bf16-rounded) Left weights, to bf16 activation error."""
    from starvla_twinbrain.framework.twinbrain import apply_precision_policy

    mixed = apply_precision_policy(copy.deepcopy(model), "cuda").eval()
    assert {p.dtype for p in mixed.left_brain.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in mixed.parameters() if p.requires_grad} == {torch.float32}
    reference = copy.deepcopy(model).eval()
    reference.left_brain.to(torch.bfloat16).float()
    batch = examples(3, with_action=False)
    with torch.no_grad():
        want, _ = reference._condition(batch)
        got, _ = mixed._condition(batch)
    assert got.hidden_states.dtype == torch.float32
    valid = want.attention_mask.bool()
    error = (got.hidden_states - want.hidden_states)[valid].norm() / want.hidden_states[valid].norm()
    assert error < 2e-2, float(error)

    mixed.train()  # the compute on a GPU: bf16 autocast over the mixed weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mixed(examples(3))["action_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in mixed.left_brain.parameters())
    grads = [p.grad for p in mixed.right_brain.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)


def test_weights_read_in_bf16_train_in_fp32(tiny_vlm, monkeypatch):
    """On a CUDA machine the checkpoint is read in bf16; only the frozen weights keep that dtype."""
    from starvla_twinbrain.framework import twinbrain

    monkeypatch.setattr(twinbrain, "_load_dtype", lambda: torch.bfloat16)
    built = TwinBrain(make_config(tiny_vlm, freeze_right_vision=True))
    assert {p.dtype for p in built.left_brain.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in built.right_brain.visual.parameters()} == {torch.bfloat16}  # frozen too
    assert {p.dtype for p in built.parameters() if p.requires_grad} == {torch.float32}
    twinbrain.apply_precision_policy(built, "cpu")
    assert {p.dtype for p in built.parameters()} == {torch.float32}


# -------------------------------------------------------------------------- Left reference hash, image size


def test_left_hash_is_computed_once_per_machine_and_only_when_needed(tiny_vlm, tmp_path, monkeypatch):
    from starvla_twinbrain.framework import left_reference

    monkeypatch.setenv(left_reference.CACHE_ENV, str(tmp_path / "cache"))
    left_reference._cached_hash.cache_clear()
    calls = []
    real = left_reference._hash_files
    monkeypatch.setattr(left_reference, "_hash_files", lambda files: calls.append(files) or real(files))

    built = TwinBrain(make_config(tiny_vlm))
    assert calls == []  # building the model reads no weight bytes for the hash
    first = built.state_dict()[left_reference.REFERENCE_KEY]
    assert len(calls) == 1
    left_reference._cached_hash.cache_clear()  # a new process on the same machine: read from the cache
    assert torch.equal(built.state_dict()[left_reference.REFERENCE_KEY], first) and len(calls) == 1
    assert left_reference.base_checkpoint_hash(tiny_vlm) == real(left_reference._hashed_files(Path(tiny_vlm)))
    assert len(calls) == 1  # the cached digest is the files' digest

    weights = next(Path(tiny_vlm).glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a changed file
    left_reference.base_checkpoint_hash(tiny_vlm)
    assert len(calls) == 2
    copy_built = TwinBrain(make_config(tiny_vlm, left_brain_storage="copy"))
    copy_built.state_dict()
    assert len(calls) == 2  # a self-contained checkpoint never needs it


@pytest.mark.parametrize("value, expected", [(None, (224, 224)), (96, (96, 96)), ([48, 64], (48, 64))])
def test_obs_image_size_is_height_width_with_starvlas_default(value, expected):
    from starvla_twinbrain.config import obs_image_size

    cfg = OmegaConf.create({"datasets": {"vla_data": {} if value is None else {"obs_image_size": value}}})
    assert obs_image_size(cfg) == expected


@pytest.mark.parametrize("value", [[224], [0, 224], "224", [224.0, 224]])
def test_bad_obs_image_size_names_the_key(value):
    from starvla_twinbrain.config import obs_image_size

    with pytest.raises(ValueError, match=r"datasets.vla_data.obs_image_size=.*expected a positive integer or \[height, width\]"):
        obs_image_size(OmegaConf.create({"datasets": {"vla_data": {"obs_image_size": value}}}))
