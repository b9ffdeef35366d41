"""TwinBrain as a LeRobot policy (lerobot_policy_twinbrain): LeRobot's factory, processors, save/load, action
queue, and the real ``lerobot-train`` entry point. Skipped where lerobot is absent (the transformers 4.57 stack)."""

import importlib.metadata
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("lerobot")
try:  # where lerobot is, scripts/setup.sh installs the plugin; without it, fail (not skip) with the fix
    from lerobot_policy_twinbrain import TwinBrainConfig
except ImportError as err:  # (uninstalled, the repo's lerobot_policy_twinbrain/ folder imports as an empty namespace)
    raise ImportError("lerobot_policy_twinbrain is not installed: pip install -e ./lerobot_policy_twinbrain "
                      "(scripts/setup.sh does)") from err

from lerobot.configs import PreTrainedConfig  # noqa: E402
from lerobot.datasets.factory import resolve_delta_timestamps  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata  # noqa: E402
from lerobot.policies.factory import make_policy, make_pre_post_processors  # noqa: E402
from lerobot_policy_twinbrain.modeling_twinbrain import TwinBrainPolicy, batch_to_examples  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from starvla_twinbrain.framework import left_reference  # noqa: E402
from starvla_twinbrain.framework.twinbrain import TwinBrain  # noqa: E402
from starvla_twinbrain.normalization import normalize  # noqa: E402
from starvla_twinbrain.runtime.synthetic import make_synthetic_dataset  # noqa: E402
from starvla_twinbrain.tiny_vlm import make_tiny_vlm  # noqa: E402

CAM, STATE, ACTION = "observation.images.cam", "observation.state", "action"
CHUNK, N_ACTION_STEPS = 4, 2
# A small head (configs/tiny_cpu.yaml's), as the JSON that --policy.action_model takes.
TINY_HEAD = {"hidden_size": 128, "repeated_diffusion_steps": 2, "num_target_vision_tokens": 4, "max_seq_len": 64,
             "diffusion_model_cfg": {"dropout": 0.0, "final_dropout": False, "num_layers": 2, "output_dim": 128}}
TINY_TWINBRAIN = {"state_hidden_dim": 64}


