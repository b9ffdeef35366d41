"""Closed-loop evaluation of a policy server on robosuite Lift (run in .venv-sim, the server in the torch venv).

    python eval/robosuite/evaluate.py --port 10093 --episodes 20 --seed 1000 --out runs/eval_lift [--replan 4]

Each query sends the upright camera image, the task and the 11-d state; the first --replan actions of the
returned chunk run open-loop (clipped to [-1, 1]) before the next query. An episode succeeds as soon as the cube
is lifted, and fails at the horizon. Seeds S..S+M-1 should not overlap the demonstrations' (collect.py: 0..);
the default 1000 keeps them apart. Writes OUT/results.json (with the seeds and the Wilson 95 % interval) and
OUT/videos/episode_XXXX.mp4 for the first episodes.
"""

import argparse
import json
import time
from pathlib import Path

import imageio
import numpy as np
from tqdm import tqdm

import lift
import stats
from starvla_twinbrain.serving.client import PolicyClient


def policy_state(client: PolicyClient, state: np.ndarray) -> np.ndarray:
    """State in the policy's training format: normalised with the statistics the server sends, when it sends any
    (the embedded trainer normalises state); starVLA's own servers send none and train on raw state."""
    if client.metadata.get("state_statistics"):
        state = client.normalize_state(state)
    return state[None, :].astype(np.float32)


def run_episode(env, client: PolicyClient, seed: int, replan: int, record: bool) -> dict:
    start = time.time()
    obs = lift.reset(env, seed)
    image, state = lift.observation(obs)
    frames = [image] if record else None
    steps, queries = 0, 0
    while steps < env.horizon and not lift.success(env):
        example = {"image": [image], "lang": lift.TASK}
        if client.metadata.get("include_state", True):
            example["state"] = policy_state(client, state)
        chunk = client.predict_action([example])[0]
        queries += 1
        for action in chunk[:replan]:
            obs, _, _, _ = env.step(np.clip(action, -1.0, 1.0))
            steps += 1
            image, state = lift.observation(obs)
            if record:
                frames.append(image)
            if lift.success(env) or steps >= env.horizon:
                break
    return {"seed": seed, "success": lift.success(env), "steps": steps, "queries": queries,
            "seconds": round(time.time() - start, 2), "frames": frames}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10093)
    p.add_argument("--token", default=None, help="the server's --token (default: $STARVLA_POLICY_TOKEN)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=lift.EVAL_SEED, help="episode i uses seed + i (demos use 0..)")
    p.add_argument("--first", type=int, default=0, help="start at episode FIRST (seed + FIRST), in the environment "
                   "made from --seed: clients that split one evaluation play exactly the episodes of a single run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replan", type=int, default=4, help="actions executed from each chunk before the next query")
    p.add_argument("--image-size", type=int, default=64, help="as in the demonstrations")
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--videos", type=int, default=3, help="record an mp4 for the first N episodes")
    args = p.parse_args(argv)

    client = PolicyClient(host=args.host, port=args.port, token=args.token)
    meta = client.metadata
    if meta.get("action_dim") not in (None, lift.ACTION_DIM):
        raise SystemExit(f"the server's policy outputs {meta['action_dim']}-d actions; Lift takes {lift.ACTION_DIM}")
    replan = min(args.replan, int(meta.get("action_chunk_size") or args.replan))
    env = lift.make_env(seed=args.seed, image_size=args.image_size, horizon=args.horizon)
    (args.out / "videos").mkdir(parents=True, exist_ok=True)

    episodes = []
    for i in tqdm(range(args.first, args.first + args.episodes), desc="evaluate", unit="ep"):
        episode = run_episode(env, client, args.seed + i, replan, record=i - args.first < args.videos)
        frames = episode.pop("frames")
        if frames:
            imageio.mimwrite(args.out / "videos" / f"episode_{i:04d}.mp4", frames, fps=20)
        episodes.append(episode)
    env.close()
    client.close()

    successes = int(sum(bool(e["success"]) for e in episodes))
    low, high = stats.wilson(successes, len(episodes))
    results = {
        "task": lift.TASK, "episodes": len(episodes), "successes": successes,
        "success_rate": successes / len(episodes), "wilson_95": [round(low, 4), round(high, 4)],
        "seed": args.seed, "evaluation_seeds": [e["seed"] for e in episodes], "replan": replan,
        "image_size": args.image_size, "horizon": args.horizon,
        "server": {k: meta.get(k) for k in ("ckpt_path", "framework", "action_chunk_size", "default_unnorm_key")},
        "per_episode": episodes,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"success rate: {successes}/{len(episodes)} ({100 * successes / len(episodes):.0f}%), "
          f"Wilson 95 % [{100 * low:.0f}%, {100 * high:.0f}%]")


if __name__ == "__main__":
    main()
