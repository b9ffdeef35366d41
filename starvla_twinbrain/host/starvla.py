"""starVLA's own scripts with TwinBrain: the functions the autoload hook runs, and a launcher that runs them itself.

starVLA has no plugin discovery: ``build_framework`` only sees frameworks imported into the process. With this
package installed, ``starvla_twinbrain_autoload`` (a ``.pth`` import hook) calls ``register_framework``,
``register_datasets`` and ``serve_on_cpu_without_cuda`` below when starVLA loads the module each one extends, so
starVLA's unmodified commands work. The launcher does the same explicitly and then runs the script as ``__main__``
(for ``STARVLA_TWINBRAIN_AUTOLOAD=0``, or a source tree that is not installed):

    accelerate launch --config_file starVLA/config/deepseeds/deepspeed_zero2.yaml --num_processes 8 \\
        -m starvla_twinbrain.host.starvla train --config_yaml X.yaml --framework.name TwinBrain ...
    python -m starvla_twinbrain.host.starvla serve --ckpt_path RUN/checkpoints/steps_N_pytorch_model.pt --port 10093
"""

from __future__ import annotations

import logging
import runpy
import sys

SCRIPTS = {
    "train": "starVLA.training.train_starvla",
    "serve": "deployment.model_server.server_policy",
}


# ---------------------------------------------------------------------- what the autoload hook runs
# starvla_twinbrain_autoload (installed with the package as a .pth hook) calls these when the starVLA module named
# in its HOOKS has finished loading; the launcher below runs them itself. Each is idempotent.


def _initializing(module) -> bool:
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def register_framework(base_framework=None) -> None:
    """TwinBrain into starVLA's ``FRAMEWORK_REGISTRY`` (found under any spelling of its name)."""
    if _initializing(sys.modules.get("starvla_twinbrain")):
        return  # importing this package is what loaded starVLA; the package registers TwinBrain when it has loaded
    from ..framework import register, twinbrain

    if not twinbrain.STARVLA_AVAILABLE:
        logging.getLogger(__name__).warning(
            "TwinBrain is not registered with starVLA: starvla_twinbrain was first imported where starVLA was not "
            "importable, so it is built on the local stand-ins; put starVLA on the path before importing it")
        return
    register()


def register_datasets(registry=None) -> None:
    """This package's datasets (``data_mix: synthetic`` / ``robosuite_lift``) into starVLA's data registry."""
    from .data import register_builtin_datasets

    register_builtin_datasets()


def serve_on_cpu_without_cuda(policy_wrapper=None) -> None:
    """starVLA's ``server_policy.py`` passes ``device="cuda"``; on a machine without CUDA, a TwinBrain checkpoint is
    served on the CPU instead (where the stock server would fail). Other frameworks' checkpoints are left alone."""
    import torch

    if torch.cuda.is_available():
        return
    if policy_wrapper is None:
        from deployment.model_server import policy_wrapper
    stock = policy_wrapper.PolicyServerWrapper
    if getattr(stock, "serves_twinbrain_on_cpu", False):
        return

    class PolicyServerWrapper(stock):
        serves_twinbrain_on_cpu = True

        def __init__(self, ckpt_path, device="cuda", *args, **kwargs):
            if str(device).startswith("cuda") and _is_twinbrain_checkpoint(ckpt_path):
                logging.getLogger(__name__).warning("no CUDA device: starVLA's policy server runs TwinBrain on the CPU")
                device = "cpu"
            super().__init__(ckpt_path, device, *args, **kwargs)

    PolicyServerWrapper.__qualname__ = stock.__qualname__
    PolicyServerWrapper.__module__ = stock.__module__
    policy_wrapper.PolicyServerWrapper = PolicyServerWrapper


def _is_twinbrain_checkpoint(ckpt_path) -> bool:
    import os

    from starVLA.model.framework.share_tools import read_mode_config

    from ..framework.twinbrain import is_twinbrain_name

    if not os.path.isfile(ckpt_path):
        return False  # not a local run's checkpoint: starVLA reports what is wrong with it
    model_config, _ = read_mode_config(str(ckpt_path))
    return is_twinbrain_name(model_config.get("framework", {}).get("name"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m starvla_twinbrain.host.starvla {{{'|'.join(SCRIPTS)}}} [script arguments]")
    register_framework()
    register_datasets()
    if argv[0] == "serve":
        serve_on_cpu_without_cuda()
    module = SCRIPTS[argv[0]]
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
