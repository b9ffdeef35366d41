"""The RoboCasa GR1 client against hand-computed numbers, then driven against a live local PolicyServer."""

import importlib.util
import math

import numpy as np
import pytest

from eval.robocasa import run_robocasa
from eval.robocasa.gr1_client import GR1Policy, split_actions, state_features
from eval.common.results import markdown_table
from eval.robocasa.tasks import TASKS, short_name
from starvla_twinbrain.serving.client import PolicyClient
from tests.eval.fake_policy import RecordingPolicy, served

LEFT_ARM = [0.0, math.pi / 2, math.pi, -math.pi / 2, math.pi / 6, 0.0, 0.0]
WAIST = [math.pi / 2, 0.0, math.pi]


def gr1_obs(offset=0.0, lang="pick the milk and place it in the microwave", image_value=90, wrapped=True):
    """An observation as the GR1 env gives it; ``wrapped`` adds the leading time axis starVLA's wrapper adds."""
    state = {"left_arm": np.array(LEFT_ARM) + offset, "right_arm": np.linspace(0.1, 0.7, 7) + offset,
             "left_hand": np.linspace(-0.5, 0.5, 6) + offset, "right_hand": np.linspace(1.0, 1.5, 6) + offset,
             "waist": np.array(WAIST) + offset}
    obs = {f"state.{k}": (v[None] if wrapped else v) for k, v in state.items()}
    image = np.full((256, 256, 3), image_value, np.uint8)
    obs["video.ego_view"] = image[None] if wrapped else image
    obs["annotation.human.coarse_action"] = (lang,) if wrapped else lang
    return obs


# ---------------------------------------------------------------------------------------------- state
def test_state_is_sin_then_cos_per_joint_group():
    state = state_features(gr1_obs())
    assert state.shape == (1, 58) and state.dtype == np.float32
    s = state[0]
    np.testing.assert_allclose(s[0:7], [0, 1, 0, -1, 0.5, 0, 0], atol=1e-6)  # sin(left_arm)
    np.testing.assert_allclose(s[7:14], [1, 0, -1, 0, math.sqrt(3) / 2, 1, 1], atol=1e-6)  # cos(left_arm)
    np.testing.assert_allclose(s[52:55], [1, 0, 0], atol=1e-6)  # sin(waist)
    np.testing.assert_allclose(s[55:58], [0, 1, -1], atol=1e-6)  # cos(waist)
    blocks = {"right_arm": (14, np.linspace(0.1, 0.7, 7)), "left_hand": (28, np.linspace(-0.5, 0.5, 6)),
              "right_hand": (40, np.linspace(1.0, 1.5, 6))}
    for start, angles in blocks.values():
        n = len(angles)
        np.testing.assert_allclose(s[start:start + n], np.sin(angles), atol=1e-6)
        np.testing.assert_allclose(s[start + n:start + 2 * n], np.cos(angles), atol=1e-6)


def test_state_of_unwrapped_and_wrapped_observations_agree():
    np.testing.assert_array_equal(state_features(gr1_obs(wrapped=False)), state_features(gr1_obs(wrapped=True)))


# --------------------------------------------------------------------------------------------- actions
def test_action_split_groups_and_reassembly():
    chunk = np.arange(12 * 29, dtype=np.float32).reshape(12, 29)
    parts = split_actions(chunk)
    assert list(parts) == ["action.left_arm", "action.right_arm", "action.left_hand", "action.right_hand",
                           "action.waist"]
    assert [p.shape for p in parts.values()] == [(12, 7), (12, 7), (12, 6), (12, 6), (12, 3)]
    np.testing.assert_array_equal(parts["action.left_hand"][0], [14, 15, 16, 17, 18, 19])
    np.testing.assert_array_equal(parts["action.waist"][1], [55, 56, 57])
    np.testing.assert_array_equal(np.concatenate(list(parts.values()), axis=-1), chunk)
    with pytest.raises(ValueError, match="29"):
        split_actions(np.zeros((12, 28)))


