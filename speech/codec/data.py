"""Codec training/evaluation clips: TTS sentences and real recordings, a phone label per 80 ms frame, one npz file.

A clip is described by a JSON *job* (`tts_job`: text + voice + an optional augmentation draw; `real_job`: a
recorded prompt file, see speech.codec.real) and rendered by `render_job`. `build_cache` renders a job list into a
cache resumably (atomic shards, then an atomic merge), skipping with a clear message any clip it cannot make. A
cache holds the 24 kHz int16 audio of every clip (zero-padded to whole frames), the phone at the centre of each
frame (the semantic-distillation teacher; `NO_PHONE` for recordings, which the loss ignores), the voice and text.
`PhoneVocab` maps phone names to class ids (festival/flite ARPAbet and espeak mnemonics share one table; silence
is `pau`). `ClipDataset` draws frame-aligned random crops.

Dimension legend: B batch, N samples, T frames.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from multistream.atomic import atomic_open

IGNORE = -100  # label of frames with no usable phone (padding, phones outside the vocabulary)
NO_PHONE = "?"  # frame label of recorded speech: no phone known (never in a PhoneVocab, so encoded as IGNORE)
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
        raise FileNotFoundError(f"no clip cache at {path}; build it with scripts/make_codec_data.py --out "
                                f"{path.parent} (or pass --data with an existing cache)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return ClipCache(z["audio"], z["offsets"], meta["labels"], meta["voices"], meta["texts"],
                             meta["sample_rate"], meta["frame_size"])
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable clip cache ({type(e).__name__}: {e}); rebuild it with "
                         "scripts/make_codec_data.py") from e


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


# ---- jobs: JSON descriptions of one clip each, so a partly built cache can be resumed and checked ----------------
@dataclass(frozen=True)
class ClipAugment:
    """How clips are varied. `warp` resamples the waveform (pitch, formants and rate together, like a different
    vocal tract); espeak voices also get a random pitch and rate of their own; then, with probability `p_degrade`,
    speech.augment's room / band-limit / noise / gain chain."""

    warps: tuple[float, ...] = (0.88, 0.92, 0.96, 1.0, 1.0, 1.04, 1.08, 1.12)  # rate x: 24000 * x stays a whole kHz
    espeak_pitch: tuple[int, int] = (25, 80)
    rate: tuple[float, float] = (0.85, 1.25)  # speaking-rate multiplier of the TTS voice
    p_degrade: float = 0.5

    def __post_init__(self):
        if not self.warps or any(not 0.5 <= w <= 2.0 for w in self.warps):
            raise ValueError(f"ClipAugment.warps must lie in [0.5, 2], got {self.warps}")
        if not 0.0 <= self.p_degrade <= 1.0:
            raise ValueError(f"ClipAugment.p_degrade must be a probability, got {self.p_degrade}")


def tts_job(text: str, voice, aug_seed: int | None = None, augment: ClipAugment | None = None) -> dict:
    """A TTS clip: the voice's fields (so held-out or varied voices round-trip), optionally an augmentation draw."""
    from dataclasses import asdict, replace

    job: dict = {"kind": "tts", "text": text}
    if aug_seed is not None:
        a = augment or ClipAugment()
        rng = np.random.default_rng(aug_seed)
        rate = float(np.clip(voice.rate * rng.uniform(*a.rate), 0.5, 2.0))
        pitch = int(rng.integers(a.espeak_pitch[0], a.espeak_pitch[1] + 1)) if voice.backend == "espeak" else 50
        voice = replace(voice, rate=round(rate, 3), pitch=pitch if voice.backend == "espeak" else voice.pitch)
        job.update(warp=float(rng.choice(a.warps)), degrade_seed=int(rng.integers(2**31))
                   if rng.random() < a.p_degrade else None)
    job["voice"] = asdict(voice)
    return job


def real_job(path: str | os.PathLike, speaker: str, aug_seed: int | None = None,
             augment: ClipAugment | None = None) -> dict:
    """A recorded prompt file of `speaker` (no phone labels), optionally with an augmentation draw."""
    job: dict = {"kind": "real", "path": str(path), "speaker": speaker}
    if aug_seed is not None:
        a = augment or ClipAugment()
        rng = np.random.default_rng(aug_seed)
        job.update(warp=float(rng.choice(a.warps)), degrade_seed=int(rng.integers(2**31))
                   if rng.random() < a.p_degrade else None)
    return job


