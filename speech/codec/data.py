"""Codec training/evaluation clips: TTS sentences with a phone label per 80 ms frame, cached in one npz file.

`build_clip_cache` synthesizes corpus sentences with a list of voices (speech.tts) and stores, atomically, the
24 kHz int16 audio of every clip (zero-padded to whole frames), the phone at the centre of each frame (the
semantic-distillation teacher), the voice and text. `PhoneVocab` maps phone names to class ids (festival/flite
ARPAbet and espeak mnemonics share one table; silence is `pau`). `ClipDataset` draws frame-aligned random crops.

Dimension legend: B batch, N samples, T frames.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

IGNORE = -100  # label of frames with no usable phone (padding, phones outside the vocabulary)
PCM_SCALE = 32767.0


def frame_labels(phones: list[tuple[str, float, float]], num_frames: int, frame_s: float) -> list[str]:
    """The phone at the centre of each frame; `pau` where no phone covers it."""
    out = []
    j = 0
    for f in range(num_frames):
        t = (f + 0.5) * frame_s
        while j < len(phones) and phones[j][2] <= t:
            j += 1
        out.append(phones[j][0] if j < len(phones) and phones[j][1] <= t else "pau")
    return out


@dataclass
class ClipCache:
    """All clips of one cache file; audio is float32 on access."""

    audio: np.ndarray  # int16 [sum N], clips back to back, each a whole number of frames
    offsets: np.ndarray  # int64 [n + 1] sample offsets
    labels: list[list[str]]  # per clip, the phone name of each frame
    voices: list[str]
    texts: list[str]
    sample_rate: int
    frame_size: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clip(self, i: int) -> np.ndarray:  # float32 [N]
        return self.audio[self.offsets[i]: self.offsets[i + 1]].astype(np.float32) / PCM_SCALE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def load_clip_cache(path: str | os.PathLike) -> ClipCache:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no clip cache at {path}; build it with scripts/train_codec.py --build-data")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return ClipCache(z["audio"], z["offsets"], meta["labels"], meta["voices"], meta["texts"],
                         meta["sample_rate"], meta["frame_size"])


def assign_voices(texts: list[str], voices: list, seed: int = 0, first_share: float = 0.0) -> list[tuple[str, object]]:
    """Pair each text with a voice: `first_share` of them with voices[0] (the agent), the rest round robin over the
    other voices in a seeded shuffled order."""
    rng = random.Random(seed)
    rest = list(voices[1:]) if first_share > 0 else list(voices)
    rng.shuffle(rest)
    out, j = [], 0
    for text in texts:
        if first_share > 0 and rng.random() < first_share:
            out.append((text, voices[0]))
        else:
            out.append((text, rest[j % len(rest)]))
            j += 1
    return out


def build_clip_cache(path: str | os.PathLike, items: list[tuple[str, object]], frame_size: int, sample_rate: int,
                     max_seconds: float = 12.0) -> ClipCache:
    """Synthesize each (text, voice) pair with speech.tts and write the cache atomically (temp + rename)."""
    from speech.tts import synthesize

    if sample_rate != 24000:
        raise ValueError(f"the TTS layer produces 24000 Hz audio, the codec asks for {sample_rate}")
    chunks, offsets, labels, names, kept = [], [0], [], [], []
    failed = 0
    for text, voice in tqdm(items, desc=f"tts -> {Path(path).name}", mininterval=5):
        try:
            syn = synthesize(text, voice)
        except (RuntimeError, ValueError) as e:  # a TTS backend occasionally rejects a sentence: skip it
            failed += 1
            print(f"skipped {text!r} ({voice.name}): {e}")
            continue
        if syn.sample_rate != sample_rate:
            raise ValueError(f"TTS returned {syn.sample_rate} Hz audio, expected {sample_rate}")
        audio = np.asarray(syn.audio, dtype=np.float32)
        if len(audio) == 0 or len(audio) > max_seconds * sample_rate:
            continue
        peak = float(np.abs(audio).max())
        if peak > 0.99:  # keep clips in range without changing the relative level of the others
            audio = audio * (0.99 / peak)
        n = -(-len(audio) // frame_size) * frame_size
        pcm = np.zeros(n, dtype=np.int16)
        pcm[: len(audio)] = np.round(audio * PCM_SCALE).astype(np.int16)
        chunks.append(pcm)
        offsets.append(offsets[-1] + n)
        labels.append(frame_labels(syn.phones, n // frame_size, frame_size / sample_rate))
        names.append(voice.name)
        kept.append(text)
    cache = ClipCache(np.concatenate(chunks), np.asarray(offsets, dtype=np.int64), labels, names, kept, sample_rate,
                      frame_size)
    meta = {"labels": labels, "voices": names, "texts": kept, "sample_rate": sample_rate, "frame_size": frame_size}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, audio=cache.audio, offsets=cache.offsets, meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return cache


class PhoneVocab:
    """Phone name <-> class id; at most `size` ids, the most frequent phones first (`pau` always id 0)."""

    def __init__(self, names: list[str]):
        if not names or names[0] != "pau":
            raise ValueError(f"a phone vocabulary starts with 'pau', got {names[:3]}")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def from_labels(cls, labels: list[list[str]], size: int) -> PhoneVocab:
        counts = Counter(p for clip in labels for p in clip)
        counts.pop("pau", None)
        return cls(["pau"] + [p for p, _ in counts.most_common(size - 1)])

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: list[str]) -> np.ndarray:  # int64 [T], IGNORE for unknown phones
        return np.asarray([self.index.get(p, IGNORE) for p in labels], dtype=np.int64)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.names))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhoneVocab:
        return cls(json.loads(Path(path).read_text()))


class ClipDataset:
    """Random frame-aligned crops of `num_frames` frames, with their phone ids; shorter clips are zero-padded."""

    def __init__(self, cache: ClipCache, vocab: PhoneVocab, num_frames: int):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.cache, self.num_frames = cache, num_frames
        self.ids = [vocab.encode(lab) for lab in cache.labels]
        self.frames = np.diff(cache.offsets) // cache.frame_size

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio [B, 1, num_frames * frame_size], phone ids [B, num_frames]) drawn with `rng`."""
        fs, t = self.cache.frame_size, self.num_frames
        audio = np.zeros((batch_size, 1, t * fs), dtype=np.float32)
        ids = np.full((batch_size, t), IGNORE, dtype=np.int64)
        clips = rng.choice(len(self.frames), size=batch_size, p=self.frames / self.frames.sum())
        for b, i in enumerate(clips):
            n = int(self.frames[i])
            start = int(rng.integers(0, max(n - t, 0) + 1))
            m = min(t, n - start)
            x = self.cache.clip(i)[start * fs: (start + m) * fs]
            audio[b, 0, : m * fs] = x
            ids[b, :m] = self.ids[i][start: start + m]
        return torch.from_numpy(audio), torch.from_numpy(ids)
