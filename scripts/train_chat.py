"""usage: python scripts/train_chat.py --store data/chat/dialogues-codec_tiny.zarr --phase text --out runs/chat_text
       python scripts/train_chat.py --store ... --phase dialogue --init runs/chat_text/checkpoint --out runs/chat
                                    [--preset tiny|base|small] [--steps N] [--batch B] [--window 125] [--text-share 0.5]
                                    [--acoustic-delay 1] [--semantic-weight 100] [--pad-weight 0.5]
                                    [--user-text-delay D] [--user-text-weight 1] [--no-monologue]
                                    [--user-codebooks N]
                                    [--minutes M] [--device cpu|cuda] [--precision auto|fp32|bf16] [--resume]

Trains the duplex chat model (Moshi's recipe, scaled down) on the engine's Trainer:
  phase text      text-only pretraining on written text stating every fact of the knowledge base
                  (speech.knowledge, all splits' entities), audio streams absent (ZERO_ID)
  phase dialogue  multistream training on the tokenized dialogues of the train split (scripts/tokenize_dialogues.py)
                  with text-only batches mixed in (--text-share, Moshi: half), initialised from --init
--user-text-delay D adds a fourth, predicted stream `text.user`: the user's words as the model hears them, each
written D frames after the word ends (a dense listening signal; Moshi has none); it needs a store that holds them.
--no-monologue is Moshi's ablation: the dialogue windows carry no inner monologue (the text-only batches still
train the text stream); the model answers in audio alone. --user-codebooks N: the model hears only the first N
codebooks of the user (the semantic one first), not the voice detail of the rest. chat.json records both
(speech.chat.ChatOptions), so that its sessions feed it what it was trained on.
The store names the codec and the text tokenizer it was made with; both are checked. OUT becomes a chat checkpoint
(OUT/checkpoint + chat.json + tokenizer.model) that scripts/chat.py loads. Runs under torchrun and with --device cuda.
"""

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="tokenized dialogues (scripts/tokenize_dialogues.py)")
    ap.add_argument("--phase", required=True, choices=["text", "dialogue"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", default=None, help="checkpoint to start from (the text phase's, for phase dialogue)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base", "small"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--window", type=int, default=125, help="frames per training window (125 = 10 s)")
    ap.add_argument("--text-share", type=float, default=0.5, help="share of text-only batches in phase dialogue")
    ap.add_argument("--acoustic-delay", type=int, default=1)
    ap.add_argument("--semantic-weight", type=float, default=100.0)
    ap.add_argument("--pad-weight", type=float, default=0.5)
    ap.add_argument("--user-text-delay", type=int, default=None,
                    help="add the user transcript stream text.user, D frames after each user word ends "
                         "(off by default)")
    ap.add_argument("--user-text-weight", type=float, default=1.0, help="loss weight of text.user")
    ap.add_argument("--no-monologue", action="store_true",
                    help="Moshi's ablation: dialogue windows without the inner-monologue text (phase dialogue)")
    ap.add_argument("--user-codebooks", type=int, default=0,
                    help="hear only the first N codebooks of the user's audio (the semantic one first; 0: all)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="auto: bf16 autocast on CUDA, fp32 on CPU (bf16 autocast is ~10x slower than fp32 for these "
                         "layer sizes on this CPU: measured 0.65 s vs 7.8 s per base-preset step of 4 x 125 frames)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget; checkpoint and stop when spent")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    for name in ("steps", "batch", "window", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.user_text_delay is not None and args.user_text_delay < 0:
        ap.error(f"--user-text-delay must be >= 0, got {args.user_text_delay}")
    if (args.no_monologue or args.user_codebooks) and args.phase != "dialogue":
        ap.error("--no-monologue and --user-codebooks apply to --phase dialogue (the text phase is text only)")
    if args.user_codebooks < 0:
        ap.error(f"--user-codebooks must be >= 0, got {args.user_codebooks}")
    if not 0 <= args.text_share <= 1:
        ap.error(f"--text-share must be in [0, 1], got {args.text_share}")
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_chat.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from multistream.checkpoint import load_weights
    from multistream.cli import refuse_existing_run
    from multistream.lm import RQTransformer
    from multistream.loss import lm_loss
    from multistream.presets import PRESETS
    from multistream.store import EpisodeStore
    from multistream.trainer import TrainConfig, Trainer
    from speech.chat import TOKENIZER_FILE, ChatOptions, save_chat_files
    from speech.chat_data import dialogue_batch_fn, mixed_batch_fn, text_batch_fn
    from speech.knowledge import facts
    from speech.streams import CodecFrames, MonologueText, chat_streams

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    if not Path(args.store).exists():
        raise FileNotFoundError(f"no dialogue store at {args.store} (make it with scripts/tokenize_dialogues.py)")
    store = EpisodeStore.open(args.store)
    codec_dir, dialogues = store.attrs.get("codec"), store.attrs.get("dialogues")
    if not codec_dir or not dialogues:
        raise ValueError(f"{args.store} does not name its codec and dialogues (not made by tokenize_dialogues.py)")
    codec = CodecFrames.load(codec_dir)
    text = MonologueText(Path(dialogues) / TOKENIZER_FILE)
    streams = chat_streams(codec, text, acoustic_delay=args.acoustic_delay, semantic_weight=args.semantic_weight,
                           pad_weight=args.pad_weight, user_text_delay=args.user_text_delay,
                           user_text_weight=args.user_text_weight)
    options = ChatOptions(monologue=not args.no_monologue, user_codebooks=args.user_codebooks)
    if options.user_codebooks > codec.num_codebooks:
        raise ValueError(f"--user-codebooks {options.user_codebooks}: the codec has {codec.num_codebooks} codebooks")
    cfg = PRESETS[args.preset](streams)
    torch.manual_seed(args.seed)
    model = RQTransformer(cfg)
    if args.init and not (out / "checkpoint").exists():
        # a model with more streams than --init (e.g. --user-text-delay added after the text phase) starts those
        # streams' parameters fresh; any other difference is refused
        fresh = load_weights(args.init, model, allow_missing=True)
        if fresh:
            print(f"initialised from {args.init}; new parameters start fresh: {', '.join(fresh)}")
    text_fn = text_batch_fn(facts(args.seed), text, streams, args.window, args.batch, seed=args.seed)
    if args.phase == "text":
        batch_fn = text_fn
    else:
        dia = dialogue_batch_fn(store, streams, codec, text, args.window, args.batch, seed=args.seed,
                                options=options)
        batch_fn = mixed_batch_fn(dia, text_fn, args.text_share, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_chat_files(out, codec_dir, Path(dialogues) / TOKENIZER_FILE, options=options)
    print(f"chat model ({args.preset}): {model.num_parameters() / 1e6:.2f} M parameters; phase {args.phase}; "
          f"codec {codec.fingerprint}, text {text.fingerprint}"
          + ("; no monologue in the dialogues (ablation)" if args.no_monologue else "")
          + (f"; hears the first {args.user_codebooks} user codebooks" if args.user_codebooks else ""))
    # a fixed warmup: min(100, steps) would change the schedule when a resume raises --steps
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.startswith("cuda"))
    tc = TrainConfig(out_dir=str(out), max_steps=args.steps, lr=args.lr, warmup_steps=100, autocast=bf16,
                     ckpt_every=args.ckpt_every, seed=args.seed, progress=not args.no_progress,
                     max_minutes=args.minutes)
    run_info = {"phase": args.phase, "batch": args.batch, "window": args.window, "text_share": args.text_share,
                "store": str(Path(args.store).resolve()), "init": args.init,
                **dataclasses.asdict(options)}
    Trainer(model, cfg, tc, batch_fn, lambda m, b: lm_loss(m(b), streams), device=args.device,
            run_info=run_info).fit()


if __name__ == "__main__":
    main()