@pytest.fixture(scope="module")
def base_vlm(tmp_path_factory) -> str:
    return str(make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-Qwen2.5-VL", seed=0))


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic", num_episodes=3, episode_length=10)


def policy_config(base_vlm: str, **overrides) -> TwinBrainConfig:
    settings = dict(base_vlm=base_vlm, device="cpu", chunk_size=CHUNK, n_action_steps=N_ACTION_STEPS,
                    twinbrain=dict(TINY_TWINBRAIN), action_model=json.loads(json.dumps(TINY_HEAD)), push_to_hub=False)
    return TwinBrainConfig(**{**settings, **overrides})


def observation(dataset: LeRobotDataset, index: int) -> dict:
    """One unbatched frame as a robot or lerobot-eval hands it to the pre-processor."""
    item = dataset[index]
    return {CAM: item[CAM], STATE: item[STATE], "task": item["task"]}


def predict(policy, preprocessor, postprocessor, obs: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised chunk, un-normalised chunk) through LeRobot's pipelines."""
    normalised = policy.predict_action_chunk(preprocessor(dict(obs)), seed=seed)
    return normalised, postprocessor(normalised)


def test_policy_trains_saves_and_reloads_through_lerobots_factory(base_vlm, dataset_root, tmp_path):
    meta = LeRobotDatasetMetadata("local/synthetic", root=dataset_root)
    config = policy_config(base_vlm)
    policy = make_policy(config, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=meta.stats)
    assert isinstance(policy, TwinBrainPolicy) and isinstance(policy.model, TwinBrain)

    # One optimiser step with LeRobot's preset, on a LeRobot batch: the Right Brain and head move, the Left doesn't.
    dataset = LeRobotDataset("local/synthetic", root=dataset_root, delta_timestamps=resolve_delta_timestamps(config, meta))
    batch = preprocessor(next(iter(torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False))))
    assert batch[ACTION].shape == (2, CHUNK, 7)
    optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
    left_before = {k: v.clone() for k, v in policy.model.left_brain.state_dict().items()}
    right_before = {k: v.clone() for k, v in policy.model.right_brain.state_dict().items()}
    policy.train()
    loss, info = policy.forward(batch)
    assert math.isfinite(loss.item()) and info["action_loss"] == loss.item()
    loss.backward()
    optimizer.step()
    assert all(torch.equal(v, left_before[k]) for k, v in policy.model.left_brain.state_dict().items())
    assert any(not torch.equal(v, right_before[k]) for k, v in policy.model.right_brain.state_dict().items())
    assert not any(p is q for g in policy.get_optim_params() for p in g["params"]
                   for q in policy.model.left_brain.parameters())

    obs = observation(dataset, 5)
    policy.eval()
    normalised, actions = predict(policy, preprocessor, postprocessor, obs)
    assert normalised.shape == actions.shape == (1, CHUNK, 7)

    # LeRobot's save path: the Left Brain is stored by reference only.
    out = tmp_path / "pretrained_model"
    policy.save_pretrained(out)
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)
    saved = load_file(out / "model.safetensors")
    assert not [k for k in saved if k.startswith("model." + left_reference.LEFT_PREFIX)]
    assert left_reference.decode_reference(saved["model." + left_reference.REFERENCE_KEY])["sha256"] == \
        left_reference.base_checkpoint_hash(base_vlm)

    # lerobot-eval's path (make_policy with pretrained_path) and from_pretrained give the same chunks, bit for bit.
    loaded_config = PreTrainedConfig.from_pretrained(out)
    loaded_config.pretrained_path = out
    reloaded = make_policy(loaded_config, ds_meta=meta)
    pre2, post2 = make_pre_post_processors(loaded_config, pretrained_path=str(out))
    for candidate in (reloaded, TwinBrainPolicy.from_pretrained(out, strict=True)):  # strict: only the Left is absent
        normalised2, actions2 = predict(candidate, pre2, post2, obs)
        assert torch.equal(normalised2, normalised) and torch.equal(actions2, actions)


def test_select_action_plays_n_action_steps_of_each_chunk(base_vlm, dataset_root):
    meta = LeRobotDatasetMetadata("local/synthetic", root=dataset_root)
    config = policy_config(base_vlm)
    policy = make_policy(config, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=meta.stats)
    dataset = LeRobotDataset("local/synthetic", root=dataset_root)
    first, second = observation(dataset, 0), observation(dataset, 17)
    chunk_first, _ = predict(policy, preprocessor, postprocessor, first, seed=3)
    chunk_second, _ = predict(policy, preprocessor, postprocessor, second, seed=3)
    assert not torch.equal(chunk_first, chunk_second)

    policy.reset()
    played = [policy.select_action(preprocessor(dict(obs)), seed=3) for obs in (first, second, second)]
    # Steps 0 and 1 come from the first chunk, although step 1 already sees the second observation; step 2 predicts.
    assert torch.equal(played[0], chunk_first[:, 0]) and torch.equal(played[1], chunk_first[:, 1])
    assert torch.equal(played[2], chunk_second[:, 0])
    policy.reset()
    assert torch.equal(policy.select_action(preprocessor(dict(second)), seed=3), chunk_second[:, 0])


def test_bad_config_and_batch_are_named(base_vlm):
    with pytest.raises(ValueError, match="n_action_steps=5 is larger than --policy.chunk_size=4"):
        policy_config(base_vlm, n_action_steps=5)
    with pytest.raises(ValueError, match="action_model.action_dim: set by the dataset's features"):
        TwinBrainConfig(base_vlm=base_vlm, device="cpu", action_model={"action_dim": 7})
    config = policy_config(base_vlm)
    from lerobot.configs import FeatureType, PolicyFeature

    config.input_features = {CAM: PolicyFeature(FeatureType.VISUAL, (3, 64, 64))}
    config.output_features = {ACTION: PolicyFeature(FeatureType.ACTION, (7,))}
    with pytest.raises(ValueError, match="include_state=true but the input features have no 'observation.state'"):
        config.validate_features()
    config.include_state = False
    with pytest.raises(ValueError, match=r"batch has no \['task'\]"):
        batch_to_examples({CAM: torch.zeros(1, 3, 8, 8)}, config, with_action=False)
    with pytest.raises(ValueError, match=r"batch\['observation.images.cam'\]\[0\]: expected a float tensor \[3, H, W\]"):
        batch_to_examples({CAM: torch.zeros(1, 8, 8, 3, dtype=torch.uint8), "task": ["x"]}, config, with_action=False)


