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


def _action_horizon(argv: list[str], default: int = 4) -> int:
    """``framework.action_model.action_horizon`` from ``--config_yaml`` (or its ``--framework.action_model.
    action_horizon`` override): the chunk length the built-in datasets' data config must read."""
    for flag in ("--framework.action_model.action_horizon", "--config_yaml"):
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if flag != "--config_yaml":
                return int(value)
            from omegaconf import OmegaConf

            horizon = OmegaConf.select(OmegaConf.load(value), "framework.action_model.action_horizon")
            if horizon is not None:
                return int(horizon)
    return default


def _serve_on_cpu_without_cuda() -> None:
    """starVLA's server passes ``device="cuda"``; on a machine without CUDA, serve on the CPU instead."""
    import logging

    import torch

    if torch.cuda.is_available():
        return
    from deployment.model_server import policy_wrapper

    stock = policy_wrapper.PolicyServerWrapper

    class CPUPolicyServerWrapper(stock):
        def __init__(self, *args, **kwargs):
            kwargs["device"] = "cpu"
            super().__init__(*args, **kwargs)

    policy_wrapper.PolicyServerWrapper = CPUPolicyServerWrapper
    logging.getLogger(__name__).warning("no CUDA device: starVLA's policy server runs on the CPU")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m starvla_twinbrain.starvla_host {{{'|'.join(SCRIPTS)}}} [script arguments]")
    from .framework import register
    from .starvla_data import register_builtin_datasets

    register()
    register_builtin_datasets(action_horizon=_action_horizon(argv))
    if argv[0] == "serve":
        _serve_on_cpu_without_cuda()
    module = SCRIPTS[argv[0]]
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
