"""Installed means enabled: the ``.pth`` hook registers TwinBrain and this package's datasets in any process that
imports starVLA, with no wrapper and no import of this package.

Runs in CI: each test starts a fresh interpreter (the hook acts at start-up and on first import) with a stand-in
``starVLA`` in a temporary folder: the module paths the hook watches and the registries it fills, nothing else.
The same hook against the real starVLA: scripts/starvla_host_check.sh."""

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts fresh Python processes (~6 s each): full suite only

ROOT = Path(__file__).parents[2]

STAND_IN = {
    "starVLA/__init__.py": "",
    "starVLA/model/__init__.py": "",
    "starVLA/model/tools.py": """
        class Registry:
            def __init__(self):
                self._registry = {}

            def register(self, name):
                def decorator(cls):
                    self._registry[name] = cls
                    return cls
                return decorator

            def __getitem__(self, name):
                return self._registry[name]

        FRAMEWORK_REGISTRY = Registry()
    """,
    "starVLA/model/framework/__init__.py": "",
    "starVLA/model/framework/base_framework.py": """
        from transformers import PretrainedConfig, PreTrainedModel

        class baseframework(PreTrainedModel):
            config_class = PretrainedConfig

            def __init__(self, hf_config=None):
                super().__init__(hf_config or PretrainedConfig())
    """,
    "starVLA/model/framework/share_tools.py": """
        from pathlib import Path
        from omegaconf import OmegaConf

        def read_mode_config(ckpt):
            run = Path(ckpt).parents[1]
            return OmegaConf.to_container(OmegaConf.load(run / "config.yaml")), {}
    """,
    "starVLA/dataloader/__init__.py": "",
    "starVLA/dataloader/gr00t_lerobot/__init__.py": "",
    "starVLA/dataloader/gr00t_lerobot/embodiment_tags.py": """
        from enum import Enum

        class EmbodimentTag(Enum):
            NEW_EMBODIMENT = "new_embodiment"
    """,
    "starVLA/dataloader/gr00t_lerobot/datasets.py": """
        from dataclasses import dataclass

        @dataclass
        class ModalityConfig:
            delta_indices: list
            modality_keys: list
    """,
    "starVLA/dataloader/gr00t_lerobot/registry.py": """
        DATASET_NAMED_MIXTURES = {"bridge": [("bridge_orig", 1.0, "oxe_bridge")]}
        ROBOT_TYPE_CONFIG_MAP = {"oxe_bridge": object()}
        ROBOT_TYPE_TO_EMBODIMENT_TAG = {}
    """,
    "deployment/__init__.py": "",
    "deployment/model_server/__init__.py": "",
    "deployment/model_server/policy_wrapper.py": """
        class PolicyServerWrapper:
            def __init__(self, ckpt_path, device="cuda", use_bf16=False, config_overrides=None):
                self.device = device
    """,
}


def write_stand_in(root: Path, **replace: str) -> Path:
    for name, source in STAND_IN.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(replace.get(name.replace("/", "_").replace(".", "_"), source)))
    return root


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return write_stand_in(tmp_path_factory.mktemp("stand_in_starvla"))


