"""Build the codec's TTS clip caches (train voices + agent; held-out voices) under data/codec/.

usage: python scripts/make_codec_data.py [--out data/codec] [--train-sentences 1200] [--heldout-per-voice 8]
"""

import argparse
import time
from pathlib import Path

from speech.codec.config import tiny
from speech.codec.data import assign_voices, build_clip_cache
from speech.corpus import sentences
from speech.voices import AGENT_VOICE, user_voices

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="data/codec")
p.add_argument("--train-sentences", type=int, default=1200)
p.add_argument("--agent-share", type=float, default=0.25, help="fraction of training clips spoken by the agent")
p.add_argument("--heldout-per-voice", type=int, default=8)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--only", choices=["train", "heldout"], default=None)
args = p.parse_args()

cfg = tiny()  # only the sample rate and frame size matter here; every preset shares them
out = Path(args.out)
t0 = time.time()
if args.only in (None, "heldout"):
    held = user_voices("heldout")
    texts = sentences("test", args.heldout_per_voice * len(held), seed=args.seed)
    items = [(t, held[i % len(held)]) for i, t in enumerate(texts)]
    c = build_clip_cache(out / "heldout.npz", items, cfg.frame_size, cfg.sample_rate)
    print(f"heldout: {len(c)} clips, {c.duration_s / 60:.1f} min, {len(held)} voices ({time.time() - t0:.0f} s)")
if args.only in (None, "train"):
    texts = sentences("train", args.train_sentences, seed=args.seed)
    items = assign_voices(texts, [AGENT_VOICE] + user_voices("train"), args.seed, args.agent_share)
    c = build_clip_cache(out / "train.npz", items, cfg.frame_size, cfg.sample_rate)
    print(f"train: {len(c)} clips, {c.duration_s / 60:.1f} min ({time.time() - t0:.0f} s)")
