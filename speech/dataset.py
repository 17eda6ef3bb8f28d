"""Duplex dialogue datasets on disk, in the moshi-finetune layout.

    DIR/<split>/<dialogue_id>.wav    stereo 24 kHz 16-bit: channel 0 agent, channel 1 user
    DIR/<split>/<dialogue_id>.json   {"alignments": [[word, [start_s, end_s], speaker], ...] sorted by start,
                                      "duration": ..., plus metadata: voices, turns, events, augmentation}
    DIR/<split>.jsonl                manifest, one {"path": ..., "duration": ...} per line; paths are relative to
                                     the manifest's folder (as sphn.dataset_jsonl resolves them) unless absolute
    DIR/tokenizer.model              the sentencepiece text tokenizer (speech.text)

The agent is `SPEAKER_MAIN` (moshi-finetune keeps that speaker's words for the text stream), the user
`SPEAKER_OTHER`. Each item depends only on (seed, split, index), and the json is written after the wav, so a
finished item is one whose json exists: a rerun skips it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from multistream.atomic import atomic_write_json, atomic_write_text
from speech.audio import read_wav, write_wav
from speech.augment import AugmentConfig, augment
from speech.corpus import SPLITS, dialogue
from speech.duplex import AGENT_CH, USER_CH, DuplexConfig, render
from speech.voices import AGENT_VOICE, Voice, user_voices

AGENT_LABEL, USER_LABEL = "SPEAKER_MAIN", "SPEAKER_OTHER"
SPEAKER_LABELS = {"agent": AGENT_LABEL, "user": USER_LABEL}
VOICE_SPLIT = {"train": "train", "valid": "train", "test": "heldout"}  # held-out voices only in the test split
BACKEND_WEIGHTS = {"espeak": 0.6, "flite": 0.25, "festival": 0.15}  # user backend mix (espeak has most voices)


@dataclass(frozen=True)
class DatasetConfig:
    seed: int = 0
    p_augment: float = 0.8  # share of dialogues whose user channel is degraded
    duplex: DuplexConfig = field(default_factory=DuplexConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if not 0.0 <= self.p_augment <= 1.0:
            raise ValueError(f"p_augment must be a probability, got {self.p_augment}")


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def choose_user_voice(split: str, rng: np.random.Generator) -> Voice:
    """A user voice for a dialogue of `split`: backend by BACKEND_WEIGHTS, then uniform among its voices."""
    voices = user_voices(VOICE_SPLIT[split])
    backends = [b for b in BACKEND_WEIGHTS if any(v.backend == b for v in voices)]
    w = np.array([BACKEND_WEIGHTS[b] for b in backends])
    backend = backends[int(rng.choice(len(backends), p=w / w.sum()))]
    pool = [v for v in voices if v.backend == backend]
    return pool[int(rng.integers(len(pool)))]


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temp + rename); NaN or inf is refused rather than written as bare `NaN`."""
    atomic_write_json(path, obj)


def finished_item(wav_path: str | os.PathLike) -> float | None:
    """The duration of a complete item (wav + json whose durations agree), else None: a missing, truncated or
    unreadable wav or json is not a finished item, and `make_item` makes it again (deterministically)."""
    wav_path = Path(wav_path)
    json_path = wav_path.with_suffix(".json")
    if not (json_path.is_file() and wav_path.is_file()):
        return None
    try:
        duration = float(json.loads(json_path.read_text())["duration"])
        audio, sr = read_wav(wav_path)
    except (ValueError, KeyError, TypeError):
        return None
    return duration if abs(audio.shape[1] / sr - duration) < 1e-3 else None


def item_path(split: str, seed: int, index: int) -> str:
    """The wav path of an item, relative to the dataset folder."""
    return f"{split}/{split}-{seed}-{index:07d}.wav"


def make_item(out_dir: str | os.PathLike, split: str, index: int, config: DatasetConfig = DatasetConfig()) -> dict:
    """Render, degrade and write dialogue `index` of `split`, unless already written; returns its manifest row
    {"path": relative wav path, "duration": seconds}."""
    out_dir = Path(out_dir)
    rel = item_path(split, config.seed, index)
    wav_path = out_dir / rel
    json_path = wav_path.with_suffix(".json")
    done = finished_item(wav_path)
    if done is not None:
        return {"path": rel, "duration": done}
    rng = item_rng(config.seed, split, index)
    d = dialogue(split, config.seed, index)
    voice = choose_user_voice(split, rng)
    r = render(d, voice, rng, config.duplex)
    audio = r.audio
    applied: dict = {}
    if rng.random() < config.p_augment:
        audio = audio.copy()
        audio[USER_CH], applied = augment(audio[USER_CH], rng, config.augment, r.sample_rate)
    duration = round(audio.shape[1] / r.sample_rate, 4)
    meta = {
        "alignments": [[w, [round(s, 3), round(e, 3)], SPEAKER_LABELS[spk]] for w, s, e, spk in r.words],
        "duration": duration,
        "sample_rate": r.sample_rate,
        "channels": {str(AGENT_CH): AGENT_LABEL, str(USER_CH): USER_LABEL},
        "dialogue_id": d.id,
        "split": split,
        "seed": config.seed,
        "agent_voice": asdict(AGENT_VOICE),
        "user_voice": asdict(voice),
        "augment": applied,
        "turns": r.turns,
        "events": r.events,
    }
    write_wav(wav_path, audio, r.sample_rate)
    write_json(json_path, meta)
    return {"path": rel, "duration": duration}


def write_manifest(path: str | os.PathLike, rows: list[dict], absolute: bool = False) -> None:
    """Write a .jsonl manifest atomically; `absolute` turns paths relative to the manifest into absolute ones."""
    path = Path(path)
    for row in rows:
        if set(row) < {"path", "duration"} or not isinstance(row["path"], str):
            raise ValueError(f"manifest rows need 'path' (str) and 'duration', got {row}")
        if not row["duration"] >= 0:
            raise ValueError(f"manifest row has a bad duration: {row}")
    lines = []
    for row in rows:
        p = str((path.parent / row["path"]).resolve()) if absolute else row["path"]
        lines.append(json.dumps({"path": p, "duration": float(row["duration"])}))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl manifest, each {"path": absolute wav path, "duration": float}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no manifest at {str(path)!r}")
    rows = []
    for k, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{k + 1}: not a JSON line ({e}); fix or remake the manifest") from e
        if not isinstance(row, dict) or "path" not in row or "duration" not in row:
            raise ValueError(f"{path}:{k + 1}: a manifest row needs 'path' and 'duration', got {row}")
        p = Path(row["path"])
        rows.append({"path": str(p if p.is_absolute() else (path.parent / p).resolve()),
                     "duration": float(row["duration"])})
    return rows


def read_item(wav_path: str | os.PathLike) -> tuple[np.ndarray, int, dict]:
    """(audio [2, N], sample_rate, the json beside the wav) of one dialogue."""
    wav_path = Path(wav_path)
    audio, sr = read_wav(wav_path)
    json_path = wav_path.with_suffix(".json")
    if not json_path.is_file():
        raise ValueError(f"no alignment json beside {str(wav_path)!r}")
    return audio, sr, json.loads(json_path.read_text())


def speaker_words(meta: dict, label: str = AGENT_LABEL) -> list[tuple[str, float, float]]:
    """One speaker's (word, start_s, end_s) from an item's json."""
    return [(w, s, e) for w, (s, e), spk in meta["alignments"] if spk == label]

