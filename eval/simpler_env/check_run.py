"""What a Bridge run can be checked for without a trained policy (``scripts/simpler_check.sh`` runs this):

    python -m eval.simpler_env.check_run --results R --record REC [--server-images S] [--episode-length simpler_env]

- every episode ran to its step limit; the results files are complete and the table has every task;
- the images sent are 224x224 views of the scene: equal (to one intensity level) to OpenCV's INTER_AREA resize of
  the camera frame the env rendered (an implementation independent of the client's), far from the same frame
  transposed or flipped, not blank; and, with ``--server-images`` (one ``.npy`` per request, in order, saved by the
  server), exactly what the server received;
- the actions reach the robot: the end effector moves, along the commanded translation.

Needs numpy and OpenCV (SimplerEnv's environment has both). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from eval.common.results import load_results, markdown_table
from .tasks import EPISODE_LENGTHS, TASKS, episode_steps

IMAGE_SIZE = (224, 224)
MIN_PIXEL_STD = 10.0  # a blank or constant image has ~0; the Bridge scenes have ~50
MIN_ORIENTATION_MARGIN = 10.0  # the wrong orientations must differ at least this much more (mean |diff|, levels)
MIN_EE_TRAVEL = 0.01  # m: how far the end effector must get from where it started
MIN_TRACKING_COSINE = 0.9  # between the commanded and the measured end effector displacement


def check_results(results_dir: Path, tasks: list[str], episodes: int, steps: dict[str, int]) -> list[str]:
    """Failures of the results files and of the table made from them."""
    failures, records = [], []
    for task in tasks:
        path = results_dir / f"{TASKS[task].env_name}_run1.json"
        if not path.is_file():
            failures.append(f"{task}: no results file {path}")
            continue
        record = json.loads(path.read_text())
        records.append(record)
        if not record.get("complete") or len(record["episodes"]) != episodes:
            failures.append(f"{task}: {len(record['episodes'])} of {episodes} episodes, complete={record.get('complete')}")
        short = [e["episode_id"] for e in record["episodes"] if e["steps"] != steps[task]]
        if short or record.get("max_steps") != steps[task]:
            failures.append(f"{task}: episodes {short} did not run {steps[task]} steps (max_steps "
                            f"{record.get('max_steps')})")
    rows = markdown_table(load_results([results_dir]), task_order=list(TASKS)).splitlines()[2:]
    missing = [task for task in tasks if not any(row.startswith(f"| {task} |") for row in rows)]
    if missing or not rows[-1].startswith("| **Mean** |"):
        failures.append(f"results table: rows missing for {missing or 'the mean'}")
    return failures


def step_times(results_dir: Path, tasks: list[str]) -> list[str]:
    """Seconds per step spent in the env (simulate + render) and in the policy (resize + request), per task."""
    lines = []
    for task in tasks:
        path = results_dir / f"{TASKS[task].env_name}_run1.json"
        episodes = json.loads(path.read_text())["episodes"] if path.is_file() else []
        steps = sum(e["steps"] for e in episodes)
        if steps and all("seconds" in e for e in episodes):
            env, policy = (sum(e["seconds"][k] for e in episodes) / steps for k in ("env", "policy"))
            lines.append(f"{task}: {steps} steps, {env:.3f} s per env step (simulate + render), "
                         f"{policy:.3f} s per policy step (resize + server request)")
    return lines


def image_report(sent: np.ndarray, frames: np.ndarray, frame_steps: np.ndarray) -> dict:
    """How the images sent compare with OpenCV's resize of the env's frames, as they are and mis-oriented."""
    import cv2

    def resized(image):
        return cv2.resize(np.ascontiguousarray(image), IMAGE_SIZE[::-1], interpolation=cv2.INTER_AREA).astype(int)

    sent_at_frames = sent[frame_steps].astype(int)
    report = {"max_abs_diff": 0, "mean_abs_diff": {}, "min_pixel_std": float(sent.reshape(len(sent), -1).std(1).min())}
    for name, transform in [("as rendered", lambda f: f), ("transposed", lambda f: f.transpose(1, 0, 2)),
                            ("upside down", lambda f: f[::-1]), ("mirrored", lambda f: f[:, ::-1])]:
        diffs = np.stack([np.abs(s - resized(transform(f))) for s, f in zip(sent_at_frames, frames)])
        report["mean_abs_diff"][name] = float(diffs.mean())
        if name == "as rendered":
            report["max_abs_diff"] = int(diffs.max())
    return report


def check_images(report: dict) -> list[str]:
    failures = []
    if report["max_abs_diff"] > 1:
        failures.append(f"images sent differ from the rendered frame resized by up to {report['max_abs_diff']} levels")
    right = report["mean_abs_diff"]["as rendered"]
    for name, wrong in report["mean_abs_diff"].items():
        if name != "as rendered" and wrong < right + MIN_ORIENTATION_MARGIN:
            failures.append(f"images sent are about as close to the frame {name} ({wrong:.1f}) as to it ({right:.1f})")
    if report["min_pixel_std"] < MIN_PIXEL_STD:
        failures.append(f"an image sent is nearly blank (pixel std {report['min_pixel_std']:.1f})")
    return failures


def motion_report(actions: np.ndarray, ee_positions: np.ndarray) -> dict:
    """End effector travel against the commanded translation (both in the robot base frame: the controller's
    ``ee_align2`` frame takes xyz deltas in the base frame and accumulates them into its target)."""
    commanded = actions[:, :3].sum(0)
    measured = ee_positions[-1] - ee_positions[0]
    cosine = commanded @ measured / (np.linalg.norm(commanded) * np.linalg.norm(measured) + 1e-12)
    return {"max_travel": float(np.linalg.norm(ee_positions - ee_positions[0], axis=1).max()),
            "commanded": commanded.tolist(), "measured": measured.tolist(), "cosine": float(cosine),
            "gain": float(commanded @ measured / (commanded @ commanded + 1e-12))}


def check_motion(report: dict) -> list[str]:
    failures = []
    if report["max_travel"] < MIN_EE_TRAVEL:
        failures.append(f"the end effector moved only {100 * report['max_travel']:.2f} cm")
    if report["cosine"] < MIN_TRACKING_COSINE:
        failures.append(f"the end effector moved {np.round(report['measured'], 3).tolist()} m, not along the "
                        f"commanded {np.round(report['commanded'], 3).tolist()} (cosine {report['cosine']:.2f})")
    return failures


def check_server_images(sent: np.ndarray, server_dir: Path) -> list[str]:
    """The images the server saved, one ``NNNNNN.npy`` per request in arrival order, against those sent."""
    files = sorted(server_dir.glob("*.npy"))
    if len(files) != len(sent):
        return [f"the server saved {len(files)} request images, the client sent {len(sent)}"]
    differing = [i for i, file in enumerate(files) if not np.array_equal(np.load(file), sent[i])]
    return [f"requests {differing[:10]} reached the server with other images"] if differing else []


def _cm(metres) -> list[float]:
    return np.round(100 * np.asarray(metres), 1).tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="run_bridge --out folder")
    parser.add_argument("--record", required=True, help="run_bridge --record folder")
    parser.add_argument("--server-images", default=None, help="folder of the images the server received (.npy)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="in the order run")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--episode-length", choices=EPISODE_LENGTHS, default="starvla")
    args = parser.parse_args(argv)

    steps = {task: episode_steps(task, args.episode_length) for task in args.tasks}
    failures = check_results(Path(args.results), args.tasks, args.episodes, steps)
    all_sent = []
    for task in args.tasks:
        for episode in range(args.episodes):
            name = f"{task}_run1_ep{episode}"
            path = Path(args.record) / f"{name}.npz"
            if not path.is_file():
                failures.append(f"{name}: no recording {path}")
                continue
            data = np.load(path)
            sent = data["sent"]
            all_sent.append(sent)
            if sent.shape[1:] != (*IMAGE_SIZE, 3) or len(sent) != steps[task]:
                failures.append(f"{name}: sent images {list(sent.shape)}, expected [{steps[task]}, 224, 224, 3]")
                continue
            images, motion = image_report(sent, data["frames"], data["frame_steps"]), \
                motion_report(data["actions"], data["ee_positions"])
            problems = check_images(images) + check_motion(motion)
            video = path.with_suffix(".mp4")
            if not video.is_file() or video.stat().st_size < 10_000:
                problems.append(f"no video {video}")
            failures += [f"{name}: {p}" for p in problems]
            wrong = ", ".join(f"{k} {v:.1f}" for k, v in images["mean_abs_diff"].items() if k != "as rendered")
            print(f"{name}: {len(sent)} steps\n  images sent vs the rendered frame resized by OpenCV: max |diff| "
                  f"{images['max_abs_diff']}, mean {images['mean_abs_diff']['as rendered']:.2f} (mis-oriented: {wrong}); "
                  f"min pixel std {images['min_pixel_std']:.1f}\n  end effector: up to "
                  f"{100 * motion['max_travel']:.1f} cm from the start, net {_cm(motion['measured'])} cm for "
                  f"{_cm(motion['commanded'])} cm commanded (cosine {motion['cosine']:.2f}, gain {motion['gain']:.2f})")
    if args.server_images and all_sent:
        server_failures = check_server_images(np.concatenate(all_sent), Path(args.server_images))
        failures += server_failures
        if not server_failures:
            print(f"the server received exactly the {sum(map(len, all_sent))} images sent, in order")
    print("\n".join(step_times(Path(args.results), args.tasks)))
    print(markdown_table(load_results([args.results]), task_order=list(TASKS)))
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
