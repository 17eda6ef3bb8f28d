"""Evaluate a trained codec on held-out voices against codec2 (1200, 3200 bps) and Opus (6 kbps), in one run.

usage: python scripts/eval_codec.py --ckpt checkpoints/codec_tiny [--heldout data/codec/heldout.npz]
           [--heldout-real data/codec/heldout_real.npz] [--train data/codec/train.npz]
           [--out checkpoints/codec_tiny/eval] [--max-clips 0] [--max-real-clips 0] [--wer-sentences 60]
           [--compare OTHER_CKPT ...]

Three held-out sets, every system on the same clips:
- held-out TTS voices (never trained on): SI-SDR (dB), multi-scale mel distance (the training loss's metric),
  STOI and wideband PESQ, after aligning the decoded audio to the reference by cross-correlation (+-60 ms);
- the held-out real speaker (speech.codec.real.HELDOUT_REAL_SPEAKER, recorded 16 kHz prompts, never trained on):
  the same metrics;
- intelligibility by an independent recognizer (pocketsphinx, its own English model from the PyPI wheel, offline):
  word error rate on sentences of speech.corpus test dialogues synthesized with the agent voice and with the
  held-out user voices, clean and through every codec (WER = word edits / reference words, over all sentences).
--compare scores more codec checkpoints on the same clips in the same run. Also a linear probe of phone identity per
80 ms frame: logistic regression trained on codec features of training-voice clips and tested on the held-out TTS
clips, for codebook 0 (semantic) against the acoustic codebooks. Writes OUT.json, OUT.md (tables) and OUT.png (bar
plots).
"""

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from multistream.cli import nonneg_int, positive_int, user_errors_exit
from speech.codec.data import IGNORE, NO_PHONE, PhoneVocab, load_clip_cache
from speech.codec.losses import MultiScaleMelLoss
from speech.codec.metrics import align, codec2_roundtrip, opus_roundtrip, pesq_wb, si_sdr, stoi
from speech.codec.model import load_codec

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--ckpt", default="checkpoints/codec_tiny")
p.add_argument("--heldout", default="data/codec/heldout.npz")
p.add_argument("--heldout-real", default="data/codec/heldout_real.npz", help="held-out real speaker; '' to skip")
p.add_argument("--max-real-clips", type=nonneg_int, default=0, help="0 = all; else an evenly spaced subset")
p.add_argument("--wer-sentences", type=nonneg_int, default=60, help="per group (agent / held-out users); 0 skips WER")
p.add_argument("--wer-min-words", type=nonneg_int, default=4, help="shorter test sentences are not used for WER")
p.add_argument("--skip-probe", action="store_true")
p.add_argument("--train", default="data/codec/train.npz", help="clips for fitting the linear phone probe")
p.add_argument("--probe-clips", type=positive_int, default=400)
p.add_argument("--out", default=None, help="output prefix; default CKPT/eval")
p.add_argument("--max-clips", type=nonneg_int, default=0, help="0 = all held-out clips")
p.add_argument("--threads", type=positive_int, default=1)
p.add_argument("--name", default=None, help="label of the codec in the table; default: checkpoint dir name")
p.add_argument("--compare", nargs="*", default=[],
               help="more codec checkpoints scored on the same clips in the same run (rows of every table but the "
                    "phone probe, which is --ckpt's)")
args = p.parse_args()
user_errors_exit("eval_codec.py")  # bad paths/values end in a one-line error, not a traceback

torch.set_num_threads(args.threads)
t0 = time.time()
ckpt = Path(args.ckpt)
out = Path(args.out) if args.out else ckpt / "eval"
codec = load_codec(ckpt)  # before any directory is made: a wrong --ckpt leaves nothing behind


def _label(path: Path) -> str:
    return path.parent.name if path.name == "checkpoint" else path.name


others = {_label(Path(c)): load_codec(c) for c in args.compare}
out.parent.mkdir(parents=True, exist_ok=True)
cfg = codec.cfg
sr = cfg.sample_rate
name = args.name or _label(ckpt)
held = load_clip_cache(args.heldout)
idx = list(range(len(held)))[: args.max_clips or None]
mel = MultiScaleMelLoss(sr, cfg.loss.mel_scales, cfg.loss.n_mels)
max_shift = int(0.06 * sr)