# ------------------------------------------------------------------------------------------------ queue
class CountingClient:
    """Chunk number q (0-based) predicts 1000 q + 100 t + d at step t, joint d."""

    def __init__(self, chunk=16, **metadata):
        self.metadata = {"action_dim": 29, "state_dim": 58, "include_state": True, **metadata}
        self.chunk, self.calls = chunk, []

    def predict_action(self, examples, **kwargs):
        q = len(self.calls)
        self.calls.append((examples, kwargs))
        t, d = np.meshgrid(np.arange(self.chunk), np.arange(29), indexing="ij")
        return (1000.0 * q + 100 * t + d)[None]


def test_twelve_actions_per_query_open_loop():
    client = CountingClient(chunk=16)
    policy = GR1Policy(client)
    actions = [policy.act(gr1_obs()) for _ in range(30)]
    assert len(client.calls) == 3  # steps 0, 12, 24
    for step, action in enumerate(actions):
        q, t = divmod(step, 12)
        np.testing.assert_array_equal(action["action.left_arm"], 1000 * q + 100 * t + np.arange(7))
        np.testing.assert_array_equal(action["action.waist"], 1000 * q + 100 * t + np.arange(26, 29))


def test_reset_and_new_instruction_drop_the_queue():
    client = CountingClient()
    policy = GR1Policy(client)
    for _ in range(5):
        policy.act(gr1_obs())
    policy.reset()
    policy.act(gr1_obs())
    assert len(client.calls) == 2
    policy.act(gr1_obs(lang="pick the can and place it in the drawer"))
    assert len(client.calls) == 3 and client.calls[-1][0][0]["lang"] == "pick the can and place it in the drawer"


def test_a_chunk_shorter_than_the_queue_is_played_whole():
    client = CountingClient(chunk=4)
    policy = GR1Policy(client, n_action_steps=12)
    for _ in range(8):
        policy.act(gr1_obs())
    assert len(client.calls) == 2


def test_state_follows_the_servers_include_state_and_checks_its_dim():
    assert "state" not in GR1Policy(CountingClient(include_state=False)).request(gr1_obs())
    assert "state" not in GR1Policy(CountingClient(), send_state=False).request(gr1_obs())
    with pytest.raises(ValueError, match="32-d state"):
        GR1Policy(CountingClient(state_dim=32))
    with pytest.raises(ValueError, match="7-d actions"):
        GR1Policy(CountingClient(action_dim=7))


def test_starvla_renamed_camera_key_is_accepted():
    obs = gr1_obs()
    obs["video.ego_view_bg_crop_pad_res256_freq20"] = obs.pop("video.ego_view")
    (image,) = GR1Policy(CountingClient()).request(obs)["image"]
    assert image.shape == (224, 224, 3) and (image == 90).all()


# -------------------------------------------------------------------------------------- live policy server
def chunk_from_state(example):
    """Step t, joint d: 100 t + d + 10 · sin(left_arm[1]) (the state's entry 1)."""
    t, d = np.meshgrid(np.arange(16), np.arange(29), indexing="ij")
    return 100.0 * t + d + 10 * float(example["state"][0, 1])


@pytest.fixture(scope="module")
def gr1_server():
    policy = RecordingPolicy({"action_dim": 29, "state_dim": 58, "include_state": True, "action_chunk_size": 16,
                              "default_unnorm_key": "gr1"}, chunk_from_state)
    with served(policy) as port:
        yield policy, port


def test_gr1_policy_against_a_live_server(gr1_server):
    server_policy, port = gr1_server
    server_policy.requests.clear()
    offset = -math.pi / 2  # from step 12 on: left_arm[1] = 0, so the second chunk is 10 lower
    with PolicyClient("127.0.0.1", port) as client:
        policy = GR1Policy(client, unnorm_key="gr1")
        actions = [policy.act(gr1_obs(offset=0.0 if step < 12 else offset, image_value=step)) for step in range(14)]

    assert len(server_policy.requests) == 2
    for request, step in zip(server_policy.requests, (0, 12)):
        (example,) = request["examples"]
        assert set(example) == {"image", "lang", "state"}
        assert example["lang"] == "pick the milk and place it in the microwave"
        (image,) = example["image"]
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8 and (image == step).all()
        assert example["state"].shape == (1, 58) and example["state"].dtype == np.float32
        np.testing.assert_array_equal(example["state"], state_features(gr1_obs(offset=0.0 if step < 12 else offset)))
        assert request["unnorm_key"] == "gr1"
    np.testing.assert_allclose(actions[0]["action.left_arm"], 10 + np.arange(7), atol=1e-4)  # sin(pi/2) = 1
    np.testing.assert_allclose(actions[11]["action.waist"], 1100 + 10 + np.arange(26, 29), atol=1e-4)
    np.testing.assert_allclose(actions[12]["action.left_arm"], np.arange(7), atol=1e-4)  # new chunk, sin(0) = 0
    np.testing.assert_allclose(actions[13]["action.right_hand"], 100 + np.arange(20, 26), atol=1e-4)


