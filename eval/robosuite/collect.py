"""Record scripted-expert demonstrations on robosuite Lift, one .npz per episode (run in .venv-sim).

    python eval/robosuite/collect.py OUT_DIR --episodes 50 --seed 0 --image-size 64

Each OUT_DIR/episode_XXXX.npz holds image [T,H,W,3] uint8 (upright), state [T,11] float32 (see
lift.observation), action [T,7] float32 (the action taken after seeing image/state), task, success and the
episode's seed. Recording stops `--hold` steps after the cube is first lifted, so the policy also learns to
keep holding it rather than only the approach.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import lift


def run_episode(env, seed: int, hold: int) -> dict:
    """One expert episode on the scene of `seed`; stops `hold` steps after success or at the horizon."""
    obs = lift.reset(env, seed)
    expert = lift.ScriptedLiftExpert(seed)
    images, states, actions = [], [], []
    succeeded_at = None
    for t in range(env.horizon):
        image, state = lift.observation(obs)
        action = expert.act(state)
        images.append(image)
        states.append(state)
        actions.append(action)
        obs, _, _, _ = env.step(action)
        if succeeded_at is None and lift.success(env):
            succeeded_at = t
        if succeeded_at is not None and t - succeeded_at >= hold:
            break
    return {
        "image": np.stack(images),
        "state": np.stack(states),
        "action": np.stack(actions),
        "task": lift.TASK,
        "success": succeeded_at is not None and lift.success(env),
        "seed": seed,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--episodes", type=int, default=50, help="expert episodes to run (failures are dropped)")
    p.add_argument("--seed", type=int, default=lift.DEMO_SEED, help="episode i uses seed + i; eval uses 1000..")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--hold", type=int, default=10, help="steps recorded after the cube is first lifted")
    p.add_argument("--keep-failures", action="store_true", help="also save episodes the expert failed")
    args = p.parse_args(argv)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    env = lift.make_env(seed=args.seed, image_size=args.image_size, horizon=args.horizon)
    saved, successes, lengths = 0, 0, []
    for i in tqdm(range(args.episodes), desc="collect", unit="ep"):
        episode = run_episode(env, args.seed + i, args.hold)
        successes += episode["success"]
        if episode["success"] or args.keep_failures:
            np.savez_compressed(args.out_dir / f"episode_{saved:04d}.npz", **episode)
            lengths.append(len(episode["action"]))
            saved += 1
    env.close()
    print(
        f"episodes: {saved} saved in {args.out_dir} | expert success {successes}/{args.episodes} "
        f"({100 * successes / args.episodes:.0f}%) | mean length {np.mean(lengths) if lengths else 0:.1f} steps "
        f"| {time.time() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
