"""The SimplerEnv WidowX client against hand-computed numbers, then driven against a live local PolicyServer."""

import importlib.util
import math

import numpy as np
import pytest

from eval.simpler_env import run_bridge
from eval.common.client import resize_area
from eval.common.results import markdown_table, success_by_task
from eval.simpler_env.tasks import TASKS
from eval.simpler_env.widowx_client import AdaptiveEnsembler, WidowXPolicy, euler_to_axis_angle, gripper_command
from starvla_twinbrain.serving.client import PolicyClient
from tests.eval.fake_policy import RecordingPolicy, served


# ----------------------------------------------------------------------------------------------- ensembler
def test_ensembler_first_step_is_the_newest_chunk_head():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.1)
    np.testing.assert_array_equal(ens(np.array([[1.0, 0.0], [0.0, 1.0]])), [1.0, 0.0])


def test_ensembler_two_steps_by_hand():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.1)
    ens(np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    out = ens(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    # guesses for now: old chunk row 1 = [0, 1] (cos 1/sqrt2 to the newest), new chunk row 0 = [1, 1] (cos 1).
    # weights exp(0.1/sqrt2), exp(0.1) normalised = 0.4926782, 0.5073218
    np.testing.assert_allclose(out, [0.5073218, 1.0], atol=1e-6)


def test_ensembler_opposite_guess_gets_exp_minus_alpha():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.1)
    ens(np.array([[9.0, 9.0], [-1.0, 0.0]]))
    out = ens(np.array([[1.0, 0.0], [0.0, 0.0]]))
    # (e^0.1 · 1 + e^-0.1 · (-1)) / (e^0.1 + e^-0.1) = tanh(0.1)
    np.testing.assert_allclose(out, [0.0996679946, 0.0], atol=1e-7)


def test_ensembler_alpha_zero_is_the_plain_mean_of_the_guesses():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.0)
    ens(np.array([[0.0], [0.0], [3.0]]))
    ens(np.array([[0.0], [6.0], [0.0]]))
    np.testing.assert_allclose(ens(np.array([[9.0], [0.0], [0.0]])), [(3.0 + 6.0 + 9.0) / 3])


def test_ensembler_window_is_the_last_seven_chunks():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.1)
    for i in range(8):  # chunk i predicts [i + t, 1] for its step t, so every live guess for step 7 is [7, 1]
        chunk = np.array([[i + t, 1.0] for t in range(8)])
        if i == 0:
            chunk[7] = [1000.0, 1.0]  # would show if the 8-step-old chunk still counted
        out = ens(chunk)
    np.testing.assert_allclose(out, [7.0, 1.0], atol=1e-12)


def test_ensembler_drops_chunks_too_short_to_reach_now():
    ens = AdaptiveEnsembler(horizon=7, alpha=0.0)
    ens(np.array([[100.0], [100.0]]))  # 2 steps long: no guess for step 2
    ens(np.array([[2.0], [4.0]]))
    np.testing.assert_allclose(ens(np.array([[6.0], [0.0]])), [(4.0 + 6.0) / 2])


def test_ensembler_reset_forgets_history():
    ens = AdaptiveEnsembler()
    ens(np.array([[5.0, 5.0], [5.0, 5.0]]))
    ens.reset()
    np.testing.assert_array_equal(ens(np.array([[1.0, 2.0], [3.0, 4.0]])), [1.0, 2.0])


