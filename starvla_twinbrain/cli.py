"""The ``starvla`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ServeSection

SERVE = ServeSection()  # the flags' defaults

DESCRIPTION = """\
TwinBrainVLA for starVLA: a frozen Left Brain (the base VLM, unchanged) and a trainable Right Brain joined by
AsyMoT attention in every decoder layer.

commands:
  train           train from a starVLA YAML: through starVLA's own trainer when starVLA is importable,
                  otherwise through the embedded runtime (same YAML schema, run directory and checkpoints)
  serve           serve a trained checkpoint over starVLA's websocket + msgpack protocol (SimplerEnv, RoboCasa
                  and robosuite clients connect to it); also answers `chat` requests with the Left Brain
  eval            run a bundled closed-loop evaluation: robosuite Lift end to end on CPU (demonstrations, training,
                  serving, success rate), or the SimplerEnv / RoboCasa clients in their simulator's environment
  make-tiny-vlm   write a tiny random Qwen2.5-VL / Qwen3-VL checkpoint (tokenizer, processor, chat template)
                  for offline tests and CPU demos; no network needed
  make-dataset    write a small LeRobot v3.0 dataset whose actions are learnable from the images (needs lerobot)
"""

TRAIN_DESCRIPTION = """\
Train a policy from a starVLA YAML config.

  starvla train --framework twinbrain --config CFG.yaml [key=value ...]

Mode (printed at start):
  starVLA     when the starVLA package is importable: runs starVLA's own training script
              (starVLA/training/train_starvla.py) unchanged, with TwinBrain registered, through
              `accelerate launch` (its DeepSpeed ZeRO-2 config by default; run from the starVLA checkout).
  embedded    otherwise: this package's runtime on HF Accelerate, reading LeRobot v3.0 datasets with the
              lerobot package (datasets.vla_data.data_root_dir / data_mix = the dataset folder). For several
              processes: accelerate launch -m starvla_twinbrain.cli train ...

key=value overrides are OmegaConf dotlist entries, e.g. trainer.max_train_steps=100.
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


def _train_mode() -> str:
    import importlib.util

    return "starVLA" if importlib.util.find_spec("starVLA") is not None else "embedded"


def _mode_line() -> str:
    mode = _train_mode()
    why = "the starVLA package is importable" if mode == "starVLA" else "the starVLA package is not importable"
    return f"On this machine `starvla train` runs in {mode} mode: {why}.\n"


def _train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    overrides = []
    for item in args.overrides:
        if "=" not in item:
            raise SystemExit(f"override {item!r}: expected key=value (e.g. trainer.max_train_steps=100)")
        overrides.append(item.lstrip("-"))
    mode = _train_mode()
    print(f"starvla train: {mode} mode ({'starVLA is importable' if mode == 'starVLA' else 'starVLA is not installed'})")
    if mode == "starVLA":
        import subprocess

        dotlist = [arg for item in overrides for arg in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]
        command = [sys.executable, "-m", "accelerate.commands.launch", *(["--config_file", args.accelerate_config] if args.accelerate_config else []),
                   "--num_processes", str(args.num_processes), "-m", "starvla_twinbrain.host.starvla", "train",
                   "--config_yaml", args.config, "--framework.name", args.framework, *dotlist]
        print("running:", " ".join(command))
        return subprocess.call(command)

    from .runtime.trainer import dataset_from_config, train

    cfg = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(overrides))
    cfg.framework.name = args.framework
    dataset, statistics = dataset_from_config(cfg)
    result = train(cfg, dataset, statistics)
    print(f"trained {result.step} steps; action_loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; run: {result.run_dir}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from .serving.policy import ServedPolicy
    from .serving.server import TOKEN_ENV, PolicyServer

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    policy = ServedPolicy.from_checkpoint(args.ckpt, device=args.device, bf16=args.bf16, unnorm_key=args.unnorm_key,
                                          compile_head=args.compile_head, max_batch=args.max_batch,
                                          max_images=args.max_images)
    server = PolicyServer(policy, host=args.host, port=args.port, idle_timeout=args.idle_timeout, token=token)
    meta = server.metadata
    limits = meta["limits"]
    print(f"serving {meta['framework']} from {args.ckpt} on ws://{args.host}:{args.port} ({meta['device']}, "
          f"{meta['dtype']}): chunks of {meta['action_chunk_size']}x{meta['action_dim']}, "
          f"state {meta['state_dim'] or 'not used'}, unnorm_key {meta['default_unnorm_key']}; limits: "
          f"{limits['max_batch']} examples x {limits['max_images_per_example']} images, {limits['max_prompt_tokens']} "
          f"prompt tokens; {'token required' if token else 'no token'}", flush=True)
    server.serve_forever()
    return 0


EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
SIM_CLIENTS = {"simpler_env": "eval.simpler_env.run_bridge", "robocasa": "eval.robocasa.run_robocasa"}


def _eval(args: argparse.Namespace) -> int:
    import os
    import subprocess

    if not EVAL_DIR.is_dir():
        raise SystemExit(f"{EVAL_DIR} not found: `starvla eval` runs from a source checkout (pip install -e .)")
    if args.benchmark == "robosuite":
        # after `--`, robosuite takes training overrides (KEY=VALUE, as `starvla train` does) and nothing else
        bad = [a for a in args.client_args if "=" not in a or a.startswith("-")]
        if bad:
            raise SystemExit(f"starvla eval robosuite: unexpected client arguments {bad}; robosuite takes --demos, "
                             "--episodes, --steps, --port, --out, --variant, --eval-seed and, after --, KEY=VALUE "
                             "training overrides")
        env = {**os.environ, "DEMOS": str(args.demos), "EPISODES": str(args.episodes), "STEPS": str(args.steps),
               "PORT": str(args.port), "OUT": args.out, "VARIANT": args.variant, "EVAL_SEED": str(args.eval_seed)}
        return subprocess.call(["bash", str(EVAL_DIR / "robosuite" / "run.sh"), *args.client_args], env=env)
    if args.benchmark == "vqa":
        if not (args.ckpt and args.data):
            raise SystemExit("starvla eval vqa: --ckpt (a checkpoint file) and --data (a questions.jsonl; "
                             "python -m eval.vqa.make_set writes a small one) are required")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(EVAL_DIR.parent), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "eval.vqa.evaluate", "--ckpt", args.ckpt, "--data", args.data, *args.client_args]
        return subprocess.call(command, env=env)
    if not args.python:
        raise SystemExit(f"starvla eval {args.benchmark}: --python must name the simulator environment's "
                         f"interpreter (the simulator does not install next to this package)")
    command = [args.python, "-m", SIM_CLIENTS[args.benchmark], "--port", str(args.port), *args.client_args]
    print("running:", " ".join(command))
    return subprocess.call(command, cwd=EVAL_DIR.parent)


