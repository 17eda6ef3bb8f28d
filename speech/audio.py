"""Audio file I/O and resampling for the speech package: 16-bit PCM wav through the stdlib `wave` module.

torchaudio 2.11's load/save need torchcodec, which this project does not ship, so wav files are read and written
here with `wave` + numpy; resampling uses `torchaudio.functional.resample` (pure torch, no codec needed).
Audio arrays are float32 in [-1, 1], shaped `[C, N]` (channels, samples) unless a function says otherwise.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from multistream.atomic import atomic_open

SAMPLE_RATE = 24000  # every waveform inside the speech package runs at this rate (the codec's rate)

_PCM16_SCALE = 32768.0


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav file; returns (audio float32 [C, N] in [-1, 1], sample_rate)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such wav file: {str(path)!r}")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, sr, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            if width != 2:
                raise ValueError(f"{str(path)!r}: only 16-bit PCM wav is supported, got sample width {width} bytes")
            raw = f.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{str(path)!r} is not a readable wav file ({e}); remake or replace it") from e
    if len(raw) != n * channels * width:
        raise ValueError(f"{str(path)!r} is truncated: its header promises {n} frames, it holds "
                         f"{len(raw) // (channels * width)}; remake or replace it")
    pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)  # [N, C]
    return (pcm.T.astype(np.float32) / _PCM16_SCALE), sr


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write `audio` ([C, N] or mono [N], float in [-1, 1]; clipped) as 16-bit PCM, atomically (temp + rename)."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"audio must have shape [C, N] or [N], got {audio.shape}")
    if audio.shape[0] > 16:
        raise ValueError(f"audio has {audio.shape[0]} channels; expected [C, N] with few channels (transposed?)")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if not np.isfinite(audio).all():
        raise ValueError(f"audio for {str(path)!r} holds NaN or infinite samples; refusing to write them as noise")
    pcm = np.clip(np.round(audio * (_PCM16_SCALE - 1)), -32768, 32767).astype("<i2").T  # [N, C]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh, wave.open(fh, "wb") as f:
        f.setnchannels(audio.shape[0])
        f.setsampwidth(2)
        f.setframerate(int(sr))
        f.writeframes(np.ascontiguousarray(pcm).tobytes())


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float audio ([..., N]) from `sr_in` to `sr_out` with torchaudio's windowed-sinc resampler."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    audio = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return audio
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), int(sr_in), int(sr_out))
    return out.numpy().astype(np.float32, copy=False)
