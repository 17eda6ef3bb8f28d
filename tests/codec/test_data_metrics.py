"""Frame phone labels, vocabulary, frame-aligned crops; SI-SDR, alignment and the classical codec round trips."""

import shutil

import numpy as np
import pytest

from speech.codec.data import IGNORE, ClipCache, ClipDataset, PhoneVocab, frame_labels
from speech.codec.metrics import align, codec2_roundtrip, opus_roundtrip, si_sdr


def test_frame_labels_take_the_phone_at_the_frame_centre():
    phones = [("pau", 0.0, 0.05), ("h", 0.05, 0.13), ("ay", 0.13, 0.30)]
    # frame centres at 0.04, 0.12, 0.20, 0.28, 0.36 s
    assert frame_labels(phones, 5, 0.08) == ["pau", "h", "ay", "ay", "pau"]


def test_vocab_and_crops():
    vocab = PhoneVocab.from_labels([["pau", "a", "b", "a"], ["a", "c"]], size=3)
    assert vocab.names == ["pau", "a", "b"]
    assert vocab.encode(["a", "c", "pau"]).tolist() == [1, IGNORE, 0]
    fs = 4
    audio = np.arange(2 * 5 * fs, dtype=np.int16)  # two clips of 5 frames; sample value = its index
    cache = ClipCache(audio, np.array([0, 5 * fs, 10 * fs]), [["a", "b", "a", "b", "a"], ["b"] * 5], ["v", "v"],
                      ["", ""], 24000, fs)
    x, ids = ClipDataset(cache, vocab, num_frames=2).batch(16, np.random.default_rng(0))
    assert x.shape == (16, 1, 2 * fs) and ids.shape == (16, 2)
    starts = np.round(x[:, 0, 0].numpy() * 32767).astype(int)
    assert (starts % fs == 0).all()  # crops start on a frame boundary
    for s, row in zip(starts, ids.tolist(), strict=True):
        clip, frame = divmod(s // fs, 5)
        assert row == vocab.encode(cache.labels[clip][frame:frame + 2]).tolist()
    long = ClipDataset(cache, vocab, num_frames=7).batch(2, np.random.default_rng(0))[1]
    assert (long[:, 5:] == IGNORE).all()  # padding past the clip end is ignored by the loss


def test_si_sdr_and_align():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(4000).astype(np.float32)
    assert si_sdr(0.5 * ref, ref) > 60
    assert si_sdr(ref + 0.1 * rng.standard_normal(4000), ref) == pytest.approx(20, abs=0.5)
    delayed = np.concatenate([np.zeros(37, np.float32), ref[:-37]])
    fixed, lag = align(delayed, ref, 100)
    assert lag == 37 and si_sdr(fixed[:-37], ref[:-37]) > 60


@pytest.mark.skipif(not (shutil.which("c2enc") and shutil.which("opusenc")), reason="codec2 / opus-tools missing")
def test_classical_codec_round_trips():
    t = np.arange(24000) / 24000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    for bitrate in (1200, 3200):
        y = codec2_roundtrip(x, 24000, bitrate)
        assert abs(len(y) - len(x)) < 24000 * 0.05 and np.isfinite(y).all() and np.abs(y).max() > 0.01
    y, size = opus_roundtrip(x, 24000, 6)
    assert len(y) == len(x) and 0 < size < 6000 / 8 * 1.0 + 2000  # 1 s at 6 kbps plus Ogg headers
    assert si_sdr(y, x) > 0  # Opus keeps the waveform of a clean tone
