"""Codec training losses: multi-scale mel reconstruction, multi-resolution STFT magnitude and phase-sensitive
terms, a waveform term, and a multi-scale STFT discriminator (EnCodec/Mimi).

The mel loss compares log-mel spectrograms (L1) plus linear mels (L1) at several STFT sizes, so both fine time
and fine frequency structure count. Mels pool away the harmonic fine structure and ignore phase entirely; the
multi-resolution STFT loss (Parallel WaveGAN: spectral convergence + log-magnitude L1 on the linear spectrum)
keeps the harmonics, and its phase-sensitive term, an L1 distance between power-law compressed complex spectra
(|S|^c e^{i phase}, as in speech enhancement), constrains phase where the signal has energy. The waveform L1
pins the sample values themselves. The discriminator is EnCodec's MS-STFT discriminator: for each STFT size a
small 2-d conv net over (real, imag) of the complex spectrogram gives logits and intermediate feature maps; the
generator is trained with a hinge adversarial loss plus an L1 feature-matching loss on those maps.

Dimension legend: B batch, C audio channels, N samples, F frequency bins, L STFT frames, M mel bins, H hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from einops import rearrange
from torch import Tensor, nn


class MelSpectrogram(nn.Module):
    """Magnitude mel spectrogram at one STFT size (hop n_fft // 4); fbank and window are fixed buffers."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        n_mels = min(n_mels, n_fft // 4)  # tiny FFTs cannot resolve many mel bands
        fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate,
                                                   norm="slaney", mel_scale="slaney")
        self.register_buffer("fbank", fb, persistent=False)  # [F, M]
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, N] -> [B*C, L, M]
        flat = rearrange(x, "b c n -> (b c) n")  # [B*C, N]
        spec = torch.stft(flat.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        mag = spec.abs()  # [B*C, F, L]
        return torch.einsum("bfl,fm->blm", mag, self.fbank)  # [B*C, L, M]


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of L1(log mel) + L1(mel); also used as the `mel distance` metric of the evaluation."""

    def __init__(self, sample_rate: int, scales: tuple[int, ...], n_mels: int):
        super().__init__()
        self.mels = nn.ModuleList([MelSpectrogram(sample_rate, s, n_mels) for s in scales])

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y: reconstruction, x: reference, both [B, C, N]; returns a scalar."""
        total = y.new_zeros(())
        for mel in self.mels:
            my, mx = mel(y), mel(x)
            total = total + F.l1_loss(torch.log(my + 1e-5), torch.log(mx + 1e-5)) + F.l1_loss(my, mx)
        return total / len(self.mels)


def _stft(x: Tensor, n_fft: int, window: Tensor) -> Tensor:  # [B, C, N] -> complex [B*C, F, L]
    flat = rearrange(x, "b c n -> (b c) n")  # [B*C, N]
    return torch.stft(flat.float(), n_fft, n_fft // 4, window=window, center=True, return_complex=True)


class MultiResolutionSTFTLoss(nn.Module):
    """Per STFT size (hop n_fft // 4), averaged over sizes:
    - `sc`: spectral convergence || |Y| - |X| ||_F / || |X| ||_F (dominated by the loud bins),
    - `logmag`: mean |log|Y| - log|X|| (the quiet bins count as much as the loud),
    - `phase`: mean |Yc - Xc| / mean |Xc| over real and imaginary parts, Sc = |S|^compress * S / |S|: zero only when
      magnitude and phase agree; the compression keeps the loud low bins from dominating.
    All three are 0 for identical signals."""

    def __init__(self, scales: tuple[int, ...], compress: float = 0.3, eps: float = 1e-5):
        super().__init__()
        self.scales, self.compress, self.eps = tuple(scales), compress, eps
        for s in self.scales:
            self.register_buffer(f"window_{s}", torch.hann_window(s), persistent=False)

    def forward(self, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        """y: reconstruction, x: reference, both [B, C, N]; returns scalars {'sc', 'logmag', 'phase'}."""
        sc = logmag = phase = y.new_zeros((), dtype=torch.float32)
        for s in self.scales:
            w = getattr(self, f"window_{s}")
            sy, sx = _stft(y, s, w), _stft(x, s, w)  # complex [B*C, F, L]
            # magnitudes with a floor inside the sqrt: finite gradients where a bin is exactly zero
            my = torch.sqrt(sy.real**2 + sy.imag**2 + self.eps**2)
            mx = torch.sqrt(sx.real**2 + sx.imag**2 + self.eps**2)
            sc = sc + torch.linalg.vector_norm(my - mx) / (torch.linalg.vector_norm(mx) + self.eps)
            logmag = logmag + F.l1_loss(torch.log(my), torch.log(mx))
            cy = torch.view_as_real(sy) * (my ** (self.compress - 1)).unsqueeze(-1)  # [B*C, F, L, 2]
            cx = torch.view_as_real(sx) * (mx ** (self.compress - 1)).unsqueeze(-1)
            phase = phase + (cy - cx).abs().mean() / (cx.abs().mean() + self.eps)
        n = len(self.scales)
        return {"sc": sc / n, "logmag": logmag / n, "phase": phase / n}


def waveform_l1(y: Tensor, x: Tensor) -> Tensor:
    """Mean |y - x| over samples, relative to mean |x| (so the loss does not depend on the level)."""
    return (y.float() - x.float()).abs().mean() / (x.float().abs().mean() + 1e-5)


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator: (real, imag) spectrogram -> 2-d convs -> logits map."""

    def __init__(self, n_fft: int, filters: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        act = nn.LeakyReLU(0.2)
        self.convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(2, filters, (3, 9), padding=(1, 4)), act),
            nn.Sequential(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(1, 1), padding=(1, 4)), act),
            nn.Sequential(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4)), act),
            nn.Sequential(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4)), act),
            nn.Sequential(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)), act),
        ])
        self.out = nn.Conv2d(filters, 1, (3, 3), padding=(1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # [B, C, N] -> logits [B*C, 1, L, F], features
        flat = rearrange(x, "b c n -> (b c) n")  # [B*C, N]
        spec = torch.stft(flat.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        h = rearrange(torch.view_as_real(spec), "b f l two -> b two l f")  # [B*C, 2, L, F]
        feats = []
        for conv in self.convs:
            h = conv(h)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, scales: tuple[int, ...], filters: int):
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(s, filters) for s in scales])

    def forward(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(x) for d in self.discs]


def discriminator_loss(real: list[tuple[Tensor, list[Tensor]]], fake: list[tuple[Tensor, list[Tensor]]]) -> Tensor:
    """Hinge loss of the discriminator (fake outputs must come from detached audio)."""
    loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True))
    return loss / len(real)


def generator_adversarial_losses(real: list[tuple[Tensor, list[Tensor]]],
                                 fake: list[tuple[Tensor, list[Tensor]]]) -> tuple[Tensor, Tensor]:
    """(hinge generator loss, relative L1 feature matching loss), each averaged over scales."""
    adv = sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)
    feat = fake[0][0].new_zeros(())
    n = 0
    for (_, fr), (_, ff) in zip(real, fake, strict=True):
        for a, b in zip(fr, ff, strict=True):
            feat = feat + F.l1_loss(b, a.detach()) / (a.detach().abs().mean() + 1e-8)
            n += 1
    return adv, feat / max(n, 1)


class CodecLoss(nn.Module):
    """The codec's generator objective in one place, whatever trainer drives it.

    `forward(out, x, ids, disc)` -> (loss, metrics): weighted multi-scale mel + commitment + phone distillation on
    codebook 0, plus the multi-resolution STFT (spectral convergence + log magnitude), phase-sensitive and waveform
    terms when their weights are non-zero, plus hinge adversarial + feature matching when a discriminator is given.
    `out` is the codec's training output (`.audio [B, C, N]`, `.phone_logits [B, T, P]`, `.commitment`), x the
    reference [B, C, N], ids the phone labels [B, T] (`ignore_index` where unknown, e.g. every frame of a recorded
    clip: a batch without any label adds 0 phone loss).
    """

    def __init__(self, sample_rate: int, cfg, ignore_index: int):
        super().__init__()
        self.cfg = cfg  # speech.codec.config.LossConfig
        self.ignore_index = ignore_index
        self.mel = MultiScaleMelLoss(sample_rate, cfg.mel_scales, cfg.n_mels)
        use_stft = cfg.stft_weight > 0 or cfg.phase_weight > 0
        self.stft = MultiResolutionSTFTLoss(cfg.stft_scales, cfg.phase_compress) if use_stft else None

    def forward(self, out, x: Tensor, ids: Tensor, disc: nn.Module | None = None) -> tuple[Tensor, dict[str, float]]:
        lc = self.cfg
        mel = self.mel(out.audio, x)
        valid = ids != self.ignore_index
        if bool(valid.any()):
            logits = rearrange(out.phone_logits, "b t p -> (b t) p")  # [B*T, P]
            sem = F.cross_entropy(logits, rearrange(ids, "b t -> (b t)"), ignore_index=self.ignore_index)
            with torch.no_grad():
                acc = float((out.phone_logits.argmax(-1) == ids)[valid].float().mean())
        else:  # cross_entropy would average over no frame (NaN); keep the graph through the logits
            sem = out.phone_logits.sum() * 0.0
            acc = float("nan")
        loss = lc.mel_weight * mel + lc.commitment_weight * out.commitment + lc.semantic_weight * sem
        metrics = {"mel": float(mel.detach()), "commit": float(out.commitment.detach()),
                   "phone_ce": float(sem.detach()) + 0.0, "phone_acc": acc}  # + 0.0: no -0.0
        if self.stft is not None:
            st = self.stft(out.audio, x)
            loss = loss + lc.stft_weight * (st["sc"] + st["logmag"]) + lc.phase_weight * st["phase"]
            metrics.update({f"stft_{k}": float(v.detach()) for k, v in st.items()})
        if lc.wave_weight > 0:
            wave = waveform_l1(out.audio, x)
            loss = loss + lc.wave_weight * wave
            metrics["wave"] = float(wave.detach())
        if disc is not None:
            adv, feat = generator_adversarial_losses(disc(x), disc(out.audio))
            loss = loss + lc.adv_weight * adv + lc.feat_weight * feat
            metrics.update(adv=float(adv.detach()), feat=float(feat.detach()))
        return loss, metrics