systems = {  # label -> (kind, bitrate in bps, our codec or None)
    **{f"{n} ({c.cfg.bitrate / 1000:.2f} kbps)": ("ours", c.cfg.bitrate, c)
       for n, c in ({name: codec} | others).items()},
    "codec2 1200": ("c2", 1200, None),
    "codec2 3200": ("c2", 3200, None),
    "opus 6 kbps": ("opus", 6000, None),
}
opus_bits = {"bytes": 0, "seconds": 0.0}


@torch.no_grad()
def reconstruct(model, x: np.ndarray) -> np.ndarray:
    """Encode then decode float32 [N] (padded up to whole frames), cropped back to N."""
    audio = torch.from_numpy(x)[None, None]
    return model.decode(model.encode(model.pad_to_frame(audio)))[0, 0, : len(x)].numpy()


def roundtrip(kind: str, rate: float, model, ref: np.ndarray) -> np.ndarray:
    if kind == "ours":
        return reconstruct(model, ref)
    if kind == "c2":
        return codec2_roundtrip(ref, sr, int(rate))
    est, size = opus_roundtrip(ref, sr, rate / 1000)
    opus_bits["bytes"] += size
    opus_bits["seconds"] += len(ref) / sr
    return est


def score_clips(cache, clip_ids, desc):
    scores = {s: {"si_sdr": [], "mel": [], "stoi": [], "pesq": [], "lag": []} for s in systems}
    seconds = 0.0
    for i in tqdm(clip_ids, desc=desc, mininterval=5):
        ref = cache.clip(i)
        seconds += len(ref) / sr
        for sname, system in systems.items():
            est, lag = align(roundtrip(*system, ref), ref, max_shift)
            s = scores[sname]
            s["lag"].append(lag)
            s["si_sdr"].append(si_sdr(est, ref))
            with torch.no_grad():
                s["mel"].append(float(mel(torch.from_numpy(est)[None, None], torch.from_numpy(ref)[None, None])))
            s["stoi"].append(stoi(est, ref, sr))
            s["pesq"].append(pesq_wb(est, ref, sr))
    return scores, seconds


scores, total_s = score_clips(held, idx, "held-out TTS clips")
real = None
if args.heldout_real:
    real = load_clip_cache(args.heldout_real)
    ridx = list(range(len(real)))
    if args.max_real_clips and args.max_real_clips < len(ridx):  # evenly spaced: every kind of prompt
        ridx = [int(j) for j in np.linspace(0, len(real) - 1, args.max_real_clips).round()]
    real_scores, real_s = score_clips(real, ridx, "held-out real speaker")


# ---- intelligibility: an independent recognizer (pocketsphinx) on clean vs decoded speech ----------------------
from speech.asr import Recognizer, edit_distance, words  # noqa: E402

wer = None
if args.wer_sentences:
    from speech.corpus import sentences
    from speech.tts import synthesize
    from speech.voices import AGENT_VOICE, user_voices

    asr = Recognizer()  # the wheel's own en-us acoustic model, LM and dictionary

    def recognize(x: np.ndarray) -> str:
        return asr(x, sr)

    pool = [t for t in sentences("test", 2000, seed=0) if len(words(t)) >= args.wer_min_words]
    held_voices = user_voices("heldout")
    groups = {"agent voice": [(t, AGENT_VOICE) for t in pool[: args.wer_sentences]],
              "held-out user voices": [(t, held_voices[j % len(held_voices)])
                                       for j, t in enumerate(pool[args.wer_sentences: 2 * args.wer_sentences])]}
    wer = {g: {"clean": [0, 0]} | {s: [0, 0] for s in systems} for g in groups}  # [edits, reference words]
    examples = []
    for g, items in groups.items():
        for text, voice in tqdm(items, desc=f"WER {g}", mininterval=5):
            try:
                ref = np.asarray(synthesize(text, voice).audio, dtype=np.float32)
            except (RuntimeError, ValueError) as e:
                print(f"WER: skipped {text!r} ({voice.name}): {e}")
                continue
            truth = words(text)
            for sname, system in ({"clean": ("clean", 0, None)} | systems).items():
                audio = ref if sname == "clean" else align(roundtrip(*system, ref), ref, max_shift)[0]
                hyp = recognize(audio)
                wer[g][sname][0] += edit_distance(truth, words(hyp))
                wer[g][sname][1] += len(truth)
                if len(examples) < 12 and sname in ("clean", next(iter(systems))):
                    examples.append({"group": g, "system": sname, "text": text, "heard": hyp})


