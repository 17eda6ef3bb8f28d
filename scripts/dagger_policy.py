"""usage: python scripts/dagger_policy.py --ckpt runs/policy_touch2/checkpoint --store data/robot/touch2k.zarr
           --out runs/dagger_touch --task touch [--rounds 3] [--episodes 200] [--beta 0.5] [--beta-decay 0.5]
           [--first-seed 20000] [--val-seeds 50] [--val-first-seed 5000] [--train-steps 400] [--train-minutes 8]
           [--lr 3e-4] [--batch 16] [--dropout 0.1] [--aug-brightness 0.1] [--aug-shift 0] [--no-action-input]
           [--dagger-frac 0.5] [--minutes M] [--threads 1]

DAgger for the commanded policy (robot/dagger.py). Round k (1..rounds): roll out the latest policy from
`--episodes` new seeds, executing the expert's action instead of the policy's with probability
beta_k = beta * beta_decay^(k-1), label every visited state with the scripted expert's action and append those
episodes to OUT/store.zarr (a copy of --store, made once); then fine-tune the latest policy on the aggregated store
(scripts/train_policy.py --init, run as a child process, OUT/round<k>) and measure its closed-loop success on the
validation seeds (--val-first-seed on; never the evaluation seeds 1000-1099, which DAgger also refuses to collect
from). The policy to keep is the one with the best validation success, round 0 (--ckpt) included: OUT/best.json.

Resumable: OUT/dagger.json records every finished phase (written atomically); rerun the same command to continue
(a round's collection skips the seeds already stored, its training resumes with --resume). `--minutes` bounds the
wall time of this run; when it is spent the script stops after the current phase, and a rerun continues.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from multistream.cli import nonneg_float, positive_float, positive_int, probability

STATE_FILE = "dagger.json"
BEST_FILE = "best.json"
# settings a resume must share with the run it continues
SAME_ON_RESUME = ("ckpt", "store", "task", "episodes", "beta", "beta_decay", "first_seed", "val_seeds",
                  "val_first_seed", "split", "no_action_input", "dagger_frac")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="starting policy checkpoint (round 0)")
    ap.add_argument("--store", required=True, help="policy store the --ckpt was trained on (copied to OUT once)")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--task", default="touch")
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--episodes", type=positive_int, default=200, help="policy rollouts collected per round")
    ap.add_argument("--beta", type=probability, default=0.5, help="round 1's chance that the expert acts per frame")
    ap.add_argument("--beta-decay", type=probability, default=0.5, help="beta of round k = beta * decay^(k-1)")
    ap.add_argument("--first-seed", type=int, default=20000, help="first seed of the DAgger rollouts")
    ap.add_argument("--val-seeds", type=positive_int, default=50, help="validation episodes per policy")
    ap.add_argument("--val-first-seed", type=int, default=5000)
    ap.add_argument("--split", default="train", choices=["train", "heldout", "all"], help="instruction phrasings")
    ap.add_argument("--rollout-batch", type=positive_int, default=8, help="envs stepped together")
    ap.add_argument("--train-steps", type=positive_int, default=400)
    ap.add_argument("--train-minutes", type=positive_float, default=8.0)
    ap.add_argument("--lr", type=positive_float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--dropout", type=nonneg_float, default=0.1)
    ap.add_argument("--aug-shift", type=int, default=0)
    ap.add_argument("--aug-brightness", type=nonneg_float, default=0.1)
    ap.add_argument("--no-action-input", action="store_true", help="train_policy.py --no-action-input")
    ap.add_argument("--dagger-frac", type=float, default=0.0, help="train_policy.py --dagger-frac")
    ap.add_argument("--minutes", type=positive_float, default=None, help="wall-clock budget of this run")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    try:
        run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"dagger_policy.py: error: {e}")


def write_state(out: Path, state: dict) -> None:
    from multistream.atomic import atomic_write_text

    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2))


def round_seeds(args: argparse.Namespace, k: int) -> list[int]:
    first = args.first_seed + (k - 1) * args.episodes
    return list(range(first, first + args.episodes))


def check_args(args: argparse.Namespace) -> None:
    from robot.dagger import check_seeds

    for name in ("ckpt", "store"):
        if not Path(getattr(args, name)).exists():
            raise FileNotFoundError(f"--{name} {getattr(args, name)} does not exist")
    if not 0.0 <= args.dagger_frac < 1.0:
        raise ValueError(f"--dagger-frac must be in [0, 1), got {args.dagger_frac}")
    if args.first_seed < 0 or args.val_first_seed < 0:
        raise ValueError(f"--first-seed and --val-first-seed must be >= 0, got {args.first_seed}, "
                         f"{args.val_first_seed}")
    collect = set(range(args.first_seed, args.first_seed + args.rounds * args.episodes))
    val = list(range(args.val_first_seed, args.val_first_seed + args.val_seeds))
    check_seeds(sorted(collect))
    check_seeds(val)
    if collect & set(val):
        raise ValueError(f"DAgger seeds {args.first_seed}.. and validation seeds {args.val_first_seed}.. overlap; "
                         "move one of them")


def validate(ckpt: Path, args: argparse.Namespace) -> float:
    from robot.policy import Policy

    policy = Policy.load(ckpt)
    seeds = list(range(args.val_first_seed, args.val_first_seed + args.val_seeds))
    res = policy.rollout(args.task, seeds, split=args.split, batch_size=args.rollout_batch,
                         progress=not args.no_progress)
    return sum(r["success"] for r in res) / len(res)


def train(out: Path, store: Path, init: Path, k: int, args: argparse.Namespace, minutes: float) -> Path:
    run_dir = out / f"round{k}"
    cmd = [sys.executable, str(Path(__file__).with_name("train_policy.py")), "--store", str(store), "--out",
           str(run_dir), "--init", str(init), "--steps", str(args.train_steps), "--batch", str(args.batch),
           "--lr", str(args.lr), "--warmup", str(args.warmup), "--dropout", str(args.dropout),
           "--aug-shift", str(args.aug_shift), "--aug-brightness", str(args.aug_brightness),
           "--threads", str(args.threads), "--minutes", f"{minutes:.2f}"]
    if args.no_action_input:
        cmd.append("--no-action-input")
    if args.dagger_frac:
        cmd += ["--dagger-frac", str(args.dagger_frac)]
    if args.no_progress:
        cmd.append("--no-progress")
    if (run_dir / "checkpoint" / "model.safetensors").is_file():
        cmd.append("--resume")
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to resume
    print(f"round {k}: {' '.join(cmd[1:])}", flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise RuntimeError(f"train_policy.py for round {k} failed (exit {rc}); see its output above")
    return run_dir / "checkpoint"


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    check_args(args)
    t_start = time.time()

    def minutes_left() -> float:
        return float("inf") if args.minutes is None else args.minutes - (time.time() - t_start) / 60

    from multistream.store import EpisodeStore
    from robot.dagger import collect_on_policy
    from robot.policy import Policy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(Path(v).resolve()) if k in ("ckpt", "store") else v)
              for k, v in vars(args).items() if k in SAME_ON_RESUME}
    state_path = out / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        diffs = [f"{k}: run {state['config'].get(k)!r}, now {config[k]!r}" for k in SAME_ON_RESUME
                 if state["config"].get(k) != config[k]]
        if diffs:
            raise ValueError(f"{out} holds a DAgger run with other settings ({'; '.join(diffs)}); rerun with its "
                             "settings to continue it, or choose another --out")
    else:
        state = {"config": config, "rounds": [{"round": 0, "ckpt": str(Path(args.ckpt).resolve())}]}
        write_state(out, state)
    store_path = out / "store.zarr"
    if not store_path.exists():  # copy under a temporary name, then rename: never a half-copied store
        tmp = out / "store.zarr.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(args.store, tmp)
        tmp.rename(store_path)
    rounds = state["rounds"]
    if "val_success" not in rounds[0]:
        rounds[0]["val_success"] = validate(Path(rounds[0]["ckpt"]), args)
        write_state(out, state)
    print(f"round 0 ({rounds[0]['ckpt']}): validation success {rounds[0]['val_success']:.1%}", flush=True)

    for k in range(1, args.rounds + 1):
        if len(rounds) <= k:
            rounds.append({"round": k, "beta": args.beta * args.beta_decay ** (k - 1)})
            write_state(out, state)
        r, prev = rounds[k], Path(rounds[k - 1]["ckpt"])
        if "collected" not in r:
            store = EpisodeStore.open(store_path, mode="a")
            policy = Policy.load(prev)
            s = collect_on_policy(policy, store, args.task, round_seeds(args, k), r["beta"], round_=k,
                                  split=args.split, batch_size=args.rollout_batch, progress=not args.no_progress)
            r["collected"] = {key: s[key] for key in ("episodes", "frames", "expert_frames", "skipped",
                                                      "policy_success")}
            r["store_episodes"] = store.num_episodes
            write_state(out, state)
            print(f"round {k}: beta {r['beta']:.3f}, {s['episodes']} episodes / {s['frames']} frames appended "
                  f"(store: {store.num_episodes} episodes); rollout success {s['policy_success']}", flush=True)
        if "ckpt" not in r:
            left = minutes_left()
            if left < 2:
                print(f"budget spent before training round {k}; rerun the same command to continue", flush=True)
                return
            r["ckpt"] = str(train(out, store_path, prev, k, args, min(args.train_minutes, left - 1.5)).resolve())
            write_state(out, state)
        if "val_success" not in r:
            r["val_success"] = validate(Path(r["ckpt"]), args)
            write_state(out, state)
        print(f"round {k}: validation success {r['val_success']:.1%} ({r['ckpt']})", flush=True)
        if k < args.rounds and minutes_left() < 3:
            print(f"budget spent after round {k}; rerun the same command to continue", flush=True)
            break

    done = [r for r in rounds if "val_success" in r]
    best = max(done, key=lambda r: (r["val_success"], r["round"]))
    from multistream.atomic import atomic_write_text

    atomic_write_text(out / BEST_FILE, json.dumps(best, indent=2))
    print(f"{'round':>5} {'beta':>6} {'val success':>12}")
    for r in done:
        print(f"{r['round']:5d} {r.get('beta', 0.0):6.3f} {r['val_success']:12.1%}")
    print(f"best: round {best['round']} ({best['ckpt']}), validation success {best['val_success']:.1%}; "
          f"wrote {out / BEST_FILE}")


if __name__ == "__main__":
    main()
