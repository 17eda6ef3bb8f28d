"""Spoken commands for the listener (robot/listener.py): TTS by user voices -> codec tokens + slot targets.

usage: python scripts/make_listener_data.py --codec checkpoints/codec_spectral --out data/robot/listener.zarr
           --items 6000 [--voices train|heldout] [--phrasing train|heldout|all] [--seed 0] [--no-augment] [--stops]

Random commands of the three tasks (colour, shape, side, target), spoken by the voices of one split
(`speech.voices`; `heldout` for evaluation stores only), with a random lead silence and the user-channel
degradations of the dialogue data unless --no-augment, encoded by the codec. Resumable: rerun the same command to
add the items not stored yet; an item the TTS cannot speak is skipped with a message and the rest are kept.
--stops: "stop" utterances ("stop", "wait, stop"; held-out phrasings "freeze", "hold still") are a fifth kind of
item and every item's target has a halt slot ("stop" for those, "go" for the rest), for a listener that hears stops.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from multistream.cli import positive_int


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="codec checkpoint directory")
    p.add_argument("--out", required=True, help="episode store to create or resume")
    p.add_argument("--items", type=positive_int, required=True, help="spoken commands the store holds when done")
    p.add_argument("--voices", default="train", choices=["train", "heldout"])
    p.add_argument("--phrasing", default="train", choices=["train", "heldout", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="clean TTS (no room, channel, noise or gain)")
    p.add_argument("--stops", action="store_true",
                   help="'stop' utterances join the commands and the slots gain the halt slot (go / stop)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"make_listener_data.py: error: {e}")


def run(args: argparse.Namespace) -> None:
    import torch

    from robot.listener import build_listener_store
    from speech.streams import CodecFrames

    torch.set_num_threads(args.threads)
    if not (Path(args.codec) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no codec checkpoint at {args.codec} (config.json + model.safetensors)")
    codec = CodecFrames.load(args.codec)
    t0 = time.time()
    store = build_listener_store(args.out, codec, args.items, voice_split=args.voices, phrasing=args.phrasing,
                                 seed=args.seed, augment=not args.no_augment, progress=not args.no_progress,
                                 stops=args.stops)
    frames = sum(store.episode_length(i) for i in range(store.num_episodes))
    print(json.dumps({"out": args.out, "items": store.num_episodes, "skipped": len(store.attrs.get("skipped", [])),
                      "hours": round(frames / codec.frame_rate / 3600, 3), "wall_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
