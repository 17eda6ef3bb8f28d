"""User-channel augmentation: determinism, exact SNR, band-limits, validation."""

import numpy as np
import pytest

from speech.audio import SAMPLE_RATE
from speech.augment import (
    AugmentConfig,
    add_noise,
    augment,
    colored_noise,
    lowpass,
    reverb,
    room_impulse_response,
    telephone,
)


def _tone_bursts(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = 0.2 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)  # broadband "speech"
    x[: SAMPLE_RATE // 2] = 0.0  # a silent stretch, as between turns
    return x


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def test_deterministic_from_seed():
    x = _tone_bursts()
    cfg = AugmentConfig(p_gain=1, p_reverb=1, p_noise=1, p_telephone=0.5)
    y1, a1 = augment(x, np.random.default_rng(7), cfg)
    y2, a2 = augment(x, np.random.default_rng(7), cfg)
    y3, _ = augment(x, np.random.default_rng(8), cfg)
    assert a1 == a2 and np.array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    assert y1.shape == x.shape and y1.dtype == np.float32 and np.abs(y1).max() <= 0.99 + 1e-6


def test_noise_at_the_requested_snr():
    x = _tone_bursts()
    for color in ("white", "pink", "brown"):
        noise = colored_noise(len(x), color, np.random.default_rng(0))
        y = add_noise(x, 12.0, noise)
        active = np.abs(x) > 1e-4
        snr = 10 * np.log10(np.mean(x[active] ** 2) / np.mean((y - x) ** 2))
        assert abs(snr - 12.0) < 0.01, (color, snr)
    # pink noise has more low-frequency energy than white noise
    w = colored_noise(SAMPLE_RATE, "white", np.random.default_rng(0))
    p = colored_noise(SAMPLE_RATE, "pink", np.random.default_rng(0))
    assert _band_energy(p, 0, 500) > 3 * _band_energy(w, 0, 500)


def test_band_limits_and_reverb():
    x = _tone_bursts()
    assert _band_energy(x, 4500, 12000) > 0.5
    assert _band_energy(telephone(x), 4500, 12000) < 0.01
    assert _band_energy(lowpass(x, 3000.0), 3500, 12000) < 0.01
    rir = room_impulse_response(0.4, np.random.default_rng(0))
    assert len(rir) == int(0.4 * SAMPLE_RATE) and rir[0] == 1.0
    y = reverb(x, rir)
    assert y.shape == x.shape
    assert np.abs(y[SAMPLE_RATE // 2 - 10:SAMPLE_RATE // 2]).max() < 1e-6  # causal: silence before the onset
    assert np.abs(y[:SAMPLE_RATE // 2 + 2000]).max() > 0  # and a tail after it


def test_config_validation():
    with pytest.raises(ValueError, match="p_noise"):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="snr_db"):
        AugmentConfig(snr_db=(20.0, 5.0))
    with pytest.raises(ValueError, match="noise_colors"):
        AugmentConfig(noise_colors=("blue",))
    with pytest.raises(ValueError, match="mono"):
        augment(np.zeros((2, 10), np.float32), np.random.default_rng(0))
