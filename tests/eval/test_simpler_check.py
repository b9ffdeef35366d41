"""The pieces scripts/simpler_check.sh relies on, without SimplerEnv: episode lengths, the episode recorder, and the
checks of eval/simpler_env/check_run.py against inputs whose answer is known (right and wrong images, a robot that
follows, ignores or opposes its commands, incomplete results)."""

import importlib.util
import json
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest

from eval.simpler_env import check_run, run_bridge
from eval.common.client import resize_area
from eval.simpler_env.recording import EpisodeRecorder
from eval.simpler_env.tasks import TASKS, episode_steps
from eval.simpler_env.widowx_client import WidowXPolicy
from starvla_twinbrain.serving.client import PolicyClient
from tests.eval.fake_policy import RecordingPolicy, served

HAVE_CV2 = importlib.util.find_spec("cv2") is not None
needs_cv2 = pytest.mark.skipif(not HAVE_CV2, reason="OpenCV not installed")


# ------------------------------------------------------------------------------------------- episode lengths
def test_episode_lengths_starvla_and_simpler_env():
    assert {t: episode_steps(t) for t in TASKS} == dict.fromkeys(TASKS, 120)
    assert {t: episode_steps(t, "simpler_env") for t in TASKS} == {
        "PutSpoonOnTableCloth": 60, "PutCarrotOnPlate": 60, "StackGreenCubeOnYellowCube": 60,
        "PutEggplantInBasket": 120}
    with pytest.raises(ValueError, match="episode lengths: expected one of"):
        episode_steps("PutCarrotOnPlate", "octo")


