"""Chunked-equals-full and causality of every streaming part of the codec, on random weights."""

import pytest
import torch

from speech.codec.config import BottleneckTransformerConfig, tiny
from speech.codec.conv import StreamingConv1d, StreamingConvTranspose1d
from speech.codec.model import MimiCodec
from speech.codec.seanet import SEANetDecoder, SEANetEncoder

from .conftest import random_codebooks

FRAME = 1920


def _codec(context: int = 250) -> MimiCodec:
    torch.manual_seed(0)
    cfg = tiny()
    cfg.transformer = BottleneckTransformerConfig(num_layers=2, num_heads=4, dim_feedforward=256, context=context,
                                                  layer_scale=0.5)  # large scale: the transformer really matters
    codec = MimiCodec(cfg).eval()
    random_codebooks(codec)
    return codec


def _chunks(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    out, start = [], 0
    for s in sizes:
        out.append(x[..., start:start + s])
        start += s
    assert start == x.shape[-1]
    return out


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 4), (8, 4, 1), (12, 6, 1), (1, 1, 1)])
def test_conv_chunked_equals_full_and_causal(kernel, stride, dilation):
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 5, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 24 * stride)
    with torch.no_grad():
        full = conv(x)
        with conv.streaming(2):
            parts = [conv(c) for c in _chunks(x, [stride, 5 * stride, 2 * stride, 16 * stride])]
        assert full.shape[-1] == x.shape[-1] // stride
        torch.testing.assert_close(torch.cat(parts, -1), full, rtol=0, atol=1e-5)
        y = x.clone()
        y[..., 10 * stride:] += torch.randn_like(y[..., 10 * stride:])
        changed = conv(y)
    torch.testing.assert_close(changed[..., :10], full[..., :10], rtol=0, atol=0)
    assert not torch.allclose(changed[..., 10:], full[..., 10:])


@pytest.mark.parametrize("kernel,stride,groups", [(8, 4, 1), (16, 8, 1), (4, 2, 4)])
def test_conv_transpose_chunked_equals_full_and_causal(kernel, stride, groups):
    torch.manual_seed(0)
    conv = StreamingConvTranspose1d(4, 4, kernel, stride=stride, groups=groups)
    x = torch.randn(2, 4, 20)
    with torch.no_grad():
        full = conv(x)
        with conv.streaming(2):
            parts = [conv(c) for c in _chunks(x, [1, 1, 7, 3, 8])]
        assert full.shape[-1] == 20 * stride
        torch.testing.assert_close(torch.cat(parts, -1), full, rtol=0, atol=1e-5)
        y = x.clone()
        y[..., 12:] += 1.0
        changed = conv(y)
    torch.testing.assert_close(changed[..., :12 * stride], full[..., :12 * stride], rtol=0, atol=0)
    assert not torch.allclose(changed[..., 12 * stride:], full[..., 12 * stride:])


def test_seanet_encoder_decoder_chunked_equals_full_and_causal():
    cfg = tiny().seanet
    torch.manual_seed(0)
    enc, dec = SEANetEncoder(cfg).eval(), SEANetDecoder(cfg).eval()
    hop = cfg.hop_length
    x = torch.randn(2, 1, 10 * hop) * 0.3
    with torch.no_grad():
        z = enc(x)
        a = dec(z)
        with enc.streaming(2), dec.streaming(2):
            zs = [enc(c) for c in _chunks(x, [hop, 3 * hop, hop, 5 * hop])]
            a_s = [dec(c) for c in _chunks(z, [2, 1, 1, 6])]
        torch.testing.assert_close(torch.cat(zs, -1), z, rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.cat(a_s, -1), a, rtol=0, atol=1e-5)
        x2 = x.clone()
        x2[..., 6 * hop:] = torch.randn_like(x2[..., 6 * hop:])
        z2 = enc(x2)
        z3 = z.clone()
        z3[..., 4:] += 1.0
        a3 = dec(z3)
    torch.testing.assert_close(z2[..., :6], z[..., :6], rtol=0, atol=0)
    assert not torch.allclose(z2[..., 6:], z[..., 6:])
    torch.testing.assert_close(a3[..., :4 * hop], a[..., :4 * hop], rtol=0, atol=0)
    assert not torch.allclose(a3[..., 4 * hop:], a[..., 4 * hop:])


@pytest.mark.parametrize("context", [250, 3])  # 3 latent steps: the sliding window is exercised while streaming
def test_codec_streaming_encode_decode_equals_one_shot(context):
    codec = _codec(context)
    frames = 7
    x = torch.randn(2, 1, frames * FRAME) * 0.3
    with torch.no_grad():
        codes = codec.encode(x)
        audio = codec.decode(codes)
        latent = codec._encode_latent(x)
        with codec.streaming(2):
            s_codes = [codec.encode(c) for c in _chunks(x, [FRAME] * 3 + [2 * FRAME, 2 * FRAME])]
            s_audio = [codec.decode(c) for c in _chunks(codes, [1, 2, 1, 1, 2])]
        with codec.streaming(2):
            s_latent = torch.cat([codec._encode_latent(c) for c in _chunks(x, [FRAME] * frames)], -1)
    assert codes.shape == (2, codec.num_codebooks, frames)
    assert audio.shape == x.shape
    torch.testing.assert_close(s_latent, latent, rtol=0, atol=1e-4)
    assert torch.equal(torch.cat(s_codes, -1), codes)
    torch.testing.assert_close(torch.cat(s_audio, -1), audio, rtol=0, atol=1e-5)


