"""Run the RoboCasa GR1 tabletop tasks against a policy server and write per-episode results.

    python -m eval.robocasa.run_robocasa --host 127.0.0.1 --port 10093 --out results/robocasa_gr1

Needs the RoboCasa GR1 tabletop environment (robocasa-gr1-tabletop-tasks, robosuite, gymnasium) plus numpy,
websockets and msgpack. Settings follow starVLA's ``examples/simBenchmarks/Robocasa_tabletop/eval_files/
batch_eval_args.sh`` and ``simulation_env.py``: ``gym.make(task, enable_render=True)``, 50 episodes per task, at most
720 env steps, 12 actions per query. An episode succeeds if ``info["success"]`` is true at any step (starVLA samples
it once per 12-step chunk). Each task goes to ``<out>/<task>.json``, rewritten after every episode; finished
files are skipped when re-run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from starvla_twinbrain.serving.client import PolicyClient

from eval.common.client import record_episodes
from eval.common.results import load_results, markdown_table

from .gr1_client import GR1Policy
from .tasks import TASKS, short_name


def _import_gym():
    try:
        import gymnasium as gym
        import robocasa  # noqa: F401  (registers the gr1_unified/* environments)
        import robosuite  # noqa: F401
        from robocasa.utils.gym_utils import GrootRoboCasaEnv  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"RoboCasa is not importable here ({err}). Run this in the RoboCasa GR1 environment: "
                         "https://github.com/robocasa/robocasa-gr1-tabletop-tasks, then "
                         "`pip install websockets msgpack`.") from None
    return gym


def run_episode(env, policy: GR1Policy, max_steps: int, seed: int | None) -> dict:
    obs, _ = env.reset(seed=seed)
    policy.reset()
    success, steps = False, 0
    while steps < max_steps:
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        steps += 1
        success |= bool(np.any(info.get("success", False)))
        if terminated or truncated:
            break
    return {"success": success, "steps": steps, "instruction": policy.task_description}


def run_task(env_name: str, args, policy: GR1Policy, gym) -> Path:
    path = Path(args.out) / f"{short_name(env_name)}.json"
    if path.exists() and json.loads(path.read_text()).get("complete"):
        print(f"{path} is complete, skipping")
        return path
    env = gym.make(env_name, enable_render=True)
    record = {"task": short_name(env_name), "env_name": env_name, "unnorm_key": policy.unnorm_key,
              "n_action_steps": policy.n_action_steps, "send_state": policy.send_state,
              "server": policy.client.metadata.get("ckpt_path"), "episodes": [], "complete": False}
    def episode(i: int) -> dict:
        seed = None if args.seed is None else args.seed + i
        return {"episode": i, "seed": seed, **run_episode(env, policy, args.max_steps, seed)}

    try:
        return record_episodes(path, record, args.episodes, episode, record["task"])
    finally:
        env.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10093)
    parser.add_argument("--token", default=None, help="the server's --token (default: $STARVLA_POLICY_TOKEN)")
    parser.add_argument("--out", default="results/robocasa_gr1", help="folder for the results JSON files")
    parser.add_argument("--tasks", nargs="+", default=TASKS, help="gr1_unified/... env names (default: all 24)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=720, help="env steps per episode")
    parser.add_argument("--n-action-steps", type=int, default=12, help="actions executed per server query")
    parser.add_argument("--unnorm-key", default=None, help="default: the server's")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--send-state", dest="send_state", action="store_true", default=None)
    state.add_argument("--no-send-state", dest="send_state", action="store_false",
                       help="default: send the state when the server's policy was trained with it")
    parser.add_argument("--seed", type=int, default=None, help="reset seed of episode 0 (+1 per episode)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; expected gr1_unified/... names from eval/robocasa/tasks.py")

    gym = _import_gym()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    client = PolicyClient(args.host, args.port, token=args.token)
    policy = GR1Policy(client, unnorm_key=args.unnorm_key, n_action_steps=args.n_action_steps,
                       send_state=args.send_state)
    try:
        for env_name in args.tasks:
            run_task(env_name, args, policy, gym)
    finally:
        client.close()
    print(markdown_table(load_results([args.out]), task_order=[short_name(t) for t in TASKS]))


if __name__ == "__main__":
    main()
