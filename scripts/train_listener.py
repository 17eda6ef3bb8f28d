"""Train the spoken-command listener (robot/listener.py) on a store from scripts/make_listener_data.py.

usage: python scripts/train_listener.py --store data/robot/listener.zarr --codec checkpoints/codec_spectral
           --out runs/listener [--steps 3000] [--batch 32] [--lr 1e-3] [--dropout 0.1] [--minutes M]
           [--threads 1] [--device cpu|cuda] [--bf16] [--resume] [--eval-store data/robot/listener_heldout.zarr]
           [--d-model 128 --layers 4 --depth-d-model 64 --depth-layers 1] [--audio-codebooks N]

On the engine's Trainer (cosine schedule, checkpoints in OUT/checkpoint, exact resume with --resume, metrics.jsonl
and loss.png). The last 5% of the store's items are held out; at the end the command accuracy (every slot the
task uses right, read greedily on the last frame) is printed for them and for --eval-store (e.g. held-out voices),
and written to OUT/listener_eval.json. --audio-codebooks N: the listener hears only the first N codebooks of the
speech (the semantic one first; listener.json records it, so inference masks the same ones).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--codec", required=True, help="the codec checkpoint the store was made with")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-store", action="append", default=[], help="another store to report accuracy on")
    ap.add_argument("--d-model", type=int, default=None, help="temporal width (default: the store's listener config)")
    ap.add_argument("--layers", type=int, default=None, help="temporal layers")
    ap.add_argument("--depth-d-model", type=int, default=None, help="depth transformer width")
    ap.add_argument("--depth-layers", type=int, default=None, help="depth transformer layers")
    ap.add_argument("--audio-codebooks", type=int, default=None,
                    help="hear only the first N codebooks of the speech (the semantic one first; 0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "batch", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0 or not 0 <= args.dropout < 1:
        ap.error("--lr must be > 0 and --dropout in [0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_listener.py: error: {e}")


def store_accuracy(listener, store, episodes: list[int]) -> dict:
    """Command accuracy on stored items (codes already made): all the task's slots right, and per slot."""
    from robot.command import CommandSlots
    from robot.listener import AUDIO, TASK_SLOTS, command_target

    slots = CommandSlots(store.attrs["slots"])
    metas = store.episode_metas()
    right = 0
    per_slot = {s: [0, 0] for s in slots.slots}
    per_task = {t: [0, 0] for t in TASK_SLOTS}
    for i in episodes:
        m = metas[i]
        codes = torch.from_numpy(store.episode(i, [AUDIO])[AUDIO].astype("int64")).T  # [K, T]
        got = listener.listen_codes(codes, m["task"])
        want = listener.keep_task_slots(command_target(slots, m["text"]), m["task"], slots)
        ok = got == want
        right += ok
        per_task[m["task"]][0] += ok
        per_task[m["task"]][1] += 1
        for name, g, w in zip(slots.slots, got, want, strict=True):
            if name in TASK_SLOTS[m["task"]]:
                per_slot[name][0] += g == w
                per_slot[name][1] += 1
    n = max(len(episodes), 1)
    return {"items": len(episodes), "command_accuracy": round(right / n, 4),
            "per_task": {t: round(a / max(b, 1), 4) for t, (a, b) in per_task.items()},
            "per_slot": {s: round(a / max(b, 1), 4) for s, (a, b) in per_slot.items()}}


def run(args: argparse.Namespace) -> None:
    from multistream.cli import refuse_existing_run
    from multistream.lm import RQTransformer
    from multistream.loss import lm_loss
    from multistream.store import EpisodeStore
    from multistream.streams import keep_codebooks
    from multistream.trainer import TrainConfig, Trainer
    from robot.augment import trim_padding
    from robot.command import CommandSlots
    from robot.listener import (
        AUDIO,
        LISTENER_FILE,
        Listener,
        ListenerConfig,
        last_target_only,
        listener_binding,
        listener_model_config,
        listener_streams,
        save_listener_files,
    )
    from speech.streams import CodecFrames

    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    for s in [args.store, *args.eval_store]:
        if not Path(s).exists():
            raise FileNotFoundError(f"no listener store at {s} (make one with scripts/make_listener_data.py)")
    if not (Path(args.codec) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no codec checkpoint at {args.codec}")
    store = EpisodeStore.open(args.store)
    if "listener_config" not in store.attrs:
        raise ValueError(f"{args.store} is not a listener store (no listener_config attr)")
    codec = CodecFrames.load(args.codec)
    slots = CommandSlots(store.attrs["slots"])
    cfg = ListenerConfig(**store.attrs["listener_config"])
    sizes = {"d_model": args.d_model, "num_layers": args.layers, "depth_d_model": args.depth_d_model,
             "depth_layers": args.depth_layers, "audio_codebooks": args.audio_codebooks}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in sizes.items() if v is not None})
    if args.resume and (out / LISTENER_FILE).is_file():
        saved = dataclasses.asdict(ListenerConfig(**json.loads((out / LISTENER_FILE).read_text())["config"]))
        if saved != dataclasses.asdict(cfg):
            raise ValueError(f"--resume: the run in {out} has listener config {saved}, now {dataclasses.asdict(cfg)}; "
                             "pass the same sizes")
    streams = listener_streams(codec, slots)
    if cfg.audio_codebooks > streams[AUDIO].num_codebooks:
        raise ValueError(f"--audio-codebooks {cfg.audio_codebooks}: the codec has {streams[AUDIO].num_codebooks}")
    binding = listener_binding(streams, codec, slots)
    binding.attach(store)  # refuses a store made by another codec
    n = store.num_episodes
    n_val = max(1, n // 20)
    if n - n_val < 1:
        raise ValueError(f"{args.store} has {n} items; need at least 2")
    train_eps, val_eps = list(range(n - n_val)), list(range(n - n_val, n))
    window = max(store.episode_length(i) for i in range(n))
    if window > cfg.context:
        raise ValueError(f"{args.store} has an item of {window} frames, longer than the listener's context "
                         f"{cfg.context}")
    base_fn = binding.batch_fn(store, window=window, batch_size=args.batch, seed=args.seed, episodes=train_eps,
                               from_episode_start=True)

    def batch_fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        batch = last_target_only(trim_padding(base_fn(step, micro, rank, world), streams))
        return {**batch, AUDIO: keep_codebooks(batch[AUDIO], cfg.audio_codebooks)}

    save_listener_files(out, cfg, codec, slots, args.codec)
    lm_cfg = listener_model_config(cfg, streams, dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = RQTransformer(lm_cfg)
    print(f"listener: {model.num_parameters() / 1e6:.2f} M parameters; {len(train_eps)} train / {len(val_eps)} "
          f"held-out items; window {window} frames")
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=args.lr, warmup_steps=args.warmup,
                     weight_decay=0.0, ckpt_every=args.ckpt_every, seed=args.seed, progress=not args.no_progress,
                     autocast=args.bf16, max_minutes=args.minutes)
    trainer = Trainer(model, lm_cfg, tc, batch_fn, lambda m, b: lm_loss(m(b), streams), device=args.device,
                      run_info={"batch": args.batch, "store": str(Path(args.store).resolve())})
    trainer.fit()
    model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
    listener = Listener(model.cpu().eval(), cfg, codec, slots)
    report = {"step": trainer.step, "held_out_items": store_accuracy(listener, store, val_eps)}
    for s in args.eval_store:
        es = EpisodeStore.open(s)
        binding.attach(es)
        report[s] = {"settings": es.attrs.get("settings"), **store_accuracy(listener, es, list(range(es.num_episodes)))}
    (out / "listener_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
