"""A brief real training of the `tiny` codec lowers the mel distance; a resumed run equals an uninterrupted one."""

import numpy as np
import torch

from multistream.checkpoint import load_trainer_state, load_weights, save_checkpoint
from speech.codec.config import BottleneckTransformerConfig, tiny
from speech.codec.data import ClipCache, ClipDataset, PhoneVocab
from speech.codec.losses import MultiScaleMelLoss
from speech.codec.model import MimiCodec
from speech.codec.train import CodecTrainer, TrainConfig, reconstruct

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


def test_tiny_training_reduces_mel_distance():
    torch.manual_seed(0)
    cfg = tiny()
    codec = MimiCodec(cfg)
    vocab = PhoneVocab(["pau", "a", "e", "i"])
    ds = ClipDataset(_synthetic_cache(8, 20, seed=0), vocab, num_frames=3)
    held = ClipDataset(_synthetic_cache(4, 4, seed=1), vocab, num_frames=4)
    x, _ = held.batch(4, np.random.default_rng(0))  # clips never trained on
    mel = MultiScaleMelLoss(SR, cfg.loss.mel_scales, cfg.loss.n_mels)
    trainer = CodecTrainer(codec, ds, TrainConfig(steps=50, batch_size=2, segment_frames=3, lr=3e-3, warmup_steps=1))
    trainer.step()  # first step: k-means initialises the codebooks, so the baseline is a working codec
    before = _mel_distance(codec, x, mel)
    for _ in range(49):
        m = trainer.step()
    after = _mel_distance(codec, x, mel)
    assert np.isfinite(m["loss"])
    assert after < 0.75 * before, (before, after)


def test_resume_continues_exactly(tmp_path):
    cfg = tiny()
    cfg.seanet.n_filters = 4
    cfg.seanet.dimension = 32
    cfg.transformer = BottleneckTransformerConfig(num_layers=1, num_heads=2, dim_feedforward=64)
    cfg.quantizer.dimension, cfg.quantizer.bins, cfg.quantizer.check_unused_every = 8, 16, 2
    cfg.loss.adversarial = True
    cfg.loss.disc_scales, cfg.loss.disc_filters = (256, 128), 4
    vocab = PhoneVocab(["pau", "a", "e", "i"])
    ds = ClipDataset(_synthetic_cache(4, 6, seed=2), vocab, num_frames=2)
    tcfg = TrainConfig(steps=4, batch_size=2, segment_frames=2, warmup_steps=2)

    torch.manual_seed(0)
    ref = CodecTrainer(MimiCodec(cfg), ds, tcfg)
    ref_metrics = [ref.step() for _ in range(4)]

    torch.manual_seed(0)
    first = CodecTrainer(MimiCodec(cfg), ds, tcfg)
    part1 = [first.step() for _ in range(2)]
    save_checkpoint(tmp_path / "ck", first.codec, cfg, extra=first.state_dict())
    torch.manual_seed(123)  # a resumed process starts from a different RNG state
    resumed = CodecTrainer(MimiCodec(cfg), ds, tcfg)
    load_weights(tmp_path / "ck", resumed.codec)
    resumed.load_state_dict(load_trainer_state(tmp_path / "ck"))
    part2 = [resumed.step() for _ in range(2)]

    for a, b in zip(ref_metrics, part1 + part2, strict=True):
        assert a["loss"] == b["loss"] and a["mel"] == b["mel"]
    ref_state, res_state = ref.codec.state_dict(), resumed.codec.state_dict()
    for k in ref_state:
        assert torch.equal(ref_state[k], res_state[k]), k