@pytest.mark.slow
def test_lerobot_train_entry_point(base_vlm, dataset_root, tmp_path):
    """The real ``lerobot-train`` (LeRobot discovers the plugin by its distribution name) for a few CPU steps; its
    checkpoint, loaded by LeRobot, predicts what TwinBrain itself predicts from the same weights and inputs."""
    try:
        importlib.metadata.distribution("lerobot_policy_twinbrain")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("lerobot_policy_twinbrain is importable but not installed as a distribution, so LeRobot cannot "
                    "discover it: pip install -e ./lerobot_policy_twinbrain (scripts/setup.sh does)")
    steps, out = 3, tmp_path / "run"
    command = [
        sys.executable, "-m", "lerobot.scripts.lerobot_train", "--policy.type=twinbrain",
        f"--policy.base_vlm={base_vlm}", "--policy.device=cpu", "--policy.push_to_hub=false",
        f"--policy.chunk_size={CHUNK}", f"--policy.n_action_steps={N_ACTION_STEPS}",
        f"--policy.twinbrain={json.dumps(TINY_TWINBRAIN)}", f"--policy.action_model={json.dumps(TINY_HEAD)}",
        "--dataset.repo_id=local/synthetic", f"--dataset.root={dataset_root}",
        "--batch_size=2", f"--steps={steps}", "--log_freq=1", f"--save_freq={steps}", "--num_workers=0",
        "--wandb.enable=false", f"--output_dir={out}", "--seed=1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    losses = [float(x) for x in re.findall(r"step:\d+ .*? loss:([0-9.]+)", log)]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), log[-4000:]

    pretrained = out / "checkpoints" / f"{steps:06d}" / "pretrained_model"
    policy = TwinBrainPolicy.from_pretrained(pretrained)
    config = policy.config
    preprocessor, postprocessor = make_pre_post_processors(config, pretrained_path=str(pretrained))
    dataset = LeRobotDataset("local/synthetic", root=dataset_root)
    obs = observation(dataset, 7)
    normalised, actions = predict(policy, preprocessor, postprocessor, obs)

    # The same weights in a bare TwinBrain, fed an example built by hand: starVLA's min_max normalisation, except
    # that LeRobot maps a constant dimension to -1 where starVLA passes it through.
    stats = LeRobotDatasetMetadata("local/synthetic", root=dataset_root).stats
    low, high = (np.asarray(stats[STATE][k], dtype=np.float32) for k in ("min", "max"))
    state = np.where(high > low, normalize(obs[STATE].numpy(), stats[STATE], "min_max"), -1.0).astype(np.float32)
    image = Image.fromarray((obs[CAM].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    model = TwinBrain(config.framework_config())
    weights = {k.removeprefix("model."): v for k, v in load_file(pretrained / "model.safetensors").items()}
    model.load_state_dict(weights, strict=True)
    model.eval()
    expected = model.predict_action([{"image": [image], "lang": obs["task"], "state": state[None]}], seed=0)
    torch.testing.assert_close(normalised, torch.from_numpy(expected["normalized_actions"]), rtol=0, atol=1e-5)
    a_min, a_max = (torch.tensor(stats[ACTION][k], dtype=torch.float32) for k in ("min", "max"))
    torch.testing.assert_close(actions, (normalised + 1) / 2 * (a_max - a_min) + a_min)
    # Training moved the Right Brain away from the base checkpoint (its copy, the Left, is the base).
    left = model.left_brain.state_dict()  # the full VLM; the Right Brain is its inner model (no "model." prefix)
    assert any(not torch.equal(v, left["model." + k]) for k, v in model.right_brain.state_dict().items())