def _make_dataset(args: argparse.Namespace) -> int:
    from .runtime.synthetic import make_synthetic_dataset

    path = make_synthetic_dataset(args.out, num_episodes=args.episodes, episode_length=args.length,
                                  image_size=args.image_size, seed=args.seed)
    print(f"LeRobot v3.0 dataset written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starvla", description=DESCRIPTION + "\n" + _mode_line(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a policy from a starVLA YAML", description=TRAIN_DESCRIPTION + "\n" + _mode_line(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="starVLA-style YAML (e.g. configs/tiny_cpu.yaml)")
    train.add_argument("--framework", default="TwinBrain", help="framework.name (default TwinBrain, any case: twinbrain, twin_brain)")
    train.add_argument("--num-processes", type=int, default=1, help="starVLA mode: processes for accelerate launch")
    train.add_argument("--accelerate-config", default="starVLA/config/deepseeds/deepspeed_zero2.yaml",
                       help="starVLA mode: accelerate config (relative to the starVLA checkout); '' for none")
    train.add_argument("overrides", nargs="*", help="key=value config overrides (OmegaConf dotlist)")
    train.set_defaults(func=_train)

    serve = sub.add_parser(
        "serve", help="serve a checkpoint (starVLA's websocket protocol)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a trained checkpoint with starVLA's websocket + msgpack protocol: metadata on connect, "
        "`infer` requests (examples: image / lang / state) answered with un-normalised action chunks, `ping`, and "
        "`chat` (a question about an image answered by the Left Brain, the unchanged base VLM). Bad or over-limit "
        "requests get an error reply and the server keeps serving. Client: starvla_twinbrain.serving.client."
        "PolicyClient.\n\n"
        "  starvla serve --ckpt RUN/final_model/pytorch_model.pt --port 10093\n"
        "  STARVLA_POLICY_TOKEN=secret starvla serve --ckpt ... --host 0.0.0.0   # a simulator on another machine")
    serve.add_argument("--ckpt", required=True, help="RUN/checkpoints/steps_N_pytorch_model.pt or RUN/final_model/pytorch_model.pt")
    serve.add_argument("--port", type=int, default=SERVE.port)
    serve.add_argument("--host", default=SERVE.host,
                       help="interface to listen on (default: loopback, this machine only); 0.0.0.0 lets any host "
                       "that can reach this one connect")
    serve.add_argument("--token", default=None,
                       help="shared secret clients must send on connect (default: $STARVLA_POLICY_TOKEN; none: any "
                       "client that can connect is served). PolicyClient sends it from token= or the same variable")
    serve.add_argument("--max-batch", type=int, default=SERVE.max_batch,
                       help=f"examples per request (default {SERVE.max_batch})")
    serve.add_argument("--max-images", type=int, default=SERVE.max_images,
                       help="images per example (default: the run's framework.twinbrain.max_images_per_example)")
    serve.add_argument("--device", default=SERVE.device, help="auto (GPU when present, else CPU) | cpu | cuda[:N]")
    serve.add_argument("--bf16", action="store_true", help="run the model in bfloat16 (for GPUs)")
    serve.add_argument("--compile-head", action="store_true",
                       help="torch.compile the action head's DiT for inference (framework.twinbrain."
                       "compile_action_head); the first requests compile it (tens of seconds on CPU). Meant for "
                       "GPUs: on CPU it saved about 5%% of the head's time")
    serve.add_argument("--unnorm-key", default=SERVE.unnorm_key, help="statistics key for un-normalising (default: the run's only one)")
    serve.add_argument("--idle-timeout", type=float, default=SERVE.idle_timeout, help="stop after this many idle seconds (default: never)")
    serve.set_defaults(func=_serve)

    evaluate = sub.add_parser(
        "eval", help="run a bundled closed-loop evaluation", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="robosuite: the whole Lift benchmark on CPU (eval/robosuite/run.sh): scripted demonstrations "
        "in .venv-sim, a LeRobot v3.0 dataset, `starvla train` (configs/robosuite_lift.yaml, tiny VLM), `starvla "
        "serve`, closed-loop episodes through the server; prints the success rate and writes videos and a plot.\n"
        "simpler_env / robocasa: the benchmark clients (eval/simpler_env, eval/robocasa), run with the simulator's "
        "own interpreter against a server you started with `starvla serve`; extra arguments go to the client.\n\n"
        "  starvla eval robosuite --demos 50 --episodes 20\n"
        "  starvla eval robosuite --episodes 50 --variant state_right -- framework.twinbrain.state_into=right\n"
        "  starvla eval simpler_env --python ~/simpler/bin/python --port 10093 -- --tasks PutCarrotOnPlate --episodes 1\n"
        "  starvla eval robocasa --python ~/robocasa/bin/python -- --episodes 5\n"
        "vqa: the checkpoint's Left Brain and the base VLM answer a JSONL question set (preserved general skills):\n"
        "  starvla eval vqa --ckpt RUN/final_model/pytorch_model.pt --data runs/vqa_set/questions.jsonl")
    evaluate.add_argument("benchmark", choices=["robosuite", *SIM_CLIENTS, "vqa"])
    evaluate.add_argument("--ckpt", help="vqa: the checkpoint whose Left Brain answers")
    evaluate.add_argument("--data", help="vqa: questions.jsonl ({image, question, answers} per line)")
    evaluate.add_argument("--port", type=int, default=10093, help="policy server port")
    evaluate.add_argument("--demos", type=int, default=50, help="robosuite: expert demonstrations to record")
    evaluate.add_argument("--episodes", type=int, default=20, help="robosuite: evaluation episodes")
    evaluate.add_argument("--steps", type=int, default=1000, help="robosuite: training steps")
    evaluate.add_argument("--out", default="runs/robosuite", help="robosuite: output folder")
    evaluate.add_argument("--variant", default="robosuite_lift", help="robosuite: the run's name (OUT/VARIANT); "
                          "demonstrations and data in OUT are reused across variants")
    evaluate.add_argument("--eval-seed", type=int, default=1000, help="robosuite: episode i uses this seed + i")
    evaluate.add_argument("--python", help="simpler_env / robocasa: the simulator environment's python")
    evaluate.add_argument("client_args", nargs="*", help="simpler_env / robocasa: arguments for the client (after "
                          "--); robosuite: KEY=VALUE training overrides (after --)")
    evaluate.set_defaults(func=_eval)

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

    data = sub.add_parser("make-dataset", help="write a small learnable LeRobot v3.0 dataset (needs lerobot)",
                          description="Write a LeRobot v3.0 dataset (one camera, 7-d state and action, task strings) "
                          "whose actions a policy can learn from the images: a proportional controller towards a "
                          "coloured target drawn in the image. Written with lerobot's LeRobotDataset.")
    data.add_argument("out", help="output folder (its name is the dataset name, e.g. runs/data/synthetic)")
    data.add_argument("--episodes", type=int, default=16)
    data.add_argument("--length", type=int, default=30, help="frames per episode")
    data.add_argument("--image-size", type=int, default=64)
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=_make_dataset)
    return parser


def _split_client_args(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``starvla eval ... -- CLIENT ARGS``: everything after the first ``--`` is the client's, whichever order the eval
    options came in. argparse alone fills ``benchmark`` and ``client_args`` in one go, so options between the
    benchmark name and ``--`` left what follows ``--`` unrecognised."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # the top level has flags only
    if command != "eval" or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, client_args = _split_client_args(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if client_args is not None:
        args.client_args = [*args.client_args, *client_args]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # bad input: one message, no traceback (-v shows it)
        if args.verbose:
            raise
        print(f"starvla {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
