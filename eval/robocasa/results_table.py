"""RoboCasa results JSON files → a markdown table (success % per task in starVLA's order, mean, episodes).

    python -m eval.robocasa.results_table results/robocasa_gr1
"""

from __future__ import annotations

import argparse

from eval.common.results import load_results, markdown_table

from .tasks import TASKS, short_name


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate RoboCasa results JSON files into a markdown table.")
    parser.add_argument("paths", nargs="+", help="results JSON files or folders of them")
    records = load_results(parser.parse_args(argv).paths)
    print(markdown_table(records, task_order=[short_name(t) for t in TASKS]))


if __name__ == "__main__":
    main()
