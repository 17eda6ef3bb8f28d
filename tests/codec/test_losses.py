"""Each reconstruction loss is zero for identical signals, positive and differentiable otherwise; CodecLoss adds a
term only when its weight is on and stays finite on a batch of unlabelled (recorded) clips."""

from types import SimpleNamespace

import pytest
import torch

from speech.codec.config import LossConfig
from speech.codec.data import IGNORE
from speech.codec.losses import CodecLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss, waveform_l1

SR = 24000


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(4800) / SR
    x = (0.3 * torch.sin(2 * torch.pi * 180 * t) + 0.05 * torch.randn(4800, generator=g)).reshape(1, 1, -1)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    return x, y


def _terms(y, x):
    st = MultiResolutionSTFTLoss((512, 128, 64))(y, x)
    return {**st, "wave": waveform_l1(y, x), "mel": MultiScaleMelLoss(SR, (512, 128), 32)(y, x)}


def test_zero_for_identical_signals():
    x, _ = _pair()
    for name, v in _terms(x.clone(), x).items():
        assert float(v) == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("name", ["sc", "logmag", "phase", "wave", "mel"])
def test_positive_and_differentiable(name):
    x, y = _pair()
    v = _terms(y, x)[name]
    assert float(v.detach()) > 1e-3
    (g,) = torch.autograd.grad(v, y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_phase_term_sees_a_phase_shift_the_magnitude_terms_barely_see():
    t = torch.arange(9600) / SR
    x = torch.sin(2 * torch.pi * 300 * t).reshape(1, 1, -1)
    y = torch.sin(2 * torch.pi * 300 * t + torch.pi / 2).reshape(1, 1, -1)  # same magnitude, 90 degrees off
    st = MultiResolutionSTFTLoss((512, 256))(y, x)
    assert float(st["phase"]) > 10 * float(st["sc"])


def test_gradients_are_finite_on_silence():
    x = torch.zeros(1, 1, 2400)
    y = torch.zeros(1, 1, 2400, requires_grad=True)
    st = MultiResolutionSTFTLoss((256, 64))(y, x)
    total = st["sc"] + st["logmag"] + st["phase"] + waveform_l1(y, x)
    (g,) = torch.autograd.grad(total, y)
    assert torch.isfinite(g).all()


def _out(y, frames=3, phones=5):
    logits = torch.zeros(1, frames, phones, requires_grad=True)
    return SimpleNamespace(audio=y, phone_logits=logits, commitment=torch.tensor(0.1))


def test_codec_loss_adds_terms_by_weight_only():
    x, y = _pair()
    ids = torch.tensor([[0, 1, IGNORE]])
    base, m0 = CodecLoss(SR, LossConfig(adversarial=False), IGNORE)(_out(y), x, ids)
    assert "stft_sc" not in m0 and "wave" not in m0  # defaults: the loss older configs were trained with
    cfg = LossConfig(adversarial=False, stft_weight=1.0, phase_weight=1.0, wave_weight=1.0)
    full, m1 = CodecLoss(SR, cfg, IGNORE)(_out(y), x, ids)
    extra = m1["stft_sc"] + m1["stft_logmag"] + m1["stft_phase"] + m1["wave"]
    assert float(full.detach()) == pytest.approx(float(base.detach()) + extra, rel=1e-5)


def test_unlabelled_batch_gives_zero_phone_loss_not_nan():
    x, y = _pair()
    out = _out(y)
    loss, m = CodecLoss(SR, LossConfig(adversarial=False), IGNORE)(out, x, torch.full((1, 3), IGNORE))
    assert torch.isfinite(loss) and m["phone_ce"] == 0.0
    loss.backward()
    assert torch.isfinite(out.phone_logits.grad).all()


def test_bad_loss_config_names_the_value():
    with pytest.raises(ValueError, match="stft_weight must be >= 0, got -1"):
        LossConfig(stft_weight=-1.0)
    with pytest.raises(ValueError, match="phase_compress"):
        LossConfig(phase_compress=0.0)
