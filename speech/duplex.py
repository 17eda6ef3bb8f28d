"""Render a text dialogue as two-channel (full-duplex) speech on one timeline.

Channel 0 is the agent, channel 1 the user, both at 24 kHz. Turns follow each other with gaps of varied length,
sometimes overlapping at the boundary; user turns marked `interrupt` barge in while the agent talks and the agent
stops a short reaction time later (its audio fades out, its words after the cut are dropped); during long agent
turns the user sometimes backchannels ("mm-hm"); some user questions pause mid-sentence (0.5-1.0 s), so that the
agent learns not to take the turn in a hesitation. A channel is silent whenever its speaker is not talking.
Word timings of both speakers are returned on the same timeline, plus a record of every turn and event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from speech.audio import SAMPLE_RATE
from speech.corpus import AGENT, BACKCHANNELS, USER, Dialogue, split_sentences
from speech.tts import Synthesis, synthesize
from speech.voices import AGENT_VOICE, Voice

AGENT_CH, USER_CH = 0, 1


@dataclass(frozen=True)
class DuplexConfig:
    lead_in_s: tuple[float, float] = (0.3, 1.2)  # silence before the first turn
    tail_s: tuple[float, float] = (0.4, 1.0)  # silence after the last turn
    gap_s: tuple[float, float] = (0.15, 0.9)  # usual silence before a user turn
    agent_gap_s: tuple[float, float] = (0.0, 0.2)  # after the user turn's 120 ms tail: the agent answers ~0.25 s
    # after the last word, as people do (~0.2 s; Moshi 0.2-0.3 s)
    long_gap_s: tuple[float, float] = (0.9, 2.0)  # an occasional longer pause
    p_long_gap: float = 0.15  # (before user turns only)
    p_overlap: float = 0.12  # a turn starts before the other speaker's turn has ended
    overlap_s: tuple[float, float] = (0.1, 0.5)
    sentence_pause_s: tuple[float, float] = (0.12, 0.35)  # between sentences of one turn
    p_backchannel: float = 0.35  # per agent turn of at least backchannel_min_turn_s
    backchannel_min_turn_s: float = 2.0
    interrupt_at: tuple[float, float] = (0.25, 0.7)  # where in the agent turn the user barges in (fraction)
    interrupt_min_s: float = 0.6  # the agent has spoken at least this long when interrupted
    reaction_s: tuple[float, float] = (0.15, 0.4)  # the agent stops this long after the user starts
    p_mid_pause: float = 0.2  # a user question pauses mid-sentence (the agent must not take the turn)
    mid_pause_s: tuple[float, float] = (0.5, 1.0)
    fade_s: float = 0.03  # fade-out of a cut turn
    agent_rms_db: float = -22.0  # loudness of the agent's speech (dBFS RMS over active samples)
    user_rms_db: tuple[float, float] = (-27.0, -19.0)  # loudness of the user's speech, per dialogue

    def __post_init__(self):
        for name in ("lead_in_s", "tail_s", "gap_s", "agent_gap_s", "long_gap_s", "overlap_s", "sentence_pause_s",
                     "interrupt_at", "reaction_s", "user_rms_db", "mid_pause_s"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), got {(lo, hi)}")
        for name in ("p_long_gap", "p_overlap", "p_backchannel", "p_mid_pause"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        if not (0.0 < self.interrupt_at[0] and self.interrupt_at[1] < 1.0):
            raise ValueError(f"interrupt_at must lie inside (0, 1), got {self.interrupt_at}")
        if self.gap_s[0] < 0 or self.agent_gap_s[0] < 0 or self.reaction_s[0] < 0 or self.fade_s < 0:
            raise ValueError("gap_s, agent_gap_s, reaction_s and fade_s must be non-negative")


@dataclass
class Rendered:
    audio: np.ndarray  # float32 [2, N]: channel 0 agent, channel 1 user
    sample_rate: int
    words: list[tuple[str, float, float, str]]  # (word, start_s, end_s, 'agent'|'user'), sorted by start
    turns: list[dict] = field(default_factory=list)  # speaker, act, text, start, end, interrupted, backchannel
    events: list[dict] = field(default_factory=list)  # {'type': 'interruption'|'overlap'|'backchannel', ...}

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / self.sample_rate


@dataclass
class _Speech:
    audio: np.ndarray  # [n]
    words: list[tuple[str, float, float]]  # relative to the start of `audio`


@lru_cache(maxsize=512)  # ~3 s sentences: at most ~150 MB of cached audio per process
def _sentence(text: str, voice: Voice, synth: Callable[[str, Voice], Synthesis]) -> _Speech:
    """One sentence, trimmed to its words (50 ms before the first, 120 ms after the last). Cached: the agent says
    the same short sentences often, and festival is the slowest step."""
    s = synth(text, voice)
    sr = s.sample_rate
    a = max(0.0, s.words[0][1] - 0.05)
    b = min(s.duration, s.words[-1][2] + 0.12)
    audio = s.audio[int(a * sr): int(np.ceil(b * sr))]
    return _Speech(audio, [(w, max(0.0, ws - a), max(0.0, min(we, b) - a)) for w, ws, we in s.words])


def _speak(text: str, voice: Voice, rng: np.random.Generator, config: DuplexConfig, rms_db: float,
           synth: Callable[[str, Voice], Synthesis], sr: int) -> _Speech:
    parts, words, t = [], [], 0.0
    for k, sentence in enumerate(split_sentences(text)):
        if k:
            pause = np.zeros(int(rng.uniform(*config.sentence_pause_s) * sr), np.float32)
            parts.append(pause)
            t += len(pause) / sr
        sp = _sentence(sentence, voice, synth)
        parts.append(sp.audio)
        words += [(w, t + a, t + b) for w, a, b in sp.words]
        t += len(sp.audio) / sr
    audio = np.concatenate(parts).astype(np.float32)
    active = np.abs(audio) > 1e-3
    rms = float(np.sqrt(np.mean(audio[active] ** 2))) if active.any() else 1.0
    audio = audio * np.float32(10 ** (rms_db / 20) / max(rms, 1e-6))
    return _Speech(audio, words)


def render(dialogue: Dialogue, user_voice: Voice, rng: np.random.Generator, config: DuplexConfig = DuplexConfig(),
           agent_voice: Voice = AGENT_VOICE, synth: Callable[[str, Voice], Synthesis] = synthesize,
           sample_rate: int = SAMPLE_RATE) -> Rendered:
    """Render `dialogue` (user turns with `user_voice`, agent turns with `agent_voice`) to a stereo timeline."""
    if not dialogue.turns:
        raise ValueError(f"dialogue {dialogue.id!r} has no turns")
    sr = sample_rate
    user_db = float(rng.uniform(*config.user_rms_db))
    placed: list[dict] = []  # speaker, start, audio, words (relative), act, text, interrupted
    events: list[dict] = []
    t_free = float(rng.uniform(*config.lead_in_s))  # the end of all speech so far
    turns = dialogue.turns
    for k, turn in enumerate(turns):
        voice, db = (agent_voice, config.agent_rms_db) if turn.speaker == AGENT else (user_voice, user_db)
        sp = _speak(turn.text, voice, rng, config, db, synth, sr)
        pause = None
        if turn.speaker == USER and not turn.interrupt and rng.random() < config.p_mid_pause:
            sp, pause = _pause_inside(sp, rng, config, sr)
        dur = len(sp.audio) / sr
        prev = placed[-1] if placed else None
        prev_dur = len(prev["audio"]) / sr if prev else 0.0
        rec = {"speaker": turn.speaker, "act": turn.act, "text": turn.text, "audio": sp.audio, "words": sp.words,
               "interrupted": False, "backchannel": False}
        if (turn.speaker == USER and turn.interrupt and prev is not None and prev["speaker"] == AGENT
                and prev_dur >= config.interrupt_min_s + max(config.reaction_s) + 0.1):
            offset = max(config.interrupt_min_s, float(rng.uniform(*config.interrupt_at)) * prev_dur)
            start = prev["start"] + offset
            cut = start + float(rng.uniform(*config.reaction_s))
            _cut(prev, cut - prev["start"], config.fade_s, sr)
            events.append({"type": "interruption", "time": round(start, 3), "agent_stop": round(cut, 3),
                           "reaction_s": round(cut - start, 3)})
            t_free = max(cut, start)
        elif (prev is not None and prev["speaker"] != turn.speaker and prev_dur > 1.0
              and rng.random() < config.p_overlap):
            ov = min(float(rng.uniform(*config.overlap_s)), prev_dur - 0.5)
            start = t_free - ov
            events.append({"type": "overlap", "time": round(start, 3), "overlap_s": round(ov, 3),
                           "speaker": turn.speaker})
        else:
            if turn.speaker == AGENT:
                gap = rng.uniform(*config.agent_gap_s)
            else:
                gap = rng.uniform(*(config.long_gap_s if rng.random() < config.p_long_gap else config.gap_s))
            start = t_free + float(gap)
        rec["start"] = start
        placed.append(rec)
        if pause is not None:
            events.append({"type": "pause", "time": round(start + pause[0], 3), "pause_s": round(pause[1], 3)})
        t_free = max(t_free, start + dur)
        nxt = turns[k + 1] if k + 1 < len(turns) else None
        if (turn.speaker == AGENT and dur >= config.backchannel_min_turn_s and not (nxt and nxt.interrupt)
                and rng.random() < config.p_backchannel):
            bc = _backchannel(rec, user_voice, rng, config, user_db, synth, sr)
            if bc is not None:
                placed.append(bc)
                events.append({"type": "backchannel", "time": round(bc["start"], 3), "text": bc["text"]})
                t_free = max(t_free, bc["start"] + len(bc["audio"]) / sr)
    total = t_free + float(rng.uniform(*config.tail_s))
    audio = np.zeros((2, int(np.ceil(total * sr))), np.float32)
    words, turn_log = [], []
    for rec in placed:
        ch = AGENT_CH if rec["speaker"] == AGENT else USER_CH
        i = int(round(rec["start"] * sr))
        seg = rec["audio"][: audio.shape[1] - i]
        audio[ch, i: i + len(seg)] += seg
        words += [(w, rec["start"] + a, rec["start"] + b, rec["speaker"]) for w, a, b in rec["words"]]
        turn_log.append({"speaker": rec["speaker"], "act": rec["act"], "text": rec["text"],
                         "spoken": " ".join(w for w, _, _ in rec["words"]), "start": round(rec["start"], 3),
                         "end": round(rec["start"] + len(rec["audio"]) / sr, 3), "interrupted": rec["interrupted"],
                         "backchannel": rec["backchannel"]})
    words.sort(key=lambda w: (w[1], w[3]))
    return Rendered(np.clip(audio, -1.0, 1.0), sr, words, turn_log, events)


def _pause_inside(sp: _Speech, rng: np.random.Generator, config: DuplexConfig,
                  sr: int) -> tuple[_Speech, tuple[float, float] | None]:
    """Insert a mid-sentence pause (config.mid_pause_s) between two words in the middle of a user turn, as a
    speaker does who hesitates ("what is seven ... times three"). Returns the new speech and (pause start
    relative to the turn, pause length), or the speech unchanged and None when the turn has under four words."""
    words = sp.words
    if len(words) < 4:
        return sp, None
    i = int(rng.integers(1, len(words) - 2))  # pause after word i: at least one word before and two after
    at = 0.5 * (words[i][2] + words[i + 1][1])
    n_at = int(round(at * sr))
    pause_s = float(rng.uniform(*config.mid_pause_s))
    gap = np.zeros(int(round(pause_s * sr)), np.float32)
    audio = np.concatenate([sp.audio[:n_at], gap, sp.audio[n_at:]])
    shift = len(gap) / sr
    moved = [(w, a, b) if k <= i else (w, a + shift, b + shift) for k, (w, a, b) in enumerate(words)]
    return _Speech(audio, moved), (at, shift)


def _cut(rec: dict, at_s: float, fade_s: float, sr: int) -> None:
    """Stop a placed turn `at_s` seconds after its start: fade out, drop words that had not started."""
    n = int(at_s * sr)
    if n >= len(rec["audio"]):
        return
    audio = rec["audio"][:n].copy()
    f = min(int(fade_s * sr), n)
    if f:
        audio[n - f:] *= np.linspace(1.0, 0.0, f, dtype=np.float32)
    rec["audio"] = audio
    rec["words"] = [(w, a, min(b, at_s)) for w, a, b in rec["words"] if a < at_s - 0.02]
    rec["interrupted"] = True


def _backchannel(agent: dict, voice: Voice, rng: np.random.Generator, config: DuplexConfig, db: float,
                 synth: Callable[[str, Voice], Synthesis], sr: int) -> dict | None:
    """A short user backchannel in a pause (>= 100 ms, e.g. between sentences) in the middle of the agent turn;
    None when the turn has no such pause."""
    words = agent["words"]
    dur = len(agent["audio"]) / sr
    slots = [words[i][2] for i in range(len(words) - 1)
             if 0.25 * dur <= words[i][2] <= 0.85 * dur and words[i + 1][1] - words[i][2] >= 0.1]
    if not slots:
        return None
    text = str(rng.choice(BACKCHANNELS))
    sp = _speak(text, voice, rng, config, db, synth, sr)
    start = agent["start"] + float(rng.choice(slots)) + float(rng.uniform(0.0, 0.2))
    return {"speaker": USER, "act": "backchannel", "text": text, "audio": sp.audio, "words": sp.words,
            "start": start, "interrupted": False, "backchannel": True}
