"""Train the camera VQ tokenizer (`robot/camera_vq.py`) on the camera frames of expert demo stores.

    python scripts/train_camera_vq.py --demos data/demos/touch2k.zarr data/demos/pick2k.zarr --out runs/camera_vq \
        [--grid 8 --groups 1 --levels 8 5 5] [--steps 4000] [--batch 64] [--minutes M] [--resume]

The last 5% of each store's episodes are held out (as in train_policy.py). The loss is the pixels' squared error
with the *foreground* pixels (those that differ from the mean training frame: the objects, a few pixels each, and the
arm) weighted `--fg-weight` times, since an all-pixel error is met by drawing the table. On the Trainer: exact
resume, `--minutes` budget, metrics and loss plot. At the end: `eval.json` (held-out MSE / PSNR, all pixels and
foreground only, tokens per frame, bits per frame) and `recon.png` (held-out frames above their reconstructions from
the tokens). The tokenizer is `OUT/checkpoint` (`CameraVQ.load`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demos", nargs="+", required=True, help="demo stores from scripts/collect_demos.py")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--grid", type=int, default=8, help="latent map side (tokens per frame: grid^2 * groups)")
    ap.add_argument("--groups", type=int, default=1, help="tokens per grid cell")
    ap.add_argument("--levels", type=int, nargs="+", default=[8, 5, 5], help="FSQ levels (token vocabulary: product)")
    ap.add_argument("--width", type=int, default=64, help="conv channels")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--fg-weight", type=float, default=10.0, help="weight of foreground pixels in the loss")
    ap.add_argument("--fg-threshold", type=float, default=0.15, help="foreground: |pixel - mean frame| above this")
    ap.add_argument("--max-episodes", type=int, default=0, help="read at most this many episodes per store (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "batch", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0 or not args.fg_weight >= 0 or not 0 < args.fg_threshold < 1:
        ap.error(f"need --lr > 0, --fg-weight >= 0, 0 < --fg-threshold < 1; got {args.lr}, {args.fg_weight}, "
                 f"{args.fg_threshold}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_camera_vq.py: error: {e}")


def read_frames(paths: list[str], max_episodes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every camera frame of the stores: (train [N, H, W, 3] uint8, held-out [M, H, W, 3] uint8); held out: the
    last 5% of each store's episodes."""
    from envs import features as F
    from multistream.store import EpisodeStore

    train, held = [], []
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"no demo store at {p} (make one with scripts/collect_demos.py)")
        store = EpisodeStore.open(p)
        if F.IMAGE_FRONT not in store.keys:
            raise ValueError(f"{p} has no {F.IMAGE_FRONT} frames (keys: {store.keys})")
        n = store.num_episodes if not max_episodes else min(max_episodes, store.num_episodes)
        if n < 2:
            raise ValueError(f"{p} has {n} episodes; need at least 2 (one held out)")
        n_val = max(1, n // 20)
        for i in range(n):
            (held if i >= n - n_val else train).append(store.episode(i, [F.IMAGE_FRONT])[F.IMAGE_FRONT])
    return np.concatenate(train), np.concatenate(held)


def run(args: argparse.Namespace) -> None:
    from multistream.atomic import atomic_open
    from multistream.cli import refuse_existing_run
    from multistream.loss import LossOutput
    from multistream.trainer import CHECKPOINT_DIR, TrainConfig, Trainer
    from robot.camera_vq import KIND, CameraVQ, CameraVQConfig, reconstruction_error, save_json

    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    train, held = read_frames(args.demos, args.max_episodes)
    if train.shape[1] != train.shape[2] or train.shape[3] != 3:
        raise ValueError(f"the demos' frames are {train.shape[1:]}; the tokenizer takes square RGB frames")
    cfg = CameraVQConfig(image_size=int(train.shape[1]), grid=args.grid, groups=args.groups,
                         levels=tuple(args.levels), width=args.width)
    sample = np.random.default_rng(0).choice(len(train), size=min(len(train), 20000), replace=False)
    background = (train[np.sort(sample)].astype(np.float32) / 255.0).mean(0)  # [H, W, 3] the mean frame
    bg = torch.from_numpy(background)
    print(f"camera VQ: {len(train)} train / {len(held)} held-out frames; {cfg.num_codebooks} tokens of "
          f"{cfg.cardinality} values per frame ({cfg.num_codebooks * np.log2(cfg.cardinality):.0f} bits)")
    torch.manual_seed(args.seed)
    model = CameraVQ(cfg)

    def batch_fn(step: int, micro: int, rank: int, world: int) -> torch.Tensor:
        from multistream.data import batch_seed

        g = np.random.default_rng(batch_seed(args.seed, step, micro, rank))
        return torch.from_numpy(train[np.sort(g.integers(0, len(train), args.batch))]).float() / 255.0

    def loss_fn(m: CameraVQ, x: torch.Tensor) -> LossOutput:
        y, _ = m(x)
        e = (y - x) ** 2  # [N, H, W, 3]
        fg = ((x - bg).abs().amax(-1, keepdim=True) > args.fg_threshold).float()  # [N, H, W, 1]
        w = 1.0 + args.fg_weight * fg
        loss = (e * w).sum() / (w.sum() * 3)
        with torch.no_grad():
            mse = float(e.mean())
            fg_mse = float((e * fg).sum() / (fg.sum() * 3).clamp_min(1))
        return LossOutput(total=loss, per_stream={"camera": mse}, accuracy={}, tokens=x.shape[0],
                          metrics={"fg_mse": fg_mse})

    model_cfg = {"kind": KIND, **{k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in cfg.__dict__.items()}}
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=args.lr, warmup_steps=100, weight_decay=0.0,
                     ckpt_every=args.ckpt_every, seed=args.seed, progress=not args.no_progress, autocast=False,
                     max_minutes=args.minutes)
    trainer = Trainer(model, model_cfg, tc, batch_fn, loss_fn, device="cpu",
                      run_info={"batch": args.batch, "demos": [str(Path(p).resolve()) for p in args.demos],
                                "fg_weight": args.fg_weight, "fg_threshold": args.fg_threshold,
                                "max_episodes": args.max_episodes})
    trainer.fit()
    tok = CameraVQ.load(out / CHECKPOINT_DIR)
    err = reconstruction_error(tok, held, background, args.fg_threshold)
    step = json.loads((out / CHECKPOINT_DIR / "trainer_state.json").read_text()).get("step") \
        if (out / CHECKPOINT_DIR / "trainer_state.json").is_file() else None
    report = {"step": step, "held_out_frames": len(held), "tokens_per_frame": cfg.num_codebooks,
              "vocabulary": cfg.cardinality, "bits_per_frame": cfg.num_codebooks * float(np.log2(cfg.cardinality)),
              **err, "fingerprint": tok.fingerprint}
    save_json(out / "eval.json", report)
    with atomic_open(out / "background.npy", "wb") as f:  # the mean training frame (foreground of the errors)
        np.save(f, background)
    plot_reconstructions(tok, held, out / "recon.png")
    print(f"held-out frames ({len(held)}): MSE {err['mse']:.5f} (PSNR {err['psnr_db']:.1f} dB); foreground "
          f"({100 * err['fg_share']:.1f}% of the pixels) MSE {err['fg_mse']:.5f} (PSNR {err['fg_psnr_db']:.1f} dB); "
          f"{cfg.num_codebooks} tokens x {cfg.cardinality} per frame")
    print(f"wrote {out / 'eval.json'} and {out / 'recon.png'}; tokenizer: {out / CHECKPOINT_DIR}")


def plot_reconstructions(tok, frames: np.ndarray, path: Path, n: int = 8) -> None:
    """Held-out frames (evenly spaced) above their reconstructions from the tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multistream.atomic import atomic_open

    pick = frames[np.linspace(0, len(frames) - 1, n).astype(int)]
    rec = tok.decode(tok.encode(torch.from_numpy(pick)[None]))[0].numpy()  # [n, H, W, 3]
    fig, ax = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    for j in range(n):
        for r, img in enumerate((pick[j], rec[j])):
            ax[r, j].imshow(img)
            ax[r, j].set_xticks([])
            ax[r, j].set_yticks([])
    ax[0, 0].set_ylabel("camera")
    ax[1, 0].set_ylabel(f"{tok.num_codebooks} tokens")
    fig.suptitle(f"camera VQ: held-out frames and their reconstructions ({tok.num_codebooks} tokens x "
                 f"{tok.cardinality} per frame)")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
