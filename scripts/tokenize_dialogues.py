"""usage: python scripts/tokenize_dialogues.py --dialogues data/dialogues --codec checkpoints/codec_tiny
                                            --out data/chat/dialogues-codec_tiny.zarr [--splits train valid test]
                                            [--codes-from OTHER_STORE]

Tokenizes a dialogue directory (scripts/make_dialogues.py; moshi-finetune layout) into the chat model's episode
store: per dialogue the agent's inner-monologue text (from its word alignments, PAD/EPAD, with the directory's
tokenizer.model), and both audio channels through the codec. The store records which codec and text tokenizer made
it; training with another one is refused. Resumable: rerun the same command to continue after a kill.
"""

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", required=True, help="dialogue directory with <split>.jsonl and tokenizer.model")
    ap.add_argument("--codec", required=True, help="codec checkpoint directory")
    ap.add_argument("--out", required=True, help="episode store to create or resume")
    ap.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    ap.add_argument("--codes-from", default=None, help="a store made with the same codec: copy its audio codes for "
                    "the dialogues it holds instead of encoding them again")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    from speech.streams import CodecFrames, MonologueText
    from speech.tokenize import tokenize_dialogues

    if args.threads:
        torch.set_num_threads(args.threads)
    tok_path = Path(args.dialogues) / "tokenizer.model"
    try:
        if not tok_path.is_file():
            raise FileNotFoundError(f"no text tokenizer at {tok_path} (scripts/make_dialogues.py writes one)")
        codec = CodecFrames.load(args.codec)
        text = MonologueText(tok_path)
        store = tokenize_dialogues(args.dialogues, codec, text, args.out, tuple(args.splits), codec_path=args.codec,
                                   codes_from=args.codes_from)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"tokenize_dialogues.py: error: {e}")
    hours = store.num_steps / store.fps / 3600
    print(f"{store}: {hours:.3f} h of dialogue, codec {codec.fingerprint}, text {text.fingerprint}")


if __name__ == "__main__":
    main()
