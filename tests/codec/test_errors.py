"""Bad input to the codec raises ValueError naming what is wrong."""

import math

import pytest
import torch

from multistream.tokenizer import Tokenizer
from speech.codec.config import CodecConfig, QuantizerConfig, SEANetConfig, preset, tiny
from speech.codec.model import MimiCodec


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return MimiCodec(tiny()).eval()


def test_is_a_tokenizer(codec):
    assert isinstance(codec, Tokenizer)
    assert codec.frame_rate == 12.5 and codec.frame_size == 1920 and codec.sample_rate == 24000
    assert (codec.num_codebooks, codec.cardinality) == (8, 1024)


def test_wrong_sample_rate(codec):
    with pytest.raises(ValueError, match="16000 Hz"):
        codec.encode(torch.zeros(1, 1, 1920), sample_rate=16000)


def test_stereo_for_mono(codec):
    with pytest.raises(ValueError, match="mono.*got 2 channels"):
        codec.encode(torch.zeros(1, 2, 1920))
    with pytest.raises(ValueError, match=r"\[B, C, N\]"):
        codec.encode(torch.zeros(1920))


def test_length_not_a_multiple_of_the_frame(codec):
    with pytest.raises(ValueError, match="length 2000 is not a positive multiple of the frame size 1920"):
        codec.encode(torch.zeros(1, 1, 2000))
    with pytest.raises(ValueError, match="length 0"):
        codec.encode(torch.zeros(1, 1, 0))
    with codec.streaming(1), pytest.raises(ValueError, match="length 960"):
        codec.encode(torch.zeros(1, 1, 960))
    assert codec.pad_to_frame(torch.zeros(1, 1, 2000)).shape[-1] == 3840


def test_nan_audio(codec):
    x = torch.zeros(1, 1, 1920)
    x[0, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(x)
    with pytest.raises(ValueError, match="floating point"):
        codec.encode(torch.zeros(1, 1, 1920, dtype=torch.int16))


def test_bad_codes(codec):
    good = torch.zeros(1, 8, 2, dtype=torch.long)
    assert codec.decode(good).shape == (1, 1, 3840)
    bad = good.clone()
    bad[0, 3, 1] = 1024
    with pytest.raises(ValueError, match="id 1024, outside \\[0, 1024\\)"):
        codec.decode(bad)
    bad[0, 3, 1] = -1
    with pytest.raises(ValueError, match="id -1"):
        codec.decode(bad)
    with pytest.raises(ValueError, match="7 codebooks, expected 8"):
        codec.decode(torch.zeros(1, 7, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        codec.decode(torch.zeros(1, 8, 2))


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of the SEANet hop"):
        CodecConfig(seanet=SEANetConfig(ratios=(8, 6, 5, 3)))
    with pytest.raises(ValueError, match="n_q_semantic"):
        QuantizerConfig(num_codebooks=40, total_codebooks=32)
    with pytest.raises(ValueError, match="unknown codec preset 'huge'"):
        preset("huge")


def test_presets_bitrate():
    assert tiny().bitrate <= 1100
    m = preset("mimi")
    assert m.bitrate == pytest.approx(8 * math.log2(2048) * 12.5) == 1100


def test_decode_prefix_is_the_rvq_at_a_lower_bitrate(codec):
    torch.manual_seed(1)
    codes = torch.randint(0, 1024, (1, 8, 3))
    with torch.no_grad():
        assert torch.equal(codec.decode_prefix(codes), codec.decode(codes))  # all codebooks: the same as decode
        four = codec.decode_prefix(codes[:, :4])
        # the first four codebooks' sum through the decoder, nothing of the other four
        want = codec._decode_latent(codec.quantizer.decode(codes[:, :4]))
    assert four.shape == (1, 1, 3 * 1920) and torch.equal(four, want)
    with pytest.raises(ValueError, match="1 <= K' <= 8"):
        codec.decode_prefix(torch.zeros(1, 9, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="1 <= K' <= 8"):
        codec.decode_prefix(torch.zeros(1, 0, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="id 1024"):
        codec.decode_prefix(torch.full((1, 2, 2), 1024))