# ---- linear phone probe: codebook 0 vs acoustic codebooks ----------------------------------------------------
vocab = PhoneVocab.load(ckpt / "phones.json")


@torch.no_grad()
def features(cache, clip_ids):
    sem, ac, ac1, head, labels = [], [], [], [], []
    for i in clip_ids:
        x = torch.from_numpy(cache.clip(i))[None, None]  # [1, 1, N]
        codes = codec.encode(x)  # [1, K, T]
        s, a = codec.semantic_features(codes)  # [1, T, D] each
        a1 = rearrange(codec.quantizer.rvq_rest.decode(codes[:, 1:2].long()), "b d t -> b t d")  # [1, T, D]
        sem.append(s[0])
        ac.append(a[0])
        ac1.append(a1[0])
        head.append(codec.semantic_head(s[0]).argmax(-1))
        labels.append(torch.from_numpy(vocab.encode(cache.labels[i])))
    return {"sem": torch.cat(sem), "ac": torch.cat(ac), "ac1": torch.cat(ac1), "head": torch.cat(head),
            "y": torch.cat(labels)}


def probe(train_x, train_y, test_x, test_y, classes, steps=300):
    keep_tr, keep_te = train_y != IGNORE, test_y != IGNORE
    train_x, train_y, test_x, test_y = train_x[keep_tr], train_y[keep_tr], test_x[keep_te], test_y[keep_te]
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    lin = torch.nn.Linear(train_x.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-4)
    xn = (train_x - mu) / sd
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(xn), train_y).backward()
        opt.step()
    with torch.no_grad():
        return float((lin((test_x - mu) / sd).argmax(-1) == test_y).float().mean())


probe_res, probe_ids, valid = {}, [], torch.zeros(0, dtype=torch.bool)
if not args.skip_probe:
    train_cache = load_clip_cache(args.train)
    labelled = [j for j, lab in enumerate(train_cache.labels) if any(p != NO_PHONE for p in lab)]  # TTS clips
    rng = np.random.default_rng(0)
    probe_ids = sorted(rng.choice(labelled, size=min(args.probe_clips, len(labelled)), replace=False).tolist())
    ftr, fte = features(train_cache, probe_ids), features(held, idx)
    valid = fte["y"] != IGNORE
    majority = int(torch.bincount(ftr["y"][ftr["y"] != IGNORE]).argmax())
    probe_res = {
        "codebook 0 (semantic)": probe(ftr["sem"], ftr["y"], fte["sem"], fte["y"], len(vocab)),
        "codebook 1 (first acoustic)": probe(ftr["ac1"], ftr["y"], fte["ac1"], fte["y"], len(vocab)),
        f"codebooks 1-{codec.num_codebooks - 1} (all acoustic)": probe(ftr["ac"], ftr["y"], fte["ac"], fte["y"],
                                                                         len(vocab)),
        "distillation head on codebook 0 (trained jointly)": float((fte["head"] == fte["y"])[valid].float().mean()),
        "majority class (pau) baseline": float((fte["y"][valid] == majority).float().mean()),
    }


# ---- report ----------------------------------------------------------------------------------------------------
def mean(v):
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def summarize(sc):
    return {s: {k: mean(v) for k, v in m.items() if k != "lag"}
            | {"bitrate_bps": systems[s][1], "n": len(m["stoi"]),
               "pesq_failed": int(sum(math.isnan(x) for x in m["pesq"])),
               "stoi_undefined": int(sum(math.isnan(x) for x in m["stoi"])),
               "median_lag_samples": float(np.median(m["lag"]))}
            for s, m in sc.items()}


measured_opus = opus_bits["bytes"] * 8 / max(opus_bits["seconds"], 1e-9)
table = summarize(scores)
table_real = summarize(real_scores) if real is not None else None
wer_table = None
if wer is not None:
    wer_table = {g: {s: {"wer": e / max(n, 1), "edits": e, "words": n} for s, (e, n) in m.items()}
                 for g, m in wer.items()}
