"""Train the Mimi-style codec on cached clips (see scripts/make_codec_data.py) with the engine's Trainer.

usage: python scripts/train_codec.py --preset tiny --data data/codec/train.npz --out runs/codec/tiny
           [--steps 2000] [--minutes 60] [--batch-size 8] [--segment-frames 12] [--ckpt-every 50]
           [--resume | --overwrite]

Writes to --out what every training script writes (multistream.trainer): `checkpoint/` (atomic: config.json,
model.safetensors, trainer_state.json + .safetensors, phones.json), `metrics.jsonl` and `loss.png`. --resume
continues from `checkpoint/` exactly where it stopped (same batches, same random draws) and refuses settings that
differ from the checkpoint's. An --out that already holds a run is never replaced silently: pass --resume to
continue it or --overwrite to start afresh (deletes its checkpoint, metrics and plot, nothing else). --minutes
stops at a wall-clock budget (checkpoint saved), so a run can be resumed later with a new budget.
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

from multistream.atomic import recover_dir
from multistream.checkpoint import config_from_dict, read_config
from multistream.trainer import CHECKPOINT_DIR, METRICS_FILE, PLOT_FILE
from speech.codec.config import PRESETS, CodecConfig, preset
from speech.codec.data import ClipDataset, PhoneVocab, load_clip_cache
from speech.codec.model import MimiCodec
from speech.codec.train import make_trainer

PHONES = "phones.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--data", default="data/codec/train.npz")
    p.add_argument("--out", default="runs/codec/tiny")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-frames", type=int, default=12, help="crop length in 80 ms frames")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--disc-lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--adversarial", choices=["on", "off", "preset"], default="preset")
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (a GPU run of the same recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    g.add_argument("--overwrite", action="store_true", help="start afresh, deleting OUT's checkpoint, metrics, plot")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "segment_frames", "ckpt_every", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        p.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    for name in ("lr", "disc_lr"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            p.error(f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(args, name)}")
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        p.error(f"--minutes must be a finite number > 0, got {args.minutes}")
    check_device(p, args.device)
    return args


def check_device(p: argparse.ArgumentParser, device: str) -> None:
    """A clear error for a device this machine does not have (before any data is read)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        p.error(f"--device {device!r} is not a device (cpu, cuda, cuda:N)")
    if dev.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {device}: this machine has no CUDA device (torch.cuda.is_available() is False)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; pass a directory")
    ckpt = out / CHECKPOINT_DIR
    made_here = [ckpt, out / METRICS_FILE, out / PLOT_FILE, out / PHONES]
    if args.resume:
        if out.is_dir():
            recover_dir(ckpt)  # this process is the run's writer: finish a save a crash cut short
        if not (ckpt / "config.json").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}; start a new run without --resume")
    elif any(p.exists() for p in made_here) and not args.overwrite:
        held = ", ".join(p.name for p in made_here if p.exists())
        raise FileExistsError(f"{out} already holds a codec run ({held}); pass --resume to continue it or "
                              "--overwrite to start afresh")
    cache = load_clip_cache(args.data)  # before --overwrite deletes anything: a bad --data keeps the old run
    if args.overwrite:
        for p in made_here:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    if args.resume:
        cfg = config_from_dict(CodecConfig, read_config(ckpt))
        vocab = PhoneVocab.load(ckpt / PHONES)
    else:
        cfg = preset(args.preset)
        if args.adversarial != "preset":
            cfg.loss.adversarial = args.adversarial == "on"
        vocab = PhoneVocab.from_labels(cache.labels, cfg.num_phones)
    out.mkdir(parents=True, exist_ok=True)
    (out / PHONES).write_text(json.dumps(vocab.names))
    torch.manual_seed(args.seed)  # before the model is built: --seed decides the initial weights too
    codec = MimiCodec(cfg)
    dataset = ClipDataset(cache, vocab, args.segment_frames)
    trainer = make_trainer(codec, dataset, out, args.steps, args.batch_size, lr=args.lr, disc_lr=args.disc_lr,
                           warmup_steps=args.warmup_steps, seed=args.seed, ckpt_every=args.ckpt_every,
                           max_minutes=args.minutes, progress=not args.no_progress, files={PHONES: out / PHONES},
                           device=args.device)
    n_params = sum(p.numel() for p in codec.parameters())
    print(f"{args.preset}: {n_params / 1e6:.2f} M params, {cfg.bitrate:.0f} bps, {len(cache)} clips "
          f"({cache.duration_s / 60:.1f} min), adversarial={cfg.loss.adversarial}")
    last = trainer.fit()
    print(f"done: step {trainer.step}, mel {last.get('loss/mel', float('nan')):.4f}, checkpoint {ckpt}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        sys.exit(f"train_codec.py: error: {e}")
