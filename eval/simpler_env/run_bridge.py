"""Run the four SimplerEnv WidowX (Bridge) tasks against a policy server and write per-episode results.

    python -m eval.simpler_env.run_bridge --host 127.0.0.1 --port 10093 --out results/simpler_bridge

Needs the SimplerEnv environment (simpler_env + ManiSkill2_real2sim) plus numpy, websockets and msgpack. The
settings are those of starVLA's ``examples/simBenchmarks/SimplerEnv/eval_files/auto_eval_scripts/star_bridge.sh``
(robot poses, overlays, 5 Hz control, 500 Hz sim, 120 steps, episodes 0-23, 4 repeats), and the episode loop is
SimplerEnv's ``maniskill2_evaluator``: success is the env's ``done`` at the last step. Each (task, repeat) goes to
``<out>/<env_name>_run<r>.json``, rewritten after every episode; finished files are skipped when re-run.
``--episode-length simpler_env`` uses SimplerEnv's own lengths instead (60 steps, 120 for the eggplant);
``--record DIR`` writes what each step sent and did, and a video per episode (``recording.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from websockets.exceptions import ConnectionClosed

from starvla_twinbrain.serving.client import PolicyClient

from eval.common.client import record_episodes
from .recording import EpisodeRecorder
from eval.common.results import load_results, markdown_table
from .tasks import EPISODE_LENGTHS, STARVLA_STEPS, TASKS, BridgeTask, episode_steps
from .widowx_client import BRIDGE_UNNORM_KEY, WidowXPolicy

CONTROL_MODE = "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"  # SimplerEnv's WidowX control mode
CAMERA = "3rd_view_camera"  # the image SimplerEnv hands WidowX policies
# starVLA passes --robot-init-rot-quat-center 0 0 0 1 (sapien wxyz: 180° about z) with zero roll/pitch/yaw.
ROBOT_INIT_QUAT = np.array([0.0, 0.0, 0.0, 1.0])


def _import_simpler_env():
    try:
        from mani_skill2_real2sim import ASSET_DIR
        from simpler_env.utils.env.env_builder import build_maniskill2_env
        from simpler_env.utils.env.observation_utils import get_image_from_maniskill2_obs_dict
    except ImportError as err:
        raise SystemExit(f"SimplerEnv is not importable here ({err}). Run this in the SimplerEnv environment: "
                         "https://github.com/simpler-env/SimplerEnv (install ManiSkill2_real2sim and simpler_env), "
                         "then `pip install websockets msgpack`.") from None
    return Path(ASSET_DIR), build_maniskill2_env, get_image_from_maniskill2_obs_dict


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class ReconnectingClient:
    """A policy client that, finding its connection closed, opens a new one and sends the request again, once.

    Building a SAPIEN scene can hold the GIL for tens of seconds, so the websocket client's keepalive thread misses
    its pong and closes the connection while no request is in flight (seen under load: "keepalive ping timeout").
    A request carries no server state, so sending it again is safe."""

    def __init__(self, connect: Callable[[], PolicyClient]):
        self._connect = connect
        self.client = connect()
        self.reconnects = 0

    @property
    def metadata(self) -> dict:
        return self.client.metadata

    def predict_action(self, examples: list[dict], **kwargs) -> np.ndarray:
        try:
            return self.client.predict_action(examples, **kwargs)
        except ConnectionClosed as err:
            print(f"policy server connection closed ({err}); reconnecting", flush=True)
            self.client.close()
            self.client, self.reconnects = self._connect(), self.reconnects + 1
            return self.client.predict_action(examples, **kwargs)

    def close(self) -> None:
        self.client.close()


def ee_position(env) -> np.ndarray:
    """The end effector position in the robot base frame, as the arm's controller sees it."""
    return np.asarray(env.unwrapped.agent.controller.controllers["arm"].ee_pose_at_base.p, dtype=np.float64)


