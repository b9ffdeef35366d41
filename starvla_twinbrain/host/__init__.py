"""The starVLA glue, in one place.

- ``api``: what the framework builds on: starVLA's base class, registry and GR00T head when starVLA is importable,
  local stand-ins with the same contract otherwise (the embedded runtime, CI).
- ``starvla``: the hooks that register TwinBrain and its datasets in a starVLA process (run by the installed
  ``.pth`` autoload) and ``python -m starvla_twinbrain.host.starvla train|serve``, starVLA's own scripts.
- ``data``: this package's LeRobot datasets in starVLA's data registry.
"""
