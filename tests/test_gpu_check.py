"""scripts/gpu_check.sh --tiny: the GPU acceptance script's code, rehearsed on CPU at tiny size (same code path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starvla_twinbrain.host.api import STARVLA_AVAILABLE

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(STARVLA_AVAILABLE, reason="trains in the embedded runtime")]


def test_gpu_check_tiny_passes_every_check(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["ok"] and "ALL CHECKS PASSED" in proc.stdout

    names = {c["check"] for c in result["checks"]}
    for family in ("qwen2_5_vl", "qwen3_vl"):
        agreement = result["agreement"][family]
        assert agreement["default_backend"] == "sdpa" and agreement["flash_attention_2_request"] == "sdpa"
        assert agreement["ran"] == {b: b for b in ("eager", "sdpa", "flex_attention")}
        errors, tolerance = agreement["errors_vs_fp32_eager"], agreement["tolerance"]
        for backend in ("sdpa", "flex_attention"):
            assert 0 < errors[backend]["hidden"] <= tolerance["hidden"], (family, backend)
        assert 0 < errors["sdpa"]["grad"] <= tolerance["grad"]
        assert errors["flex_attention"]["grad"] is None  # no FlexAttention backward on CPU: skipped with a note
        assert f"{family} flex_attention hidden in bf16" in names

    training = result["training"]
    assert training["resume_loss_gap"] == 0.0 and training["resume_weight_drift"] == 0.0  # CPU: bit-exact
    assert training["travel_after_resume_step"] > 0
    assert training["resumed_losses"] == training["losses"]
    assert {"training loss finite and falling", "Left Brain bit-identical to the base checkpoint after training",
            "Right Brain moved (language model and vision tower)"} <= names

    rows = result["benchmark"]["rows"]
    assert set(rows) == {"sdpa, vision frozen", "sdpa", "flex_attention", "sdpa, head compiled", "sdpa, LoRA",
                         "sdpa, LoRA + int8 Left"}
    full, lora, int8 = rows["sdpa"]["twin"], rows["sdpa, LoRA"]["twin"], rows["sdpa, LoRA + int8 Left"]["twin"]
    assert lora["step_s"] > 0 and int8["step_s"] > 0
    assert int8["trainable_gib"] == lora["trainable_gib"] < full["trainable_gib"]
    assert int8["weights_gib"] < lora["weights_gib"] and int8["left_precision"].startswith("int8")
    assert result["benchmark"]["vision_shared_when_frozen"] and result["benchmark"]["flex_backend"] == "flex_attention"
    for label in ("sdpa, vision frozen", "sdpa"):
        assert rows[label]["twin"]["step_s"] > 0 and rows[label]["single"]["step_s"] > 0
    assert all(rows[label][model]["infer_s"] > 0 for label in ("sdpa", "sdpa, head compiled") for model in ("single", "twin"))
    assert rows["flex_attention"]["twin"]["infer_s"] > 0 and "step_s" not in rows["flex_attention"]["twin"]


def test_gpu_check_says_what_is_missing(tmp_path):
    """Run where a needed package is absent, it names it and how to bring it, and exits 2 before doing anything."""
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda name, *a: None if name == 'omegaconf' else real(name, *a); "
            f"sys.argv = ['gpu_check.py', '--tiny', '--out', {str(tmp_path)!r}]; "
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import gpu_check; sys.exit(gpu_check.main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stderr
    assert "missing Python packages: omegaconf (pip: omegaconf)" in proc.stderr and "gpu_wheels.sh" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
