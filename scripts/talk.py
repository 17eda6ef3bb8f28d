"""usage: python scripts/talk.py --in question.wav [--url ws://127.0.0.1:8998/ws] [--token SECRET]
                             [--out reply.wav] [--tail 3.0] [--fast] [--opus]

A command-line client of scripts/serve.py: streams a mono 24 kHz 16-bit wav to the server in real time (80 ms per
frame, like a microphone; --fast sends as fast as the server allows), followed by --tail seconds of silence, and
writes the agent's audio to OUT.wav and its monologue text with frame times to OUT.json. --opus: Opus on the wire
both ways (PyAV) instead of 16-bit PCM.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="inp", required=True, help="mono 24 kHz 16-bit wav")
    ap.add_argument("--url", default="ws://127.0.0.1:8998/ws")
    ap.add_argument("--token", default=None)
    ap.add_argument("--out", default="reply.wav")
    ap.add_argument("--tail", type=float, default=3.0)
    ap.add_argument("--fast", action="store_true", help="do not pace the audio in real time")
    ap.add_argument("--opus", action="store_true", help="Opus on the wire instead of 16-bit PCM")
    args = ap.parse_args()
    if not 0 <= args.tail <= 60:
        ap.error(f"--tail must be in [0, 60] seconds, got {args.tail}")
    from speech.audio import read_wav, write_wav
    from speech.client import ServerError, talk

    try:
        audio, sr = read_wav(args.inp)
    except ValueError as e:
        sys.exit(f"talk.py: error: {e}")
    if sr != 24000 or audio.shape[0] != 1:
        sys.exit(f"talk.py: error: {args.inp} must be mono 24 kHz (got {audio.shape[0]} channels at {sr} Hz)")
    url = args.url + (f"?token={args.token}" if args.token else "")
    try:
        reply = asyncio.run(talk(url, audio[0], tail_s=args.tail, realtime=not args.fast,
                                 wire="opus" if args.opus else "pcm16"))
    except (TimeoutError, ServerError, OSError) as e:
        sys.exit(f"talk.py: error: {e}")
    if reply.error is not None:
        sys.exit(f"talk.py: the server ended the conversation: {reply.error['code']}: {reply.error['message']}")
    out = Path(args.out)
    write_wav(out, reply.agent, reply.info["sample_rate"])
    out.with_suffix(".json").write_text(json.dumps({"text": [{"frame": f, "piece": p} for f, p in reply.text],
                                                    "first_audio_s": reply.first_audio_s,
                                                    "frames": reply.frames_received}, indent=2))
    print(f"sent {reply.frames_sent} frames, received {reply.frames_received}; agent said: "
          f"{''.join(p for _, p in reply.text)!r}; wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
