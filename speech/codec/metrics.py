"""Objective speech metrics and the classical codecs the evaluation compares against.

SI-SDR and mel distance are computed here; STOI (pystoi) and wideband PESQ (pesq, 16 kHz) come from PyPI.
Classical baselines run the Debian command-line codecs on the same clips: codec2 (`c2enc`/`c2dec`, 8 kHz raw
signed 16-bit) and Opus (`opusenc`/`opusdec`). Decoded signals are brought back to 24 kHz and aligned to the
reference by cross-correlation (codec2 adds a few ms of delay) before scoring, the same way for every system.

All audio here is float32 mono [N] at the stated rate.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

from speech.audio import read_wav, resample, write_wav


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (mean removed)."""
    est, ref = est - est.mean(), ref - ref.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


def align(est: np.ndarray, ref: np.ndarray, max_shift: int) -> tuple[np.ndarray, int]:
    """Shift `est` by the lag in [-max_shift, max_shift] that maximises its correlation with `ref`."""
    n = min(len(est), len(ref))
    est = np.pad(est[:n], (0, max(0, len(ref) - n)))
    spec = np.fft.rfft(est, 2 * len(ref)) * np.conj(np.fft.rfft(ref, 2 * len(ref)))
    corr = np.fft.irfft(spec)
    lags = np.concatenate([np.arange(0, max_shift + 1), np.arange(-max_shift, 0)])
    best = int(lags[np.argmax(corr[lags])])  # est[t + best] ~ ref[t]
    out = np.zeros_like(ref)
    if best >= 0:
        out[: len(ref) - best] = est[best: len(ref)]
    else:
        out[-best:] = est[: len(ref) + best]
    return out, best


def stoi(est: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """STOI; NaN when the reference has too little speech for it (pystoi then warns and returns 1e-5)."""
    from pystoi import stoi as _stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref, est, sr, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return float("nan")
    return value


def pesq_wb(est: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """Wideband PESQ (MOS-LQO) at 16 kHz; NaN when PESQ rejects the clip (e.g. no speech detected)."""
    from pesq import pesq as _pesq

    r16, e16 = resample(ref, sr, 16000), resample(est, sr, 16000)
    try:
        return float(_pesq(16000, r16, e16, "wb"))
    except Exception:  # pesq raises its own error types for silent/too short input
        return float("nan")


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-400:]}")


def codec2_roundtrip(audio: np.ndarray, sr: int, bitrate: int) -> np.ndarray:
    """Encode + decode with Debian's codec2 at `bitrate` bps (8 kHz inside); returns audio at `sr`."""
    x8 = resample(audio, sr, 8000)
    pcm = np.clip(np.round(x8 * 32767), -32768, 32767).astype("<i2")
    with tempfile.TemporaryDirectory() as d:
        raw, bit, dec = Path(d) / "in.raw", Path(d) / "out.c2", Path(d) / "out.raw"
        raw.write_bytes(pcm.tobytes())
        _run(["c2enc", str(bitrate), str(raw), str(bit)])
        _run(["c2dec", str(bitrate), str(bit), str(dec)])
        y8 = np.frombuffer(dec.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
    return resample(y8, 8000, sr)


def opus_roundtrip(audio: np.ndarray, sr: int, kbps: float) -> tuple[np.ndarray, int]:
    """Encode + decode with opus-tools at `kbps`; returns (audio at `sr`, size of the .opus file in bytes)."""
    with tempfile.TemporaryDirectory() as d:
        src, enc, dec = Path(d) / "in.wav", Path(d) / "out.opus", Path(d) / "out.wav"
        write_wav(src, audio, sr)
        _run(["opusenc", "--quiet", "--bitrate", str(kbps), str(src), str(enc)])
        _run(["opusdec", "--quiet", "--rate", str(sr), str(enc), str(dec)])
        y, got_sr = read_wav(dec)
        size = enc.stat().st_size
    y = y[0] if y.shape[0] == 1 else y.mean(axis=0)
    return (resample(y, got_sr, sr) if got_sr != sr else y), size
