"""Run starVLA's own scripts unchanged, with TwinBrain registered first.

starVLA has no plugin discovery: ``build_framework`` only sees frameworks imported into the process, and its
training script and policy server are scripts, not functions. So every process (each training rank, the server)
runs this module, which imports the plugin and then runs the script as ``__main__``:

    accelerate launch --config_file starVLA/config/deepseeds/deepspeed_zero2.yaml --num_processes 8 \\
        -m starvla_twinbrain.starvla_host train --config_yaml X.yaml --framework.name TwinBrain ...
    python -m starvla_twinbrain.starvla_host serve --ckpt_path RUN/checkpoints/steps_N_pytorch_model.pt --port 10093
"""

from __future__ import annotations

import runpy
import sys

SCRIPTS = {
    "train": "starVLA.training.train_starvla",
    "serve": "deployment.model_server.server_policy",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m starvla_twinbrain.starvla_host {{{'|'.join(SCRIPTS)}}} [script arguments]")
    from .framework import register

    register()
    module = SCRIPTS[argv[0]]
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
