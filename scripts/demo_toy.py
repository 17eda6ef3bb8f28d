"""usage: python scripts/demo_toy.py [--out runs/demo_toy] [--steps 300] [--fresh]

End-to-end demo of the multistream engine on the toy task (multistream/toy.py):
  1. writes toy episodes (an input stream `src`, a predicted stream `out`) to a zarr episode store;
  2. trains the `tiny` RQ-Transformer on random windows of it (bf16 autocast, checkpoints, loss plot);
  3. measures held-out token accuracy with the training forward;
  4. streams held-out episodes through `Generator.step()` one 80 ms frame at a time, greedy, and prints what the
     model produced next to what the rule says, with the step time as a share of the frame.
Re-running resumes (or skips) training; --fresh starts over. The demo marks the directory it makes (a
`.multistream-demo` file): --fresh deletes only a marked directory, and an --out holding anything else is refused.
"""

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from multistream.data import episode_to_arrays, store_batch_fn
from multistream.generate import Generator, Sampling
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import tiny
from multistream.store import EpisodeStore
from multistream.toy import COPY_LAG, toy_batch, toy_streams
from multistream.trainer import TrainConfig, Trainer

FRAME_RATE = 12.5
WINDOW = 32  # frames per training window (2.56 s)
MARKER = ".multistream-demo"  # written into --out by the demo: only a marked directory is ever deleted


def prepare_out(out: Path, fresh: bool) -> None:
    """Create (or, with fresh, recreate) the demo's directory; refuse a file or a directory the demo did not make."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory")
    ours = (out / MARKER).is_file()
    if out.is_dir() and not ours and any(out.iterdir()):
        raise ValueError(f"--out {out} holds files the demo did not make (no {MARKER} marker); it is left untouched: "
                         "pass a new or empty directory")
    if fresh and ours:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/demo_toy.py; --fresh deletes this directory\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo_toy")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "episodes"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    try:
        prepare_out(out, args.fresh)
    except ValueError as e:
        sys.exit(f"demo_toy.py: error: {e}")
    streams = toy_streams()

    store_path = out / "toy.zarr"
    if not store_path.exists():
        print(f"[1/4] writing {args.episodes} toy episodes to {store_path}")
        tmp = out / "toy.zarr.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        store = EpisodeStore.create(tmp, fps=FRAME_RATE, attrs={"task": "toy copy/mix"})
        eps = toy_batch(args.episodes, 64, seed=0)
        for i in range(args.episodes):
            store.append_episode(episode_to_arrays({k: v[i] for k, v in eps.items()}, streams))
        tmp.rename(store_path)
    store = EpisodeStore.open(store_path)
    print(f"[1/4] {store}")

    print(f"[2/4] training tiny for {args.steps} steps -> {out / 'checkpoint'}")
    cfg = tiny(streams)
    torch.manual_seed(0)
    model = RQTransformer(cfg)
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=3e-3, warmup_steps=20, weight_decay=0.0,
                     ckpt_every=100)
    Trainer(model, cfg, tc, store_batch_fn(store, streams, window=WINDOW, batch_size=32, frame_rate=cfg.frame_rate),
            lambda m, b: lm_loss(m(b), streams)).fit()
    print(f"      loss plot: {out / 'loss.png'}, metrics: {out / 'metrics.jsonl'}")
    print("      (the training loss floors near 3/64 * ln 16 = 0.13: in a window cut from the middle of an episode the")
    print("      first frames copy sources that lie before the window, which no model can know)")

    model.eval()
    held = toy_batch(64, WINDOW, seed=424242)  # episodes never seen in training, as long as a training window
    with torch.no_grad():
        acc = lm_loss(model(held), streams).accuracy["out"]
    print(f"[3/4] held-out token accuracy (training forward): {acc:.2%}")

    print("[4/4] streaming, one frame per step (greedy):")
    src, want = held["src"][:4], held["out"][:4]
    got, times = [], []
    with Generator(model, batch_size=4, sampling=Sampling(temperature=0.0)) as gen:
        for t in range(src.shape[2]):
            t0 = time.perf_counter()
            o = gen.step({"src": src[:, :, t]})
            times.append(time.perf_counter() - t0)
            got.append(o.tokens["out"])
    got_t = torch.stack(got, dim=2)  # [B, 2, T]
    print("      frame  src(cb0,cb1)  model out(cb0,cb1)  rule out(cb0,cb1)")
    for t in range(8):
        print(f"      {t:5d}  ({src[0, 0, t]:2d},{src[0, 1, t]:2d})       ({got_t[0, 0, t]:2d},{got_t[0, 1, t]:2d})"
              f"             ({want[0, 0, t]:2d},{want[0, 1, t]:2d})")
    ok = (got_t[:, :, COPY_LAG:] == want[:, :, COPY_LAG:]).float().mean().item()
    step_ms = statistics.median(times) * 1000
    print(f"      streamed accuracy {ok:.2%}; median step {step_ms:.2f} ms = {step_ms / (1000 / FRAME_RATE):.1%} of "
          f"an 80 ms frame (batch 4)")


if __name__ == "__main__":
    main()
