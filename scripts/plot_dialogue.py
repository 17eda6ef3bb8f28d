"""Plot one duplex dialogue: both waveforms, word boundaries, and the agent's inner-monologue tokens per frame.

usage: python scripts/plot_dialogue.py DIR/train/train-0-0000000.wav [--out dialogue.png] [--start 0] [--end 12]
           [--tokenizer DIR/tokenizer.model]

Row 1: agent waveform (channel 0) with its words; row 2: user waveform (channel 1) with its words; row 3: the
agent's text stream on the 12.5 Hz frame grid: one cell per frame, text pieces in black, EPAD in red, PAD empty.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from multistream.cli import nonneg_float, positive_float  # noqa: E402
from speech.dataset import AGENT_LABEL, USER_LABEL, read_item, speaker_words  # noqa: E402
from speech.monologue import num_frames  # noqa: E402
from speech.text import TextTokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wav", type=Path)
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: beside the wav)")
    p.add_argument("--start", type=nonneg_float, default=0.0, help="window start (s)")
    p.add_argument("--end", type=positive_float, default=None, help="window end (s); default start + 12")
    p.add_argument("--tokenizer", type=Path, default=None, help="default: tokenizer.model in the dataset folder")
    args = p.parse_args()
    try:
        audio, sr, meta = read_item(args.wav)
    except ValueError as e:
        p.error(str(e))
    tok_path = args.tokenizer or args.wav.resolve().parent.parent / "tokenizer.model"
    if not tok_path.is_file():
        p.error(f"no tokenizer at {tok_path} (pass --tokenizer)")
    tok = TextTokenizer(tok_path)
    dur = audio.shape[1] / sr
    start = max(0.0, args.start)
    end = min(dur, args.end if args.end is not None else start + 12.0)
    if end <= start:
        p.error(f"empty window [{start}, {end}] for a {dur:.1f}s dialogue")
    fr = tok.frame_rate
    frames, _ = tok.frames(speaker_words(meta, AGENT_LABEL), num_frames(dur, fr))

    fig, axes = plt.subplots(
        3, 1, figsize=(max(12.0, (end - start) * 1.6), 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.6]}
    )
    a, b = int(start * sr), int(end * sr)
    t = np.arange(a, b) / sr
    for ax, ch, label, color in ((axes[0], 0, AGENT_LABEL, "tab:blue"), (axes[1], 1, USER_LABEL, "tab:green")):
        ax.plot(t, audio[ch, a:b], lw=0.4, color=color)
        ax.set_ylim(-1.05 * max(1e-3, np.abs(audio[:, a:b]).max()), 1.05 * max(1e-3, np.abs(audio[:, a:b]).max()))
        ax.set_ylabel(f"ch{ch} {'agent' if ch == 0 else 'user'}")
        top = ax.get_ylim()[1]
        for k, (w, s, e) in enumerate(speaker_words(meta, label)):
            if e < start or s > end:
                continue
            ax.axvspan(s, e, color=color, alpha=0.12 if k % 2 else 0.22, lw=0)
            ax.axvline(s, color="k", lw=0.5, alpha=0.6)
            ax.text(s, top * (0.88 - 0.14 * (k % 2)), w, fontsize=7, clip_on=True)
    for e in meta["events"]:
        if start <= e["time"] <= end:
            for ax in axes[:2]:
                ax.axvline(e["time"], color="red" if e["type"] == "interruption" else "orange", lw=1.2, ls="--")
            axes[0].text(e["time"], axes[0].get_ylim()[0] * 0.9, e["type"], color="red", fontsize=7, clip_on=True)
    ax = axes[2]
    f0, f1 = int(start * fr), min(len(frames), int(np.ceil(end * fr)))
    for f in range(f0, f1):
        x = f / fr
        ax.axvline(x, color="0.85", lw=0.5)
        tok_id = int(frames[f])
        if tok_id == tok.epad_id:
            ax.add_patch(plt.Rectangle((x, 0), 1 / fr, 1, color="red", alpha=0.35, lw=0))
            ax.text(x + 0.5 / fr, 0.5, "E", ha="center", va="center", fontsize=6, color="red")
        elif tok_id != tok.pad_id:
            ax.add_patch(plt.Rectangle((x, 0), 1 / fr, 1, color="tab:blue", alpha=0.2, lw=0))
            piece = tok.sp.id_to_piece(tok_id).replace("\u2581", "_")
            ax.text(x + 0.5 / fr, 0.5, piece, ha="center", va="center", fontsize=6, rotation=90)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("monologue\n12.5 Hz")
    ax.set_xlim(start, end)
    ax.set_xlabel("time (s)")
    pad = float(np.mean(frames == tok.pad_id))
    fig.suptitle(
        f"{meta['dialogue_id']}  user voice {meta['user_voice']['name']}  augment {meta['augment'] or '-'}"
        f"  PAD share {pad:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    out = args.out or args.wav.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
