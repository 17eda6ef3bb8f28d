"""Opus on the chat server's wire (speech/opus.py, PyAV): packet framing, a codec round trip, and a server
conversation in Opus next to one in PCM16, with the negotiation's errors."""

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from speech import opus
from speech.client import talk
from speech.server import AUDIO, HANDSHAKE

from .test_server import expect_error, parts, serve, speech  # noqa: F401  (parts: the module's server fixture)

pytestmark = pytest.mark.skipif(not opus.available(), reason="needs PyAV with libopus (make test installs it)")


def test_packet_framing_round_trip_and_errors():
    packets = [b"\x01" * 3, b"\x02" * 200, b"\x03"]
    assert opus.unpack_packets(opus.pack_packets(packets)) == packets
    data = opus.pack_packets(packets)
    for bad in (b"", data[:-1], data[:1], b"\x00\x00", b"\xff\xff" + b"x" * 10):
        with pytest.raises(ValueError):
            opus.unpack_packets(bad)
    with pytest.raises(ValueError, match="1..3825"):
        opus.pack_packets([b""])


def test_opus_round_trip_keeps_a_tone():
    enc, dec = opus.OpusEncoder(24000), opus.OpusDecoder(24000)
    t = np.arange(1920 * 25) / 24000
    x = (8000 * np.sin(2 * np.pi * 330 * t)).astype(np.int16)
    packets = [p for i in range(25) for p in enc.encode(x[i * 1920:(i + 1) * 1920])]
    assert len(packets) == 25 * 4  # 20 ms each
    y = np.concatenate([dec.decode(p) for p in packets]).astype(float)
    assert abs(len(y) - len(x)) <= 1920  # the codec's look-ahead, at most a frame
    a = x[4800:40000].astype(float)
    corr = max(np.corrcoef(a, y[4800 + d:40000 + d])[0, 1] for d in range(0, 1200))
    assert corr > 0.95, corr
    with pytest.raises(ValueError, match="not a decodable Opus packet"):
        dec.decode(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="mono int16"):
        enc.encode(np.zeros(1920, np.float32))


def test_server_speaks_opus_next_to_pcm16(parts):  # noqa: F811
    async def run(url, server):
        a, b = await asyncio.gather(talk(url, speech(1.0, 1), tail_s=0.5, wire="opus"),
                                    talk(url, speech(0.6, 2), tail_s=0.5))
        return a, b, server

    a, b, server = serve(parts, run)
    assert a.info["audio"] == "opus" and b.info["audio"] == "pcm16"
    for r, secs in ((a, 1.0), (b, 0.6)):
        assert r.error is None
        want = -(-int(secs * 24000) // 1920) + round(0.5 * 12.5)
        assert r.frames_sent == want and r.frames_received == want  # one message per tick either way
        assert abs(len(r.agent) - want * 1920) <= 1920
    assert server.late_frames <= 3  # the Opus client's audio arrived, decoded, in time


def test_handshake_options_and_opus_errors(parts, monkeypatch):  # noqa: F811
    def hello(options: bytes):
        async def send(ws):
            await ws.send_bytes(bytes([HANDSHAKE, 1]) + options)
        return send

    def opus_then(payload: bytes):
        async def send(ws):
            await ws.send_bytes(bytes([HANDSHAKE, 1]) + json.dumps({"audio": "opus"}).encode())
            msg = await ws.receive(timeout=10)
            assert json.loads(msg.data[1:].decode())["audio"] == "opus"
            await ws.send_bytes(bytes([AUDIO]) + payload)
        return send

    async def run(url, server):
        good = asyncio.create_task(talk(url, speech(2.0, 3), tail_s=0.3, wire="opus"))
        await asyncio.sleep(0.3)
        errs = [await expect_error(url, fn, code) for fn, code in (
            (hello(b"{not json"), "malformed"), (hello(b'{"audio": "mp3"}'), "malformed"),
            (hello(b'{"audio": "opus", "x": 1}'), "malformed"), (hello(b"[1, 2]"), "malformed"),
            (opus_then(opus.pack_packets([b"\xff\xfe junk"])), "malformed"),  # framed, but not Opus
            (opus_then(b"\x05\x00ab"), "malformed"),  # a packet that runs past the message
            (opus_then(b"\x00" * 60000), "oversized"))]
        return errs, await good

    errs, good = serve(parts, run)
    assert good.error is None and good.info["audio"] == "opus"
    assert "mp3" in errs[1]["message"] and "opus audio" in errs[4]["message"]

    monkeypatch.setattr(opus, "available", lambda: False)

    async def run_without(url, server):
        return await expect_error(url, hello(b'{"audio": "opus"}'), "unsupported")

    assert "pcm16" in serve(parts, run_without)["message"]


def test_talk_refuses_an_unknown_wire_format():
    with pytest.raises(ValueError, match="wire must be"):
        asyncio.run(talk("ws://127.0.0.1:9/ws", np.zeros(10, np.float32), wire="mp3"))


def test_a_client_without_options_still_gets_pcm16(parts):  # noqa: F811
    async def run(url, server):
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_bytes(bytes([HANDSHAKE, 1]))
            msg = await ws.receive(timeout=10)
            return json.loads(msg.data[1:].decode())

    assert serve(parts, run)["audio"] == "pcm16"
