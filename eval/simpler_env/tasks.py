"""The four SimplerEnv WidowX (Bridge) tasks and their scenes, as starVLA's
``examples/simBenchmarks/SimplerEnv/eval_files/auto_eval_scripts/star_bridge.sh`` sets them up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BridgeTask:
    env_name: str
    scene_name: str
    robot: str
    overlay: str  # under ManiSkill2_real2sim/data/real_inpainting/
    robot_init_xy: tuple[float, float]


_TABLE = dict(scene_name="bridge_table_1_v1", robot="widowx", overlay="bridge_real_eval_1.png",
              robot_init_xy=(0.147, 0.028))
_SINK = dict(scene_name="bridge_table_1_v2", robot="widowx_sink_camera_setup", overlay="bridge_sink.png",
             robot_init_xy=(0.127, 0.06))
TASKS = {
    "PutSpoonOnTableCloth": BridgeTask("PutSpoonOnTableClothInScene-v0", **_TABLE),
    "PutCarrotOnPlate": BridgeTask("PutCarrotOnPlateInScene-v0", **_TABLE),
    "StackGreenCubeOnYellowCube": BridgeTask("StackGreenCubeOnYellowCubeBakedTexInScene-v0", **_TABLE),
    "PutEggplantInBasket": BridgeTask("PutEggplantInBasketScene-v0", **_SINK),
}