def render_job(job: dict, sample_rate: int) -> tuple[np.ndarray, list[tuple[str, float, float]] | None, str, str]:
    """(audio float32 [N] at `sample_rate`, phones or None, voice/speaker name, text) of one job. ValueError or
    RuntimeError (from the TTS engines or the decoder) when the clip cannot be made."""
    from speech.audio import resample

    if job.get("kind") == "tts":
        from speech.tts import synthesize
        from speech.voices import Voice

        voice = Voice(**job["voice"])
        syn = synthesize(job["text"], voice)
        if syn.sample_rate != sample_rate:
            raise ValueError(f"TTS returned {syn.sample_rate} Hz audio, expected {sample_rate}")
        audio, phones, name, text = np.asarray(syn.audio, np.float32), list(syn.phones), voice.name, job["text"]
    elif job.get("kind") == "real":
        from speech.codec.real import decode

        audio, phones, name, text = decode(job["path"], sample_rate), None, job["speaker"], Path(job["path"]).stem
    else:
        raise ValueError(f"unknown clip job kind {job.get('kind')!r}")
    warp = float(job.get("warp", 1.0))
    if warp != 1.0:  # played `warp` times faster: pitch and formants up, duration down
        audio = resample(audio, int(round(sample_rate * warp)), sample_rate)
        phones = None if phones is None else [(p, s / warp, e / warp) for p, s, e in phones]
    if job.get("degrade_seed") is not None:
        from speech.augment import augment

        audio, _ = augment(audio, np.random.default_rng(job["degrade_seed"]), sr=sample_rate)
    return audio, phones, name, text


