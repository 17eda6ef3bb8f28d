"""The spectral encoder and inverse-STFT decoder: chunked == one shot, causal, per-row reset, overlap-add windows
that sum to one, and a codec built on them streams, is causal, reconstructs a learnable signal and trains."""

import numpy as np
import pytest
import torch

from speech.codec.config import BottleneckTransformerConfig, CodecConfig, SpectralConfig, preset
from speech.codec.data import IGNORE
from speech.codec.losses import CodecLoss
from speech.codec.model import MimiCodec
from speech.codec.spectral import CausalLogSpectrum, OverlapAddSynthesis

from .conftest import random_codebooks
from .test_ddsp import _split

HOP, SR, FRAME = 240, 24000, 1920


def test_log_spectrum_chunked_equals_full_and_causal():
    spec = CausalLogSpectrum(960, HOP)
    x = torch.randn(2, 1, 12 * HOP)
    full = spec(x)
    with spec.streaming(2):
        chunked = torch.cat([spec(c) for c in _split(x, [HOP, 3 * HOP, 2 * HOP, 6 * HOP])], -1)
    assert full.shape == (2, 481, 12)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)
    x2 = x.clone()
    x2[..., 7 * HOP:] = torch.randn(2, 1, 5 * HOP)
    changed = spec(x2)
    torch.testing.assert_close(changed[..., :7], full[..., :7], rtol=0, atol=0)  # frame t ends at (t+1) * hop
    assert not torch.allclose(changed[..., 7:], full[..., 7:])


def test_log_spectrum_finds_a_tone():
    t = torch.arange(8 * HOP) / SR
    x = torch.sin(2 * np.pi * 1000.0 * t)[None, None]
    spec = CausalLogSpectrum(960, HOP)(x)  # bins of 25 Hz
    assert int(spec[0, :, -1].argmax()) == 40  # 1000 Hz


@pytest.mark.parametrize("n_fft", [480, 960])
def test_overlap_add_windows_sum_to_one(n_fft):
    synth = OverlapAddSynthesis(n_fft, HOP)
    w = synth.window
    total = sum(w[k * HOP:(k + 1) * HOP] for k in range(n_fft // HOP))
    torch.testing.assert_close(total, torch.ones(HOP), rtol=0, atol=1e-6)


def test_synthesis_chunked_equals_full_causal_and_resets_rows():
    synth = OverlapAddSynthesis(480, HOP)
    frames = torch.randn(2, 2 * 241, 9)
    full = synth(frames)
    with synth.streaming(2):
        chunked = torch.cat([synth(c) for c in _split(frames, [1, 3, 2, 3])], -1)
    assert full.shape == (2, 1, 9 * HOP)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)
    f2 = frames.clone()
    f2[..., 5:] = torch.randn(2, 2 * 241, 4)
    changed = synth(f2)
    torch.testing.assert_close(changed[..., : 5 * HOP], full[..., : 5 * HOP], rtol=0, atol=0)
    assert not torch.allclose(changed[..., 5 * HOP:], full[..., 5 * HOP:])
    with synth.streaming(2):
        synth(frames[..., :4])
        synth.reset_streaming([0])
        after = synth(frames[..., 4:])
    torch.testing.assert_close(after[:1], synth(frames[:1, :, 4:]), rtol=0, atol=1e-5)  # row 0 afresh
    torch.testing.assert_close(after[1:], full[1:, :, 4 * HOP:], rtol=0, atol=1e-5)  # row 1 unaffected


def _codec():
    cfg = preset("spectral")
    cfg.seanet.dimension = 16
    cfg.spectral = SpectralConfig(channels=16, n_residual_layers=2)
    cfg.transformer = BottleneckTransformerConfig(num_layers=1, num_heads=2, dim_feedforward=32)
    torch.manual_seed(0)
    codec = MimiCodec(cfg).eval()
    random_codebooks(codec)
    with torch.no_grad():  # audible from the start
        codec.decoder.model[-2].conv.bias.zero_()
    return codec


def test_spectral_codec_streams_and_is_causal():
    codec = _codec()
    x = torch.randn(2, 1, 5 * FRAME) * 0.3
    with torch.no_grad():
        codes = codec.encode(x)
        audio = codec.decode(codes)
        with codec.streaming(2):
            codes_s = torch.cat([codec.encode(c) for c in _split(x, [FRAME, 2 * FRAME, 2 * FRAME])], -1)
            chunked = torch.cat([codec.decode(c) for c in _split(codes, [1, 2, 2])], -1)
        x2 = x.clone()
        x2[..., 3 * FRAME:] = torch.randn(2, 1, 2 * FRAME)
        codes_x2 = codec.encode(x2)
        codes2 = codes.clone()
        codes2[..., 3:] = (codes2[..., 3:] + 1) % codec.cardinality
        audio2 = codec.decode(codes2)
    assert torch.equal(codes_s, codes)
    assert torch.equal(codes_x2[..., :3], codes[..., :3])  # codes of frame t see audio up to its end only
    torch.testing.assert_close(chunked, audio, rtol=0, atol=1e-4 * float(audio.abs().max()))
    torch.testing.assert_close(audio2[..., : 3 * FRAME], audio[..., : 3 * FRAME], rtol=0, atol=0)
    assert not torch.allclose(audio2[..., 3 * FRAME:], audio[..., 3 * FRAME:])


def test_spectral_codec_learns_a_tone():
    """A real learning check: 60 steps on one harmonic tone bring the mel loss down by a quarter."""
    codec = _codec().train()
    t = torch.arange(2 * FRAME) / SR
    x = (0.3 * torch.sin(2 * np.pi * 220.0 * t) + 0.1 * torch.sin(2 * np.pi * 660.0 * t))[None, None].repeat(2, 1, 1)
    loss_fn = CodecLoss(SR, codec.cfg.loss, IGNORE)
    opt = torch.optim.Adam(codec.parameters(), 3e-3)
    ids = torch.full((2, 2), IGNORE)
    mels = []
    for _ in range(60):
        loss, m = loss_fn(codec(x), x, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mels.append(m["mel"])
    assert np.isfinite(mels).all() and np.mean(mels[-5:]) < 0.75 * np.mean(mels[:3])


def test_bad_spectral_config_names_the_value():
    with pytest.raises(ValueError, match="encoder must be one of .* got 'mfcc'"):
        CodecConfig(encoder="mfcc")
    with pytest.raises(ValueError, match=r"synthesis_fft \(500\) must be a multiple of the hop \(240\)"):
        SpectralConfig(synthesis_fft=500)
    with pytest.raises(ValueError, match="spectral hop 250 must divide the latent hop 960"):
        CodecConfig(encoder="spectral", spectral=SpectralConfig(hop=250, analysis_fft=1000, synthesis_fft=500))