# ------------------------------------------------------------------------------ a fake env with a moving arm
def scene(seed=0, shape=(480, 640)):
    """A frame with structure in both directions, so a transposed or flipped copy differs."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    noise = np.random.default_rng(seed).integers(0, 40, (*shape, 3))
    image = np.stack([x * 200 // shape[1], y * 200 // shape[0], (x + 2 * y) % 97], -1) + noise
    return image.astype(np.uint8)


class MovingArmEnv:
    """Truncates after ``steps``; the end effector moves by ``gain`` times the commanded xyz each step."""

    def __init__(self, steps=3, gain=1.0):
        self.steps, self.gain, self.built_with = steps, gain, None
        self.arm = SimpleNamespace(ee_pose_at_base=SimpleNamespace(p=np.array([0.3, 0.0, 0.1])))
        self.unwrapped = SimpleNamespace(agent=SimpleNamespace(controller=SimpleNamespace(controllers={"arm": self.arm})))

    def reset(self, options=None):
        self.t = 0
        return {"frame": scene(0)}, {}

    def get_language_instruction(self):
        return "put carrot on plate"

    def step(self, action):
        self.t += 1
        self.arm.ee_pose_at_base.p = self.arm.ee_pose_at_base.p + self.gain * np.asarray(action[:3])
        last = self.t == self.steps
        return {"frame": scene(self.t)}, 0.0, False, last, {}

    def close(self):
        pass


CHUNK = [[0.01, -0.02, 0.005, 0.0, 0.0, 0.0, 1.0]] * 4


@pytest.fixture(scope="module")
def bridge_server():
    policy = RecordingPolicy({"action_dim": 7, "action_chunk_size": 4}, lambda example: np.array(CHUNK))
    with served(policy) as port:
        yield policy, port


@pytest.fixture
def bridge_port(bridge_server):
    return bridge_server[1]


def get_frame(env, obs, camera_name):
    return obs["frame"]


def test_recorded_episode_holds_what_was_sent_and_done(bridge_port, tmp_path):
    env = MovingArmEnv(steps=12)
    with PolicyClient("127.0.0.1", bridge_port) as client:
        recorder = EpisodeRecorder(tmp_path, "carrot_ep0", frame_every=3, video=HAVE_CV2)
        result = run_bridge.run_episode(env, WidowXPolicy(client), get_frame, TASKS["PutCarrotOnPlate"], 0, recorder)
    assert result["steps"] == 12 and set(result["seconds"]) == {"policy", "env"}
    data = np.load(tmp_path / "carrot_ep0.npz")
    np.testing.assert_array_equal(data["frame_steps"], [0, 3, 6, 9, 11])  # every 3rd and the last
    for k, step in enumerate(data["frame_steps"]):
        np.testing.assert_array_equal(data["frames"][k], scene(step))
    np.testing.assert_array_equal(data["sent"], np.stack([resize_area(scene(t), (224, 224)) for t in range(12)]))
    np.testing.assert_allclose(data["actions"], np.tile([0.01, -0.02, 0.005, 0, 0, 0, 1.0], (12, 1)), atol=1e-7)
    np.testing.assert_allclose(data["ee_positions"], [0.3, 0, 0.1] + np.arange(13)[:, None] * [0.01, -0.02, 0.005],
                               atol=1e-7)
    if not HAVE_CV2:
        return  # the video and the still need OpenCV
    import cv2

    video = cv2.VideoCapture(str(tmp_path / "carrot_ep0.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, first = video.read()
    assert ok and first.shape == (480, 640 + 260, 3)
    # the camera half of the video is the env's frame (lossy codec: compare loosely)
    assert np.abs(first[:400, :640, ::-1].astype(int) - scene(0)[:400]).mean() < 12
    still = cv2.imread(str(tmp_path / "carrot_ep0_still.png"))  # lossless: the frame of step 3 (12 / 4) exactly
    assert still.shape == (480, 900, 3)
    np.testing.assert_array_equal(still[:400, :640, ::-1], scene(3)[:400])  # above the caption


# ------------------------------------------------------------------------------------------- image checks
@needs_cv2
def test_image_check_passes_the_client_resize_of_the_rendered_frames():
    frames = np.stack([scene(s) for s in range(3)])
    sent = np.stack([resize_area(f, (224, 224)) for f in frames])
    report = check_run.image_report(sent, frames, np.arange(3))
    assert report["max_abs_diff"] <= 1 and check_run.check_images(report) == []
    assert min(v for k, v in report["mean_abs_diff"].items() if k != "as rendered") > 20


@needs_cv2
@pytest.mark.parametrize("wrong, message", [
    (lambda f: f.transpose(1, 0, 2), "transposed"),
    (lambda f: f[::-1], "upside down"),
    (lambda f: f[:, :, ::-1], "differ from the rendered frame"),  # BGR sent as RGB
])
def test_image_check_fails_mis_oriented_or_swapped_images(wrong, message):
    frames = np.stack([scene(s) for s in range(2)])
    sent = np.stack([resize_area(np.ascontiguousarray(wrong(f)), (224, 224)) for f in frames])
    failures = check_run.check_images(check_run.image_report(sent, frames, np.arange(2)))
    assert any(message in f for f in failures), failures


@needs_cv2
def test_image_check_fails_a_blank_image():
    frames = np.full((1, 480, 640, 3), 128, np.uint8)
    sent = np.full((1, 224, 224, 3), 128, np.uint8)
    failures = check_run.check_images(check_run.image_report(sent, frames, np.arange(1)))
    assert any("nearly blank" in f for f in failures)


def test_server_images_must_equal_those_sent_in_order(tmp_path):
    sent = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    for i, image in enumerate(sent):
        np.save(tmp_path / f"{i:06d}.npy", image)
    assert check_run.check_server_images(sent, tmp_path) == []
    assert check_run.check_server_images(sent[[0, 2, 1]], tmp_path) == ["requests [1, 2] reached the server with other images"]
    assert "saved 3 request images, the client sent 2" in check_run.check_server_images(sent[:2], tmp_path)[0]


# ------------------------------------------------------------------------------------------ motion checks
def _motion(gain, steps=10, command=(0.01, -0.02, 0.005)):
    actions = np.tile([*command, 0, 0, 0, 1.0], (steps, 1))
    ee = np.array([0.3, 0.0, 0.1]) + gain * np.cumsum(np.vstack([np.zeros(3), actions[:, :3]]), axis=0)
    return check_run.motion_report(actions, ee)


def test_motion_check_passes_an_arm_that_follows_with_lag():
    report = _motion(gain=0.8)
    assert report["cosine"] == pytest.approx(1.0) and report["gain"] == pytest.approx(0.8)
    assert report["max_travel"] == pytest.approx(0.8 * 10 * np.linalg.norm([0.01, -0.02, 0.005]))
    assert check_run.check_motion(report) == []


def test_motion_check_fails_an_arm_that_does_not_move_or_moves_the_other_way():
    assert "moved only 0.00 cm" in check_run.check_motion(_motion(gain=0.0))[0]
    assert "not along the commanded" in check_run.check_motion(_motion(gain=-1.0))[0]


# ------------------------------------------------------------------------------- results, lengths, table
def _write_record(folder, task, steps, max_steps, complete=True):
    record = {"task": task, "max_steps": max_steps, "complete": complete,
              "episodes": [{"episode_id": 0, "success": False, "steps": steps}]}
    (folder / f"{TASKS[task].env_name}_run1.json").write_text(json.dumps(record))


def test_results_check(tmp_path):
    steps = {t: episode_steps(t, "simpler_env") for t in TASKS}
    for task in TASKS:
        _write_record(tmp_path, task, steps[task], steps[task])
    assert check_run.check_results(tmp_path, list(TASKS), 1, steps) == []
    _write_record(tmp_path, "PutCarrotOnPlate", 59, 60)
    (tmp_path / f"{TASKS['PutEggplantInBasket'].env_name}_run1.json").unlink()
    failures = check_run.check_results(tmp_path, list(TASKS), 1, steps)
    assert failures == ["PutCarrotOnPlate: episodes [0] did not run 60 steps (max_steps 60)",
                        "PutEggplantInBasket: no results file " + str(tmp_path / "PutEggplantInBasketScene-v0_run1.json"),
                        "results table: rows missing for ['PutEggplantInBasket']"]


@pytest.mark.parametrize("lengths, max_steps, want", [("starvla", None, {"PutCarrotOnPlate": 120, "PutEggplantInBasket": 120}),
                                                      ("simpler_env", None, {"PutCarrotOnPlate": 60, "PutEggplantInBasket": 120}),
                                                      ("simpler_env", 7, {"PutCarrotOnPlate": 7, "PutEggplantInBasket": 7})])
def test_run_task_builds_each_env_with_its_episode_length(bridge_port, tmp_path, lengths, max_steps, want):
    built = {}

    def build_env(env_name, **kwargs):
        built[env_name] = kwargs
        return MovingArmEnv(steps=2)  # the fake truncates early whatever it was built with

    args = Namespace(out=str(tmp_path), simpler_env_path=None, max_steps=max_steps, episode_length=lengths,
                     episodes=1, record=None)
    with PolicyClient("127.0.0.1", bridge_port) as client:
        policy = WidowXPolicy(client)
        for task in want:
            path = run_bridge.run_task(task, 1, args, policy, (tmp_path / "data", build_env, get_frame))
            assert json.loads(path.read_text())["max_steps"] == want[task]
    assert {name: kw["max_episode_steps"] for name, kw in built.items()} == {
        TASKS[task].env_name: steps for task, steps in want.items()}
    assert built["PutEggplantInBasketScene-v0"]["rgb_overlay_path"] == str(tmp_path / "data/real_inpainting/bridge_sink.png")



def test_run_task_refuses_to_mix_episode_lengths_in_one_results_file(bridge_port, tmp_path):
    args = Namespace(out=str(tmp_path), simpler_env_path=None, max_steps=None, episode_length="simpler_env",
                     episodes=1, record=None)
    fake = (tmp_path, lambda name, **kwargs: MovingArmEnv(steps=2), get_frame)
    with PolicyClient("127.0.0.1", bridge_port) as client:
        policy = WidowXPolicy(client)
        path = run_bridge.run_task("PutCarrotOnPlate", 1, args, policy, fake)
        assert run_bridge.run_task("PutCarrotOnPlate", 1, args, policy, fake) == path  # complete: skipped
        args.episode_length = "starvla"
        with pytest.raises(SystemExit, match="holds 60-step episodes, this run makes 120-step ones"):
            run_bridge.run_task("PutCarrotOnPlate", 1, args, policy, fake)
        record = json.loads(path.read_text())
        del record["max_steps"]  # a file from before the option: 120 steps
        path.write_text(json.dumps(record))
        assert run_bridge.run_task("PutCarrotOnPlate", 1, args, policy, fake) == path


# ------------------------------------------------------------------------------------ check_run end to end
@needs_cv2
@pytest.mark.parametrize("gain, ok", [(0.9, True), (0.0, False)])
def test_check_run_on_a_recorded_run(bridge_server, tmp_path, capsys, gain, ok):
    """run_task --record against the fake env, the server's images saved as the check script saves them."""
    server_policy, port = bridge_server
    server_policy.requests.clear()
    args = Namespace(out=str(tmp_path / "results"), simpler_env_path=None, max_steps=None, episode_length="simpler_env",
                     episodes=1, record=str(tmp_path / "record"))
    (tmp_path / "results").mkdir()
    with PolicyClient("127.0.0.1", port) as client:
        run_bridge.run_task("PutCarrotOnPlate", 1, args, WidowXPolicy(client),
                            (tmp_path, lambda name, **kw: MovingArmEnv(kw["max_episode_steps"], gain), get_frame))
    (tmp_path / "server").mkdir()
    for i, request in enumerate(server_policy.requests):
        np.save(tmp_path / "server" / f"{i:06d}.npy", request["examples"][0]["image"][0])
    code = check_run.main(["--results", str(tmp_path / "results"), "--record", str(tmp_path / "record"),
                           "--server-images", str(tmp_path / "server"), "--tasks", "PutCarrotOnPlate",
                           "--episode-length", "simpler_env"])
    out = capsys.readouterr().out
    assert "PutCarrotOnPlate_run1_ep0: 60 steps" in out and "the server received exactly the 60 images sent" in out
    assert "| PutCarrotOnPlate | 0.0 | 1 |" in out
    assert (code == 0) == ok and ("FAILED: PutCarrotOnPlate_run1_ep0: the end effector moved only" in out) != ok


def test_reconnecting_client_reopens_a_closed_connection_once(bridge_server):
    server_policy, port = bridge_server
    server_policy.requests.clear()
    opened = []

    def connect():
        opened.append(PolicyClient("127.0.0.1", port))
        return opened[-1]

    client = run_bridge.ReconnectingClient(connect)
    example = [{"image": [np.zeros((224, 224, 3), np.uint8)], "lang": "put carrot on plate"}]
    np.testing.assert_allclose(client.predict_action(example)[0], CHUNK)
    opened[0]._ws.close()  # as the keepalive does when the simulator held the GIL past its pong
    np.testing.assert_allclose(client.predict_action(example)[0], CHUNK)
    assert len(opened) == 2 and client.reconnects == 1 and len(server_policy.requests) == 2
    assert client.metadata["action_dim"] == 7
    client.close()
