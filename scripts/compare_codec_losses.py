"""One arm of a short, controlled loss comparison for the codec: the same start, data, seed and step count, only the
reconstruction losses differ. Run one process per arm, then score each `OUT/checkpoint` with scripts/eval_codec.py.

usage: python scripts/compare_codec_losses.py --out runs/codec_cmp/mel --data data/codec_cmp/train.npz
           [--init checkpoints/codec_tiny | --preset tiny] [--steps 600] [--stft-weight 0] [--phase-weight 0]
           [--wave-weight 0] [--mel-weight 1] [--lr 3e-4] [--threads 1]

Trains on the engine Trainer (speech.codec.train.make_trainer), so it writes what scripts/train_codec.py writes:
OUT/checkpoint (config.json with the arm's LossConfig, model.safetensors, trainer state, phones.json; a killed arm
resumes from it when rerun), OUT/metrics.jsonl, OUT/loss.png, plus OUT/summary.json (mean losses of the first and
last 50 steps, seconds per step).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from multistream.checkpoint import config_from_dict, load_weights, read_config
from multistream.trainer import METRICS_FILE, read_metrics
from speech.codec.config import CodecConfig, preset
from speech.codec.data import ClipDataset, PhoneVocab, load_clip_cache
from speech.codec.model import MimiCodec
from speech.codec.train import make_trainer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", required=True)
p.add_argument("--data", default="data/codec_cmp/train.npz")
p.add_argument("--init", default="checkpoints/codec_tiny", help="start from these weights ('' = --preset, fresh)")
p.add_argument("--preset", default="tiny")
p.add_argument("--steps", type=int, default=600)
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--segment-frames", type=int, default=12)
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--mel-weight", type=float, default=1.0)
p.add_argument("--stft-weight", type=float, default=0.0)
p.add_argument("--phase-weight", type=float, default=0.0)
p.add_argument("--wave-weight", type=float, default=0.0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
if args.steps < 1 or args.batch_size < 1 or args.segment_frames < 1:
    p.error(f"--steps, --batch-size and --segment-frames must be >= 1, got {args.steps}, {args.batch_size}, "
            f"{args.segment_frames}")

torch.set_num_threads(args.threads)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
if args.init:
    cfg = config_from_dict(CodecConfig, read_config(args.init))
    vocab = PhoneVocab.load(Path(args.init) / "phones.json")
else:
    cfg = preset(args.preset)
    vocab = None
cfg.loss.mel_weight, cfg.loss.stft_weight = args.mel_weight, args.stft_weight
cfg.loss.phase_weight, cfg.loss.wave_weight = args.phase_weight, args.wave_weight
cfg.loss.__post_init__()  # validate the overrides
cache = load_clip_cache(args.data)
if vocab is None:
    vocab = PhoneVocab.from_labels(cache.labels, cfg.num_phones)
vocab.save(out / "phones.json")
torch.manual_seed(args.seed)
codec = MimiCodec(cfg)
if args.init:
    load_weights(args.init, codec)
trainer = make_trainer(codec, ClipDataset(cache, vocab, args.segment_frames), out, args.steps, args.batch_size,
                       lr=args.lr, seed=args.seed, ckpt_every=50, files={"phones.json": out / "phones.json"})
print(f"arm {out.name}: init={args.init or args.preset}, {len(cache)} clips ({cache.duration_s / 60:.1f} min), "
      f"loss {cfg.loss}")
t0, step0 = time.time(), trainer.step
trainer.fit()
sec_per_step = (time.time() - t0) / max(trainer.step - step0, 1)
rows = read_metrics(out / METRICS_FILE)


def avg(part, key):
    v = [r[key] for r in part if isinstance(r.get(key), int | float) and np.isfinite(r[key])]
    return float(np.mean(v)) if v else None


keys = [k for k in rows[-1] if k not in ("step", "lr", "tokens_per_s", "replaced")]
summary = {"arm": out.name, "init": args.init or args.preset, "steps": args.steps, "loss": vars(args),
           "first50": {k: avg(rows[:50], k) for k in keys}, "last50": {k: avg(rows[-50:], k) for k in keys},
           "sec_per_step": sec_per_step, "wall_s": time.time() - t0}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary["last50"]), f"{summary['sec_per_step']:.2f} s/step")
