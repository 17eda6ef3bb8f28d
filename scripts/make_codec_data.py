"""Build the codec's clip caches under data/codec/: TTS (every backend and training voice, augmented) and real
recorded speech (Debian Asterisk prompts, six training speakers), plus held-out TTS voices and a held-out real
speaker. Resumable (rerun the same command); installs nothing (scripts/setup.sh installs the Debian packages).

usage: python scripts/make_codec_data.py [--out data/codec] [--train-sentences 3000] [--voices-per-sentence 1]
           [--augment-share 0.5] [--real-copies 1] [--heldout-per-voice 8] [--only train|heldout|heldout-real]
       python scripts/make_codec_data.py --out data/codec --snapshot data/codec/train_partial.npz

Writes OUT/train.npz (TTS + real training speakers), OUT/heldout.npz (held-out TTS voices, test-split sentences,
clean) and OUT/heldout_real.npz (every prompt of speech.codec.real.HELDOUT_REAL_SPEAKER, clean), and
OUT/data_stats.json (per-source minutes, clips, skipped). Real clips carry no phone labels (the phone loss ignores
them). Never reads the English Asterisk prompt packages.
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from multistream.cli import user_errors_exit
from speech.codec.config import tiny
from speech.codec.data import NO_PHONE, ClipAugment, assign_voices, build_cache, real_job, snapshot_partial, tts_job
from speech.codec.real import real_speakers, speaker_files
from speech.corpus import sentences
from speech.voices import AGENT_VOICE, user_voices

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="data/codec")
p.add_argument("--train-sentences", type=int, default=3000, help="distinct train-split sentences for TTS")
p.add_argument("--voices-per-sentence", type=int, default=1, help="TTS clips (different voices) per sentence")
p.add_argument("--agent-share", type=float, default=0.25, help="fraction of TTS clips spoken by the agent voice")
p.add_argument("--augment-share", type=float, default=0.5, help="fraction of TTS clips with pitch/rate/formant "
               "shifts and (half of those) noise/reverb/band-limiting")
p.add_argument("--real-copies", type=int, default=1, help="augmented copies of each real training prompt, besides "
               "the clean one")
p.add_argument("--no-real", action="store_true", help="TTS only")
p.add_argument("--heldout-per-voice", type=int, default=8)
p.add_argument("--shard-size", type=int, default=200)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--only", choices=["train", "heldout", "heldout-real"], default=None)
p.add_argument("--snapshot", default=None, metavar="PATH", help="write the train shards built so far (of an "
               "unfinished build) to PATH and exit; the build stays resumable")
args = p.parse_args()
user_errors_exit("make_codec_data.py")  # bad paths/values end in a one-line error, not a traceback
if args.snapshot:
    c = snapshot_partial(Path(args.out) / "train.npz", args.snapshot)
    real = sum(1 for lab in c.labels if lab and lab[0] == NO_PHONE)
    print(f"{args.snapshot}: {len(c)} clips ({real} recorded), {c.duration_s / 60:.1f} min")
    raise SystemExit(0)
for name in ("train_sentences", "voices_per_sentence", "heldout_per_voice"):
    if getattr(args, name) < 1:
        raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
if not 0.0 <= args.augment_share <= 1.0 or not 0.0 <= args.agent_share <= 1.0:
    raise SystemExit(f"--augment-share / --agent-share must be in [0, 1], got {args.augment_share}, {args.agent_share}")

cfg = tiny()  # only the sample rate and frame size matter here; every preset shares them
out = Path(args.out)
stats_path = out / "data_stats.json"
stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
aug = ClipAugment()


def summary(name, cache, t0):
    kinds = Counter(cache.voices)
    minutes = {v: 0.0 for v in kinds}
    for i, v in enumerate(cache.voices):
        minutes[v] += (cache.offsets[i + 1] - cache.offsets[i]) / cache.sample_rate / 60
    with np.load(out / f"{name}.npz", allow_pickle=False) as z:
        skipped = json.loads(str(z["meta"])).get("skipped", [])
    stats[name] = {"clips": len(cache), "minutes": round(cache.duration_s / 60, 2), "voices": len(kinds),
                   "skipped": len(skipped), "skip_reasons": Counter(e.split(":")[0][:60] for _, e in skipped),
                   "minutes_by_voice": {k: round(v, 2) for k, v in sorted(minutes.items())},
                   "build_s": round(time.time() - t0, 1)}
    stats_path.write_text(json.dumps(stats, indent=2))
    print(f"{name}: {len(cache)} clips, {cache.duration_s / 60:.1f} min, {len(kinds)} voices/speakers, "
          f"{len(skipped)} skipped ({time.time() - t0:.0f} s)")


if args.only in (None, "heldout"):
    t0 = time.time()
    held = user_voices("heldout")
    texts = sentences("test", args.heldout_per_voice * len(held), seed=args.seed)
    jobs = [tts_job(t, held[i % len(held)]) for i, t in enumerate(texts)]
    summary("heldout", build_cache(out / "heldout.npz", jobs, cfg.frame_size, cfg.sample_rate,
                                   shard_size=args.shard_size), t0)
if args.only in (None, "heldout-real"):
    t0 = time.time()
    jobs = [real_job(f, s.name) for s in real_speakers("heldout") for f in speaker_files(s)]
    summary("heldout_real", build_cache(out / "heldout_real.npz", jobs, cfg.frame_size, cfg.sample_rate,
                                        shard_size=args.shard_size, split_long=True), t0)
if args.only in (None, "train"):
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    texts = sentences("train", args.train_sentences, seed=args.seed) * args.voices_per_sentence
    pairs = assign_voices(texts, [AGENT_VOICE] + user_voices("train"), args.seed, args.agent_share)
    jobs = [tts_job(t, v, int(rng.integers(2**31)) if rng.random() < args.augment_share else None, aug)
            for t, v in pairs]
    if not args.no_real:
        for s in real_speakers("train"):
            for f in speaker_files(s):
                jobs.append(real_job(f, s.name))
                jobs += [real_job(f, s.name, int(rng.integers(2**31)), aug) for _ in range(args.real_copies)]
    order = rng.permutation(len(jobs))  # mix sources within every shard (a partial build is still balanced)
    jobs = [jobs[i] for i in order]
    summary("train", build_cache(out / "train.npz", jobs, cfg.frame_size, cfg.sample_rate,
                                 shard_size=args.shard_size, split_long=True), t0)
