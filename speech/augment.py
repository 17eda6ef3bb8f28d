"""Degradations of the user channel: gain, telephone band-limiting, reverb, additive noise at a chosen SNR.

Only the user's side is degraded (the agent's voice stays clean: it is what the model learns to produce). Every
draw comes from a numpy Generator seeded by the caller, so a dialogue's augmentation is reproducible; `augment`
returns the parameters it applied so they can be stored with the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from speech.audio import SAMPLE_RATE, resample


@dataclass(frozen=True)
class AugmentConfig:
    p_gain: float = 0.8  # probability of a random gain
    gain_db: tuple[float, float] = (-8.0, 6.0)  # gain range
    p_telephone: float = 0.2  # probability of telephone quality (8 kHz, 300-3400 Hz, mu-law 8 bit)
    p_lowpass: float = 0.15  # probability of a plain band-limit (no telephone) with a random cutoff
    lowpass_hz: tuple[float, float] = (3000.0, 7000.0)
    p_reverb: float = 0.3  # probability of a synthetic room (exponentially decaying noise impulse response)
    rt60_s: tuple[float, float] = (0.15, 0.7)
    p_noise: float = 0.6  # probability of additive noise
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")

    def __post_init__(self):
        for name in ("p_gain", "p_telephone", "p_lowpass", "p_reverb", "p_noise"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        for name in ("gain_db", "lowpass_hz", "rt60_s", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), got {(lo, hi)}")
        if self.rt60_s[0] <= 0 or self.lowpass_hz[0] <= 0:
            raise ValueError(f"rt60_s and lowpass_hz must be positive, got {self.rt60_s}, {self.lowpass_hz}")
        bad = set(self.noise_colors) - {"white", "pink", "brown"}
        if bad or not self.noise_colors:
            raise ValueError(f"noise_colors must be from white/pink/brown, got {self.noise_colors}")

    def to_dict(self) -> dict:
        return asdict(self)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of `n` samples with a white (flat), pink (1/f) or brown (1/f^2) power spectrum."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(color)
    if exponent is None:
        raise ValueError(f"unknown noise color {color!r}")
    white = rng.standard_normal(n)
    if exponent:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        white = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, noise: np.ndarray) -> np.ndarray:
    """x + noise scaled so that power(x) / power(noise) = snr_db (x's power over its non-silent samples)."""
    active = np.abs(x) > 1e-4
    p_signal = float(np.mean(x[active] ** 2)) if active.any() else 0.0
    if p_signal == 0.0:
        return x.copy()
    scale = np.sqrt(p_signal / (10 ** (snr_db / 10)) / (np.mean(noise**2) + 1e-12))
    return (x + scale * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic RIR: a unit direct path, then noise decaying by 60 dB over `rt60_s` (a diffuse tail)."""
    n = int(rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # ln(1000) = 6.9078: -60 dB at rt60
    tail[: int(0.002 * sr)] = 0.0  # first reflections arrive after ~2 ms
    rir = 0.3 * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (FFT), keep the input length and its RMS."""
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    return (y * np.sqrt(np.mean(x**2) / (np.mean(y**2) + 1e-12))).astype(np.float32)


def lowpass(x: np.ndarray, cutoff_hz: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limit by resampling down to 2 * cutoff and back (a windowed-sinc low-pass). The cutoff is rounded to
    500 Hz so the intermediate rate shares a large factor with `sr` (the resampler's cost grows with the ratio)."""
    mid = int(round(cutoff_hz / 500.0)) * 1000
    if mid <= 0:
        raise ValueError(f"cutoff must be at least 250 Hz, got {cutoff_hz}")
    return resample(resample(x, sr, mid), mid, sr)[: len(x)]


def telephone(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Telephone quality: 8 kHz, 300-3400 Hz band, 8-bit mu-law quantization."""
    import torch
    import torchaudio.functional as AF

    y = torch.from_numpy(resample(x, sr, 8000))
    y = AF.highpass_biquad(AF.lowpass_biquad(y, 8000, 3400.0), 8000, 300.0)
    mu = 255.0
    q = torch.sign(y) * torch.log1p(mu * y.abs().clamp(max=1.0)) / np.log1p(mu)  # mu-law compand
    q = torch.round((q + 1) / 2 * mu) / mu * 2 - 1
    y = torch.sign(q) * ((1 + mu) ** q.abs() - 1) / mu
    out = resample(y.numpy().astype(np.float32), 8000, sr)
    return np.pad(out, (0, max(0, len(x) - len(out))))[: len(x)]


def augment(x: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig(),
            sr: int = SAMPLE_RATE) -> tuple[np.ndarray, dict]:
    """Degrade mono float audio `x` [N]; returns (audio [N], the applied parameters). Order: room, channel, noise,
    gain, then a peak limit to keep the result in [-1, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"augment expects mono audio [N], got shape {x.shape}")
    applied: dict = {}
    if rng.random() < config.p_reverb:
        rt60 = float(rng.uniform(*config.rt60_s))
        x = reverb(x, room_impulse_response(rt60, rng, sr))
        applied["reverb_rt60_s"] = round(rt60, 3)
    if rng.random() < config.p_telephone:
        x = telephone(x, sr)
        applied["telephone"] = True
    elif rng.random() < config.p_lowpass:
        cutoff = round(float(rng.uniform(*config.lowpass_hz)) / 500.0) * 500.0
        x = lowpass(x, cutoff, sr)
        applied["lowpass_hz"] = round(cutoff, 1)
    if rng.random() < config.p_noise:
        snr = float(rng.uniform(*config.snr_db))
        color = str(rng.choice(config.noise_colors))
        x = add_noise(x, snr, colored_noise(len(x), color, rng))
        applied["noise"] = {"snr_db": round(snr, 2), "color": color}
    if rng.random() < config.p_gain:
        gain = float(rng.uniform(*config.gain_db))
        x = x * np.float32(10 ** (gain / 20))
        applied["gain_db"] = round(gain, 2)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.99:
        x = x * np.float32(0.99 / peak)
        applied["limited_by_db"] = round(20 * np.log10(peak / 0.99), 2)
    return x.astype(np.float32), applied
