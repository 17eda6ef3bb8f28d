"""The text tokenizer of the inner monologue: a sentencepiece model trained on the dialogue corpus.

`TextTokenizer` wraps the model with named special ids (`pad_id`, `epad_id`, `bos_id`, `eos_id`, `unk_id`) and
implements the engine's Tokenizer protocol for the text stream: `encode` turns word timings into per-frame tokens
`[B, 1, T]` at `frame_rate` (12.5 Hz) through `speech.monologue`, `decode` turns such a stream back into text.
`encode_text` / `decode_text` are the plain string <-> ids mapping. The model file is saved with the data.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from multistream.atomic import atomic_write_bytes
from speech.monologue import monologue_tokens, num_frames

FRAME_RATE = 12.5  # text frames per second: the codec's frame rate
EPAD_PIECE = "<epad>"
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3  # sentencepiece's fixed ids; EPAD is the first user symbol (4)

Words = list[tuple[str, float, float]]  # (word, start_s, end_s)


class TextTokenizer:
    """Sentencepiece text tokenizer with PAD/EPAD, and the text stream's Tokenizer (frames of 1 codebook)."""

    def __init__(self, model: str | os.PathLike | bytes, frame_rate: float = FRAME_RATE):
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"frame_rate must be a finite number > 0, got {frame_rate}")
        self.sp = spm.SentencePieceProcessor()
        where = "the given bytes" if isinstance(model, bytes) else repr(str(model))
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ValueError(f"no sentencepiece model at {where}")
        try:
            if isinstance(model, bytes):
                self.sp.LoadFromSerializedProto(model)
            else:
                self.sp.Load(str(model))
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{where} is not a sentencepiece model ({e}); retrain it with TextTokenizer.train "
                             "(scripts/make_dialogues.py writes tokenizer.model)") from e
        self._frame_rate = float(frame_rate)
        self._epad = self.sp.piece_to_id(EPAD_PIECE)
        if self.sp.pad_id() < 0 or self._epad == self.sp.unk_id():
            raise ValueError("sentencepiece model lacks a pad id or <epad>; train it with TextTokenizer.train")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024, path: str | os.PathLike | None = None,
              frame_rate: float = FRAME_RATE) -> TextTokenizer:
        """Train a unigram sentencepiece model on `texts`; save it atomically to `path` when given."""
        if vocab_size < 16:
            raise ValueError(f"vocab_size must be >= 16, got {vocab_size}")
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("no text to train the tokenizer on")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
            user_defined_symbols=[EPAD_PIECE], hard_vocab_limit=False, minloglevel=2, num_threads=1)
        model = buf.getvalue()
        if path is not None:
            atomic_write_bytes(path, model)
        return cls(model, frame_rate)

    # special ids ----------------------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def epad_id(self) -> int:
        return self._epad

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    # Tokenizer protocol ---------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def cardinality(self) -> int:
        return self.sp.get_piece_size()

    def encode_text(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode_text(self, ids: Iterable[int]) -> str:
        special = {self.pad_id, self.epad_id}
        return self.sp.decode([int(i) for i in ids if int(i) not in special])

    def frames(self, words: Words, n_frames: int | None = None) -> tuple[np.ndarray, int]:
        """Per-frame tokens `[T]` for one speaker's word timings, and the number of tokens cut at the end.
        `n_frames` defaults to the frames up to the last word's end."""
        if n_frames is None:
            n_frames = num_frames(max((e for _, _, e in words), default=0.0), self.frame_rate)
        tokenized = [(self.encode_text(w), s, e) for w, s, e in words]
        return monologue_tokens(tokenized, n_frames, self.frame_rate, self.pad_id, self.epad_id)

    def encode(self, x: Words | list[Words], n_frames: int | None = None) -> torch.Tensor:
        """Word timings (one list, or a batch of lists) -> codes `[B, 1, T]`; T = n_frames or the longest."""
        batch = [x] if not x or isinstance(x[0], tuple) else x
        if n_frames is None:
            ends = [max((e for _, _, e in words), default=0.0) for words in batch]
            n_frames = num_frames(max(ends, default=0.0), self.frame_rate)
        rows = [self.frames(words, n_frames)[0] for words in batch]
        return torch.from_numpy(np.stack(rows))[:, None, :]  # [B, 1, T]

    def decode(self, codes: torch.Tensor) -> list[str]:
        """Codes `[B, 1, T]` -> one string per batch row (PAD/EPAD removed)."""
        if codes.dim() != 3 or codes.shape[1] != 1:
            raise ValueError(f"text codes must have shape [B, 1, T], got {tuple(codes.shape)}")
        return [self.decode_text(row.tolist()) for row in codes[:, 0]]
