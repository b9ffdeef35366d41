"""Installed means enabled: TwinBrain registers itself with starVLA in any process that imports starVLA.

starVLA has no plugin discovery, so its own scripts (``train_starvla.py``, ``server_policy.py``) only find
frameworks that live in its source tree. The file ``starvla_twinbrain_autoload.pth``, which installing this package
puts in site-packages, runs ``install()`` at interpreter start. That adds one import hook and imports nothing
else: when one of the starVLA modules below has finished loading, the hook imports this package's function for it
(TwinBrain into ``FRAMEWORK_REGISTRY``, this package's datasets into starVLA's data registry, the CPU fallback of
starVLA's policy server). ``STARVLA_TWINBRAIN_AUTOLOAD=0`` turns it off.

This module is top-level and uses the standard library only: importing ``starvla_twinbrain`` here would import
its framework (torch, transformers) at every interpreter start wherever starVLA is on the path.
"""

import os
import sys

ENV = "STARVLA_TWINBRAIN_AUTOLOAD"

# starVLA module, once loaded -> "module:function" of this package to call with it.
HOOKS = {
    "starVLA.model.framework.base_framework": "starvla_twinbrain.host.starvla:register_framework",
    "starVLA.dataloader.gr00t_lerobot.registry": "starvla_twinbrain.host.starvla:register_datasets",
    "deployment.model_server.policy_wrapper": "starvla_twinbrain.host.starvla:serve_on_cpu_without_cuda",
}


def enabled() -> bool:
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1", ""):
        sys.stderr.write(f"starvla_twinbrain: {ENV}={value!r} is not 0 or 1; the autoload stays on\n")
    return value != "0"


def _run_hook(module) -> None:
    """A failing hook warns instead of raising: starVLA and its other frameworks keep working."""
    import importlib

    where, _, function = HOOKS[module.__name__].partition(":")
    try:
        getattr(importlib.import_module(where), function)(module)
    except Exception:  # noqa: BLE001 (reported in full below)
        import traceback
        import warnings

        warnings.warn(f"starvla_twinbrain: {where}.{function}, run when starVLA loaded {module.__name__}, failed "
                      f"({ENV}=0 turns this hook off):\n{traceback.format_exc()}", RuntimeWarning, stacklevel=2)


class _LoadThenHook:
    """The module's own loader, then the hook; the original loader is put back on the module afterwards."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _run_hook(module)


class StarVLAHookFinder:
    """A ``sys.meta_path`` finder that only answers for the modules in ``HOOKS``: it asks the other finders for
    the module's spec and wraps the loader, so the module loads exactly as it would without the hook."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoadThenHook(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the hook on ``sys.meta_path`` (once) and run it for hooked modules already loaded. Idempotent."""
    if not enabled():
        return
    if not any(type(finder).__name__ == StarVLAHookFinder.__name__ for finder in sys.meta_path):
        sys.meta_path.insert(0, StarVLAHookFinder())
    for name in HOOKS:
        module = sys.modules.get(name)
        if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
            _run_hook(module)
