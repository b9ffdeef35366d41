"""The four SimplerEnv WidowX (Bridge) tasks and their scenes, as starVLA's
``examples/simBenchmarks/SimplerEnv/eval_files/auto_eval_scripts/star_bridge.sh`` sets them up, and their episode
lengths: starVLA's script runs every task for 120 steps; SimplerEnv's own ``scripts/octo_bridge.sh`` and
``rt1x_bridge.sh`` give carrot, spoon and cubes 60 and the eggplant 120."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeTask:
    env_name: str
    scene_name: str
    robot: str
    overlay: str  # under ManiSkill2_real2sim/data/real_inpainting/
    robot_init_xy: tuple[float, float]
    simpler_env_steps: int  # the episode length in SimplerEnv's scripts/octo_bridge.sh, rt1x_bridge.sh


_TABLE = dict(scene_name="bridge_table_1_v1", robot="widowx", overlay="bridge_real_eval_1.png",
              robot_init_xy=(0.147, 0.028))
_SINK = dict(scene_name="bridge_table_1_v2", robot="widowx_sink_camera_setup", overlay="bridge_sink.png",
             robot_init_xy=(0.127, 0.06))
TASKS = {
    "PutSpoonOnTableCloth": BridgeTask("PutSpoonOnTableClothInScene-v0", **_TABLE, simpler_env_steps=60),
    "PutCarrotOnPlate": BridgeTask("PutCarrotOnPlateInScene-v0", **_TABLE, simpler_env_steps=60),
    "StackGreenCubeOnYellowCube": BridgeTask("StackGreenCubeOnYellowCubeBakedTexInScene-v0", **_TABLE,
                                             simpler_env_steps=60),
    "PutEggplantInBasket": BridgeTask("PutEggplantInBasketScene-v0", **_SINK, simpler_env_steps=120),
}

STARVLA_STEPS = 120  # every task, in starVLA's star_bridge.sh
EPISODE_LENGTHS = ("starvla", "simpler_env")


def episode_steps(task: str, lengths: str = "starvla") -> int:
    """Steps per episode of ``task`` under starVLA's lengths (the default) or SimplerEnv's own."""
    if lengths not in EPISODE_LENGTHS:
        raise ValueError(f"episode lengths: expected one of {list(EPISODE_LENGTHS)}, got {lengths!r}")
    return STARVLA_STEPS if lengths == "starvla" else TASKS[task].simpler_env_steps
