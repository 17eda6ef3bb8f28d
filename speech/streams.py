"""The chat model's streams, derived from its tokenizers so that a mismatch cannot happen.

- `CodecFrames`: the codec as a stream tokenizer over store rows of one frame of samples each (`[T, 1920]` at
  24 kHz / 12.5 Hz): `encode_frames([B, T, S]) -> [B, K, T]`; its `fingerprint` is a hash of the checkpoint's
  config and weights, so a store tokenized with one codec refuses to train with another.
- `MonologueText`: the sentencepiece text tokenizer with a fingerprint of its model.
- `chat_streams(codec, text)`: Moshi's three streams (inner-monologue text, agent audio, user audio) with the
  vocabularies and codebook counts read from the tokenizers, the acoustic delay on codebooks 1.., the semantic
  codebook's loss weight and the text PAD weight as in Moshi (configurable); optionally a fourth, `text.user`: the
  user's words as the model hears them (a predicted transcript, each word's pieces from the frame where the word
  ends, `user_text_delay` frames later), a dense listening signal that Moshi does not have.

Dimension legend: B batch, T frames, S samples per frame, K codebooks, N samples.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from einops import rearrange

from multistream.data import spec_from_tokenizer
from multistream.streams import StreamSet
from speech.codec.model import MimiCodec, load_codec
from speech.text import TextTokenizer

TEXT, AGENT, USER = "text", "audio.agent", "audio.user"
USER_TEXT = "text.user"  # optional: the transcript of what the user said, written as the model listens


def _file_hash(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class CodecFrames:
    """A codec as the tokenizer of an audio stream stored as frames of samples."""

    def __init__(self, codec: MimiCodec, fingerprint: str) -> None:
        self.codec, self.fingerprint = codec, fingerprint

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> CodecFrames:
        path = Path(path)
        codec = load_codec(path, map_location=map_location)
        return cls(codec, "codec:" + _file_hash(path / "config.json", path / "model.safetensors"))

    frame_rate = property(lambda self: self.codec.frame_rate)
    num_codebooks = property(lambda self: self.codec.num_codebooks)
    cardinality = property(lambda self: self.codec.cardinality)
    sample_rate = property(lambda self: self.codec.sample_rate)
    frame_size = property(lambda self: self.codec.frame_size)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, N] (N a whole number of frames) -> codes [B, K, N / S]."""
        return self.codec.encode(audio)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(codes)

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Store rows [B, T, S] (S = samples per frame) -> codes [B, K, T]."""
        if x.dim() != 3 or x.shape[2] != self.frame_size:
            raise ValueError(f"audio frames must be [B, T, {self.frame_size}], got {tuple(x.shape)}")
        return self.codec.encode(rearrange(x.float(), "b t s -> b 1 (t s)"))


class MonologueText:
    """The inner-monologue text tokenizer with a fingerprint (codes are stored; this names who made them)."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.tok = TextTokenizer(path)
        self.fingerprint = "spm:" + _file_hash(path)

    frame_rate = property(lambda self: self.tok.frame_rate)
    num_codebooks = property(lambda self: 1)
    cardinality = property(lambda self: self.tok.cardinality)
    pad_id = property(lambda self: self.tok.pad_id)
    epad_id = property(lambda self: self.tok.epad_id)

    def encode(self, words, n_frames: int | None = None) -> torch.Tensor:
        return self.tok.encode(words, n_frames)

    def decode(self, codes: torch.Tensor) -> list[str]:
        return self.tok.decode(codes)


def chat_streams(codec: CodecFrames, text: MonologueText, acoustic_delay: int = 1, semantic_weight: float = 100.0,
                 pad_weight: float = 0.5, user_text_delay: int | None = None,
                 user_text_weight: float = 1.0) -> StreamSet:
    """Moshi's streams from the tokenizers: text (predicted), agent audio (predicted), user audio (input); with
    `user_text_delay` (frames after each user word's end) also the user transcript `text.user` (predicted)."""
    if acoustic_delay < 0:
        raise ValueError(f"acoustic_delay must be >= 0, got {acoustic_delay}")
    if user_text_delay is not None and user_text_delay < 0:
        raise ValueError(f"user_text_delay must be >= 0, got {user_text_delay}")
    k = codec.num_codebooks
    delays = (0,) + (acoustic_delay,) * (k - 1)
    weights = (semantic_weight,) + (1.0,) * (k - 1)
    return StreamSet((
        spec_from_tokenizer(TEXT, text, predicted=True, pad_id=text.pad_id, pad_weight=pad_weight),
        spec_from_tokenizer(AGENT, codec, delays=delays, predicted=True, codebook_weights=weights),
        spec_from_tokenizer(USER, codec, delays=delays),
    ) + (() if user_text_delay is None else (
        spec_from_tokenizer(USER_TEXT, text, delays=(user_text_delay,), predicted=True, pad_id=text.pad_id,
                            pad_weight=pad_weight, loss_weight=user_text_weight),)))
