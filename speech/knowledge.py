"""Written text that states every fact of the corpus's knowledge base, for the chat model's text-only phase.

Moshi pretrains its temporal transformer on text and keeps mixing text-only batches in later, so that what the
model knows from text carries over to speech. Here the text states every fact of `speech.corpus`'s knowledge base,
for the entities of *all* splits (capitals, colours of things, animals' sounds/classes/legs/facts, days, units,
spellings, arithmetic over the ranges the questions use), while the spoken dialogues about valid/test entities stay
held out: a held-out spoken question then measures knowledge learned from text and used in speech.

The sentences are in the agent's spoken style (numbers as words), several phrasings per fact, deterministic for a
seed.
"""

from __future__ import annotations

import random

from speech.corpus import ANIMALS, CAPITALS, DAYS, SPELL_WORDS, THING_COLORS, UNITS, number_words


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def facts(seed: int = 0, arithmetic: bool = True) -> list[str]:
    """Every fact as one or more sentences (shuffled deterministically)."""
    rng = random.Random(seed)
    out: list[str] = []
    for c, k in CAPITALS:
        out += [f"The capital of {c} is {k}.", f"{k} is the capital of {c}."]
    for thing, color in THING_COLORS:
        out += [_cap(f"{thing} is usually {color}."), _cap(f"The color of {thing} is {color}.")]
    for name, cls, legs, sound, fact in ANIMALS:
        art = "an" if cls[0] in "aeiou" else "a"
        out.append(f"A {name} is {art} {cls}. {fact}")
        out.append(f"A {name} is mostly silent." if sound == "is silent" else f"A {name} {sound}.")
        out.append(f"A {name} has no legs." if legs == 0 else f"A {name} has {number_words(legs)} legs.")
    for i, d in enumerate(DAYS):
        out += [f"The day after {d} is {DAYS[(i + 1) % 7]}.", f"The day before {d} is {DAYS[(i - 1) % 7]}."]
    for big, small, n in UNITS:
        out.append(f"There are {number_words(n)} {small} in a {big}.")
    for w in SPELL_WORDS:
        out.append(f"{_cap(w)} is spelled " + ", ".join(c.upper() for c in w) + ".")
    for n in range(3, 11):
        out.append("Counting to " + number_words(n) + ": " + ", ".join(number_words(i) for i in range(1, n + 1)) + ".")
    if arithmetic:
        for a in range(2, 13):
            for b in range(2, 13):
                out.append(_cap(f"{number_words(a)} times {number_words(b)} is {number_words(a * b)}."))
        for b in range(2, 11):
            for q in range(1, 11):
                out.append(_cap(f"{number_words(b * q)} divided by {number_words(b)} is {number_words(q)}."))
        for a in range(1, 101):
            for b in rng.sample(range(1, 101), 12):
                out.append(_cap(f"{number_words(a)} plus {number_words(b)} is {number_words(a + b)}."))
            for b in rng.sample(range(1, a + 1), min(a, 6)):
                out.append(_cap(f"{number_words(a)} minus {number_words(b)} is {number_words(a - b)}."))
    rng.shuffle(out)
    return out
