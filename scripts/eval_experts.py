"""Success rate of the scripted experts over many seeds, per task (optionally with noise injection).

usage: python scripts/eval_experts.py [--tasks touch push pick_place] [--seeds 100] [--first-seed 1000]
           [--noise-std 0.0] [--perturb-prob 0.0] [--camera] [--out runs/eval/experts.json]

Episodes run to the registered time limit (terminating at success). Without --camera the envs run with
`image_size=None` (the experts use privileged state only, so success does not depend on it).
"""

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.base import EnvConfig
from multistream.atomic import atomic_write_json
from multistream.cli import nonneg_float, output_file, positive_int, probability
from robot.experts import ExpertConfig, make_expert, run_episode

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--tasks", nargs="+", default=sorted(envs.TASK_IDS), choices=sorted(envs.TASK_IDS))
p.add_argument("--seeds", type=positive_int, default=100)
p.add_argument("--first-seed", type=int, default=1000, help="seeds first-seed .. first-seed + seeds - 1")
p.add_argument("--noise-std", type=nonneg_float, default=0.0)
p.add_argument("--perturb-prob", type=probability, default=0.0)
p.add_argument("--camera", action="store_true", help="render the 64x64 camera too")
p.add_argument("--out", type=output_file, default="runs/eval/experts.json")
args = p.parse_args()

rows = []
for task in args.tasks:
    cfg = EnvConfig(image_size=(64, 64) if args.camera else None)
    env = gym.make(envs.TASK_IDS[task], config=cfg)
    t0 = time.time()
    successes, lengths, failed = [], [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        expert = make_expert(env, ExpertConfig(noise_std=args.noise_std, perturb_prob=args.perturb_prob, seed=seed))
        r = run_episode(env, expert, seed, record=False)
        successes.append(r["success"])
        if r["success"]:
            lengths.append(r["length"])
        else:
            failed.append(seed)
    env.close()
    rows.append(
        {
            "task": task,
            "seeds": args.seeds,
            "success_rate": float(np.mean(successes)),
            "mean_length_success": round(float(np.mean(lengths)), 1) if lengths else None,
            "time_limit": env.spec.max_episode_steps,
            "failed_seeds": failed,
            "wall_s": round(time.time() - t0, 1),
        }
    )
    r = rows[-1]
    print(
        f"{task:11s} success {r['success_rate']:.3f} over {args.seeds} seeds  mean length {r['mean_length_success']}"
        f"/{r['time_limit']} steps  failed seeds {failed}  ({r['wall_s']} s)"
    )
result = {
    "noise_std": args.noise_std,
    "perturb_prob": args.perturb_prob,
    "first_seed": args.first_seed,
    "camera": args.camera,
    "rows": rows,
}
out = Path(args.out)
atomic_write_json(out, result, indent=2)
print(f"wrote {out}")
