"""The text command stream: instruction words as tokens, one word per frame.

The vocabulary is closed and comes from `envs.instructions` (every template of both splits, every synonym) and the
scene's colour palette, so the words a policy reads are exactly the words the envs say. Held-out phrasings use
verbs that no training episode contains: their embeddings stay untrained, which is what the held-out measurement
is about.

A command is fed before the episode's first action, one word per 80 ms frame, while the robot holds still
(`docs/robot.md`); frames without a word carry `ZERO_ID`.
"""

from __future__ import annotations

import re

from envs.instructions import SHAPE_WORDS, SIDE_WORDS, TARGET_PREPOSITION, TARGET_WORDS, TEMPLATES
from envs.scene import PALETTE

FRAME_RATE = 12.5


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def vocabulary() -> list[str]:
    """All instruction words, sorted (id = position)."""
    words: set[str] = set(PALETTE)
    for table in (SHAPE_WORDS, TARGET_WORDS, SIDE_WORDS):
        for syns in table.values():
            for s in syns:
                words.update(_words(s))
    words.update(TARGET_PREPOSITION.values())
    for splits in TEMPLATES.values():
        for templates in splits.values():
            for t in templates:
                words.update(_words(re.sub(r"\{\w+\}", " ", t)))
    return sorted(words)


class CommandWords:
    """Word-level tokenizer of instructions: text -> ids [N] (one codebook, one word per frame)."""

    def __init__(self, words: list[str] | None = None) -> None:
        self.words = list(words) if words is not None else vocabulary()
        if len(set(self.words)) != len(self.words):
            raise ValueError("command vocabulary has duplicate words")
        self._index = {w: i for i, w in enumerate(self.words)}

    frame_rate = property(lambda self: FRAME_RATE)
    num_codebooks = property(lambda self: 1)
    cardinality = property(lambda self: len(self.words))

    @property
    def fingerprint(self) -> str:
        return "words:" + ",".join(self.words)

    def ids(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a command must be a non-empty string, got {text!r}")
        out = []
        for w in _words(text):
            if w not in self._index:
                raise ValueError(f"unknown command word {w!r} in {text!r}; the vocabulary comes from envs.instructions")
            out.append(self._index[w])
        if not out:
            raise ValueError(f"command {text!r} has no words")
        return out

    def text(self, ids: list[int]) -> str:
        for i in ids:
            if not 0 <= int(i) < len(self.words):
                raise ValueError(f"command word id {i} outside [0, {len(self.words)})")
        return " ".join(self.words[int(i)] for i in ids)

    # Tokenizer protocol (codes [1, 1, N]) for check_tokenizer / spec_from_tokenizer
    def encode(self, text: str):
        import torch

        return torch.tensor(self.ids(text))[None, None]

    def decode(self, codes) -> str:
        return self.text(codes.reshape(-1).tolist())
