"""The voices of the synthetic dialogues: one fixed agent voice, many user voices, a held-out user set.

The agent always speaks with festival's HTS voice `cmu_us_slt` (the most natural one Debian has), so the model
learns one consistent output voice. Users speak with many espeak-ng voices/variants, the festival diphone voices
and flite voices at varied rates and pitches. The held-out user voices differ from every training voice in
their espeak base accent *and* variant (or are a speaker no training voice uses) and are only for evaluation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

BACKENDS = ("espeak", "festival", "flite")
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Voice:
    """One TTS voice setting: a backend, its voice id, and prosody parameters."""

    name: str  # unique, used in file metadata and `get_voice`
    backend: str  # 'espeak' | 'festival' | 'flite'
    voice_id: str  # the backend's voice: espeak 'en-us', festival 'cmu_us_slt_arctic_hts', flite 'rms'
    variant: str = ""  # espeak voice variant ('f3', 'm2', 'klatt'); empty for the base voice / other backends
    rate: float = 1.0  # speaking-rate multiplier (1.0 = the backend's default speed), all backends
    pitch: int = 50  # espeak base pitch 0..100 (espeak only)
    pitch_range: int = 50  # espeak intonation range 0..100 (espeak only)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"voice {self.name!r}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.voice_id:
            raise ValueError(f"voice {self.name!r}: empty voice_id")
        if not 0.5 <= self.rate <= 2.0:
            raise ValueError(f"voice {self.name!r}: rate must be in [0.5, 2.0], got {self.rate}")
        if not 0 <= self.pitch <= 100 or not 0 <= self.pitch_range <= 100:
            raise ValueError(f"voice {self.name!r}: pitch/pitch_range must be in [0, 100], got "
                             f"{self.pitch}/{self.pitch_range}")
        if self.variant and self.backend != "espeak":
            raise ValueError(f"voice {self.name!r}: variants exist only for espeak, got {self.variant!r}")


AGENT_VOICE = Voice("agent-festival-slt", "festival", "cmu_us_slt_arctic_hts")

# espeak accents and variants; the held-out lists share nothing with the training lists.
_ESPEAK_TRAIN_BASES = ("en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_ESPEAK_TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f4", "f5", "klatt")
_ESPEAK_HELDOUT_BASES = ("en-gb-scotland", "en-029", "en-us-nyc")
_ESPEAK_HELDOUT_VARIANTS = ("m6", "f3", "klatt2")
_RATES = (0.9, 1.0, 1.1, 1.2, 0.95)
_PITCHES = (40, 50, 60, 70, 30, 55)


def _espeak_voices(bases: tuple[str, ...], variants: tuple[str, ...]) -> list[Voice]:
    out = []
    for i, (base, variant) in enumerate(itertools.product(bases, variants)):
        rate, pitch = _RATES[i % len(_RATES)], _PITCHES[i % len(_PITCHES)]
        tag = f"{base}+{variant}" if variant else base
        out.append(Voice(f"espeak-{tag}-r{rate:.2f}-p{pitch}", "espeak", base, variant, rate, pitch,
                         pitch_range=40 + 10 * (i % 4)))
    return out


@cache
def _voices() -> dict[str, list[Voice]]:
    train = _espeak_voices(_ESPEAK_TRAIN_BASES, _ESPEAK_TRAIN_VARIANTS)
    train += [Voice(f"festival-kal-r{r:.2f}", "festival", "kal_diphone", rate=r) for r in (0.9, 1.05)]
    train += [Voice(f"flite-{v}-r{r:.2f}", "flite", v, rate=r) for v in ("rms", "kal16", "kal") for r in (0.95, 1.1)]
    heldout = _espeak_voices(_ESPEAK_HELDOUT_BASES, _ESPEAK_HELDOUT_VARIANTS)
    heldout += [Voice("festival-ked-r1.00", "festival", "ked_diphone")]
    heldout += [Voice("flite-awb-r1.00", "flite", "awb")]
    return {"train": train, "heldout": heldout}


def user_voices(split: str) -> list[Voice]:
    """The user voices of a split: 'train' (training data) or 'heldout' (evaluation only)."""
    if split not in SPLITS:
        raise ValueError(f"voice split must be one of {SPLITS}, got {split!r}")
    return list(_voices()[split])


def all_voices() -> list[Voice]:
    """Every known voice: the agent voice, then training and held-out user voices."""
    return [AGENT_VOICE] + user_voices("train") + user_voices("heldout")


def get_voice(name: str) -> Voice:
    """The voice called `name`; ValueError for an unknown name."""
    for v in all_voices():
        if v.name == name:
            return v
    raise ValueError(f"unknown voice {name!r}; known voices start with {[v.name for v in all_voices()[:4]]}")
