"""usage: python scripts/bench_server.py [--ckpt checkpoints/chat | --untrained] [--clients 1 2 4 8] [--seconds 60]
                                     [--threads 0] [--out runs/bench_server.json]

Load test of the chat server on loopback: for each N, a server with N rows and N simulated clients that stream
audio in real time (80 ms per frame) for --seconds, all in one process. Reports per tick (one batched step of all
N conversations) the compute time p50/p99 and its ratio to the 80 ms frame, ticks over 80 ms, frames the clients
sent late or received short, and the process CPU use. The model is the committed chat checkpoint unless --ckpt names
another; --untrained uses the `tiny` preset with an untrained codec (protocol/throughput only). Prints a table,
writes JSON.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "chat"),
                    help="chat checkpoint (default: the committed one)")
    ap.add_argument("--untrained", action="store_true", help="an untrained tiny model instead of --ckpt")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_server.json")
    args = ap.parse_args()
    if any(n < 1 for n in args.clients) or not args.seconds > 0:
        ap.error(f"--clients must be >= 1 and --seconds > 0, got {args.clients}, {args.seconds}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, codec, text, label = load(None if args.untrained else args.ckpt)
    rows = [asyncio.run(run_one(model, codec, text, n, args.seconds)) for n in args.clients]
    print(f"chat server load test: {label}; {args.seconds:g} s per N; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'N':>3} {'tick p50':>9} {'tick p99':>9} {'p99/80ms':>9} {'ticks>80ms':>11} {'late in':>8} "
          f"{'short out':>10} {'CPU':>6}")
    for r in rows:
        print(f"{r['clients']:3d} {r['tick_p50_ms']:7.2f}ms {r['tick_p99_ms']:7.2f}ms {r['tick_p99_ratio']:9.3f} "
              f"{r['ticks_over_frame']:11d} {r['late_frames']:8d} {r['short_replies']:10d} {r['cpu_cores']:6.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": label, "seconds": args.seconds, "results": rows}, indent=2))
    print(f"wrote {out}")


def load(ckpt):
    import torch

    from speech.chat import load_chat

    if ckpt is not None:
        try:
            model, codec, text = load_chat(ckpt)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"bench_server.py: error: {e}")
        return model, codec, text, f"{ckpt} ({model.num_parameters() / 1e6:.1f} M)"
    from multistream.checkpoint import save_checkpoint
    from multistream.lm import RQTransformer
    from multistream.presets import tiny
    from speech.codec.config import tiny as tiny_codec
    from speech.codec.model import MimiCodec
    from speech.corpus import corpus_text
    from speech.streams import CodecFrames, MonologueText, chat_streams
    from speech.text import TextTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_server."))
    torch.manual_seed(0)
    c = MimiCodec(tiny_codec()).eval()
    save_checkpoint(tmp / "codec", c, c.cfg)
    TextTokenizer.train(corpus_text("train", 200, 0), 64, tmp / "tokenizer.model")
    codec, text = CodecFrames.load(tmp / "codec"), MonologueText(tmp / "tokenizer.model")
    model = RQTransformer(tiny(chat_streams(codec, text))).eval()
    return model, codec, text, f"untrained tiny ({model.num_parameters() / 1e6:.1f} M)"


async def run_one(model, codec, text, n: int, seconds: float) -> dict:
    from aiohttp import web

    from speech.chat import ChatSession
    from speech.client import talk
    from speech.server import ChatServer

    server = ChatServer(ChatSession(model, codec, text, batch_size=n, seed=0))
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * codec.sample_rate))).astype(np.float32) for _ in range(n)]
    c0, t0 = time.process_time(), time.monotonic()
    try:
        replies = await asyncio.gather(*(talk(f"ws://127.0.0.1:{port}/ws", a, tail_s=0.0) for a in audio))
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        late = server.late_frames
    finally:
        await runner.cleanup()
    ticks = np.asarray(server.tick_ms[5:] or server.tick_ms)
    frame_ms = 1000 / codec.frame_rate
    return {
        "clients": n,
        "ticks": int(len(ticks)),
        "tick_p50_ms": float(np.median(ticks)),
        "tick_p99_ms": float(np.quantile(ticks, 0.99)),
        "tick_p99_ratio": float(np.quantile(ticks, 0.99) / frame_ms),
        "ticks_over_frame": int((ticks > frame_ms).sum()),
        "late_frames": int(late),
        "short_replies": int(sum(r.frames_received < r.frames_sent for r in replies)),
        "errors": [r.error for r in replies if r.error is not None],
        "cpu_cores": cpu / wall,
    }


if __name__ == "__main__":
    main()
