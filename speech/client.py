"""A Python client of the chat server (protocol in speech/server.py and docs/server.md), used by scripts/talk.py,
scripts/bench_server.py and the tests: stream audio in real time, collect the agent's audio and text.

Dimension legend: N samples, S samples per frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import time

import aiohttp
import numpy as np

from speech.server import AUDIO, ERROR, HANDSHAKE, PROTOCOL_VERSION, TEXT


@dataclasses.dataclass
class Reply:
    agent: np.ndarray  # float32 [N] at the server's sample rate
    text: list[tuple[int, str]]  # (frame, piece)
    info: dict  # the server's handshake
    error: dict | None = None  # the server's ERROR message, if it ended the conversation
    frames_sent: int = 0
    frames_received: int = 0
    first_audio_s: float | None = None  # wall time from the first frame sent to the first agent frame with sound


class ServerError(Exception):
    pass


async def talk(url: str, audio: np.ndarray, tail_s: float = 2.0, realtime: bool = True,
               chunk_frames: int = 1, wire: str = "pcm16") -> Reply:
    """Send `audio` (float [N], the server's sample rate) frame by frame, paced like a microphone, then `tail_s`
    of silence; return what came back. `wire`: the audio format on the wire, "pcm16" or "opus" (speech/opus.py)."""
    if wire not in ("pcm16", "opus"):
        raise ValueError(f'wire must be "pcm16" or "opus", got {wire!r}')
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=1 << 22) as ws:
        options = b"" if wire == "pcm16" else json.dumps({"audio": wire}).encode()
        await ws.send_bytes(bytes([HANDSHAKE, PROTOCOL_VERSION]) + options)
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise ServerError(f"no handshake from {url} (got {msg.type.name})")
        if msg.data[0] == ERROR:
            raise ServerError(json.loads(msg.data[1:].decode())["message"])
        info = json.loads(msg.data[1:].decode())
        s, rate = info["frame_size"], info["frame_rate"]
        enc = dec = None
        if wire == "opus":
            from speech.opus import OpusDecoder, OpusEncoder, pack_packets, unpack_packets

            enc, dec = OpusEncoder(info["sample_rate"]), OpusDecoder(info["sample_rate"])
        n_frames = -(-len(audio) // s) + round(tail_s * rate)
        pcm = np.zeros(n_frames * s, dtype=np.float32)
        pcm[: len(audio)] = audio
        pcm16 = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
        reply = Reply(agent=np.zeros(0, dtype=np.float32), text=[], info=info)
        chunks: list[np.ndarray] = []
        t_start = time.monotonic()

        async def sender() -> None:
            for i in range(0, n_frames, chunk_frames):
                if ws.closed:
                    return
                part = pcm16[i * s : (i + chunk_frames) * s]
                body = part.tobytes() if enc is None else pack_packets(enc.encode(part.astype(np.int16)))
                await ws.send_bytes(bytes([AUDIO]) + body)
                reply.frames_sent += len(part) // s
                if realtime:
                    wait = t_start + (i + chunk_frames) / rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)

        async def receiver() -> None:
            while reply.frames_received < n_frames:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    return
                kind, body = msg.data[0], msg.data[1:]
                if kind == AUDIO:
                    if dec is not None:  # one message of packets per tick
                        body = b"".join(dec.decode(p).astype("<i2").tobytes() for p in unpack_packets(body))
                    frame = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768
                    chunks.append(frame)
                    reply.frames_received += 1
                    if reply.first_audio_s is None and np.abs(frame).max() > 0:
                        reply.first_audio_s = time.monotonic() - t_start
                elif kind == TEXT:
                    (frame_i,) = struct.unpack("<I", body[:4])
                    reply.text.append((frame_i, body[4:].decode()))
                elif kind == ERROR:
                    reply.error = json.loads(body.decode())
                    return

        await asyncio.gather(sender(), receiver())
        reply.agent = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return reply