def _jobs_digest(jobs: list[dict]) -> str:
    return hashlib.sha256(json.dumps(jobs, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays) -> None:
    """np.savez to a temp file in the same folder, then os.replace: readers never see a partial file."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def _save_cache(path: Path, cache: ClipCache, extra: dict | None = None) -> None:
    meta = {"labels": cache.labels, "voices": cache.voices, "texts": cache.texts, "sample_rate": cache.sample_rate,
            "frame_size": cache.frame_size} | (extra or {})
    _atomic_savez(path, audio=cache.audio, offsets=cache.offsets, meta=np.asarray(json.dumps(meta)))


def _pieces(audio: np.ndarray, max_samples: int, frame_size: int) -> list[tuple[int, np.ndarray]]:
    """Split a long recording into pieces of at most `max_samples` (whole frames), with their start samples."""
    step = max(frame_size, max_samples // frame_size * frame_size)
    return [(s, audio[s: s + step]) for s in range(0, len(audio), step)]


def concat_shards(shards: list[Path]) -> tuple[ClipCache, list]:
    """The clips of several cache files back to back, and their recorded skips."""
    audio, offsets, labels, names, texts, skipped = [], [0], [], [], [], []
    sample_rate = frame_size = None
    for shard in shards:
        with np.load(shard, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            audio.append(z["audio"])
            offsets += list(offsets[-1] + z["offsets"][1:])
        if sample_rate is not None and (meta["sample_rate"], meta["frame_size"]) != (sample_rate, frame_size):
            raise ValueError(f"{shard}: {meta['sample_rate']} Hz / frame {meta['frame_size']}, the others "
                             f"{sample_rate} Hz / frame {frame_size}")
        sample_rate, frame_size = meta["sample_rate"], meta["frame_size"]
        labels += meta["labels"]
        names += meta["voices"]
        texts += meta["texts"]
        skipped += meta.get("skipped", [])
    cache = ClipCache(np.concatenate(audio) if audio else np.zeros(0, np.int16), np.asarray(offsets, dtype=np.int64),
                      labels, names, texts, sample_rate or 0, frame_size or 0)
    return cache, skipped


def snapshot_partial(path: str | os.PathLike, out: str | os.PathLike) -> ClipCache:
    """Merge the shards a still unfinished `build_cache(path, ...)` has written so far into `out` (atomic), so
    training can start before the whole cache is built; the build itself can still be resumed."""
    parts = Path(f"{path}.parts")
    shards = sorted(parts.glob("[0-9]*.npz"))
    if not shards:
        raise ValueError(f"no built shard under {parts}")
    cache, skipped = concat_shards(shards)
    _save_cache(Path(out), cache, {"skipped": skipped, "partial_of": str(path), "shards": len(shards)})
    return cache


def build_cache(path: str | os.PathLike, jobs: list[dict], frame_size: int, sample_rate: int,
                max_seconds: float = 12.0, shard_size: int = 100, split_long: bool = False,
                desc: str | None = None) -> ClipCache:
    """Render every job into one clip cache at `path`, resumably: clips are made in shards of `shard_size` jobs,
    each written atomically under `PATH.parts/`; a rerun skips the shards already there (checked against a digest
    of the job list), then all shards are merged into `path` (atomic) and the parts removed. A job that cannot be
    rendered (TTS rejects the text, a file the decoder cannot read) is reported with its error and skipped; the
    others are kept. TTS clips over `max_seconds` are skipped; recordings over it are cut into pieces when
    `split_long`, else skipped. Real recordings get the NO_PHONE label on every frame."""
    path = Path(path)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    parts = path.parent / f"{path.name}.parts"
    digest = _jobs_digest(jobs)
    stamp = parts / "jobs.sha256"
    if parts.is_dir() and stamp.is_file() and stamp.read_text().strip() != digest:
        raise ValueError(f"{parts} holds shards of a different job list (digest {stamp.read_text().strip()}, "
                         f"now {digest}); delete it to rebuild")
    parts.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    n_shards = -(-len(jobs) // shard_size)
    done = [i for i in range(n_shards) if (parts / f"{i:05d}.npz").is_file()]
    max_samples = int(max_seconds * sample_rate)
    bar = tqdm(total=len(jobs), initial=len(done) * shard_size if done else 0,
               desc=desc or f"clips -> {path.name}", mininterval=5)
    if done:
        bar.write(f"resuming {path.name}: {len(done)}/{n_shards} shards already built")
    for i in range(n_shards):
        shard = parts / f"{i:05d}.npz"
        if shard.is_file():
            continue
        chunks, offsets, labels, names, texts, skipped = [], [0], [], [], [], []
        for j in range(i * shard_size, min(len(jobs), (i + 1) * shard_size)):
            bar.update(1)
            try:
                audio, phones, name, text = render_job(jobs[j], sample_rate)
            except (RuntimeError, ValueError) as e:  # this clip cannot be made: say why, keep the others
                skipped.append([j, str(e)])
                bar.write(f"skipped job {j} ({jobs[j].get('path') or jobs[j].get('text')!r}): {e}")
                continue
            if len(audio) == 0 or (len(audio) > max_samples and not split_long):
                skipped.append([j, f"{len(audio) / sample_rate:.1f} s is empty or over max_seconds={max_seconds}"])
                continue
            for start, piece in _pieces(audio, max_samples, frame_size):
                peak = float(np.abs(piece).max()) if len(piece) else 0.0
                if peak < 1e-4:
                    continue
                if peak > 0.99:  # keep clips in range without changing the relative level of the others
                    piece = piece * (0.99 / peak)
                n = -(-len(piece) // frame_size) * frame_size
                pcm = np.zeros(n, dtype=np.int16)
                pcm[: len(piece)] = np.round(piece * PCM_SCALE).astype(np.int16)
                chunks.append(pcm)
                offsets.append(offsets[-1] + n)
                t0 = start / sample_rate
                labels.append([NO_PHONE] * (n // frame_size) if phones is None else
                              frame_labels([(p, s - t0, e - t0) for p, s, e in phones], n // frame_size,
                                           frame_size / sample_rate))
                names.append(name)
                texts.append(text)
        part = ClipCache(np.concatenate(chunks) if chunks else np.zeros(0, np.int16),
                         np.asarray(offsets, dtype=np.int64), labels, names, texts, sample_rate, frame_size)
        _save_cache(shard, part, {"skipped": skipped})
    bar.close()
    cache, skipped = concat_shards([parts / f"{i:05d}.npz" for i in range(n_shards)])
    if len(cache) == 0:
        raise ValueError(f"no clip of the {len(jobs)} jobs could be made for {path}; first errors: {skipped[:3]}")
    _save_cache(path, cache, {"skipped": skipped, "jobs": len(jobs)})
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return cache


def build_clip_cache(path: str | os.PathLike, items: list[tuple[str, object]], frame_size: int, sample_rate: int,
                     max_seconds: float = 12.0) -> ClipCache:
    """Synthesize each (text, voice) pair with speech.tts, unaugmented, into a cache at `path` (see build_cache)."""
    if sample_rate != 24000:
        raise ValueError(f"the TTS layer produces 24000 Hz audio, the codec asks for {sample_rate}")
    return build_cache(path, [tts_job(t, v) for t, v in items], frame_size, sample_rate, max_seconds)


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
        counts.pop(NO_PHONE, None)
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
