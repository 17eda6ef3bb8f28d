"""usage: python scripts/eval_policy.py --ckpt runs/policy_touch/checkpoint --task touch [--seeds 100]
                                     [--first-seed 1000] [--batch 8] [--out runs/policy_touch/eval]

Runs the policy closed-loop in the gym env on held-out seeds, one episode per seed, batched (one Generator step
per frame for all envs; `--batch 1` measures what one robot costs), under each command condition available:
    text-train     the env's instruction with a training phrasing
    text-heldout   the env's instruction with a held-out phrasing (never in the training data)
(spoken commands come with the audio streams; they are not part of this policy yet). Success rate per condition,
mean episode length, and the policy's compute per batched frame (tokenizers + model step) as a fraction of the
80 ms frame. Prints a table, writes eval.json and eval.png (bar plot).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from robot import EVAL_SEEDS

CONDITIONS = {"text-train": "train", "text-heldout": "heldout"}
FRAME_S = 0.08


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint directory (config.json + model.safetensors)")
    ap.add_argument("--files", default=None, help="directory of the policy files (default: ckpt or its parent)")
    ap.add_argument("--task", required=True, help="touch, push or pick_place")
    ap.add_argument("--seeds", type=int, default=100, help="episodes per condition")
    ap.add_argument("--first-seed", type=int, default=EVAL_SEEDS.start,
                    help=f"first seed (held-out: {EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}; demos use 0..)")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--batch", type=int, default=8, help="envs stepped together")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default: <ckpt>/../eval)")
    args = ap.parse_args()
    if args.seeds < 1 or args.batch < 1:
        ap.error(f"--seeds and --batch must be >= 1, got {args.seeds}, {args.batch}")

    import torch

    import envs
    from robot.policy import Policy

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task not in envs.TASK_IDS:
        ap.error(f"unknown --task {args.task!r}; known: {sorted(envs.TASK_IDS)}")
    try:
        policy = Policy.load(args.ckpt, args.files)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    results, timing = {}, []
    for cond in args.conditions:
        res = policy.rollout(args.task, seeds, split=CONDITIONS[cond], batch_size=args.batch, progress=True)
        timing.append(policy.last_timing)
        results[cond] = {
            "success": float(np.mean([r["success"] for r in res])),
            "episodes": len(res),
            "mean_length": float(np.mean([r["length"] for r in res])),
            "per_seed": [{"seed": r["seed"], "success": r["success"], "length": r["length"],
                          "command": r["command"]} for r in res],
        }
    # per env: a batched frame serves `batch` envs (a single robot would run at batch 1: see the README figures)
    per_frame = float(np.median([t["median_frame_s"] for t in timing]))
    summary = {"ckpt": str(args.ckpt), "task": args.task, "seeds": [seeds[0], seeds[-1]], "batch": args.batch,
               "frame_s_median": per_frame, "frame_fraction": per_frame / FRAME_S, "timing": timing,
               "threads": torch.get_num_threads(), "conditions": results}
    (out / "eval.json").write_text(json.dumps(summary, indent=2))

    print(f"{'condition':14} {'success':>8} {'episodes':>9} {'mean len':>9}")
    for cond, r in results.items():
        print(f"{cond:14} {r['success']:8.1%} {r['episodes']:9d} {r['mean_length']:9.1f}")
    print(f"policy frame (tokenizers + model step) for {args.batch} envs at once: {per_frame * 1000:.2f} ms = "
          f"{per_frame / FRAME_S:.1%} of the 80 ms frame ({torch.get_num_threads()} threads)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4 + len(results), 3))
    names = list(results)
    ax.bar(names, [results[c]["success"] * 100 for c in names], color=["tab:blue", "tab:orange"][: len(names)])
    ax.set_ylim(0, 100)
    ax.set_ylabel("success %")
    ax.set_title(f"{args.task}: {args.seeds} held-out seeds per condition")
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=120)
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")


if __name__ == "__main__":
    main()
