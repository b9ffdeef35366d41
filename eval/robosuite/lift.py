"""robosuite Lift with a Panda, set up for a CPU closed-loop benchmark; no torch (runs in .venv-sim).

One camera, rendered small and without shadows or reflections: on CPU (MUJOCO_GL=egl, Mesa) rendering is most
of the step time. Seeds: demos use 0.., evaluation 1000.., so no evaluation scene is one the policy was trained on.
"""

import logging

import mujoco
import numpy as np
import robosuite
from robosuite.environments.manipulation.lift import Lift

logging.getLogger("robosuite_logs").setLevel(logging.WARNING)  # one "Loading controller configuration" per env

TASK = "lift the red cube"
STATE_DIM = 11
ACTION_DIM = 7
DEMO_SEED = 0
EVAL_SEED = 1000


def make_env(seed: int = 0, image_size: int = 64, camera: str = "agentview", horizon: int = 100) -> Lift:
    """Lift + Panda, OSC_POSE delta control at 20 Hz, sparse reward, one `camera` image_size x image_size.

    horizon 100 steps (5 s): the scripted expert lifts the cube in ~35; failing policies run to the end.

    hard_reset=False: robosuite's default rebuilds the model and the GL context on every reset (~2 s on CPU);
    a soft reset takes ~50 ms. The cube's size is drawn once here (from `seed`); reset(env, seed) draws the rest.
    """
    env = robosuite.make(
        "Lift",
        robots="Panda",
        controller_configs=robosuite.load_composite_controller_config(robot="Panda"),  # BASIC + arm OSC_POSE
        has_renderer=False,
        has_offscreen_renderer=True,
        use_camera_obs=True,
        camera_names=camera,
        camera_heights=image_size,
        camera_widths=image_size,
        control_freq=20,
        horizon=horizon,
        reward_shaping=False,
        hard_reset=False,
        seed=seed,
    )
    # Rendering is most of a step on CPU (Mesa llvmpipe). robosuite's renderer_config only reaches the on-screen
    # viewer, so the offscreen context is adjusted directly; it lives as long as the env since hard_reset is off.
    # Shadows and reflections off, and no 4x multisampling: each roughly halves the render time.
    context = env.sim._render_context_offscreen
    context.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    env.sim.model.vis.quality.offsamples = 0
    context.update_offscreen_size(image_size, image_size)  # rebuilds the GL buffers (640x480 before), now without MSAA
    return env


def reset(env: Lift, seed: int) -> dict:
    """Reset to the scene of `seed` (cube pose, robot joint noise), whatever ran before.

    The env, its cube placement sampler and its robots all hold the same np.random.Generator (env.rng), so it is
    re-seeded in place rather than replaced.
    """
    env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    return env.reset()


def observation(obs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Policy inputs from a robosuite observation: (image uint8 HxWx3 upright, state float32 [11]).

    state = eef position (3, world, m), gripper finger qpos (2), cube position (3), cube - eef (3).
    The cube position is given on purpose: a tiny VLM trained for minutes on CPU cannot localise it from pixels.
    robosuite renders with OpenGL's bottom-up rows (macros.IMAGE_CONVENTION "opengl"), hence the flip.
    """
    (image,) = [v for k, v in obs.items() if k.endswith("_image")]
    eef, cube = obs["robot0_eef_pos"], obs["cube_pos"]
    state = np.concatenate([eef, obs["robot0_gripper_qpos"], cube, cube - eef]).astype(np.float32)
    return np.ascontiguousarray(image[::-1]), state


def success(env: Lift) -> bool:
    """Cube more than 4 cm above the table."""
    return bool(env._check_success())


class ScriptedLiftExpert:
    """State machine over the 11-d state: above the cube, down to it, close, lift.

    Actions are OSC_POSE deltas in [-1, 1] (1 = 5 cm per step): dx, dy, dz, no rotation, gripper -1 open / +1
    closed. A seeded RNG varies the gain, hover height, lift height, grasp wait and adds a little action noise,
    so demonstrations differ in speed and path, not just in cube pose.
    """

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.gain = rng.uniform(0.6, 1.0)
        self.hover = rng.uniform(0.06, 0.12)
        self.lift_to = rng.uniform(0.15, 0.25)
        self.grasp_steps = int(rng.integers(6, 11))
        self.noise = 0.05
        self.phase = "approach"
        self.closed_for = 0

    def act(self, state: np.ndarray) -> np.ndarray:
        eef, cube, rel = state[0:3], state[5:8], state[8:11]
        gripper = -1.0
        if self.phase == "approach":
            target = cube + [0.0, 0.0, self.hover]
            if np.linalg.norm(rel[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube.copy()
            if np.linalg.norm(rel) < 0.01:
                self.phase = "grasp"
        if self.phase == "grasp":
            target, gripper = cube, 1.0
            self.closed_for += 1
            if self.closed_for >= self.grasp_steps:
                self.phase = "lift"
                self.lift_target = eef + [0.0, 0.0, self.lift_to]
        if self.phase == "lift":
            target, gripper = self.lift_target, 1.0
        move = self.gain * (target - eef) / 0.05 + self.rng.normal(0.0, self.noise, 3)
        return np.clip(np.concatenate([move, np.zeros(3), [gripper]]), -1.0, 1.0).astype(np.float32)
