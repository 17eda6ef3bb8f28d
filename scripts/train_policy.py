"""usage: python scripts/train_policy.py --store data/robot/touch.zarr --out runs/policy_touch [--steps 3000]
                                      [--batch 16] [--lr 1e-3] [--minutes M] [--device cpu|cuda] [--resume]
                                      [--dropout 0.1] [--aug-shift 2] [--aug-brightness 0.1]

Trains the commanded policy (robot/policy.py) on a policy store (scripts/make_robot_data.py) with the engine's
Trainer: bf16 autocast, cosine schedule, checkpoints in OUT/checkpoint with exact resume (rerun with --resume),
metrics.jsonl and loss.png. Every window starts at an episode's first frame, so the policy hears its command; the
last 5% of the episodes (at least one) are held out and their teacher-forced action accuracy is printed at the end.
The policy files (tokenizers, normalisation, config) are written to OUT, where `Policy.load(OUT/checkpoint)` and
scripts/eval_policy.py find them.

Against overfitting: `--dropout` in both transformers (off at inference), and `--aug-shift` / `--aug-brightness`:
each training episode's camera frames moved by up to that many pixels and scaled in brightness (robot/augment.py;
training batches only, never the held-out replay or a rollout). Frames that are padding in every row of a batch
are cut (exact: they carry no target and the model is causal).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="policy store from scripts/make_robot_data.py")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout in the temporal and depth transformers")
    ap.add_argument("--aug-shift", type=int, default=0, help="max random shift of the camera image, pixels")
    ap.add_argument("--aug-brightness", type=float, default=0.0, help="max relative brightness jitter, e.g. 0.1")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast (off by default: the camera CNN runs ~7x slower in bf16 on CPUs without AMX)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "batch", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        ap.error(f"--lr must be > 0, got {args.lr}")
    if not 0.0 <= args.dropout < 1.0:
        ap.error(f"--dropout must be in [0, 1), got {args.dropout}")
    from robot.augment import ImageAugment

    try:
        args.augment = ImageAugment(shift=args.aug_shift, brightness=args.aug_brightness)
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_policy.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    from multistream.cli import refuse_existing_run
    from multistream.lm import RQTransformer
    from multistream.loss import lm_loss
    from multistream.store import EpisodeStore
    from multistream.trainer import TrainConfig, Trainer
    from robot.augment import augmented_batch_fn, trim_padding
    from robot.policy import (
        ACTION,
        PolicyConfig,
        PolicyTokenizers,
        model_config,
        policy_binding,
        policy_streams,
        save_policy_files,
    )

    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    if not Path(args.store).exists():
        raise FileNotFoundError(f"no policy store at {args.store} (make one with scripts/make_robot_data.py)")
    store = EpisodeStore.open(args.store)
    if "policy_tokenizers" not in store.attrs:
        raise ValueError(f"{args.store} is not a policy store (no policy_tokenizers attr)")
    cfg = PolicyConfig(**store.attrs["policy_config"])
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok)
    n = store.num_episodes
    n_val = max(1, n // 20)
    if n - n_val < 1:
        raise ValueError(f"{args.store} has {n} episodes; need at least 2 (one is held out)")
    train_eps, val_eps = list(range(n - n_val)), list(range(n - n_val, n))
    window = max(store.episode_length(i) for i in range(n))
    base_fn = binding.batch_fn(store, window=window, batch_size=args.batch, seed=args.seed, episodes=train_eps,
                               from_episode_start=True)
    images = [s.name for s in streams if s.continuous and len(s.feature_shape) == 3]
    aug_fn = augmented_batch_fn(base_fn, images, args.augment, seed=args.seed)

    def batch_fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        return trim_padding(aug_fn(step, micro, rank, world), streams)

    save_policy_files(out, cfg, tok, binding)

    lm_cfg = model_config(cfg, streams, dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = RQTransformer(lm_cfg)
    print(f"policy: {model.num_parameters() / 1e6:.2f} M parameters; {len(train_eps)} train / {len(val_eps)} held-out "
          f"episodes; window {window} frames")
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=args.lr, warmup_steps=100,
                     weight_decay=0.0, ckpt_every=args.ckpt_every, seed=args.seed, progress=not args.no_progress,
                     autocast=args.bf16, max_minutes=args.minutes)
    # a resume must draw the same batches: the Trainer refuses a different batch size (the seed is in tc)
    trainer = Trainer(model, lm_cfg, tc, batch_fn, lambda m, b: lm_loss(m(b), streams), device=args.device,
                      run_info={"batch": args.batch, "store": str(Path(args.store).resolve()),
                                **({"augment": dataclasses.asdict(args.augment)} if args.augment.active else {})})
    trainer.fit()

    model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for i in val_eps:
            ep = {k: v.to(args.device) for k, v in binding.episode(store, i).items()}
            o = model(ep)
            m = o.mask[ACTION]
            hits += int((o.logits[ACTION].argmax(-1) == o.targets[ACTION])[m].sum())
            total += int(m.sum())
    print(f"held-out episodes, teacher-forced action-token accuracy: {hits / max(total, 1):.3f} ({total} tokens)")


if __name__ == "__main__":
    main()
