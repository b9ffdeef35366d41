"""The model core knows nothing about hosts (STYLE §1): no starVLA, accelerate, lerobot or OmegaConf."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HOSTS = ("starVLA", "accelerate", "lerobot", "omegaconf", "deployment")
ROOT = Path(__file__).parents[1]
MODEL_DIR = ROOT / "starvla_twinbrain" / "model"


def test_model_core_sources_import_no_host():
    offenders = []
    for file in MODEL_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{file.name}: {n}" for n in names if n.split(".")[0] in HOSTS]
    assert not offenders, offenders


@pytest.mark.skipif(importlib.util.find_spec("starVLA") is not None,
                    reason="with starVLA installed, importing the package registers TwinBrain there by design")
def test_importing_the_model_core_loads_no_host():
    # accelerate is left out here: transformers imports it by itself whenever it is installed.
    code = (
        "import sys, starvla_twinbrain.model;"
        "bad = [m for m in ('starVLA', 'lerobot', 'omegaconf') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_share_builders_through_factories_not_through_each_other():
    """Shared builders live in tests/factories.py and tests/references.py, fixtures in conftest.py: a test module
    that imports from another test module (or from conftest) couples two test files."""
    offenders = []
    for file in (Path(__file__).parent).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                last = node.module.rsplit(".", 1)[-1]
                if last.startswith("test_") or last == "conftest":
                    offenders.append(f"{file.relative_to(file.parents[1])}: from {node.module} import ...")
    assert not offenders, offenders


def _imported_modules(file: Path) -> list[str]:
    """Absolute names of the modules a source file imports (relative imports resolved against its package)."""
    package = file.relative_to(ROOT).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, node.module] if node.module else base)
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("sources, forbidden", [
    # model → framework → hosts: the framework loads and runs a model without any host
    ("starvla_twinbrain/framework",
     ("starvla_twinbrain.runtime", "starvla_twinbrain.serving", "starvla_twinbrain.cli")),
    # serving, the LeRobot policy and eval load checkpoints through the framework, never through the trainer's runtime
    ("starvla_twinbrain/serving", ("starvla_twinbrain.runtime", "starvla_twinbrain.cli")),
    ("lerobot_policy_twinbrain", ("starvla_twinbrain.runtime", "starvla_twinbrain.serving", "starvla_twinbrain.cli")),
    ("eval", ("starvla_twinbrain.runtime.checkpoint", "starvla_twinbrain.runtime.trainer")),
])
def test_import_direction(sources, forbidden):
    offenders = sorted({f"{file.relative_to(ROOT)}: {name}" for file in (ROOT / sources).rglob("*.py")
                        for name in _imported_modules(file) if name.startswith(forbidden)})
    assert not offenders, offenders
