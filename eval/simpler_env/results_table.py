"""SimplerEnv results JSON files → a markdown table (success % per task in starVLA's order, mean, episodes).

    python -m eval.simpler_env.results_table results/simpler_bridge [more folders or files ...]
"""

from __future__ import annotations

import argparse

from eval.common.results import load_results, markdown_table

from .tasks import TASKS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate results JSON files into a markdown table.")
    parser.add_argument("paths", nargs="+", help="results JSON files or folders of them")
    print(markdown_table(load_results(parser.parse_args(argv).paths), task_order=list(TASKS)))


if __name__ == "__main__":
    main()