def test_codec_is_causal():
    codec = _codec()
    x = torch.randn(1, 1, 8 * FRAME) * 0.3
    with torch.no_grad():
        latent = codec._encode_latent(x)
        codes = codec.encode(x)
        audio = codec.decode(codes)
        x2 = x.clone()
        x2[..., 5 * FRAME:] = torch.randn_like(x2[..., 5 * FRAME:])
        latent2 = codec._encode_latent(x2)
        codes2 = codes.clone()
        codes2[..., 3:] = (codes2[..., 3:] + 1) % codec.cardinality
        audio2 = codec.decode(codes2)
    torch.testing.assert_close(latent2[..., :5], latent[..., :5], rtol=0, atol=0)
    assert not torch.allclose(latent2[..., 5:], latent[..., 5:])
    torch.testing.assert_close(audio2[..., :3 * FRAME], audio[..., :3 * FRAME], rtol=0, atol=0)
    assert not torch.allclose(audio2[..., 3 * FRAME:], audio[..., 3 * FRAME:])


def test_streaming_reset_and_batch_independence():
    codec = _codec()
    x = torch.randn(2, 1, 3 * FRAME) * 0.3
    with torch.no_grad():
        ref = codec.encode(x[:1])
        with codec.streaming(1):
            first = torch.cat([codec.encode(c) for c in _chunks(x[:1], [FRAME] * 3)], -1)
            codec.reset_streaming()
            again = torch.cat([codec.encode(c) for c in _chunks(x[:1], [FRAME] * 3)], -1)
    assert torch.equal(first, ref) and torch.equal(again, ref)
    assert torch.equal(codec.encode(x)[:1], ref)  # batch items do not interact


@pytest.mark.parametrize("kernel,stride,dilation,groups", [(3, 1, 1, 1), (3, 1, 3, 1), (8, 4, 1, 1), (5, 2, 2, 1),
                                                            (3, 1, 1, 2)])
def test_streaming_conv_matmul_path_equals_the_conv_kernel(kernel, stride, dilation, groups):
    """Short streaming chunks take `_conv1d_matmul` (groups 1), long ones and grouped convs the conv kernel: all
    give what `nn.Conv1d` gives on the padded input."""
    from speech.codec import conv as conv_mod

    torch.manual_seed(0)
    conv = StreamingConv1d(4, 6, kernel, stride=stride, dilation=dilation, groups=groups)
    n = (conv_mod.SMALL_STEPS + 6) * stride  # one chunk over the matmul limit, then short ones
    x = torch.randn(3, 4, n + 10 * stride)
    with torch.no_grad():
        want = conv.conv(conv._pad_left(x))
        with conv.streaming(3):
            got = torch.cat([conv(x[..., :n]), conv(x[..., n:n + stride]), conv(x[..., n + stride:])], -1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        if groups == 1:
            xp = conv._pad_left(x[..., :8 * stride])
            torch.testing.assert_close(conv_mod._conv1d_matmul(xp, conv.conv), conv.conv(xp), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cin,cout,kernel,stride,groups", [(4, 6, 8, 4, 1), (4, 4, 4, 2, 4), (4, 8, 4, 2, 4)])
def test_streaming_conv_transpose_matmul_path_equals_the_kernel(cin, cout, kernel, stride, groups):
    from speech.codec import conv as conv_mod

    torch.manual_seed(0)
    conv = StreamingConvTranspose1d(cin, cout, kernel, stride=stride, groups=groups)
    x = torch.randn(2, cin, 9)
    with torch.no_grad():
        want = torch.nn.functional.conv_transpose1d(x, conv.convtr.weight, None, stride=stride, groups=groups)
        if groups == 1 or cout == groups:
            torch.testing.assert_close(conv_mod._conv_transpose1d_matmul(x, conv.convtr), want, rtol=0, atol=1e-5)
        full = conv(x)
        with conv.streaming(2):
            parts = torch.cat([conv(x[..., i:i + 1]) for i in range(9)], -1)
        torch.testing.assert_close(parts, full, rtol=0, atol=1e-5)


def test_quantizer_distance_table_follows_the_buffers():
    """The cached codebook table is rebuilt when the EMA update or a load changes the buffers."""
    from speech.codec.config import QuantizerConfig
    from speech.codec.quantizer import EuclideanCodebook

    torch.manual_seed(0)
    cb = EuclideanCodebook(8, QuantizerConfig(bins=16))
    cb.embedding_sum.copy_(torch.randn(16, 8))
    x = torch.randn(50, 8)
    with torch.no_grad():
        assert torch.equal(cb.encode(x), torch.cdist(x, cb.embedding).argmin(-1))
        before = cb.decode(torch.arange(16)).clone()
        cb.load_state_dict({**cb.state_dict(), "embedding_sum": torch.randn(16, 8)})
        assert not torch.equal(cb.decode(torch.arange(16)), before)
        assert torch.equal(cb.encode(x), torch.cdist(x, cb.embedding).argmin(-1))
        cb.embedding_sum.mul_(2.0)
        torch.testing.assert_close(cb.decode(torch.arange(16)), cb.embedding)
