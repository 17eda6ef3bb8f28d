"""The chat server: many conversations over WebSockets, all stepped together in one batched call per 80 ms tick.

Protocol (version 1; docs/server.md). Every WebSocket message is binary, its first byte the kind:

    0x00 HANDSHAKE  client -> server: one byte, the protocol version it speaks (1), optionally followed by UTF-8
                    JSON options {"audio": "pcm16" | "opus"} (default pcm16).
                    server -> client: UTF-8 JSON {"protocol", "sample_rate", "frame_size", "frame_rate", "session",
                    "audio"}.
    0x01 AUDIO      pcm16: PCM 16-bit little-endian mono at 24 kHz. Client -> server: any whole number of samples
                    per message (at most MAX_AUDIO_BYTES); server -> client: one 80 ms frame (1920 samples) per tick.
                    opus: length-prefixed Opus packets (speech/opus.py); client -> server any number per message,
                    server -> client one message of four 20 ms packets per tick.
    0x02 TEXT       server -> client: uint32 LE frame index, then the UTF-8 monologue piece of that frame.
    0x03 ERROR      server -> client: UTF-8 JSON {"code", "message"}; the server then closes that conversation.

The server owns one `ChatSession` with `max_sessions` rows. A new conversation takes a free row (reset, so it
starts fresh); one more than `max_sessions` gets ERROR "busy" at once. Every tick takes 1920 samples from each live
conversation's input buffer (silence when the client is late: counted as a late frame), steps all rows in one call
and sends each its agent frame and text. Buffers are bounded: a client more than MAX_BUFFER_S ahead of the wall
clock is refused, and when the server itself falls behind real time the oldest buffered audio is dropped (counted
per conversation) so the buffer stays bounded. A client too far ahead, a malformed, oversized or out-of-order
message, no handshake within HANDSHAKE_TIMEOUT_S, or no audio for IDLE_TIMEOUT_S ends that conversation with an
ERROR; the others and the server go on.

Dimension legend: B rows (conversations), S samples per frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import secrets
import struct
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from aiohttp import WSMsgType, web

from speech import opus
from speech.chat import ChatSession

PROTOCOL_VERSION = 1
HANDSHAKE, AUDIO, TEXT, ERROR = 0x00, 0x01, 0x02, 0x03
AUDIO_FORMATS = ("pcm16", "opus")
MAX_OPTIONS_BYTES = 1024  # the handshake's JSON options
MAX_AUDIO_BYTES = 2 * 24000  # one message: at most 1 s of 16-bit audio
WS_MAX_BYTES = 1 << 22  # what the WebSocket layer reads at all
MAX_BUFFER_S = 2.0  # a client may run this far ahead of real time
HANDSHAKE_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 10.0
TIMINGS_KEPT = 100_000  # ticks of timing history (2.2 h at 12.5 Hz)
WEB_DIR = Path(__file__).resolve().parent / "web"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Conversation:
    row: int
    ws: web.WebSocketResponse
    buffer: bytearray = dataclasses.field(default_factory=bytearray)  # user PCM16 not yet consumed
    frames: int = 0  # ticks served
    late: int = 0  # ticks with less than a frame of user audio buffered
    last_audio: float = dataclasses.field(default_factory=time.monotonic)
    started: float | None = None  # wall clock of the first audio message
    received: int = 0  # bytes of user audio received
    dropped: int = 0  # bytes of the oldest user audio dropped because the server fell behind real time
    active: bool = False  # stepped by the tick loop (after the handshake and the row's reset)
    pending_reset: bool = False  # the tick loop resets the row before its first step (the only session caller)
    closed: bool = False
    error: tuple[str, str] | None = None
    audio: str = "pcm16"  # the wire format negotiated in the handshake
    opus_in: opus.OpusDecoder | None = None  # of the user's packets (audio == "opus")
    opus_out: opus.OpusEncoder | None = None  # of the agent's frames


def error_message(code: str, message: str) -> bytes:
    return bytes([ERROR]) + json.dumps({"code": code, "message": message}).encode()


class ChatServer:
    """aiohttp application around one batched ChatSession."""

    def __init__(self, session: ChatSession, token: str | None = None, frame_s: float | None = None) -> None:
        self.session = session
        self.codec = session.codec
        self.max_sessions = session.batch_size
        self.token = token
        self.frame_s = frame_s if frame_s is not None else 1.0 / self.codec.frame_rate
        self.rows: list[Conversation | None] = [None] * self.max_sessions
        # the last TIMINGS_KEPT ticks (bounded: a server runs for days): each step as the event loop waits for it,
        # and the step's own compute time in its worker thread (for bench_server)
        self.tick_ms: deque[float] = deque(maxlen=TIMINGS_KEPT)
        self.step_ms: deque[float] = deque(maxlen=TIMINGS_KEPT)
        self.ticks = 0
        self.late_frames = 0  # ticks at which a live conversation had less than a frame of user audio buffered
        self.peak_buffer = 0  # the largest per-conversation input buffer seen, in bytes (bounded by design)
        self._task: asyncio.Task | None = None
        self.app = web.Application()
        self.app.router.add_get("/ws", self.websocket)
        self.app.router.add_get("/api/status", self.status)
        if WEB_DIR.is_dir():
            self.app.router.add_get("/", self.index)
            self.app.router.add_static("/static", WEB_DIR)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    async def _start(self, app: web.Application) -> None:
        self.session.__enter__()
        # the model, codec and caches are long-lived: move them out of the cyclic collector's reach, so that its
        # full collections (which would otherwise walk every one of them) stay short and do not stall a tick
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._tick_loop())

    async def _stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.session.__exit__(None, None, None)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def status(self, request: web.Request) -> web.Response:
        live = sum(c is not None for c in self.rows)
        return web.json_response({"live": live, "max_sessions": self.max_sessions, "ticks": self.ticks})

    # ---- one conversation ------------------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        # frames up to WS_MAX_BYTES are read so that an oversized message gets an ERROR reply; larger ones are cut by
        # aiohttp (close code 1009) before they are buffered
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_BYTES, heartbeat=None)
        await ws.prepare(request)
        if self.token is not None and not secrets.compare_digest(request.query.get("token", ""), self.token):
            await self._refuse(ws, "unauthorized", "missing or wrong ?token=")
            return ws
        row = next((i for i, c in enumerate(self.rows) if c is None), None)
        if row is None:
            await self._refuse(ws, "busy", f"the server is busy: all {self.max_sessions} conversations are taken; "
                                           "try again later")
            return ws
        conv = Conversation(row, ws)
        self.rows[row] = conv  # reserved; reset and activated after the handshake
        try:
            await self._handshake(conv)
            conv.last_audio = time.monotonic()
            conv.pending_reset = True
            await self._receive(conv)
        except ProtocolError as e:
            conv.error = (e.code, str(e))
        finally:
            self.rows[row] = None
            conv.closed = True
            self.late_frames += conv.late
            if conv.error is not None and not ws.closed:
                try:
                    await ws.send_bytes(error_message(*conv.error))
                except (ConnectionError, RuntimeError):
                    pass
            await ws.close()
        return ws

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        await ws.send_bytes(error_message(code, message))
        await ws.close()

    async def _handshake(self, conv: Conversation) -> None:
        try:
            msg = await conv.ws.receive(timeout=HANDSHAKE_TIMEOUT_S)
        except TimeoutError as e:
            raise ProtocolError("timeout", f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s") from e
        if msg.type != WSMsgType.BINARY:
            raise ProtocolError("malformed", "expected a binary handshake message (0x00, version)")
        data = msg.data
        if len(data) < 2 or data[0] != HANDSHAKE:
            raise ProtocolError("malformed", "the first message must be the handshake: bytes 0x00 and the version")
        if data[1] != PROTOCOL_VERSION:
            raise ProtocolError("version", f"protocol version {data[1]} is not supported; this server speaks "
                                           f"{PROTOCOL_VERSION}")
        self._options(conv, data[2:])
        info = {"protocol": PROTOCOL_VERSION, "sample_rate": self.codec.sample_rate,
                "frame_size": self.codec.frame_size, "frame_rate": self.codec.frame_rate, "session": conv.row,
                "audio": conv.audio}
        await conv.ws.send_bytes(bytes([HANDSHAKE]) + json.dumps(info).encode())

    def _options(self, conv: Conversation, raw: bytes) -> None:
        """The handshake's optional JSON options: {"audio": "pcm16" | "opus"}."""
        if not raw:
            return
        if len(raw) > MAX_OPTIONS_BYTES:
            raise ProtocolError("malformed", f"handshake options of {len(raw)} bytes; at most {MAX_OPTIONS_BYTES}")
        try:
            opts = json.loads(bytes(raw).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProtocolError("malformed", f"handshake options are not UTF-8 JSON: {e}") from e
        if not isinstance(opts, dict) or set(opts) - {"audio"}:
            raise ProtocolError("malformed", f'handshake options must be a JSON object with the key "audio", got '
                                             f"{str(opts)[:80]}")
        audio = opts.get("audio", "pcm16")
        if audio not in AUDIO_FORMATS:
            raise ProtocolError("malformed", f"audio format {str(audio)[:40]!r} is unknown; formats: {AUDIO_FORMATS}")
        if audio == "opus":
            if not opus.available():
                raise ProtocolError("unsupported", "this server has no Opus (PyAV with libopus); use pcm16")
            conv.opus_in = opus.OpusDecoder(self.codec.sample_rate)
            conv.opus_out = opus.OpusEncoder(self.codec.sample_rate)
        conv.audio = audio

    def _opus_payload(self, conv: Conversation, data: bytes) -> bytes:
        """An Opus message -> its PCM16 bytes (the buffer's format)."""
        try:
            pcm = [conv.opus_in.decode(p) for p in opus.unpack_packets(data)]
        except ValueError as e:
            raise ProtocolError("malformed", f"opus audio: {e}") from e
        return b"".join(x.astype("<i2").tobytes() for x in pcm)

    async def _receive(self, conv: Conversation) -> None:
        max_buffer = int(MAX_BUFFER_S * self.codec.sample_rate) * 2
        while True:
            remaining = IDLE_TIMEOUT_S - (time.monotonic() - conv.last_audio)
            try:
                msg = await conv.ws.receive(timeout=max(remaining, 0.01))
            except TimeoutError as e:
                raise ProtocolError("idle", f"no audio for {IDLE_TIMEOUT_S:g} s") from e
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                exc = conv.ws.exception()
                code = "oversized" if "size" in str(exc).lower() else "malformed"
                raise ProtocolError(code, f"websocket error: {exc}")
            if msg.type != WSMsgType.BINARY:
                raise ProtocolError("malformed", f"expected binary messages, got {msg.type.name}")
            data = msg.data
            if not data:
                raise ProtocolError("malformed", "empty message")
            kind = data[0]
            if kind == HANDSHAKE:
                raise ProtocolError("out_of_order", "a second handshake")
            if kind != AUDIO:
                raise ProtocolError("malformed", f"unknown or server-only message kind 0x{kind:02x}")
            payload = data[1:]
            if conv.audio == "opus":  # bounded before decoding: at most 1 s of the largest packets
                if len(payload) > MAX_AUDIO_BYTES:
                    raise ProtocolError("oversized", f"opus message of {len(payload)} bytes; at most "
                                                     f"{MAX_AUDIO_BYTES}")
                payload = self._opus_payload(conv, payload)
            if len(payload) > MAX_AUDIO_BYTES:
                raise ProtocolError("oversized", f"audio message of {len(payload)} bytes; at most {MAX_AUDIO_BYTES} "
                                                 "(1 s) per message")
            if len(payload) % 2:
                raise ProtocolError("malformed", f"audio payload of {len(payload)} bytes is not whole 16-bit samples")
            now = time.monotonic()
            if conv.started is None:
                conv.started = now
            conv.received += len(payload)
            # the client's pace is judged by the wall clock: a slow server must not blame a real-time client
            if conv.received / 2 / self.codec.sample_rate - (now - conv.started) > MAX_BUFFER_S:
                raise ProtocolError("too_fast", f"more than {MAX_BUFFER_S:g} s of audio ahead of real time")
            conv.buffer += payload
            if len(conv.buffer) > max_buffer:  # the server fell behind: keep the newest audio, bounded
                extra = len(conv.buffer) - max_buffer
                del conv.buffer[:extra]
                conv.dropped += extra
            self.peak_buffer = max(self.peak_buffer, len(conv.buffer))
            conv.last_audio = time.monotonic()

    # ---- the batched tick ------------------------------------------------------------------------------------------
    def _gather(self) -> tuple[torch.Tensor, list[Conversation]]:
        s = self.codec.frame_size
        pcm = np.zeros((self.max_sessions, s), dtype=np.float32)
        live = []
        reset = [c.row for c in self.rows if c is not None and c.pending_reset]
        if reset:  # new conversations start fresh; done here, between steps, never during one
            self.session.reset(reset)
            for r in reset:
                self.rows[r].pending_reset = False
                self.rows[r].active = True
        for c in self.rows:
            if c is None or not c.active or c.closed or c.ws.closed or c.error is not None:
                continue
            live.append(c)
            n = min(len(c.buffer), 2 * s)
            if n < 2 * s:
                c.late += 1
            if n:
                pcm[c.row, : n // 2] = np.frombuffer(bytes(c.buffer[:n]), dtype="<i2") / 32768.0
                del c.buffer[:n]
        return torch.from_numpy(pcm), live

    def _timed_step(self, pcm: torch.Tensor):
        t0 = time.perf_counter()
        out = self.session.step(pcm)
        self.step_ms.append((time.perf_counter() - t0) * 1000)
        return out

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += self.frame_s
            pcm, live = self._gather()
            t0 = time.perf_counter()
            out = await loop.run_in_executor(None, self._timed_step, pcm)
            self.tick_ms.append((time.perf_counter() - t0) * 1000)
            self.ticks += 1
            for c in live:
                if c.ws.closed or self.rows[c.row] is not c:
                    continue
                frame = np.clip(out.agent_pcm[c.row].numpy() * 32768.0, -32768, 32767).astype("<i2")
                if c.audio == "opus":
                    body = opus.pack_packets(c.opus_out.encode(frame.astype(np.int16, copy=False)))
                else:
                    body = frame.tobytes()
                try:
                    await c.ws.send_bytes(bytes([AUDIO]) + body)
                    piece = out.text[c.row]
                    if piece is not None:
                        await c.ws.send_bytes(bytes([TEXT]) + struct.pack("<I", c.frames) + piece.encode())
                except (ConnectionError, RuntimeError):
                    pass  # the conversation's own handler notices the close
                c.frames += 1
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = loop.time()  # behind real time: do not try to catch up in a burst
