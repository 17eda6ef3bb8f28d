"""Collect scripted-expert demonstrations into a zarr episode store (resumable: rerun the same command).

usage: python scripts/collect_demos.py --task push --episodes 100 --workers 2 --out data/demos/push.zarr
           [--seed 0] [--image-size 64] [--split train|heldout|all] [--noise-std 0.1] [--perturb-prob 0.05]
           [--keep-failures] [--correct-prob 0.5 --correct-frames 2 6] [--stop-prob 0.3]

`--correct-prob P`: that share of the episodes gets a mid-episode correction: before the action of a frame drawn
from --correct-frames the user names another object of the scene ("no, the blue cube"), the env's target changes
and the expert follows it (the episode's metadata records the frame, the words and the new target).
`--stop-prob P`: that share of the other episodes gets a "stop" at such a frame ("stop", "wait, stop"): the env
halts and the expert holds still until the env ends the episode (`TabletopEnv.halt`).
"""

import argparse
import json
import sys
import time

import envs
from multistream.cli import nonneg_float, positive_int, probability
from robot.demos import CollectConfig, collect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=sorted(envs.TASK_IDS))
    p.add_argument("--episodes", type=positive_int, required=True, help="episodes the store should hold when done")
    p.add_argument("--out", required=True, help="zarr store directory (created, or resumed if it exists)")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--image-size", type=positive_int, default=64)
    p.add_argument("--split", default="train", choices=["train", "heldout", "all"], help="instruction phrasings")
    p.add_argument("--noise-std", type=nonneg_float, default=0.0, help="Gaussian noise on executed expert actions")
    p.add_argument("--perturb-prob", type=probability, default=0.0, help="per-step chance of a short random push")
    p.add_argument("--keep-failures", action="store_true", help="also store episodes the expert failed")
    p.add_argument("--correct-prob", type=probability, default=0.0, help="share of episodes with a correction")
    p.add_argument("--correct-frames", type=positive_int, nargs=2, default=(2, 6), metavar=("FIRST", "LAST"),
                   help="the correction comes before the action of a frame in this range")
    p.add_argument("--stop-prob", type=probability, default=0.0,
                   help="share of the episodes without a correction that get a 'stop' (at a --correct-frames frame)")
    args = p.parse_args()

    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"collect_demos.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    cfg = CollectConfig(
        task=args.task,
        episodes=args.episodes,
        seed=args.seed,
        workers=args.workers,
        image_size=args.image_size,
        instruction_split=args.split,
        noise_std=args.noise_std,
        perturb_prob=args.perturb_prob,
        keep_failures=args.keep_failures,
        correct_prob=args.correct_prob,
        correct_frames=tuple(args.correct_frames),
        stop_prob=args.stop_prob,
    )
    t0 = time.time()
    summary = collect(cfg, args.out)
    summary["wall_s"] = round(time.time() - t0, 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":  # workers are spawned: they re-import this file
    main()
