"""usage: python scripts/probe_grounding.py --ckpt runs/policy_touch/checkpoint [--seeds 50] [--first-seed 5000]
                                         [--split train] [--steps 5] [--batch 8] [--threads 1] [--out DIR]

Does the touch policy go to the object it is told to? Each validation scene (seeds --first-seed on; the evaluation
seeds 1000-1099 are refused) is run three times, naming each of its three objects in turn ("touch the <colour>
<shape>" with --split train, "can you poke the <colour> <shape>" with --split heldout). The *first move* is the end
effector's xy displacement over the first --steps acting frames; it points at the object whose direction from the
start is nearest to it (largest cosine). Chance is 1/3 for a policy that ignores the command; the expert is at ~1.
Also reported: how often the named object is touched, and the validation success on the env's own instructions
(of the --split phrasing, random synonyms), the figure docs/robot.md compares policies by.
Writes probe.json (per run: seed, named object, object it went toward, touched) to --out (default: beside ckpt).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from robot import EVAL_SEEDS

TEMPLATE = {"train": "touch the {obj}", "heldout": "can you poke the {obj}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint directory of a touch policy")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=5000)
    ap.add_argument("--split", choices=list(TEMPLATE), default="train", help="phrasing of the commands")
    ap.add_argument("--steps", type=int, default=5, help="acting frames that make the first move")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.seeds < 1 or args.steps < 1 or args.batch < 1 or args.first_seed < 0:
        ap.error(f"--seeds, --steps, --batch must be >= 1 and --first-seed >= 0, got {args.seeds}, {args.steps}, "
                 f"{args.batch}, {args.first_seed}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    held = sorted(set(seeds) & set(EVAL_SEEDS))
    if held:
        ap.error(f"seeds {held[0]}-{held[-1]} are held-out evaluation seeds; probe on validation seeds (e.g. 5000 on)")

    import gymnasium as gym
    import torch

    import envs
    from envs.base import EnvConfig
    from envs.scene import OBJECT_NAMES
    from robot.policy import Policy

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        policy = Policy.load(args.ckpt)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    size = policy.cfg.image_size
    env = gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=(size, size)))
    scenes = []
    for s in seeds:
        _, info = env.reset(seed=s)
        pv, objs = info["privileged"], info["privileged"]["objects"]
        scenes.append({"target": pv["target"], "objects": {k: np.asarray(v["pos"][:2]) for k, v in objs.items()},
                       "colors": {k: v["color"] for k, v in objs.items()}})
    env.close()

    runs = [(i, name) for i in range(len(seeds)) for name in OBJECT_NAMES]
    commands = [TEMPLATE[args.split].format(obj=f"{scenes[i]['colors'][name]} {name}") for i, name in runs]
    ee: dict[int, list[np.ndarray]] = {j: [] for j in range(len(runs))}
    touched = [False] * len(runs)

    def record(j, obs, info, env):  # before each acting frame: where the end effector is
        ee[j].append(np.asarray(info["privileged"]["ee_pos"][:2]))
        touched[j] = touched[j] or bool(env.unwrapped.hand_touches(runs[j][1]))
        return None

    res = policy.rollout("touch", [seeds[i] for i, _ in runs], commands=commands, batch_size=args.batch,
                         progress=True, intervene=record)
    rows = []
    for j, ((i, name), r) in enumerate(zip(runs, res, strict=True)):
        path = ee[j]
        k = min(args.steps, len(path) - 1)
        move = path[k] - path[0]
        dirs = {o: p - path[0] for o, p in scenes[i]["objects"].items()}  # start -> each object, xy
        cos = {o: float(np.dot(move, d) / (np.linalg.norm(d) * np.linalg.norm(move) + 1e-9)) for o, d in dirs.items()}
        toward = max(cos, key=cos.get)
        touched[j] = touched[j] or (r["success"] and name == scenes[i]["target"])  # the last frame's contact
        rows.append({"seed": seeds[i], "named": name, "command": commands[j], "toward": toward,
                     "moved_m": float(np.linalg.norm(move)), "touched_named": touched[j],
                     "env_target": scenes[i]["target"], "success": r["success"], "length": r["length"]})
    n = len(rows)
    right = sum(r["toward"] == r["named"] for r in rows)
    hit = sum(r["touched_named"] for r in rows)
    own = policy.rollout("touch", seeds, split=args.split, batch_size=args.batch, progress=True)
    val = float(np.mean([r["success"] for r in own]))
    summary = {"ckpt": str(args.ckpt), "seeds": [seeds[0], seeds[-1]], "split": args.split, "steps": args.steps,
               "first_move_toward_named": right / n, "runs": n, "touched_named": hit / n,
               "validation_success": val, "rows": rows,
               "validation": [{"seed": r["seed"], "success": r["success"], "command": r["command"]} for r in own]}
    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent / f"probe_{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(summary, indent=2))
    print(f"first move toward the named object: {right}/{n} = {right / n:.1%} (chance 33%); named object touched: "
          f"{hit}/{n} = {hit / n:.1%}; validation success on the env's own {args.split} commands "
          f"(seeds {seeds[0]}-{seeds[-1]}): {val:.1%}")
    print(f"wrote {out / 'probe.json'}")


if __name__ == "__main__":
    main()