def test_gr1_policy_without_unnorm_key_leaves_it_to_the_server(gr1_server):
    server_policy, port = gr1_server
    server_policy.requests.clear()
    with PolicyClient("127.0.0.1", port) as client:
        GR1Policy(client).act(gr1_obs())
    assert server_policy.requests[0]["unnorm_key"] is None


# ------------------------------------------------------------------------------------ episode loop, tasks
class FakeGR1Env:
    """Reports success at step 3 only; the episode runs to the step limit."""

    def __init__(self):
        self.steps = 0

    def reset(self, seed=None):
        self.steps = 0
        return gr1_obs(wrapped=False), {}

    def step(self, action):
        assert {k: v.shape for k, v in action.items()} == {
            "action.left_arm": (7,), "action.right_arm": (7,), "action.left_hand": (6,), "action.right_hand": (6,),
            "action.waist": (3,)}
        self.steps += 1
        return gr1_obs(wrapped=False), 0.0, False, False, {"success": self.steps == 3}

    def close(self):
        pass


def test_run_episode_counts_success_at_any_step():
    client = CountingClient()
    result = run_robocasa.run_episode(FakeGR1Env(), GR1Policy(client), max_steps=30, seed=None)
    assert result == {"success": True, "steps": 30, "instruction": "pick the milk and place it in the microwave"}
    assert len(client.calls) == 3


def test_run_task_writes_each_episode_and_skips_a_finished_file(tmp_path):
    import json
    from types import SimpleNamespace

    made = []
    gym = SimpleNamespace(make=lambda name, enable_render: made.append(name) or FakeGR1Env())
    args = SimpleNamespace(out=str(tmp_path), episodes=2, max_steps=5, seed=7)
    path = run_robocasa.run_task(TASKS[0], args, GR1Policy(CountingClient()), gym)
    record = json.loads(path.read_text())
    assert record["complete"] and [(e["episode"], e["seed"], e["success"], e["steps"]) for e in record["episodes"]] \
        == [(0, 7, True, 5), (1, 8, True, 5)]
    run_robocasa.run_task(TASKS[0], args, GR1Policy(CountingClient()), gym)
    assert made == [TASKS[0]]  # the finished file was not run again


def test_the_24_tasks_as_starvla_lists_them():
    assert len(TASKS) == len(set(TASKS)) == 24
    assert all(t.startswith("gr1_unified/") and t.endswith("_GR1ArmsAndWaistFourierHands_Env") for t in TASKS)
    assert TASKS[0] == "gr1_unified/PnPCupToDrawerClose_GR1ArmsAndWaistFourierHands_Env"
    assert TASKS[-1] == "gr1_unified/PosttrainPnPNovelFromTrayToTieredshelfSplitA_GR1ArmsAndWaistFourierHands_Env"
    assert sum(t.startswith("gr1_unified/Posttrain") for t in TASKS) == 18
    assert short_name(TASKS[-1]) == "PnPNovelFromTrayToTieredshelf"


def test_results_table_orders_tasks_as_starvla():
    records = [{"task": short_name(TASKS[1]), "episodes": [{"success": True}] * 3 + [{"success": False}]},
               {"task": short_name(TASKS[0]), "episodes": [{"success": False}] * 2}]
    assert markdown_table(records, [short_name(t) for t in TASKS]).splitlines()[2:] == [
        "| PnPCupToDrawerClose | 0.0 | 2 |", "| PnPPotatoToMicrowaveClose | 75.0 | 4 |", "| **Mean** | **37.5** | 6 |"]


@pytest.mark.skipif(importlib.util.find_spec("robocasa") is not None, reason="RoboCasa is installed")
def test_run_robocasa_without_robocasa_says_so():
    with pytest.raises(SystemExit, match="RoboCasa is not importable"):
        run_robocasa.main(["--port", "1"])
