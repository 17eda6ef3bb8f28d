"""The text command stream: instruction words as tokens, one word per frame.

The vocabulary is closed and comes from `envs.instructions` (every template of both splits, every synonym) and the
scene's colour palette, so the words a policy reads are exactly the words the envs say. Held-out phrasings use
verbs that no training episode contains: their embeddings stay untrained, which is what the held-out measurement
is about.

A command is fed before the episode's first action, one word per 80 ms frame, while the robot holds still
(`docs/robot.md`); frames without a word carry `ZERO_ID`.

`CommandSlots` is the other way in (`PolicyConfig(command="slots")`): the instruction parsed into its slots (colour,
shape, side, target, and "halt" in stores with "stop" corrections; canonical values, synonyms merged) held in view on
every frame of the episode, one codebook per slot, the way language-conditioned policies condition every step on the
instruction; a slot the instruction does not fill carries `ZERO_ID`.
"""

from __future__ import annotations

import re

from envs.instructions import (
    CORRECTIONS,
    SHAPE_WORDS,
    SIDE_WORDS,
    STOP_WORDS,
    STOPS,
    TARGET_PREPOSITION,
    TARGET_WORDS,
    TEMPLATES,
)
from envs.scene import PALETTE

ZERO_ID = -1  # multistream.streams.ZERO_ID ("no input"), repeated here to keep this module free of torch imports

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
    for splits in (*TEMPLATES.values(), CORRECTIONS, STOPS):
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


def slot_values(halt: bool = False) -> dict[str, list[str]]:
    """Slot -> its canonical values (id = position): the palette's colours, the object shapes, the push sides and
    the pick-and-place targets; with `halt`, a fifth slot whose one value "stop" says hold still (the "stop"
    correction, `envs.instructions.STOPS`). Stores whose demos hold a "stop" have it; the others keep four slots."""
    values = {"color": sorted(PALETTE), "shape": sorted(SHAPE_WORDS), "side": sorted(SIDE_WORDS),
              "target": sorted(TARGET_WORDS)}
    return {**values, "halt": ["stop"]} if halt else values


class CommandSlots:
    """Instruction -> its slots, one codebook per slot: text -> ids [K] (K = 4: colour, shape, side, target), each in
    [0, len(values)) or ZERO_ID where the instruction does not fill the slot. Synonyms ("block", "can", "left side",
    "tray") map to the canonical value, so every phrasing of one instruction gives the same ids; a shape word counts
    only right after a colour word, as objects are named (the held-out "can you poke the ..." is no cylinder). The
    vocabulary is the largest slot's (the colours); each codebook has its own embedding table in the model."""

    def __init__(self, values: dict[str, list[str]] | None = None) -> None:
        self.values = {k: list(v) for k, v in (values if values is not None else slot_values()).items()}
        if not self.values or any(len(set(v)) != len(v) or not v for v in self.values.values()):
            raise ValueError(f"command slots need non-empty lists of distinct values, got {self.values}")
        self.slots = list(self.values)
        # word (or phrase) -> (slot, value); phrases of several words ("left side") are matched on their first word
        table = {"color": {c: c for c in PALETTE}, "shape": SHAPE_WORDS, "side": SIDE_WORDS, "target": TARGET_WORDS,
                 "halt": {"stop": STOP_WORDS}}
        self._lookup: dict[str, tuple[str, str]] = {}
        for slot in self.slots:
            src = table.get(slot)
            if src is None:
                raise ValueError(f"unknown command slot {slot!r}; known: {sorted(table)}")
            for value, syns in src.items():
                for syn in (syns,) if isinstance(syns, str) else syns:
                    w = _words(syn)[-1] if slot == "target" else _words(syn)[0]  # "white plate" -> plate
                    self._lookup[w] = (slot, value)

    frame_rate = property(lambda self: FRAME_RATE)
    num_codebooks = property(lambda self: len(self.slots))
    cardinality = property(lambda self: max(len(v) for v in self.values.values()))

    @property
    def fingerprint(self) -> str:
        return "slots:" + ";".join(f"{k}=" + ",".join(v) for k, v in self.values.items())

    def parse(self, text: str) -> dict[str, str]:
        """The filled slots of an instruction, e.g. {"color": "red", "shape": "cylinder"}; refuses an instruction
        that names one slot twice with different values."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a command must be a non-empty string, got {text!r}")
        found: dict[str, str] = {}
        words = _words(text)
        for j, w in enumerate(words):
            hit = self._lookup.get(w)
            if hit is None:
                continue
            slot, value = hit
            # objects are named "<colour> <shape>": a shape word elsewhere is another word ("can you poke ...")
            if slot == "shape" and (j == 0 or self._lookup.get(words[j - 1], ("",))[0] != "color"):
                continue
            if found.get(slot, value) != value:
                raise ValueError(f"command {text!r} names two {slot}s ({found[slot]!r}, {value!r})")
            found[slot] = value
        if not found:
            raise ValueError(f"command {text!r} fills no slot ({', '.join(self.slots)})")
        return found

    def ids(self, text: str) -> list[int]:
        found = self.parse(text)
        return [self.values[s].index(found[s]) if s in found else ZERO_ID for s in self.slots]

    def text(self, ids: list[int]) -> str:
        if len(ids) != len(self.slots):
            raise ValueError(f"{len(ids)} slot ids for {len(self.slots)} slots {self.slots}")
        parts = []
        for s, i in zip(self.slots, ids, strict=True):
            if int(i) == ZERO_ID:
                continue
            if not 0 <= int(i) < len(self.values[s]):
                raise ValueError(f"{s} id {i} outside [0, {len(self.values[s])})")
            parts.append(f"{s}={self.values[s][int(i)]}")
        return " ".join(parts)

    def convert(self, ids: list[int], to: CommandSlots) -> list[int]:
        """Slot ids of this layout -> the same slots in `to`'s layout, by slot and value name (a listener with four
        slots speaking to a policy with the halt slot): a slot `to` has and this one lacks is ZERO_ID; a filled slot
        `to` lacks is dropped."""
        if len(ids) != len(self.slots):
            raise ValueError(f"{len(ids)} slot ids for {len(self.slots)} slots {self.slots}")
        named = {s: self.values[s][int(i)] for s, i in zip(self.slots, ids, strict=True)
                 if int(i) != ZERO_ID and 0 <= int(i) < len(self.values[s])}
        return [to.values[s].index(named[s]) if s in named and named[s] in to.values[s] else ZERO_ID
                for s in to.slots]

    # Tokenizer protocol (codes [1, K, 1]: one frame) for check_tokenizer / spec_from_tokenizer
    def encode(self, text: str):
        import torch

        return torch.tensor(self.ids(text))[None, :, None]

    def decode(self, codes) -> str:
        return self.text(codes.reshape(-1).tolist())
