"""The harmonic-plus-noise head: chunked == one shot, causal, row reset, and a codec built on it streams, is causal
and trains (finite loss, gradients into the head)."""

import numpy as np
import pytest
import torch

from speech.codec.config import BottleneckTransformerConfig, CodecConfig, HNRConfig, tiny
from speech.codec.data import IGNORE
from speech.codec.ddsp import HarmonicNoiseHead, noise_tables
from speech.codec.losses import CodecLoss
from speech.codec.model import MimiCodec

from .conftest import random_codebooks

HOP, SR, FRAME = 960, 24000, 1920


def _head(seed=0):
    torch.manual_seed(seed)
    head = HarmonicNoiseHead(8, HOP, SR, HNRConfig(n_harmonics=16, n_noise_bands=4, noise_table=4096)).eval()
    with torch.no_grad():  # audible output, so the comparisons below are not between near-zeros
        head.proj.bias[1:].fill_(0.0)
        head.proj.weight.normal_(0, 0.5)
    return head


def _split(x, sizes):
    out, i = [], 0
    for n in sizes:
        out.append(x[..., i: i + n])
        i += n
    return out


def test_chunked_equals_full_and_causal():
    head = _head()
    z = torch.randn(2, 8, 9)
    with torch.no_grad():
        full = head(z)
        with head.streaming(2):
            chunks = torch.cat([head(c) for c in _split(z, [1, 3, 2, 1, 2])], -1)
        z2 = z.clone()
        z2[..., 5:] = torch.randn(2, 8, 4)
        changed = head(z2)
    assert full.shape == (2, 1, 9 * HOP) and full.abs().max() > 0.01
    # equal up to float32 rounding of f0 accumulated by the running phase (the noise table wraps: 4096 < 9 * 960)
    torch.testing.assert_close(chunks, full, rtol=0, atol=1e-4 * float(full.abs().max()))
    torch.testing.assert_close(changed[..., : 5 * HOP], full[..., : 5 * HOP], rtol=0, atol=0)
    assert not torch.allclose(changed[..., 5 * HOP:], full[..., 5 * HOP:])


def test_reset_rows_restarts_only_those_rows():
    head = _head()
    with torch.no_grad():  # harmonics only: the noise-table position is shared by the batch, not reset per row
        head.proj.weight[1 + 16:] = 0.0
        head.proj.bias[1 + 16:] = -40.0
    z = torch.randn(2, 8, 4)
    with torch.no_grad():
        with head.streaming(2):
            head(z[..., :2])
            head.reset_streaming([0])
            after = head(z[..., 2:])
        fresh = head(z[:1, :, 2:])  # row 0 starts afresh at step 2
        whole = head(z[1:])  # row 1 goes on as if nothing happened
    tol = 1e-4 * float(whole.abs().max())
    torch.testing.assert_close(after[:1], fresh, rtol=0, atol=tol)
    torch.testing.assert_close(after[1:], whole[..., 2 * HOP:], rtol=0, atol=tol)


def test_noise_tables_are_band_limited_and_reproducible():
    t = noise_tables(4, 8192, SR)
    assert torch.equal(t, noise_tables(4, 8192, SR)) and t.shape == (4, 8192)
    spec = torch.fft.rfft(t.double()).abs() ** 2
    peak_bin = spec.argmax(-1)
    assert (peak_bin[1:] > peak_bin[:-1]).all()  # bands go up in frequency
    torch.testing.assert_close(t.pow(2).mean(-1), torch.ones(4), rtol=1e-3, atol=1e-3)


def _codec(head):
    cfg = tiny()
    cfg.head = head
    cfg.seanet.n_filters, cfg.seanet.dimension = 4, 16
    cfg.transformer = BottleneckTransformerConfig(num_layers=1, num_heads=2, dim_feedforward=32)
    cfg.hnr = HNRConfig(n_harmonics=8, n_noise_bands=4, noise_table=1 << 15)
    torch.manual_seed(0)
    codec = MimiCodec(cfg).eval()
    random_codebooks(codec)
    with torch.no_grad():
        codec.hnr.proj.bias[1:].fill_(0.0)  # audible from the start
    return codec


@pytest.mark.parametrize("head", ["hnr", "seanet+hnr"])
def test_codec_with_the_head_streams_and_is_causal(head):
    codec = _codec(head)
    assert (codec.decoder is None) == (head == "hnr")
    x = torch.randn(1, 1, 5 * FRAME) * 0.3
    with torch.no_grad():
        codes = codec.encode(x)
        audio = codec.decode(codes)
        with codec.streaming(1):
            chunked = torch.cat([codec.decode(c) for c in _split(codes, [1, 2, 2])], -1)
        codes2 = codes.clone()
        codes2[..., 3:] = (codes2[..., 3:] + 1) % codec.cardinality
        audio2 = codec.decode(codes2)
    torch.testing.assert_close(chunked, audio, rtol=0, atol=1e-4 * float(audio.abs().max()))
    torch.testing.assert_close(audio2[..., : 3 * FRAME], audio[..., : 3 * FRAME], rtol=0, atol=0)
    assert not torch.allclose(audio2[..., 3 * FRAME:], audio[..., 3 * FRAME:])


def test_codec_with_the_head_trains():
    codec = _codec("hnr").train()
    x = torch.randn(2, 1, 2 * FRAME) * 0.1
    out = codec(x)
    loss, m = CodecLoss(SR, codec.cfg.loss, IGNORE)(out, x, torch.full((2, 2), IGNORE))
    loss.backward()
    assert np.isfinite(m["mel"]) and codec.hnr.proj.weight.grad.abs().sum() > 0


def test_bad_head_config_names_the_value():
    with pytest.raises(ValueError, match="head must be one of .* got 'wavenet'"):
        CodecConfig(head="wavenet")
    with pytest.raises(ValueError, match="f0_min < f0_max, got 300.0, 100.0"):
        HNRConfig(f0_min=300.0, f0_max=100.0)
