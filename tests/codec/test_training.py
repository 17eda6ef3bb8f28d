"""A brief real training of the `tiny` codec lowers the mel distance; a resumed run equals an uninterrupted one."""

import numpy as np
import pytest
import torch

from multistream.trainer import METRICS_FILE, read_metrics
from speech.codec.config import BottleneckTransformerConfig, tiny
from speech.codec.data import ClipCache, ClipDataset, PhoneVocab
from speech.codec.losses import MultiScaleMelLoss
from speech.codec.model import MimiCodec
from speech.codec.train import make_trainer, reconstruct

SR, FRAME = 24000, 1920


def _synthetic_cache(n_clips: int, frames: int, seed: int) -> ClipCache:
    """Harmonic 'vowels': per frame a pitch from 4 classes (the phone label) with 6 harmonics, plus a little noise."""
    rng = np.random.default_rng(seed)
    f0s = np.array([110.0, 150.0, 200.0, 260.0])
    clips, labels = [], []
    for _ in range(n_clips):
        cls = rng.integers(0, 4, size=frames)
        f0 = np.repeat(f0s[cls], FRAME)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(h * phase) / h for h in range(1, 7)) * 0.2 + 0.005 * rng.standard_normal(frames * FRAME)
        clips.append(np.round(x * 32767).astype(np.int16))
        labels.append([["pau", "a", "e", "i"][c] for c in cls])
    offsets = np.cumsum([0] + [len(c) for c in clips])
    return ClipCache(np.concatenate(clips), offsets, labels, ["synth"] * n_clips, [""] * n_clips, SR, FRAME)


def _mel_distance(codec, x, mel) -> float:
    codec.eval()
    return float(mel(reconstruct(codec, x), x))


def _read(path):
    return {r["step"]: r for r in read_metrics(path)}


def test_tiny_training_reduces_mel_distance(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    codec = MimiCodec(cfg)
    vocab = PhoneVocab(["pau", "a", "e", "i"])
    ds = ClipDataset(_synthetic_cache(8, 20, seed=0), vocab, num_frames=3)
    held = ClipDataset(_synthetic_cache(4, 4, seed=1), vocab, num_frames=4)
    x, _ = held.batch(4, np.random.default_rng(0))  # clips never trained on
    mel = MultiScaleMelLoss(SR, cfg.loss.mel_scales, cfg.loss.n_mels)
    kw = dict(batch_size=2, lr=3e-3, warmup_steps=1, progress=False)
    make_trainer(codec, ds, tmp_path, 1, **kw).fit()  # first step: k-means initialises the codebooks
    before = _mel_distance(codec, x, mel)
    last = make_trainer(codec, ds, tmp_path, 50, **kw).fit()  # the same run, resumed and extended
    after = _mel_distance(codec, x, mel)
    assert np.isfinite(last["loss"])
    assert after < 0.75 * before, (before, after)
    rows = _read(tmp_path / METRICS_FILE)
    assert sorted(rows) == list(range(1, 51)) and "loss/mel" in rows[50] and "entropy" in rows[50]
    assert (tmp_path / "checkpoint" / "trainer_state.json").is_file()


class _Killed(Exception):
    pass


def test_resume_continues_exactly(tmp_path):
    """An adversarial run killed after its step-2 checkpoint resumes to the weights and metrics of an unbroken run."""
    cfg = tiny()
    cfg.seanet.n_filters = 4
    cfg.seanet.dimension = 32
    cfg.transformer = BottleneckTransformerConfig(num_layers=1, num_heads=2, dim_feedforward=64)
    cfg.quantizer.dimension, cfg.quantizer.bins, cfg.quantizer.check_unused_every = 8, 16, 2
    cfg.loss.adversarial = True
    cfg.loss.disc_scales, cfg.loss.disc_filters = (256, 128), 4
    vocab = PhoneVocab(["pau", "a", "e", "i"])
    ds = ClipDataset(_synthetic_cache(4, 6, seed=2), vocab, num_frames=2)
    kw = dict(batch_size=2, warmup_steps=2, ckpt_every=2, progress=False)

    torch.manual_seed(0)
    ref = make_trainer(MimiCodec(cfg), ds, tmp_path / "ref", 4, **kw)
    ref.fit()

    torch.manual_seed(0)
    first = make_trainer(MimiCodec(cfg), ds, tmp_path / "run", 4, **kw)
    real = first.batch_fn

    def dies_at_step_2(step, micro, rank, world):
        if step == 2:
            raise _Killed
        return real(step, micro, rank, world)

    first.batch_fn = dies_at_step_2
    with pytest.raises(_Killed):
        first.fit()
    torch.manual_seed(123)  # a resumed process starts from a different RNG state
    resumed = make_trainer(MimiCodec(cfg), ds, tmp_path / "run", 4, **kw)
    assert resumed.step == 2
    resumed.fit()

    a, b = _read(tmp_path / "ref" / METRICS_FILE), _read(tmp_path / "run" / METRICS_FILE)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for s in a:
        assert a[s]["loss"] == b[s]["loss"] and a[s]["loss/mel"] == b[s]["loss/mel"] and a[s]["disc"] == b[s]["disc"]
    ref_state, res_state = ref.model.state_dict(), resumed.model.state_dict()
    for k in ref_state:
        assert torch.equal(ref_state[k], res_state[k]), k
    for k, v in ref.hook.disc.state_dict().items():
        assert torch.equal(v, resumed.hook.disc.state_dict()[k]), k
