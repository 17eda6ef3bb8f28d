"""Start a codec run from given weights with chosen reconstruction losses: one arm of a controlled loss comparison
(same start, data, seed and steps; only the losses differ), or the first phase of a long fine-tuning run.

usage: python scripts/compare_codec_losses.py --out runs/codec_cmp/mel --data data/codec_cmp/train.npz
           [--init checkpoints/codec_tiny | --init '' --preset tiny] [--steps 300] [--minutes M]
           [--stft-weight 0] [--phase-weight 0] [--wave-weight 0] [--mel-weight 1] [--lr 3e-4] [--threads 1]
           [--head init|seanet|hnr|seanet+hnr]

Runs on the engine's Trainer (speech.codec.train.make_trainer), so OUT is an ordinary codec run directory
(`checkpoint/` with config.json holding this arm's LossConfig, metrics.jsonl, loss.png, phones.json); continue it
exactly, with a new --minutes budget, with
    python scripts/train_codec.py --data DATA --out OUT --resume --steps STEPS --lr LR --warmup-steps 50 \\
        --batch-size B --segment-frames F --threads 1 [--minutes M]
(the same --lr, --batch-size, --segment-frames as here; --steps may grow). Also writes OUT/summary.json (mean
metrics of the first and last 50 logged steps). Score the result with scripts/eval_codec.py --ckpt OUT/checkpoint.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from multistream.checkpoint import config_from_dict, load_weights, read_config
from multistream.cli import user_errors_exit
from multistream.trainer import CHECKPOINT_DIR, METRICS_FILE
from speech.codec.config import CodecConfig, preset
from speech.codec.data import ClipDataset, PhoneVocab, load_clip_cache
from speech.codec.model import MimiCodec
from speech.codec.train import make_trainer

PHONES = "phones.json"

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", required=True)
p.add_argument("--data", default="data/codec_cmp/train.npz")
p.add_argument("--init", default="checkpoints/codec_tiny", help="start from these weights ('' = --preset, fresh)")
p.add_argument("--preset", default="tiny")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--segment-frames", type=int, default=12)
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--warmup-steps", type=int, default=50)
p.add_argument("--mel-weight", type=float, default=1.0)
p.add_argument("--stft-weight", type=float, default=0.0)
p.add_argument("--phase-weight", type=float, default=0.0)
p.add_argument("--wave-weight", type=float, default=0.0)
p.add_argument("--head", choices=["init", "seanet", "hnr", "seanet+hnr"], default="init",
               help="decoder output (speech.codec.config.HEADS); 'init' keeps --init's. Parts the init lacks (e.g. "
                    "the harmonic-plus-noise head added to a SEANet codec) start fresh and are listed")
p.add_argument("--adversarial", action="store_true",
               help="add the MS-STFT discriminator's adversarial + feature-matching losses (Mimi's; LossConfig "
                    "adv_weight / feat_weight) to this arm")
p.add_argument("--disc-lr", type=float, default=3e-4, help="the discriminator's learning rate (with --adversarial)")
p.add_argument("--disc-scales", type=int, nargs="+", default=None,
               help="STFT sizes of the discriminator's scales (default: the init's LossConfig.disc_scales)")
p.add_argument("--disc-filters", type=int, default=None, help="the discriminator's conv width (default: the init's)")
p.add_argument("--transformer-layers", type=int, default=None,
               help="grow the bottleneck transformers (encoder and decoder) to this many layers: the init's layers "
                    "are kept, the new ones are appended and start near identity (LayerScale)")
p.add_argument("--ckpt-every", type=int, default=100)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
args = p.parse_args()
user_errors_exit("compare_codec_losses.py")  # bad paths/values end in a one-line error, not a traceback
if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
    raise SystemExit(f"--device {args.device}: this machine has no CUDA device")
if args.steps < 1 or args.batch_size < 1 or args.segment_frames < 1:
    raise SystemExit(f"--steps/--batch-size/--segment-frames must be >= 1, got {args.steps}, {args.batch_size}, "
                     f"{args.segment_frames}")

torch.set_num_threads(args.threads)
out = Path(args.out)
if (out / CHECKPOINT_DIR).exists():
    raise SystemExit(f"{out} already holds a run; continue it with scripts/train_codec.py --resume (see -h)")
if args.init:
    cfg = config_from_dict(CodecConfig, read_config(args.init))
    vocab = PhoneVocab.load(Path(args.init) / PHONES)
else:
    cfg = preset(args.preset)
    vocab = None
cfg.loss.mel_weight, cfg.loss.stft_weight = args.mel_weight, args.stft_weight
cfg.loss.phase_weight, cfg.loss.wave_weight = args.phase_weight, args.wave_weight
cfg.loss.adversarial = cfg.loss.adversarial or args.adversarial
if args.disc_scales:
    cfg.loss.disc_scales = tuple(args.disc_scales)
if args.disc_filters:
    cfg.loss.disc_filters = args.disc_filters
cfg.loss.__post_init__()  # validate the overrides
if args.head != "init":
    cfg.head = args.head
grow = args.transformer_layers is not None and args.transformer_layers != cfg.transformer.num_layers
if grow:
    if args.transformer_layers < cfg.transformer.num_layers:
        raise SystemExit(f"--transformer-layers {args.transformer_layers} would drop layers of the init "
                         f"({cfg.transformer.num_layers}); it can only grow them")
    cfg.transformer.num_layers = args.transformer_layers
cache = load_clip_cache(args.data)
if vocab is None:
    vocab = PhoneVocab.from_labels(cache.labels, cfg.num_phones)
out.mkdir(parents=True, exist_ok=True)
vocab.save(out / PHONES)
torch.manual_seed(args.seed)
codec = MimiCodec(cfg)
if args.init:
    fresh = load_weights(args.init, codec, allow_missing=args.head != "init" or grow)
    if fresh:
        print(f"not in --init, starting fresh: {sorted({k.split('.')[0] for k in fresh})} ({len(fresh)} tensors)")
trainer = make_trainer(codec, ClipDataset(cache, vocab, args.segment_frames), out, args.steps, args.batch_size,
                       lr=args.lr, disc_lr=args.disc_lr, warmup_steps=args.warmup_steps, seed=args.seed,
                       ckpt_every=args.ckpt_every,
                       max_minutes=args.minutes, files={PHONES: out / PHONES}, device=args.device)
print(f"arm {out.name}: init={args.init or args.preset}, {len(cache)} clips ({cache.duration_s / 60:.1f} min), "
      f"loss {cfg.loss}")
t0 = time.time()
trainer.fit()
rows = [json.loads(ln) for ln in (out / METRICS_FILE).read_text().splitlines() if ln.strip()]


def avg(part, key):
    v = [r[key] for r in part if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    return float(np.mean(v)) if v else None


keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float))} - {"step"})
summary = {"arm": out.name, "init": args.init or args.preset, "steps": trainer.step, "args": vars(args),
           "first50": {k: avg(rows[:50], k) for k in keys}, "last50": {k: avg(rows[-50:], k) for k in keys},
           "wall_s": time.time() - t0}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary["last50"]))
