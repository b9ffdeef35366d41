"""The model core knows nothing about hosts (STYLE §1): importing it pulls in no starVLA, accelerate or lerobot."""

import subprocess
import sys


def test_model_core_imports_no_host():
    code = (
        "import sys, starvla_twinbrain.model.dual_brain, starvla_twinbrain.model.asymot_attention;"
        "bad = [m for m in ('starVLA', 'accelerate', 'lerobot', 'omegaconf') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
