"""What the autoload hook (``starvla_twinbrain_autoload.pth``) costs a Python process that never imports starVLA.

    .venv/bin/python benchmarks/bench_autoload.py --starts 50

Run with the interpreter of an environment where the package is installed. Three figures:
- the hook module's import at start-up, from ``python -X importtime -c pass`` (median over fresh interpreters);
- start-up wall time, hook on against ``STARVLA_TWINBRAIN_AUTOLOAD=0`` (the .pth still runs, the hook is not
  installed), in alternation, round by round, so that the machine's drift hits both alike;
- the hook's cost per later import (it answers ``None`` for every module but three), against ``python -c pass``.
"""

import argparse
import os
import re
import site
import statistics
import subprocess
import sys
import time
from pathlib import Path

PTH = "starvla_twinbrain_autoload.pth"


def start(env: dict, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=50, help="fresh interpreters per variant")
    args = parser.parse_args()
    if not any((Path(d) / PTH).is_file() for d in site.getsitepackages()):
        raise SystemExit(f"{sys.executable}: no {PTH} in site-packages; install the package first (pip install .)")
    env_on = {k: v for k, v in os.environ.items() if k != "STARVLA_TWINBRAIN_AUTOLOAD"}
    env_off = {**env_on, "STARVLA_TWINBRAIN_AUTOLOAD": "0"}

    import_us, cumulative_us = [], []
    for _ in range(args.starts):
        _, log = start(env_on, "-X", "importtime", "-c", "pass")
        line = next(ln for ln in log.splitlines() if ln.rstrip().endswith("starvla_twinbrain_autoload"))
        own, total = map(int, re.findall(r"(\d+)\s*\|", line)[:2])
        import_us.append(own)
        cumulative_us.append(total)

    on, off = [], []
    for _ in range(args.starts):
        on.append(start(env_on, "-c", "pass")[0])
        off.append(start(env_off, "-c", "pass")[0])

    import starvla_twinbrain_autoload as hook

    finder = hook.StarVLAHookFinder()
    misses = 200_000
    t0 = time.perf_counter()
    for _ in range(misses):
        finder.find_spec("json.decoder")
    per_import_ns = (time.perf_counter() - t0) / misses * 1e9

    median_ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    print(f"python {sys.version.split()[0]} ({sys.executable}), {args.starts} fresh interpreters per figure")
    print(f"hook module import at start-up (-X importtime): median {statistics.median(import_us)} us "
          f"(cumulative {statistics.median(cumulative_us)} us)")
    print(f"start-up `python -c pass`: hook on {median_ms(on):.1f} ms, STARVLA_TWINBRAIN_AUTOLOAD=0 "
          f"{median_ms(off):.1f} ms (medians, alternated)")
    print(f"per later import of any other module: {per_import_ns:.0f} ns")


if __name__ == "__main__":
    main()
