"""LeRobot v3.0 data through lerobot's LeRobotDataset: chunks, normalisation, statistics, clear errors."""

import json

import numpy as np
import pytest

pytest.importorskip("lerobot")

import pandas as pd  # noqa: E402  (comes with lerobot)

from starvla_twinbrain.runtime.data import LeRobotVLADataset, normalize, unnormalize  # noqa: E402
from starvla_twinbrain.runtime.synthetic import make_synthetic_dataset  # noqa: E402

T = 4


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic", num_episodes=3, episode_length=10)


@pytest.fixture(scope="module")
def raw(dataset_root):
    """The raw frames, read straight from the parquet files (not through lerobot)."""
    return pd.concat(pd.read_parquet(f) for f in sorted((dataset_root / "data").rglob("*.parquet")))


def test_action_chunk_is_the_next_t_actions_normalised(dataset_root, raw):
    ds = LeRobotVLADataset(dataset_root, action_horizon=T, include_state=True, image_size=32)
    stats = ds.statistics["synthetic"]
    actions = np.stack(raw["action"].to_numpy()).astype(np.float32)
    episodes = raw["episode_index"].to_numpy()
    for index in (0, 5, 8, 9, 10, 25):
        ep_rows = np.flatnonzero(episodes == episodes[index])
        rows = [min(index + i, ep_rows[-1]) for i in range(T)]  # past the episode end: the last action repeats
        want = normalize(actions[rows], stats["action"])
        np.testing.assert_allclose(ds[index]["action"].astype(np.float32), want, atol=1e-3)


def test_example_contract(dataset_root, raw):
    ds = LeRobotVLADataset(dataset_root, action_horizon=T, include_state=True, image_size=32)
    for index in (3, 10, 25):  # each example names its row, for errors about it
        assert (ds[index]["episode_index"], ds[index]["frame_index"]) == (
            int(raw["episode_index"].iloc[index]), int(raw["frame_index"].iloc[index]))
    ex = ds[3]
    assert ex["action"].dtype == np.float16 and ex["action"].shape == (T, 7)
    assert ex["state"].dtype == np.float16 and ex["state"].shape == (1, 7)
    assert len(ex["image"]) == 1 and ex["image"][0].size == (32, 32) and ex["image"][0].mode == "RGB"
    assert ex["lang"].startswith("move to the")
    assert "state" not in LeRobotVLADataset(dataset_root, action_horizon=T, include_state=False)[3]


def test_image_size_is_height_width(dataset_root):
    """datasets.vla_data.obs_image_size is (height, width), as the server and starVLA's client read it."""
    ds = LeRobotVLADataset(dataset_root, action_horizon=T, include_state=False, image_size=(24, 40))
    assert ds[3]["image"][0].size == (40, 24)  # PIL: (width, height)


def test_statistics_match_the_data_and_starvla_layout(dataset_root, raw, tmp_path):
    ds = LeRobotVLADataset(dataset_root, action_horizon=T, include_state=True)
    entry = ds.statistics["synthetic"]
    actions = np.stack(raw["action"].to_numpy())
    np.testing.assert_allclose(entry["action"]["min"], actions.min(0), atol=1e-6)
    np.testing.assert_allclose(entry["action"]["max"], actions.max(0), atol=1e-6)
    np.testing.assert_allclose(entry["action"]["mean"], actions.mean(0), atol=1e-5)
    assert set(entry["action"]) == {"min", "max", "mean", "std", "q01", "q99", "mask"}
    assert entry["num_transitions"] == 30 and entry["num_trajectories"] == 3
    path = tmp_path / "dataset_statistics.json"
    path.write_text(json.dumps(ds.statistics))
    assert json.loads(path.read_text()) == ds.statistics


@pytest.mark.parametrize("mode", ["q99", "min_max"])
def test_normalize_round_trips(mode):
    rng = np.random.default_rng(0)
    stats = {"min": [-2.0, 0.0, 5.0], "max": [2.0, 1.0, 5.0], "q01": [-1.5, 0.1, 5.0], "q99": [1.5, 0.9, 5.0]}
    low, high = (np.array(stats["q01"]), np.array(stats["q99"])) if mode == "q99" else (np.array(stats["min"]), np.array(stats["max"]))
    x = rng.uniform(low, high, (100, 3)).astype(np.float32)
    x[:, 2] = 5.0  # a constant dimension passes through
    y = normalize(x, stats, mode)
    assert np.all(np.abs(y[:, :2]) <= 1)
    np.testing.assert_allclose(unnormalize(y, stats, mode), x, atol=1e-5)


def test_missing_feature_names_it_and_the_dataset(dataset_root):
    with pytest.raises(ValueError, match=r"dataset .*synthetic has no feature 'observation.joints' \(it has: "):
        LeRobotVLADataset(dataset_root, action_horizon=T, include_state=True, state_key="observation.joints")


def test_dims_that_disagree_say_both_numbers(dataset_root):
    with pytest.raises(ValueError, match=r"framework\.action_model\.action_dim=29 but dataset .* has 'action' of size 7"):
        LeRobotVLADataset(dataset_root, action_horizon=T, include_state=False, expected_action_dim=29)
    with pytest.raises(ValueError, match=r"framework\.action_model\.state_dim=58 but dataset .* of size 7"):
        LeRobotVLADataset(dataset_root, action_horizon=T, include_state=True, expected_state_dim=58)


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a LeRobot dataset \(no meta/info.json\)"):
        LeRobotVLADataset(tmp_path, action_horizon=T, include_state=False)


def test_robot_type_comes_from_the_dataset_metadata(dataset_root):
    """meta/info.json's robot_type reaches every example (the Right prompt's "Robot Type:") and the statistics
    (the server's default for that key); a dataset without one leaves it to the prompts' default."""
    info = json.loads((dataset_root / "meta" / "info.json").read_text())
    assert info["robot_type"] == "point_mass_2d"
    ds = LeRobotVLADataset(dataset_root, action_horizon=T, include_state=False)
    assert ds[0]["robot_type"] == "point_mass_2d" and ds[17]["robot_type"] == "point_mass_2d"
    assert ds.statistics["synthetic"]["robot_type"] == "point_mass_2d"


def test_dataset_without_robot_type(tmp_path):
    root = make_synthetic_dataset(tmp_path / "untyped", num_episodes=1, episode_length=4)
    info_path = root / "meta" / "info.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "robot_type": None}))
    ds = LeRobotVLADataset(root, action_horizon=T, include_state=False)
    assert "robot_type" not in ds[0] and ds.statistics["untyped"]["robot_type"] is None
