"""Results JSON files → a markdown table: success % per task, the mean over tasks, and the episode counts.

Reads the files ``eval/simpler_env/run_bridge.py`` and ``eval/robocasa/run_robocasa.py`` write: ``{"task": str,
"episodes": [{"success": bool, ...}, ...]}``. Repeats of a task are pooled.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_results(paths) -> list[dict]:
    """The records in the given JSON files and in the ``*.json`` files of the given folders."""
    files = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return [json.loads(file.read_text()) for file in files]


def success_by_task(records: list[dict]) -> dict[str, tuple[int, int]]:
    """task → (successes, episodes), in first-seen order."""
    counts: dict[str, tuple[int, int]] = {}
    for record in records:
        wins, total = counts.get(record["task"], (0, 0))
        episodes = record["episodes"]
        counts[record["task"]] = (wins + sum(bool(e["success"]) for e in episodes), total + len(episodes))
    return counts


def markdown_table(records: list[dict], task_order: list[str] | None = None) -> str:
    counts = success_by_task(records)
    tasks = [t for t in task_order or [] if t in counts] + [t for t in counts if t not in (task_order or [])]
    lines = ["| Task | Success (%) | Episodes |", "|---|---:|---:|"]
    rates = []
    for task in tasks:
        wins, total = counts[task]
        rate = 100.0 * wins / total if total else float("nan")
        rates.append(rate)
        lines.append(f"| {task} | {rate:.1f} | {total} |")
    mean = sum(rates) / len(rates) if rates else float("nan")
    lines.append(f"| **Mean** | **{mean:.1f}** | {sum(total for _, total in counts.values())} |")
    return "\n".join(lines)