# ------------------------------------------------------------------------------------ euler → axis-angle
def _rx(a):
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def _ry(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _rz(a):
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def _rodrigues(rotvec):
    angle = np.linalg.norm(rotvec)
    if angle == 0:
        return np.eye(3)
    k = rotvec / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


@pytest.mark.parametrize("rpy, want", [((0.0, 0.0, 0.0), [0, 0, 0]), ((0.3, 0.0, 0.0), [0.3, 0, 0]),
                                       ((0.0, -0.2, 0.0), [0, -0.2, 0]), ((0.0, 0.0, 0.25), [0, 0, 0.25])])
def test_single_axis_rotations(rpy, want):
    np.testing.assert_allclose(euler_to_axis_angle(*rpy), want, atol=1e-12)


def test_quarter_turns_about_x_then_z_are_120_degrees_about_the_diagonal():
    want = (2 * math.pi / 3) / math.sqrt(3) * np.ones(3)
    np.testing.assert_allclose(euler_to_axis_angle(math.pi / 2, 0.0, math.pi / 2), want, atol=1e-12)


def test_axis_angle_rotation_matrix_equals_rz_ry_rx():
    rng = np.random.default_rng(0)
    for roll, pitch, yaw in rng.uniform(-math.pi, math.pi, size=(200, 3)):
        rotvec = euler_to_axis_angle(roll, pitch, yaw)
        np.testing.assert_allclose(_rodrigues(rotvec), _rz(yaw) @ _ry(pitch) @ _rx(roll), atol=1e-10)


# ----------------------------------------------------------------------------------------------- gripper
@pytest.mark.parametrize("openness, command", [(0.49, -1.0), (0.5, -1.0), (0.51, 1.0), (0.0, -1.0), (1.0, 1.0)])
def test_gripper_threshold(openness, command):
    assert gripper_command(openness) == command


# ------------------------------------------------------------------------------------------------- resize
def test_area_resize_by_hand():
    row = np.array([[[0], [90], [180]]], dtype=np.uint8)  # 1x3 → 1x2: covers [0, 1.5) and [1.5, 3)
    np.testing.assert_array_equal(resize_area(row, (1, 2))[0, :, 0], [30, 150])  # (0+45)/1.5, (45+180)/1.5


def test_area_resize_integer_factor_is_the_block_mean():
    image = np.random.default_rng(1).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    blocks = image.reshape(224, 2, 224, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize_area(image, (224, 224)), np.rint(blocks).astype(np.uint8))


def test_area_resize_bridge_frame_keeps_flat_colours():
    out = resize_area(np.full((480, 640, 3), 77, np.uint8), (224, 224))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and (out == 77).all()


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="OpenCV not installed")
@pytest.mark.parametrize("shape", [(480, 640, 3), (256, 256, 3)])  # SimplerEnv and RoboCasa frames
def test_area_resize_matches_opencv_inter_area(shape):
    import cv2

    image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    want = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(resize_area(image, (224, 224)).astype(int) - want).max() <= 1


# -------------------------------------------------------------------------------------- live policy server
CHUNK = 8


def bridge_chunk(example):
    """xyz and roll scale with the image's mean brightness m; gripper openness is m; roll grows 0.01 per step."""
    m = float(np.asarray(example["image"][0]).mean()) / 255
    return np.array([[m, 2 * m, 3 * m, 0.1 * m + 0.01 * t, 0.0, 0.0, m] for t in range(CHUNK)])


@pytest.fixture(scope="module")
def bridge_server():
    policy = RecordingPolicy({"action_dim": 7, "action_chunk_size": CHUNK, "default_unnorm_key": "oxe_bridge"},
                             bridge_chunk)
    with served(policy) as port:
        yield policy, port


def frame(value):
    return np.full((480, 640, 3), value, np.uint8)


def test_widowx_policy_against_a_live_server(bridge_server):
    server_policy, port = bridge_server
    server_policy.requests.clear()
    with PolicyClient("127.0.0.1", port) as client:
        policy = WidowXPolicy(client)
        policy.reset("put the spoon on the towel")
        first = policy.step(frame(204))  # m = 0.8
        second = policy.step(frame(153))  # m = 0.6
        third = policy.step(frame(102), "put carrot on plate")  # new instruction: a fresh episode, m = 0.4

    np.testing.assert_allclose(first, [0.8, 1.6, 2.4, 0.08, 0, 0, 1.0], atol=1e-6)
    old, new = np.array([0.8, 1.6, 2.4, 0.09, 0, 0, 0.8]), np.array([0.6, 1.2, 1.8, 0.06, 0, 0, 0.6])
    cos_old = old @ new / (np.linalg.norm(old) * np.linalg.norm(new))
    w_old, w_new = math.exp(0.1 * cos_old), math.exp(0.1)
    blend = (w_old * old + w_new * new) / (w_old + w_new)
    np.testing.assert_allclose(second, [*blend[:3], blend[3], 0, 0, 1.0], atol=1e-6)  # openness ~0.7 → open
    np.testing.assert_allclose(third, [0.4, 0.8, 1.2, 0.04, 0, 0, -1.0], atol=1e-6)  # openness 0.4 → close

    assert len(server_policy.requests) == 3
    langs = ["put the spoon on the towel"] * 2 + ["put carrot on plate"]
    for request, lang, value in zip(server_policy.requests, langs, [204, 153, 102]):
        (example,) = request["examples"]
        assert set(example) == {"image", "lang"} and example["lang"] == lang
        (image,) = example["image"]
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8 and (image == value).all()
        assert request["unnorm_key"] == "oxe_bridge"
        assert (request["do_sample"], request["use_ddim"], request["num_ddim_steps"]) == (False, True, 10)


