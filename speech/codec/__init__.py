"""Mimi-style streaming neural audio codec: the speech tokenizer of the system (24 kHz <-> 12.5 Hz codes).

`MimiCodec(cfg)` implements `multistream.tokenizer.Tokenizer`; presets `tiny()` (CPU-trainable, 1.0 kbps) and
`mimi()` (Kyutai Mimi's shapes, 1.1 kbps); `load_codec(dir)` reads a checkpoint written by scripts/train_codec.py.
"""

from .config import CodecConfig, mimi, preset, tiny
from .model import MimiCodec, load_codec

__all__ = ["CodecConfig", "MimiCodec", "load_codec", "mimi", "preset", "tiny"]
