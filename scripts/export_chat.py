"""usage: python scripts/export_chat.py --run runs/chat --out checkpoints/chat [--dtype bf16] [--codec DIR]

Makes a compact, self-contained chat checkpoint from a training run: config.json, the weights cast to bf16 (half
the bytes; they load into the fp32 model), the text tokenizer, and chat.json naming the codec (by a path relative to
the new checkpoint, and its fingerprint). The optimizer state is left behind. Also copies the run's loss.png and
metrics.jsonl. Checks the export by loading it with speech.chat.load_chat and comparing one teacher-forced forward
with the run's weights.
"""

import argparse
import shutil
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run (scripts/train_chat.py --out) or its checkpoint/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--codec", default=None, help="codec directory to record (default: the run's)")
    args = ap.parse_args()
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"export_chat.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    from multistream.atomic import atomic_write_dir
    from multistream.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from speech.chat import CHAT_FILE, TOKENIZER_FILE, chat_options, load_chat, save_chat_files

    src = Path(args.run)
    ckpt = src / "checkpoint" if (src / "checkpoint" / CONFIG_FILE).is_file() else src
    model, codec, text = load_chat(ckpt)
    base = ckpt if (ckpt / CHAT_FILE).is_file() else ckpt.parent
    codec_dir = Path(args.codec) if args.codec else None
    if codec_dir is None:
        rec = Path(json.loads((base / CHAT_FILE).read_text())["codec"])
        codec_dir = rec if rec.is_absolute() else (base / rec)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    out = Path(args.out)

    def write(tmp: Path) -> None:
        shutil.copyfile(ckpt / CONFIG_FILE, tmp / CONFIG_FILE)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        for name in ("loss.png", "metrics.jsonl", "run_info.json"):
            if (base / name).is_file():
                shutil.copyfile(base / name, tmp / name)

    atomic_write_dir(out, write)
    save_chat_files(out, codec_dir.resolve(), base / TOKENIZER_FILE, options=chat_options(ckpt))
    # check: the export loads and computes what the run computes (up to the bf16 rounding of the weights)
    model2, codec2, text2 = load_chat(out)
    assert codec2.fingerprint == codec.fingerprint and text2.fingerprint == text.fingerprint
    torch.manual_seed(0)
    b = {s.name: torch.randint(0, s.vocab_size, (1, s.num_codebooks, 25)) for s in model.streams}
    with torch.no_grad():
        a = {k: v.float() for k, v in model(b).logits.items()}
        e = {k: v.float() for k, v in model2(b).logits.items()}
    agree = sum(float((a[k].argmax(-1) == e[k].argmax(-1)).float().mean()) for k in a) / len(a)
    size = (out / WEIGHTS_FILE).stat().st_size / 2**20
    print(f"wrote {out} ({args.dtype}, {size:.1f} MiB weights); codec {codec_dir}; argmax agreement with the run "
          f"on a random teacher-forced window: {agree:.3f}")


if __name__ == "__main__":
    main()