def test_widowx_policy_custom_unnorm_key_and_action_scale(bridge_server):
    server_policy, port = bridge_server
    server_policy.requests.clear()
    with PolicyClient("127.0.0.1", port) as client:
        policy = WidowXPolicy(client, unnorm_key="bridge_orig", action_scale=2.0)
        action = policy.step(frame(204), "stack the cubes")
    assert server_policy.requests[0]["unnorm_key"] == "bridge_orig"
    np.testing.assert_allclose(action, [1.6, 3.2, 4.8, 0.16, 0, 0, 1.0], atol=1e-6)  # gripper is not scaled


class _MetadataOnly:
    def __init__(self, **metadata):
        self.metadata = metadata


def test_widowx_policy_rejects_a_server_with_other_actions():
    with pytest.raises(ValueError, match="29-d actions"):
        WidowXPolicy(_MetadataOnly(action_dim=29))


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        WidowXPolicy(_MetadataOnly()).step(frame(0))


# ------------------------------------------------------------------------------------ episode loop, table
class FakeBridgeEnv:
    """Succeeds (done) only at its last step, like an object placed in the final frames."""

    def __init__(self, steps=3):
        self.steps, self.actions, self.reset_options = steps, [], None

    @staticmethod
    def observation():
        return {"image": {"3rd_view_camera": {"rgb": frame(204)}}}

    def reset(self, options=None):
        self.reset_options, self.actions = options, []
        return self.observation(), {}

    def get_language_instruction(self):
        return "put eggplant into yellow basket"

    def step(self, action):
        self.actions.append(action)
        last = len(self.actions) == self.steps
        return self.observation(), 0.0, last, last, {"episode_stats": {"moved": np.bool_(True)}}


def test_run_episode_follows_simpler_env_evaluator(bridge_server):
    _, port = bridge_server
    env = FakeBridgeEnv()
    with PolicyClient("127.0.0.1", port) as client:
        camera_image = lambda env, obs, camera_name: obs["image"][camera_name]["rgb"]  # noqa: E731
        task = TASKS["PutEggplantInBasket"]
        result = run_bridge.run_episode(env, WidowXPolicy(client), camera_image, task, episode_id=5)
    assert set(result.pop("seconds")) == {"policy", "env"}
    assert result == {"episode_id": 5, "success": True, "steps": 3, "instruction": "put eggplant into yellow basket",
                      "episode_stats": {"moved": True}}
    assert env.reset_options["obj_init_options"] == {"episode_id": 5}
    np.testing.assert_allclose(env.reset_options["robot_init_options"]["init_xy"], [0.127, 0.06])
    np.testing.assert_array_equal(env.reset_options["robot_init_options"]["init_rot_quat"], [0, 0, 0, 1])
    assert all(a.shape == (7,) for a in env.actions)


def test_bridge_task_settings():
    assert {t.env_name for t in TASKS.values()} == {
        "PutSpoonOnTableClothInScene-v0", "PutCarrotOnPlateInScene-v0",
        "StackGreenCubeOnYellowCubeBakedTexInScene-v0", "PutEggplantInBasketScene-v0"}
    assert {(t.scene_name, t.robot) for t in TASKS.values()} == {
        ("bridge_table_1_v1", "widowx"), ("bridge_table_1_v2", "widowx_sink_camera_setup")}
    assert TASKS["PutEggplantInBasket"].scene_name == "bridge_table_1_v2"


def test_results_table_pools_repeats():
    records = [{"task": "A", "episodes": [{"success": s} for s in (1, 1, 1, 0)]},
               {"task": "A", "episodes": [{"success": s} for s in (1, 0, 0, 0)]},
               {"task": "B", "episodes": [{"success": True}, {"success": False}]}]
    assert success_by_task(records) == {"A": (4, 8), "B": (1, 2)}
    table = markdown_table(records, task_order=["B", "A"])
    assert table.splitlines()[2:] == ["| B | 50.0 | 2 |", "| A | 50.0 | 8 |", "| **Mean** | **50.0** | 10 |"]


@pytest.mark.skipif(importlib.util.find_spec("simpler_env") is not None, reason="SimplerEnv is installed")
def test_run_bridge_without_simpler_env_says_so():
    with pytest.raises(SystemExit, match="SimplerEnv is not importable"):
        run_bridge.main(["--port", "1"])
