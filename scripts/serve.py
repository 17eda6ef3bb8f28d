"""usage: python scripts/serve.py [--ckpt checkpoints/chat] [--host 127.0.0.1] [--port 8998] [--max-sessions 4]
                              [--token SECRET] [--temperature 0.8] [--text-temperature 0.7] [--threads 0]

Serves the chat model: the web client at http://HOST:PORT/ and conversations over the WebSocket at /ws (protocol in
docs/server.md). All live conversations are stepped together, one batched model step per 80 ms tick; one more than
--max-sessions gets a clear "busy" error. Listens on 127.0.0.1 unless --host says otherwise; with --token, clients
must add ?token=SECRET.
"""

import argparse
import sys
from pathlib import Path

DEFAULT_CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "chat"


from speech.chat_args import add_sampling_args, sampling_from_args  # noqa: E402  (no torch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(DEFAULT_CKPT),
                    help="chat checkpoint (default: the committed one; or scripts/train_chat.py's OUT/checkpoint)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8998)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--token", default=None)
    add_sampling_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.max_sessions < 1:
        ap.error(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if not 0 <= args.port < 65536:
        ap.error(f"--port must be in [0, 65535], got {args.port}")
    import torch
    from aiohttp import web

    from speech.chat import ChatSession, chat_options, load_chat
    from speech.server import ChatServer

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, codec, text = load_chat(args.ckpt)
        options = chat_options(args.ckpt)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"serve.py: error: {e}")
    session = ChatSession(model, codec, text, batch_size=args.max_sessions,
                          sampling=sampling_from_args(args), seed=args.seed, options=options)
    server = ChatServer(session, token=args.token)
    print(f"serving {args.ckpt} on http://{args.host}:{args.port}/ (up to {args.max_sessions} conversations)")
    web.run_app(server.app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