def run_python(code: str, stand_in: Path | None, *args: str, autoload: str | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (stand-in starVLA first on the path); it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STARVLA_TWINBRAIN_AUTOLOAD")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (stand_in, ROOT) if p is not None)
    if autoload is not None:
        env["STARVLA_TWINBRAIN_AUTOLOAD"] = autoload
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


HEAVY = ("torch", "transformers", "starvla_twinbrain")


def test_installed_package_ships_the_pth_and_a_fresh_interpreter_has_the_hook_and_nothing_heavy():
    installed = [d for d in site.getsitepackages() if (Path(d) / "starvla_twinbrain_autoload.pth").is_file()]
    assert installed, "no starvla_twinbrain_autoload.pth in site-packages: reinstall the package (pip install -e .)"
    got = run_python(f"""
        import json, sys
        print(json.dumps({{"finders": [type(f).__name__ for f in sys.meta_path],
                          "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """, None)
    assert got["finders"].count("StarVLAHookFinder") == 1
    assert got["heavy"] == []


def test_twinbrain_registered_when_starvla_base_framework_loads_and_not_before(stand_in):
    got = run_python(f"""
        import json, sys
        import starVLA.model.tools, starVLA.dataloader
        from starVLA.model.tools import FRAMEWORK_REGISTRY
        before = {{"registered": sorted(FRAMEWORK_REGISTRY._registry), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}
        import starVLA.model.framework.base_framework as base
        cls = FRAMEWORK_REGISTRY._registry["TwinBrain"]
        assert FRAMEWORK_REGISTRY["twin_brain"] is cls  # any spelling, through the host's own lookup
        print(json.dumps({{"before": before, "registered": sorted(FRAMEWORK_REGISTRY._registry),
                          "class": cls.__module__ + "." + cls.__name__, "on_host_base": issubclass(cls, base.baseframework),
                          "loader_restored": type(base.__loader__).__name__}}))
    """, stand_in)
    assert got["before"] == {"registered": [], "heavy": []}  # other starVLA modules: the hook does nothing
    assert got["registered"] == ["TwinBrain"]
    assert got["class"] == "starvla_twinbrain.framework.twinbrain.TwinBrain" and got["on_host_base"]
    assert got["loader_restored"] == "SourceFileLoader"  # the module looks exactly as if loaded without the hook


def test_importing_this_package_first_registers_once_without_a_circular_import(stand_in):
    # starvla_twinbrain imports starVLA's base_framework itself: the hook then fires while the package is still
    # loading, and the package registers TwinBrain when it has loaded.
    got = run_python("""
        import json
        import starvla_twinbrain
        from starVLA.model.tools import FRAMEWORK_REGISTRY
        from starvla_twinbrain.framework import TwinBrain
        print(json.dumps({"same": FRAMEWORK_REGISTRY._registry["TwinBrain"] is TwinBrain}))
    """, stand_in)
    assert got == {"same": True}


def test_hook_is_idempotent(stand_in):
    got = run_python("""
        import json, sys
        import starvla_twinbrain_autoload
        import starVLA.model.framework.base_framework
        import starVLA.dataloader.gr00t_lerobot.registry as data
        from starVLA.model.tools import FRAMEWORK_REGISTRY
        first = (dict(FRAMEWORK_REGISTRY._registry), dict(data.DATASET_NAMED_MIXTURES), dict(data.ROBOT_TYPE_CONFIG_MAP))
        starvla_twinbrain_autoload.install()  # the .pth processed again: same hook, hooks run again on loaded modules
        starvla_twinbrain_autoload.install()
        again = (dict(FRAMEWORK_REGISTRY._registry), dict(data.DATASET_NAMED_MIXTURES), dict(data.ROBOT_TYPE_CONFIG_MAP))
        print(json.dumps({"finders": [type(f).__name__ for f in sys.meta_path].count("StarVLAHookFinder"),
                          "frameworks_same": first[0] == again[0], "mixtures_same": first[1] == again[1],
                          "data_configs": sorted(again[2])}))
    """, stand_in)
    assert got["finders"] == 1 and got["frameworks_same"] and got["mixtures_same"]
    # re-registering replaces our own data configs only; starVLA's entries stay
    assert got["data_configs"] == ["oxe_bridge", "twinbrain_robosuite", "twinbrain_synthetic"]


def test_disabled_by_environment(stand_in):
    code = """
        import json, sys
        import starVLA.model.framework.base_framework, starVLA.dataloader.gr00t_lerobot.registry as data
        from starVLA.model.tools import FRAMEWORK_REGISTRY
        print(json.dumps({"registered": sorted(FRAMEWORK_REGISTRY._registry), "mixtures": sorted(data.DATASET_NAMED_MIXTURES),
                          "finders": [type(f).__name__ for f in sys.meta_path].count("StarVLAHookFinder"),
                          "ours": "starvla_twinbrain" in sys.modules}))
    """
    assert run_python(code, stand_in, autoload="0") == {"registered": [], "mixtures": ["bridge"], "finders": 0, "ours": False}


def test_a_failing_hook_warns_and_starvla_still_imports(tmp_path):
    # starVLA with a data mixture of its own named "synthetic": this package refuses to overwrite it
    stand_in = write_stand_in(tmp_path, starVLA_dataloader_gr00t_lerobot_registry_py="""
        DATASET_NAMED_MIXTURES = {"synthetic": [("their_folder", 1.0, "their_robot")]}
        ROBOT_TYPE_CONFIG_MAP = {"their_robot": object()}
    """)
    got = run_python("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from starVLA.dataloader.gr00t_lerobot import registry
        print(json.dumps({"synthetic": registry.DATASET_NAMED_MIXTURES["synthetic"],
                          "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
    """, stand_in)
    assert got["synthetic"] == [["their_folder", 1.0, "their_robot"]]
    assert len(got["warnings"]) == 1
    assert "starvla_twinbrain.host.starvla.register_datasets, run when starVLA loaded " \
           "starVLA.dataloader.gr00t_lerobot.registry, failed" in got["warnings"][0]
    assert "starVLA already has a data mixture 'synthetic'" in got["warnings"][0]


DATA_CODE = """
    import json, sys
    from starVLA.dataloader.gr00t_lerobot import registry
    out = {"mixtures": {k: registry.DATASET_NAMED_MIXTURES[k] for k in ("synthetic", "robosuite_lift")}}
    for robot_type in ("twinbrain_synthetic", "twinbrain_robosuite"):
        modality = registry.ROBOT_TYPE_CONFIG_MAP[robot_type].modality_config()
        out[robot_type] = {key: [m.delta_indices, m.modality_keys] for key, m in modality.items()}
    print(json.dumps(out))
"""


def test_datasets_registered_with_the_run_s_action_horizon(stand_in):
    config = ROOT / "configs" / "tiny_cpu.yaml"  # action_horizon: 4
    got = run_python(DATA_CODE, stand_in, "--config_yaml", str(config), "--trainer.max_train_steps", "3")
    assert got["mixtures"] == {"synthetic": [["synthetic", 1.0, "twinbrain_synthetic"]],
                               "robosuite_lift": [["robosuite_lift", 1.0, "twinbrain_robosuite"]]}
    for robot_type in ("twinbrain_synthetic", "twinbrain_robosuite"):
        assert got[robot_type] == {"video": [[0], ["video.cam"]], "state": [[0], ["state.state"]],
                                   "action": [[0, 1, 2, 3], ["action.action"]],
                                   "language": [[0], ["annotation.human.action.task_description"]]}


@pytest.mark.parametrize("argv, horizon", [
    (["train_starvla.py", "--config_yaml", "configs/tiny_cpu.yaml"], 4),
    (["train_starvla.py", "--config_yaml=configs/tiny_cpu.yaml", "--trainer.max_train_steps", "3"], 4),
    # starVLA's dotlist overrides win over the YAML, in both of its spellings; the last one wins
    (["train_starvla.py", "--config_yaml", "configs/tiny_cpu.yaml", "--framework.action_model.action_horizon", "6"], 6),
    (["train_starvla.py", "--framework.action_model.action_horizon=5", "--framework.action_model.action_horizon=7"], 7),
])
def test_action_horizon_from_the_launch_command(argv, horizon, monkeypatch):
    from starvla_twinbrain.host.data import action_horizon_from_command

    monkeypatch.chdir(ROOT)
    assert action_horizon_from_command(argv) == horizon


def test_action_horizon_without_a_config_says_where_it_comes_from():
    from starvla_twinbrain.host.data import action_horizon_from_command

    with pytest.raises(ValueError, match=r"framework\.action_model\.action_horizon, read from the launch command's "
                                         r"--config_yaml, and this command has none"):
        action_horizon_from_command(["python", "--trainer.max_train_steps", "3"])


def test_policy_server_serves_twinbrain_on_cpu_without_cuda_and_leaves_other_frameworks(stand_in, tmp_path):
    checkpoints = {}
    for name in ("TwinBrain", "QwenGR00T"):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(f"framework:\n  name: {name}\n")
        (run / "checkpoints" / "steps_1_pytorch_model.pt").write_bytes(b"")
        checkpoints[name] = str(run / "checkpoints" / "steps_1_pytorch_model.pt")
    got = run_python("""
        import json, sys, torch
        from deployment.model_server.policy_wrapper import PolicyServerWrapper
        print(json.dumps({"cuda": torch.cuda.is_available(),
                          "devices": {name: PolicyServerWrapper(ckpt_path=path, device="cuda").device
                                      for name, path in json.loads(sys.argv[1]).items()}}))
    """, stand_in, json.dumps(checkpoints))
    assert got["devices"] == {"TwinBrain": "cuda" if got["cuda"] else "cpu", "QwenGR00T": "cuda"}
