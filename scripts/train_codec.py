"""Train the Mimi-style codec on cached TTS clips (see scripts/make_codec_data.py), with exact resume.

usage: python scripts/train_codec.py --preset tiny --data data/codec/train.npz --out runs/codec/tiny
           [--steps 2000] [--minutes 60] [--batch-size 8] [--segment-frames 12] [--ckpt-every 50] [--resume]

Writes to --out: `ckpt/` (atomic checkpoint: config.json, model.safetensors, trainer_state.pt, phones.json),
`metrics.jsonl` (one line per step), `loss.png` (updated at each checkpoint). --resume continues from `ckpt/`
exactly where it stopped (same batches, same random draws). --minutes stops at a wall-clock budget (checkpoint
saved), so a run can be resumed later with a new budget.
"""

import argparse
import json
import time
from pathlib import Path

import matplotlib
import torch
from tqdm import tqdm

from multistream.checkpoint import config_from_dict, load_trainer_state, load_weights, read_config, save_checkpoint
from speech.codec.config import CodecConfig, preset
from speech.codec.data import ClipDataset, PhoneVocab, load_clip_cache
from speech.codec.model import MimiCodec
from speech.codec.train import CodecTrainer, TrainConfig

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="tiny", choices=["tiny", "mimi"])
p.add_argument("--data", default="data/codec/train.npz")
p.add_argument("--out", default="runs/codec/tiny")
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--segment-frames", type=int, default=12, help="crop length in 80 ms frames")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--adversarial", choices=["on", "off", "preset"], default="preset")
p.add_argument("--ckpt-every", type=int, default=50)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt")
args = p.parse_args()

torch.set_num_threads(args.threads)
out = Path(args.out)
ckpt_dir = out / "ckpt"
metrics_path = out / "metrics.jsonl"
out.mkdir(parents=True, exist_ok=True)
cache = load_clip_cache(args.data)
tcfg = TrainConfig(
    steps=args.steps, batch_size=args.batch_size, segment_frames=args.segment_frames, lr=args.lr, seed=args.seed
)

if args.resume:
    cfg = config_from_dict(CodecConfig, read_config(ckpt_dir))
    vocab = PhoneVocab.load(ckpt_dir / "phones.json")
else:
    cfg = preset(args.preset)
    if args.adversarial != "preset":
        cfg.loss.adversarial = args.adversarial == "on"
    vocab = PhoneVocab.from_labels(cache.labels, cfg.num_phones)
    vocab.save(out / "phones.json")
codec = MimiCodec(cfg)
trainer = CodecTrainer(codec, ClipDataset(cache, vocab, args.segment_frames), tcfg)
if args.resume:
    load_weights(ckpt_dir, codec)
    state = load_trainer_state(ckpt_dir)
    if state is None:
        raise SystemExit(f"no trainer state in {ckpt_dir}; cannot resume")
    trainer.load_state_dict(state)
    # drop metric lines written after the checkpoint, so the log matches the resumed run exactly
    lines = [ln for ln in metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= trainer.step_count]
    metrics_path.write_text("".join(ln + "\n" for ln in lines))
    print(f"resumed at step {trainer.step_count}")
elif metrics_path.exists():
    metrics_path.unlink()
(out / "phones.json").write_text(json.dumps(vocab.names))

n_params = sum(p.numel() for p in codec.parameters())
print(
    f"{args.preset}: {n_params / 1e6:.2f} M params, {cfg.bitrate:.0f} bps, {len(cache)} clips "
    f"({cache.duration_s / 60:.1f} min), adversarial={cfg.loss.adversarial}"
)


def plot() -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines()]
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    steps = [r["step"] for r in rows]
    for ax, keys in zip(axes, [("mel",), ("phone_ce", "commit"), ("phone_acc", "entropy")], strict=True):
        for k in keys:
            ax.plot(steps, [r[k] for r in rows], label=k, alpha=0.8)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"codec {args.preset} training")
    fig.tight_layout()
    tmp = out / ".loss.png.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out / "loss.png")


def save() -> None:
    save_checkpoint(ckpt_dir, codec, cfg, extra=trainer.state_dict(), files={"phones.json": out / "phones.json"})
    plot()


t_start = time.time()
bar = tqdm(total=tcfg.steps, initial=trainer.step_count, desc="codec", mininterval=10)
with metrics_path.open("a") as log:
    while trainer.step_count < tcfg.steps:
        m = trainer.step()
        log.write(json.dumps(m) + "\n")
        log.flush()
        bar.update(1)
        bar.set_postfix(mel=f"{m['mel']:.3f}", ph=f"{m['phone_acc']:.2f}", ent=f"{m['entropy']:.2f}")
        out_of_time = args.minutes is not None and time.time() - t_start > 60 * args.minutes
        if trainer.step_count % args.ckpt_every == 0 or trainer.step_count == tcfg.steps or out_of_time:
            save()
        if out_of_time:
            print(f"time budget of {args.minutes} min spent at step {trainer.step_count}")
            break
bar.close()
print(f"done: step {trainer.step_count}, checkpoint {ckpt_dir}")