def run_episode(env, policy: WidowXPolicy, get_image, task: BridgeTask, episode_id: int,
                recorder: EpisodeRecorder | None = None) -> dict:
    options = {"robot_init_options": {"init_xy": np.array(task.robot_init_xy), "init_rot_quat": ROBOT_INIT_QUAT},
               "obj_init_options": {"episode_id": episode_id}}
    obs, _ = env.reset(options=options)
    instruction = env.get_language_instruction()
    policy.reset(instruction)
    done = truncated = False
    info, steps, seconds = {}, 0, {"policy": 0.0, "env": 0.0}
    while not truncated:  # the policy never asks to stop, so every episode runs to the step limit
        image = get_image(env, obs, camera_name=CAMERA)
        start = time.perf_counter()
        action = policy.step(image, instruction)
        seconds["policy"] += time.perf_counter() - start
        if recorder is not None:
            recorder.add(image, policy.last_sent_image, action, ee_position(env), instruction)
        start = time.perf_counter()
        obs, _, done, truncated, info = env.step(action)  # simulate 0.2 s and render the cameras
        seconds["env"] += time.perf_counter() - start
        instruction = env.get_language_instruction()
        steps += 1
    if recorder is not None:
        recorder.finish(ee_position(env))
    return {"episode_id": episode_id, "success": bool(done), "steps": steps, "instruction": instruction,
            "episode_stats": _jsonable(info.get("episode_stats", {})),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def run_task(name: str, repeat: int, args, policy: WidowXPolicy, simpler) -> Path:
    asset_dir, build_env, get_image = simpler
    task = TASKS[name]
    path = Path(args.out) / f"{task.env_name}_run{repeat}.json"
    max_steps = args.max_steps or episode_steps(name, args.episode_length)
    if path.exists():
        previous = json.loads(path.read_text())
        previous_steps = previous.get("max_steps", STARVLA_STEPS)  # files from before the option ran 120
        if previous_steps != max_steps:
            raise SystemExit(f"{path} holds {previous_steps}-step episodes, this run makes {max_steps}-step ones: "
                             "use another --out (success rates of different lengths do not pool)")
        if previous.get("complete"):
            print(f"{path} is complete, skipping")
            return path
    data = Path(args.simpler_env_path) / "ManiSkill2_real2sim/data" if args.simpler_env_path else asset_dir
    overlay = data / "real_inpainting" / task.overlay
    env = build_env(task.env_name, obs_mode="rgbd", robot=task.robot, sim_freq=500, control_mode=CONTROL_MODE,
                    control_freq=5, max_episode_steps=max_steps, scene_name=task.scene_name,
                    camera_cfgs={"add_segmentation": True}, rgb_overlay_path=str(overlay))
    record = {"task": name, "env_name": task.env_name, "scene_name": task.scene_name, "robot": task.robot,
              "repeat": repeat, "max_steps": max_steps,
              "episode_length": "custom" if args.max_steps else args.episode_length,
              "unnorm_key": policy.unnorm_key, "action_scale": policy.action_scale,
              "server": policy.client.metadata.get("ckpt_path"), "episodes": [], "complete": False}

    def episode(i: int) -> dict:
        recorder = EpisodeRecorder(args.record, f"{name}_run{repeat}_ep{i}") if args.record else None
        return run_episode(env, policy, get_image, task, i, recorder)

    try:
        return record_episodes(path, record, args.episodes, episode, f"{name} run{repeat}")
    finally:
        env.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10093)
    parser.add_argument("--token", default=None, help="the server's --token (default: $STARVLA_POLICY_TOKEN)")
    parser.add_argument("--out", default="results/simpler_bridge", help="folder for the results JSON files")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--episodes", type=int, default=24, help="object layouts 0..N-1 per run")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--episode-length", choices=EPISODE_LENGTHS, default="starvla",
                        help="starvla: 120 steps for every task (starVLA's star_bridge.sh); simpler_env: SimplerEnv's "
                        "own scripts, 60 for carrot, spoon and cubes, 120 for the eggplant")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per episode for every task (overrides "
                        "--episode-length)")
    parser.add_argument("--unnorm-key", default=BRIDGE_UNNORM_KEY)
    parser.add_argument("--action-scale", type=float, default=1.0,
                        help="multiplies the translation and rotation the policy commands (starVLA: 1)")
    parser.add_argument("--record", default=None, metavar="DIR",
                        help="debug: write each episode's sent images, camera frames, actions, end effector "
                        "positions (.npz) and a video with the action beside the camera (.mp4) to DIR")
    parser.add_argument("--simpler-env-path", default=None,
                        help="folder holding ManiSkill2_real2sim/ for the scene overlays (default: the data "
                        "folder of the installed mani_skill2_real2sim, where it finds its own assets)")
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps: expected >= 1, got {args.max_steps}")

    os.environ["DISPLAY"] = ""  # render headless, as starVLA's launcher does
    simpler = _import_simpler_env()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    client = ReconnectingClient(lambda: PolicyClient(args.host, args.port, token=args.token))
    policy = WidowXPolicy(client, unnorm_key=args.unnorm_key, action_scale=args.action_scale)
    try:
        for name in args.tasks:
            for repeat in range(1, args.repeats + 1):
                run_task(name, repeat, args, policy, simpler)
    finally:
        client.close()
    print(markdown_table(load_results(sorted(Path(args.out).glob("*.json"))), task_order=list(TASKS)))


if __name__ == "__main__":
    main()
