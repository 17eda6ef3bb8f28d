"""The chat server on loopback: concurrent conversations in one batched step, busy, token, and misbehaving clients
that end their own conversation while the others go on."""

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest
import torch
from aiohttp import web

from multistream.presets import tiny
from speech.chat import ChatSession
from speech.client import talk
from speech.server import AUDIO, ERROR, HANDSHAKE, ChatServer
from speech.streams import MonologueText, chat_streams

from .conftest import make_codec


@pytest.fixture(scope="module")
def parts(dialogues, tmp_path_factory):
    from multistream.lm import RQTransformer

    codec = make_codec(tmp_path_factory.mktemp("srv") / "codec")
    text = MonologueText(dialogues / "tokenizer.model")
    torch.manual_seed(0)
    model = RQTransformer(tiny(chat_streams(codec, text))).eval()
    return model, codec, text


def serve(parts, coro_fn, max_sessions=2, token=None):
    """Run `coro_fn(url, server)` against a server on a free loopback port; returns its result."""
    model, codec, text = parts

    async def main():
        server = ChatServer(ChatSession(model, codec, text, batch_size=max_sessions, seed=0), token=token)
        runner = web.AppRunner(server.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(coro_fn(f"ws://127.0.0.1:{port}/ws", server), timeout=120)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 24000))).astype(np.float32)


