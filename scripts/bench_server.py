"""usage: python scripts/bench_server.py [--ckpt checkpoints/chat | --untrained] [--clients 1 2 4 8] [--seconds 60]
                                     [--threads 0] [--wire pcm16|opus] [--out runs/bench_server.json]

Load test of the chat server on loopback: for each N, a server with N rows and N simulated clients that stream
audio in real time (80 ms per frame) for --seconds. The clients run in a child process (real clients are on other
machines; on this one their CPU still counts against the server). Reports per tick (one batched step of all N
conversations: codec encode + model step + codec decode) its latency p50/p99 as the server's event loop sees it
(the step in its worker thread, including the wait for the thread) and the ratio to the 80 ms frame, the step's
own compute p50/p99, ticks over 80 ms, frames the clients sent late or received short, and the server process's
CPU use. The model is the committed chat checkpoint unless --ckpt names another; --untrained uses the `tiny` preset
with an untrained codec (protocol/throughput only). --wire opus: the clients and the server speak Opus (PyAV).
Prints a table, writes JSON.
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
    ap.add_argument("--wire", default="pcm16", choices=["pcm16", "opus"], help="audio on the wire")
    ap.add_argument("--out", default="runs/bench_server.json")
    ap.add_argument("--client-run", nargs=3, metavar=("URL", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client_run:  # the child process: N real-time clients, a JSON summary on stdout
        url, n, seconds = args.client_run
        print(json.dumps(asyncio.run(clients(url, int(n), float(seconds), args.wire))))
        return
    if any(n < 1 for n in args.clients) or not args.seconds > 0:
        ap.error(f"--clients must be >= 1 and --seconds > 0, got {args.clients}, {args.seconds}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, codec, text, label = load(None if args.untrained else args.ckpt)
    rows = [asyncio.run(run_one(model, codec, text, n, args.seconds, args.wire)) for n in args.clients]
    print(f"chat server load test: {label}; {args.seconds:g} s per N; {args.wire} on the wire; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'N':>3} {'tick p50':>9} {'tick p99':>9} {'p99/80ms':>9} {'step p50':>9} {'step p99':>9} "
          f"{'ticks>80ms':>11} {'late in':>8} {'short out':>10} {'CPU':>6}")
    for r in rows:
        print(f"{r['clients']:3d} {r['tick_p50_ms']:7.2f}ms {r['tick_p99_ms']:7.2f}ms {r['tick_p99_ratio']:9.3f} "
              f"{r['step_p50_ms']:7.2f}ms {r['step_p99_ms']:7.2f}ms {r['ticks_over_frame']:11d} "
              f"{r['late_frames']:8d} {r['short_replies']:10d} {r['cpu_cores']:6.2f}")
    from multistream.atomic import atomic_write_json

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"model": label, "seconds": args.seconds, "wire": args.wire,
                            "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
                            "results": rows}, indent=2)
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


async def clients(url: str, n: int, seconds: float, wire: str) -> dict:
    """N real-time clients of `seconds` of noise each (the child process)."""
    from speech.client import talk

    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * 24000))).astype(np.float32) for _ in range(n)]
    replies = await asyncio.gather(*(talk(url, a, tail_s=0.0, wire=wire) for a in audio))
    return {"short_replies": int(sum(r.frames_received < r.frames_sent for r in replies)),
            "errors": [r.error for r in replies if r.error is not None]}


async def run_one(model, codec, text, n: int, seconds: float, wire: str) -> dict:
    from aiohttp import web

    from speech.chat import ChatSession
    from speech.server import ChatServer

    server = ChatServer(ChatSession(model, codec, text, batch_size=n, seed=0))
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    c0, t0 = time.process_time(), time.monotonic()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--wire", wire, "--client-run", f"ws://127.0.0.1:{port}/ws", str(n),
            str(seconds), stdout=asyncio.subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        out, _ = await asyncio.wait_for(child.communicate(), timeout=seconds + 120)
        if child.returncode != 0:
            sys.exit(f"bench_server.py: error: the client process failed (exit {child.returncode})")
        summary = json.loads(out.decode().strip().splitlines()[-1])
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        late = server.late_frames
    finally:
        await runner.cleanup()
    ticks, steps = (np.asarray(list(x)[5:] or list(x)) for x in (server.tick_ms, server.step_ms))
    frame_ms = 1000 / codec.frame_rate
    return {
        "clients": n,
        "ticks": int(len(ticks)),
        "tick_p50_ms": float(np.median(ticks)),
        "tick_p99_ms": float(np.quantile(ticks, 0.99)),
        "tick_p99_ratio": float(np.quantile(ticks, 0.99) / frame_ms),
        "step_p50_ms": float(np.median(steps)),
        "step_p99_ms": float(np.quantile(steps, 0.99)),
        "ticks_over_frame": int((ticks > frame_ms).sum()),
        "late_frames": int(late),
        **summary,
        "cpu_cores": cpu / wall,  # the server process (the clients run in their own)
    }


if __name__ == "__main__":
    main()
