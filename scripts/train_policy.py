"""usage: python scripts/train_policy.py --store data/robot/touch.zarr --out runs/policy_touch [--steps 3000]
                                      [--batch 16] [--lr 1e-3] [--minutes M] [--device cpu|cuda] [--resume]
                                      [--dropout 0.1] [--aug-shift 2] [--aug-brightness 0.1]
                                      [--init CKPT [--transfer]] [--no-action-input] [--warmup 100] [--dagger-frac 0.5]
                                      [--first-weight 5 --first-frames 3]

Trains the commanded policy (robot/policy.py) on a policy store (scripts/make_robot_data.py) with the engine's
Trainer: bf16 autocast, cosine schedule, checkpoints in OUT/checkpoint with exact resume (rerun with --resume),
metrics.jsonl and loss.png. Every window starts at an episode's first frame, so the policy hears its command; the
last 5% of the expert demos (at least one; DAgger episodes always train) are held out and their teacher-forced
action accuracy is printed at the end.
The policy files (tokenizers, normalisation, config) are written to OUT, where `Policy.load(OUT/checkpoint)` and
scripts/eval_policy.py find them.

Against overfitting: `--dropout` in both transformers (off at inference), and `--aug-shift` / `--aug-brightness`:
each training episode's camera frames moved by up to that many pixels and scaled in brightness (robot/augment.py;
training batches only, never the held-out replay or a rollout). Frames that are padding in every row of a batch
are cut (exact: they carry no target and the model is causal).

`--no-action-input`: the policy does not see its own past actions (robot.policy.drop_action_input: the copycat
shortcut). `--init CKPT`: start from that checkpoint's weights (a fresh run: new optimizer and schedule; its policy
files must match the store's tokenizers), e.g. to fine-tune on a DAgger-aggregated store (scripts/dagger_policy.py);
`--dagger-frac F` then draws that share of every batch from the store's DAgger episodes, the rest from the demos.
`--transfer` (with --init): the init is another task's policy (e.g. touch -> push): its weights start the run, this
store's force/touch bins and normalisation are kept (the bins' embeddings adapt to their new edges). Its streams
may differ from this store's (e.g. the halt slot of a store with "stop" corrections, or the agent's `text` stream of
a --reply store): the weights are then matched stream by stream (multistream.checkpoint.transfer_weights) and what
is new starts from its initialisation.

`--first-weight W --first-frames N`: the first N acting frames of every episode weigh W times the others in the
loss (robot.policy.first_frames_loss: the first decision, which object to go to, is otherwise one frame in ~35);
`acc_first_xy` in metrics.jsonl is the dx/dy accuracy on the first acting frame. The store's command layout
(`make_robot_data.py --command-every-frame`) needs no option here: it is in the store's policy config.
`--fuse-command` (such stores only): the slots also enter the camera CNN as constant one-hot planes beside RGB
(robot.policy.fuse_command: early fusion, the command biases the first conv layer).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="policy store from scripts/make_robot_data.py")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout in the temporal and depth transformers")
    ap.add_argument("--aug-shift", type=int, default=0, help="max random shift of the camera image, pixels")
    ap.add_argument("--aug-brightness", type=float, default=0.0, help="max relative brightness jitter, e.g. 0.1")
    ap.add_argument("--init", default=None, help="checkpoint whose weights start this run (fine-tuning)")
    ap.add_argument("--transfer", action="store_true",
                    help="with --init: the init policy was trained on another task's store; start from its weights "
                         "but keep this store's tokenizers and normalisation (same streams and sizes required)")
    ap.add_argument("--no-action-input", action="store_true",
                    help="the policy does not see its own past actions (zeroed, frozen action input embeddings)")
    ap.add_argument("--warmup", type=int, default=100, help="learning-rate warmup steps")
    ap.add_argument("--dagger-frac", type=float, default=0.0,
                    help="share of every batch drawn from the store's DAgger episodes (0: uniform over all episodes)")
    ap.add_argument("--first-weight", type=float, default=1.0,
                    help="loss weight of the first acting frames of each episode (1: all frames alike)")
    ap.add_argument("--first-frames", type=int, default=3, help="how many acting frames --first-weight applies to")
    ap.add_argument("--fuse-command", action="store_true",
                    help="slots stores only: the command's slots also as one-hot planes beside the camera's RGB")
    ap.add_argument("--camera-norm", choices=("unit", "meanstd"), default="unit",
                    help="camera input: uint8 / 255 ('unit') or each colour channel standardised with the store's "
                         "mean/std ('meanstd')")
    ap.add_argument("--camera-tokens", default="", metavar="VQ",
                    help="a camera VQ checkpoint (scripts/train_camera_vq.py): the camera enters as its tokens "
                         "instead of through the CNN")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast (off by default: the camera CNN runs ~7x slower in bf16 on CPUs without AMX)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")
    if not 0.0 <= args.dagger_frac < 1.0:
        ap.error(f"--dagger-frac must be in [0, 1), got {args.dagger_frac}")
    for name in ("steps", "batch", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.first_weight > 0 or args.first_frames < 1:
        ap.error(f"--first-weight must be > 0 and --first-frames >= 1, got {args.first_weight}, {args.first_frames}")
    if not args.lr > 0:
        ap.error(f"--lr must be > 0, got {args.lr}")
    if not 0.0 <= args.dropout < 1.0:
        ap.error(f"--dropout must be in [0, 1), got {args.dropout}")
    from robot.augment import ImageAugment

    try:
        args.augment = ImageAugment(shift=args.aug_shift, brightness=args.aug_brightness)
    except ValueError as e:
        ap.error(str(e))
    if args.camera_tokens and args.augment.active:
        ap.error("--aug-shift/--aug-brightness change the camera's pixels; with --camera-tokens the camera is the "
                 "VQ's tokens, computed from the stored pixels (leave the augmentation out)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_policy.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    from multistream.cli import refuse_existing_run
    from multistream.lm import RQTransformer
    from multistream.store import EpisodeStore
    from multistream.trainer import TrainConfig, Trainer
    from robot.augment import augmented_batch_fn, trim_padding
    from robot.dagger import SOURCE as DAGGER_SOURCE
    from robot.policy import (
        ACTION,
        NORM_FILE,
        POLICY_FILE,
        TOKENIZERS_FILE,
        PolicyConfig,
        PolicyTokenizers,
        drop_action_input,
        first_frames_loss,
        fuse_command,
        model_config,
        policy_binding,
        policy_streams,
        same_config,
        save_policy_files,
    )

    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    init = Path(args.init) if args.init else None
    if init is not None and not (init / "model.safetensors").is_file():
        raise FileNotFoundError(f"--init {init}: no model.safetensors there (pass a checkpoint directory)")
    if not Path(args.store).exists():
        raise FileNotFoundError(f"no policy store at {args.store} (make one with scripts/make_robot_data.py)")
    store = EpisodeStore.open(args.store)
    if "policy_tokenizers" not in store.attrs:
        raise ValueError(f"{args.store} is not a policy store (no policy_tokenizers attr)")
    cfg = PolicyConfig(**store.attrs["policy_config"])
    if args.fuse_command:  # a model option: the store (RGB + slots) is the same
        cfg = dataclasses.replace(cfg, fuse_command=True)
    cfg = dataclasses.replace(cfg, camera_norm=args.camera_norm)
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    if args.camera_tokens:  # a model option too: the store holds the camera's pixels, tokenized per batch
        cfg = dataclasses.replace(cfg, camera_tokens=args.camera_tokens)
        tok = tok.with_camera(args.camera_tokens)
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok, cfg.camera_norm)
    n = store.num_episodes
    # held out: the last 5% of the expert demos (DAgger episodes appended by scripts/dagger_policy.py all train)
    demo_eps = [i for i, m in enumerate(store.episode_metas()) if m.get("source") != DAGGER_SOURCE]
    n_val = max(1, len(demo_eps) // 20)
    if n - n_val < 1 or not demo_eps:
        raise ValueError(f"{args.store} has {n} episodes ({len(demo_eps)} demos); need at least 2, one a demo "
                         "(held out)")
    val_eps = demo_eps[-n_val:]
    held, demo_set = set(val_eps), set(demo_eps)
    train_eps = [i for i in range(n) if i not in held]
    window = max(store.episode_length(i) for i in range(n))
    dagger_eps = [i for i in train_eps if i not in demo_set]
    n_dagger = round(args.batch * args.dagger_frac)
    if n_dagger and not dagger_eps:
        raise ValueError(f"--dagger-frac {args.dagger_frac}: {args.store} has no DAgger episodes")
    if n_dagger in (0, args.batch) and args.dagger_frac > 0:
        raise ValueError(f"--dagger-frac {args.dagger_frac} of --batch {args.batch} leaves no row to one of the two "
                         "sources; use a larger batch or another fraction")
    if n_dagger:  # a fixed share of every batch from the DAgger episodes, the rest from the demos
        demo_train = [i for i in train_eps if i in demo_set]
        fns = [binding.batch_fn(store, window=window, batch_size=args.batch - n_dagger, seed=args.seed,
                                episodes=demo_train, from_episode_start=True),
               binding.batch_fn(store, window=window, batch_size=n_dagger, seed=args.seed + 1, episodes=dagger_eps,
                                from_episode_start=True)]

        def base_fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
            parts = [f(step, micro, rank, world) for f in fns]
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    else:
        base_fn = binding.batch_fn(store, window=window, batch_size=args.batch, seed=args.seed, episodes=train_eps,
                                   from_episode_start=True)
    if args.transfer and init is None:
        raise ValueError("--transfer needs --init (the other task's checkpoint)")
    if init is not None and not args.transfer:  # keep the init's normalisation (a grown store shifts it)
        files = next((d for d in (init, init.parent) if (d / NORM_FILE).is_file()), None)
        if files is None:
            raise FileNotFoundError(f"--init {init}: no {NORM_FILE} there or in its parent")
        binding.load_norm_state(json.loads((files / NORM_FILE).read_text()))
    images = [s.name for s in streams if s.continuous and len(s.feature_shape) == 3]
    norms = {k: (torch.tensor(v["shift"]), torch.tensor(v["scale"])) for k, v in binding.norm_state().items()
             if k in images}  # brightness works in pixel space whatever the camera normalisation
    aug_fn = augmented_batch_fn(base_fn, images, args.augment, seed=args.seed, norms=norms)

    def batch_fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        return fuse_command(trim_padding(aug_fn(step, micro, rank, world), streams), streams, tok)

    if args.resume and (out / POLICY_FILE).is_file():  # before the files are rewritten
        saved = json.loads((out / POLICY_FILE).read_text())
        if not same_config(saved, cfg):
            raise ValueError(f"--resume: the run in {out} was made with other policy settings ({saved}, now "
                             f"{dataclasses.asdict(cfg)}); pass the same options (e.g. --fuse-command, --camera-norm)")

    lm_cfg = model_config(cfg, streams, dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = RQTransformer(lm_cfg)
    if init is not None and not args.resume:  # a resume reloads the run's own checkpoint instead
        from multistream.checkpoint import load_weights

        files = next((d for d in (init, init.parent) if (d / TOKENIZERS_FILE).is_file()), None)
        if files is None:
            raise FileNotFoundError(f"--init {init}: no {TOKENIZERS_FILE} there or in its parent")
        init_tok = PolicyTokenizers.from_json(json.loads((files / TOKENIZERS_FILE).read_text()))
        if args.transfer:  # another task: same streams and sizes; the force/touch bin edges may differ
            saved = json.loads((files / POLICY_FILE).read_text()) if (files / POLICY_FILE).is_file() else None
            if saved is not None:  # a transfer may add the agent's words and voice (their streams start new)
                saved = {**saved, "reply": cfg.reply, "reply_audio": cfg.reply_audio, "reply_tail": cfg.reply_tail}
            if not same_config(saved, cfg):
                raise ValueError(f"--init {init} --transfer: its policy settings ({saved}) differ from this run's "
                                 f"({dataclasses.asdict(cfg)}); pass the same options (e.g. --fuse-command)")
        elif init_tok.to_json() != tok.to_json():
            raise ValueError(f"--init {init}: its policy tokenizers differ from those of {args.store} (another "
                             "task's policy? add --transfer)")
        from multistream.checkpoint import config_from_dict, read_config
        from multistream.lm import LMConfig

        if config_from_dict(LMConfig, read_config(init)).streams == streams:  # the init's own streams
            load_weights(init, model)
        else:  # --transfer to other streams (e.g. a store with the "stop" halt slot): matched stream by stream
            from multistream.checkpoint import transfer_weights

            rep = transfer_weights(init, model)
            print(f"--init {init}: its streams differ from {args.store}'s: {len(rep['copied'])} tensors copied, "
                  f"grown {rep['grown']}, new {rep['new']}")
    save_policy_files(out, cfg, tok, binding)  # after the init loaded: a refused --init leaves no run behind
    if args.no_action_input:
        drop_action_input(model)
    print(f"policy: {model.num_parameters() / 1e6:.2f} M parameters; {len(train_eps)} train / {len(val_eps)} held-out "
          f"episodes; window {window} frames")
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=args.lr, warmup_steps=args.warmup,
                     weight_decay=0.0, ckpt_every=args.ckpt_every, seed=args.seed, progress=not args.no_progress,
                     autocast=args.bf16, max_minutes=args.minutes)
    # a resume must draw the same batches: the Trainer refuses a different batch size (the seed is in tc)
    def loss_fn(m: RQTransformer, b: dict[str, torch.Tensor]):
        return first_frames_loss(m(b), streams, args.first_frames, args.first_weight)

    trainer = Trainer(model, lm_cfg, tc, batch_fn, loss_fn, device=args.device,
                      run_info={"batch": args.batch, "store": str(Path(args.store).resolve()),
                                **({"init": str(init)} if init else {}),
                                **({"transfer": True} if args.transfer else {}),
                                **({"action_input": False} if args.no_action_input else {}),
                                **({"dagger_frac": args.dagger_frac} if args.dagger_frac else {}),
                                **({"first_weight": args.first_weight, "first_frames": args.first_frames}
                                   if args.first_weight != 1.0 else {}),
                                **({"augment": dataclasses.asdict(args.augment)} if args.augment.active else {})})
    trainer.fit()

    model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
    model.eval()
    hits = total = 0
    first = []
    with torch.no_grad():
        for i in val_eps:
            ep = {k: v.to(args.device) for k, v in fuse_command(binding.episode(store, i), streams, tok).items()}
            o = model(ep)
            m = o.mask[ACTION]
            hits += int((o.logits[ACTION].argmax(-1) == o.targets[ACTION])[m].sum())
            total += int(m.sum())
            first.append(first_frames_loss(o, streams).metrics["acc_first_xy"])
    print(f"held-out episodes, teacher-forced action-token accuracy: {hits / max(total, 1):.3f} ({total} tokens); "
          f"dx/dy on the first acting frame: {sum(first) / max(len(first), 1):.3f}")


if __name__ == "__main__":
    main()
