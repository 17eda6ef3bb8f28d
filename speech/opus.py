"""Opus for the chat server's wire (optional, negotiated in the handshake), through PyAV (libopus inside FFmpeg).

On the wire an Opus audio message's payload is one or more packets, each prefixed by its byte length as uint16
little-endian (`pack_packets` / `unpack_packets`). The server encodes every 80 ms tick of agent audio as four 20 ms
packets in one message; a client may send packets of any standard Opus duration, any number per message.
The browser side is WebCodecs (`AudioEncoder` / `AudioDecoder` with codec "opus"), built into Chromium.

Dimension legend: N samples (mono, int16, at the codec's sample rate).
"""

from __future__ import annotations

import struct

import numpy as np

MAX_PACKET_BYTES = 1275 * 3  # the largest Opus packet (RFC 6716: 1275 bytes per frame, up to 3 frames of 20 ms)
FRAME_MS = 20  # duration of each packet the server sends


def available() -> bool:
    """Whether PyAV with a libopus encoder and decoder is installed."""
    try:
        import av
    except ImportError:
        return False
    return "libopus" in av.codecs_available


def pack_packets(packets: list[bytes]) -> bytes:
    out = bytearray()
    for p in packets:
        if not 0 < len(p) <= MAX_PACKET_BYTES:
            raise ValueError(f"an Opus packet has 1..{MAX_PACKET_BYTES} bytes, got {len(p)}")
        out += struct.pack("<H", len(p)) + p
    return bytes(out)


def unpack_packets(data: bytes) -> list[bytes]:
    """The packets of one message's payload; ValueError if it is not whole length-prefixed packets."""
    packets, i = [], 0
    if not data:
        raise ValueError("an Opus message holds at least one packet")
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError(f"truncated packet length at byte {i} of {len(data)}")
        (n,) = struct.unpack_from("<H", data, i)
        if not 0 < n <= MAX_PACKET_BYTES:
            raise ValueError(f"Opus packet length {n} at byte {i} is outside 1..{MAX_PACKET_BYTES}")
        if i + 2 + n > len(data):
            raise ValueError(f"packet of {n} bytes at byte {i} runs past the message's {len(data)} bytes")
        packets.append(bytes(data[i + 2: i + 2 + n]))
        i += 2 + n
    return packets


class OpusEncoder:
    """int16 PCM [N] (mono, `sample_rate`) -> Opus packets of FRAME_MS each (VoIP mode, `bitrate` bit/s)."""

    def __init__(self, sample_rate: int = 24000, bitrate: int = 32000) -> None:
        import av

        self.sample_rate = sample_rate
        self.ctx = av.CodecContext.create("libopus", "w")
        self.ctx.sample_rate, self.ctx.layout, self.ctx.format = sample_rate, "mono", "s16"
        self.ctx.bit_rate = bitrate
        self.ctx.options = {"frame_duration": str(FRAME_MS), "application": "voip"}
        self._av = av

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError(f"Opus encodes mono int16 PCM [N], got {pcm.dtype} {pcm.shape}")
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm)[None], format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        return [bytes(p) for p in self.ctx.encode(frame)]


class OpusDecoder:
    """Opus packets -> int16 PCM [N] (mono, `sample_rate`; libopus decodes at 48 kHz, resampled here)."""

    def __init__(self, sample_rate: int = 24000) -> None:
        import av

        self.ctx = av.CodecContext.create("libopus", "r")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        self._av = av

    def decode(self, packet: bytes) -> np.ndarray:
        """One packet -> its samples; ValueError if it is not Opus."""
        out = []
        try:
            for frame in self.ctx.decode(self._av.Packet(packet)):
                out += [f.to_ndarray().reshape(-1) for f in self.resampler.resample(frame)]
        except self._av.error.FFmpegError as e:
            raise ValueError(f"not a decodable Opus packet ({len(packet)} bytes): {e}") from e
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)