result = {
    "checkpoint": str(ckpt), "compared": list(args.compare), "heldout": args.heldout, "clips": len(idx),
    "minutes": total_s / 60,
    "voices": sorted({held.voices[i] for i in idx}), "systems": table,
    "heldout_real": None if real is None else {"path": args.heldout_real, "clips": len(ridx), "minutes": real_s / 60,
                                               "speakers": sorted({real.voices[i] for i in ridx}),
                                               "systems": table_real},
    "wer": None if wer_table is None else {"recognizer": "pocketsphinx (PyPI wheel, en-us model)",
                                           "sentences_per_group": args.wer_sentences,
                                           "min_words": args.wer_min_words, "groups": wer_table,
                                           "examples": examples},
    "opus_measured_bitrate_bps_with_ogg": measured_opus,
    "phone_probe_accuracy": probe_res, "probe_train_clips": len(probe_ids), "probe_test_frames": int(valid.sum()),
    "wall_s": time.time() - t0,
}
Path(f"{out}.json").write_text(json.dumps(result, indent=2))


def metric_table(tab):
    rows = ["| system | bitrate (bps) | SI-SDR (dB) | mel distance | STOI | PESQ-WB |", "|---|---|---|---|---|---|"]
    rows += [f"| {s} | {r['bitrate_bps']:.0f} | {r['si_sdr']:.2f} | {r['mel']:.3f} | {r['stoi']:.3f} | "
             f"{r['pesq']:.2f} |" for s, r in tab.items()]
    return rows


first = next(iter(table.values()))
lines = [f"# Codec evaluation: `{ckpt}`", "",
         f"## Held-out TTS voices: {len(idx)} clips ({total_s / 60:.1f} min, {len(result['voices'])} voices)", ""]
lines += metric_table(table)
if table_real is not None:
    lines += ["", f"## Held-out real speaker ({', '.join(result['heldout_real']['speakers'])}, recorded 16 kHz "
              f"prompts, never trained on): {len(ridx)} clips ({real_s / 60:.1f} min)", ""]
    lines += metric_table(table_real)
if wer_table is not None:
    groups = list(wer_table)
    lines += ["", f"## Intelligibility: pocketsphinx word error rate ({args.wer_sentences} test-dialogue sentences "
              f"of >= {args.wer_min_words} words per group; lower is better)", "",
              "| system | " + " | ".join(f"WER {g} | x clean" for g in groups) + " |",
              "|---|" + "---|---|" * len(groups)]
    for sname in ["clean"] + list(systems):
        cells = []
        for g in groups:
            w, c = wer_table[g][sname]["wer"], wer_table[g]["clean"]["wer"]
            cells.append(f"{w:.3f} | {w / c:.2f}" if c > 0 else f"{w:.3f} | -")
        lines.append(f"| {sname} | " + " | ".join(cells) + " |")
lines += ["", f"Opus measured bitrate including Ogg overhead: {measured_opus:.0f} bps. Decoded audio aligned to the "
          "reference by cross-correlation (+-60 ms) for every system; PESQ-WB at 16 kHz; STOI at 10 kHz (pystoi), "
          f"averaged over the clips long enough for STOI (pystoi needs 30 non-silent 25.6 ms frames; "
          f"{first['n'] - first['stoi_undefined']} of {first['n']} TTS clips)."]
if probe_res:
    lines += ["", f"## Linear phone probe (per 80 ms frame; fit on {len(probe_ids)} training-voice clips, "
              f"tested on {int(valid.sum())} held-out frames, {len(vocab)} phone classes)", "",
              "| features | accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in probe_res.items()]
Path(f"{out}.md").write_text("\n".join(lines) + "\n")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

panels = [(table, "held-out TTS")] + ([(table_real, "held-out real speaker")] if table_real is not None else [])
fig, axes = plt.subplots(len(panels), 4, figsize=(16, 4 * len(panels)), squeeze=False)
labels = list(table)
for row, (tab, where) in zip(axes, panels, strict=True):
    for ax, key, title in zip(row, ["stoi", "pesq", "si_sdr", "mel"],
                              ["STOI (higher better)", "PESQ-WB (higher better)", "SI-SDR dB (higher better)",
                               "mel distance (lower better)"], strict=True):
        ax.bar(range(len(labels)), [tab[s][key] for s in labels], color=[f"C{j}" for j in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{where}: {title}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig(f"{out}.png", dpi=90)
print("\n".join(lines))
print(f"wrote {out}.json, {out}.md, {out}.png in {time.time() - t0:.0f} s")
