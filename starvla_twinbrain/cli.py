"""The ``starvla`` command."""

from __future__ import annotations

import argparse
import logging
import sys

DESCRIPTION = """\
TwinBrainVLA for starVLA: a frozen Left Brain (the base VLM, unchanged) and a trainable Right Brain joined by
AsyMoT attention in every decoder layer.

commands:
  make-tiny-vlm   write a tiny random Qwen2.5-VL / Qwen3-VL checkpoint (tokenizer, processor, chat template)
                  for offline tests and CPU demos; no network needed
"""


def _make_tiny_vlm(args: argparse.Namespace) -> int:
    from .tiny_vlm import make_tiny_vlm

    path = make_tiny_vlm(
        args.out,
        family=args.family,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
    )
    print(f"tiny {args.family} checkpoint written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starvla", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tiny = sub.add_parser(
        "make-tiny-vlm",
        help="write a tiny random Qwen-VL checkpoint for offline tests and demos",
        description="Write a random-initialised tiny Qwen2.5-VL or Qwen3-VL checkpoint with a working tokenizer, "
        "image processor and chat template, loadable with from_pretrained(OUT). Name the folder so that it "
        "contains 'Qwen2.5-VL' or 'Qwen3-VL' if starVLA will load it (starVLA picks its wrapper by substring).",
    )
    tiny.add_argument("out", help="output folder")
    tiny.add_argument("--family", choices=["qwen2_5_vl", "qwen3_vl"], default="qwen2_5_vl")
    tiny.add_argument("--seed", type=int, default=0, help="weights are a function of the seed")
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--num-layers", type=int, default=2)
    tiny.add_argument("--num-heads", type=int, default=4)
    tiny.add_argument("--num-kv-heads", type=int, default=2)
    tiny.set_defaults(func=_make_tiny_vlm)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
