"""usage: python scripts/train_toy.py --out runs/toy [--steps 300] [--preset tiny] [--batch 32] [--frames 32]

Train the RQ-Transformer on the toy multistream task (multistream/toy.py). Resumes from --out if a checkpoint is
there. Runs under torchrun too: `torchrun --nproc_per_node 2 scripts/train_toy.py --out runs/toy_ddp`.
"""

import argparse
import sys

import torch

from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import PRESETS
from multistream.toy import toy_batch, toy_batch_fn, toy_streams
from multistream.trainer import TrainConfig, Trainer, dist_info


def main() -> None:
    try:
        run()
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        sys.exit(f"train_toy.py: error: {e}")


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "batch", "frames", "grad_accum", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    streams = toy_streams()
    cfg = PRESETS[args.preset](streams)
    torch.manual_seed(args.seed)
    model = RQTransformer(cfg)
    tc = TrainConfig(out_dir=args.out, max_steps=args.steps, lr=args.lr, warmup_steps=20,
                     weight_decay=0.0, grad_accum=args.grad_accum, ckpt_every=args.ckpt_every, seed=args.seed,
                     autocast=not args.fp32, progress=not args.no_progress)
    trainer = Trainer(model, cfg, tc, toy_batch_fn(args.batch, args.frames, seed=args.seed),
                      lambda m, b: lm_loss(m(b), streams), run_info={"batch": args.batch, "frames": args.frames})
    last = trainer.fit()
    rank, _ = dist_info()
    if rank == 0:
        model.eval()
        with torch.no_grad():
            held = lm_loss(model(toy_batch(64, args.frames, seed=10_000 + args.seed)), streams)
        loss = last.get("loss", float("nan"))
        print(f"final train loss {loss:.4f}; held-out token accuracy {held.accuracy['out']:.4f}")


if __name__ == "__main__":
    main()