def test_two_conversations_at_once(parts):
    async def run(url, server):
        a, b = await asyncio.gather(talk(url, speech(1.0, 1), tail_s=0.5), talk(url, speech(0.6, 2), tail_s=0.5))
        return a, b, list(server.tick_ms)

    a, b, ticks = serve(parts, run)
    for r, secs in ((a, 1.0), (b, 0.6)):
        assert r.error is None
        want = -(-int(secs * 24000) // 1920) + round(0.5 * 12.5)
        assert r.frames_sent == want and r.frames_received == want
        assert len(r.agent) == want * 1920
    assert {a.info["session"], b.info["session"]} == {0, 1}
    assert len(ticks) >= 15


async def expect_error(url, send, code):
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await send(ws)
        while True:
            msg = await ws.receive(timeout=20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"connection ended without an ERROR message ({msg.type.name})")
            if msg.data[0] == ERROR:
                err = json.loads(msg.data[1:].decode())
                assert err["code"] == code, err
                return err


async def handshake(ws):
    await ws.send_bytes(bytes([HANDSHAKE, 1]))
    msg = await ws.receive(timeout=10)
    assert msg.data[0] == HANDSHAKE


def test_misbehaving_clients_end_only_their_conversation(parts):
    async def odd(ws):
        await handshake(ws)
        await ws.send_bytes(bytes([AUDIO, 1, 2, 3]))

    async def kind(ws):
        await handshake(ws)
        await ws.send_bytes(bytes([0x7F, 0, 0]))

    async def second(ws):
        await handshake(ws)
        await ws.send_bytes(bytes([HANDSHAKE, 1]))

    async def textmsg(ws):
        await handshake(ws)
        await ws.send_str("hello")

    async def fast(ws):
        await handshake(ws)
        for _ in range(4):  # 4 s at once: more than 2 s ahead of real time
            await ws.send_bytes(bytes([AUDIO]) + np.zeros(24000, dtype="<i2").tobytes())

    async def big(ws):
        await handshake(ws)
        await ws.send_bytes(bytes([AUDIO]) + np.zeros(200000, dtype="<i2").tobytes())

    async def version(ws):
        await ws.send_bytes(bytes([HANDSHAKE, 9]))

    async def half_frame_then_leave(url):
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await handshake(ws)
            await ws.send_bytes(bytes([AUDIO]) + np.zeros(500, dtype="<i2").tobytes())

    async def run(url, server):
        good = asyncio.create_task(talk(url, speech(2.5, 3), tail_s=0.5))
        await asyncio.sleep(0.3)
        for fn, code in ((odd, "malformed"), (kind, "malformed"), (second, "out_of_order"), (textmsg, "malformed"),
                         (fast, "too_fast"), (big, "oversized"), (version, "version")):
            await expect_error(url, fn, code)
        await half_frame_then_leave(url)
        return await good, server.ticks

    reply, ticks = serve(parts, run, max_sessions=2)
    assert reply.error is None
    want = -(-int(2.5 * 24000) // 1920) + round(0.5 * 12.5)
    assert reply.frames_received == want  # the well-behaved conversation never missed a frame
    assert ticks > want


def test_busy_and_token(parts):
    async def run(url, server):
        first = asyncio.create_task(talk(url, speech(1.5, 4), tail_s=0.2))
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            msg = await ws.receive(timeout=10)
            busy = json.loads(msg.data[1:].decode())
        return busy, await first

    busy, first = serve(parts, run, max_sessions=1)
    assert busy["code"] == "busy" and "busy" in busy["message"]
    assert first.error is None

    async def run_token(url, server):
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            msg = await ws.receive(timeout=10)
            bad = json.loads(msg.data[1:].decode())
        ok = await talk(url + "?token=s3cret", speech(0.3), tail_s=0.1)
        return bad, ok

    bad, ok = serve(parts, run_token, token="s3cret")
    assert bad["code"] == "unauthorized" and ok.error is None


def test_serve_and_talk_scripts(parts, dialogues, tmp_path):
    """scripts/serve.py in its own process on a free loopback port, scripts/talk.py streaming a wav to it."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from multistream.checkpoint import save_checkpoint
    from speech.audio import read_wav, write_wav
    from speech.chat import save_chat_files

    model, codec, text = parts
    root = Path(__file__).resolve().parents[2]
    make_codec(tmp_path / "codec")
    save_checkpoint(tmp_path / "chat", model, model.cfg)
    save_chat_files(tmp_path / "chat", tmp_path / "codec", dialogues / "tokenizer.model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "scripts/serve.py", "--ckpt", str(tmp_path / "chat"), "--port",
                               str(port), "--max-sessions", "2"], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("serve.py did not start listening within 60 s")
        write_wav(tmp_path / "q.wav", speech(0.8), 24000)
        r = subprocess.run([sys.executable, "scripts/talk.py", "--in", str(tmp_path / "q.wav"), "--url",
                            f"ws://127.0.0.1:{port}/ws", "--out", str(tmp_path / "reply.wav"), "--tail", "0.4"],
                           cwd=root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        agent, sr = read_wav(tmp_path / "reply.wav")
        assert sr == 24000 and agent.shape[1] == (-(-int(0.8 * 24000) // 1920) + 5) * 1920
        assert json.loads((tmp_path / "reply.json").read_text())["frames"] == agent.shape[1] // 1920
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_fuzzed_clients_never_hurt_the_server_or_a_good_conversation(parts):
    """Thousands of random and mutated messages from three clients (each reconnecting after it is thrown out) while
    a well-formed conversation runs: it loses no frame, the server keeps serving, buffers stay bounded."""
    import resource

    from speech.server import MAX_BUFFER_S

    rng = np.random.default_rng(0)
    good_frame = bytes([AUDIO]) + np.zeros(1920, dtype="<i2").tobytes()

    def mutated() -> bytes:
        r = rng.random()
        if r < 0.25:
            return bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8))
        if r < 0.5:  # a good frame with flipped bytes (kind byte included)
            b = bytearray(good_frame)
            for i in rng.integers(0, len(b), 4):
                b[int(i)] ^= int(rng.integers(1, 256))
            return bytes(b)
        if r < 0.75:  # truncated frames: odd lengths
            return good_frame[: int(rng.integers(1, len(good_frame)))]
        return bytes([int(rng.integers(0, 8))]) + bytes(int(rng.integers(0, 3000)))

    sent = {"messages": 0}

    async def fuzzer(url, n_messages):
        while sent["messages"] < n_messages:
            try:
                async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                    if rng.random() < 0.7:
                        await ws.send_bytes(bytes([HANDSHAKE, 1]))
                    for _ in range(int(rng.integers(1, 40))):
                        if ws.closed:
                            break
                        await ws.send_bytes(mutated())
                        sent["messages"] += 1
                    await asyncio.sleep(0.01)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                sent["messages"] += 1

    async def run(url, server):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        good = asyncio.create_task(talk(url, speech(3.0, 5), tail_s=0.5))
        await asyncio.gather(*(fuzzer(url, 3000) for _ in range(3)))
        reply = await good
        status_url = url.replace("ws://", "http://").replace("/ws", "/api/status")
        async with aiohttp.ClientSession() as http, http.get(status_url) as r:
            status = await r.json()
        peak_buffer = server.peak_buffer
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return reply, status, peak_buffer, (rss1 - rss0) / 1024

    reply, status, peak_buffer, grew_mb = serve(parts, run, max_sessions=4)
    assert sent["messages"] >= 3000
    assert reply.error is None
    assert reply.frames_received == -(-int(3.0 * 24000) // 1920) + round(0.5 * 12.5)
    assert status["max_sessions"] == 4 and status["ticks"] > 0
    assert peak_buffer <= MAX_BUFFER_S * 24000 * 2
    assert grew_mb < 200, grew_mb


def test_a_slow_server_does_not_blame_a_real_time_client(parts):
    """When the server falls behind real time (here: a model 5x slower than real time), a client sending at
    real-time pace is not refused as too fast; the oldest buffered audio is dropped and the buffer stays bounded."""
    from speech.server import MAX_BUFFER_S

    async def run(url, server):
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await handshake(ws)
            await asyncio.sleep(0.3)
            step = server.session.step

            def slow_step(pcm):  # a model that takes 0.4 s per 80 ms frame
                time.sleep(0.4)
                return step(pcm)

            server.session.step = slow_step
            t0 = time.monotonic()
            sent = 0
            while time.monotonic() - t0 < 4.0:  # 4 s at real-time pace, 80 ms per message
                await ws.send_bytes(bytes([AUDIO]) + np.zeros(1920, dtype="<i2").tobytes())
                sent += 1
                await asyncio.sleep(0.08)
            server.session.step = step
            await asyncio.sleep(0.5)
            conv = next(c for c in server.rows if c is not None)
            return conv.error, conv.dropped, server.peak_buffer, sent

    error, dropped, peak, sent = serve(parts, run, max_sessions=1)
    assert error is None and sent >= 40
    assert dropped > 0 and peak <= 2 * int(MAX_BUFFER_S * 24000)


def test_bench_server_script_runs_clients_in_a_child_process(tmp_path):
    """A short load test: the table and the JSON hold real per-tick figures for each N."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "scripts/bench_server.py", "--untrained", "--clients", "1", "2", "--seconds",
                        "2", "--threads", "1", "--out", str(out)], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert [row["clients"] for row in rep["results"]] == [1, 2] and rep["wire"] == "pcm16"
    for row in rep["results"]:
        assert row["ticks"] >= 15 and row["errors"] == [] and row["short_replies"] == 0
        assert 0 < row["step_p50_ms"] <= row["tick_p50_ms"] * 1.5 and row["tick_p99_ms"] >= row["tick_p50_ms"]
    assert "step p50" in r.stdout
