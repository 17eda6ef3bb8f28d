"""A harmonic-plus-noise decoder head (DDSP-style source-filter synthesis), streaming and causal.

From the decoder's latent (25 Hz, one step = `hop` samples) a 1x1 conv predicts, per step, a fundamental frequency
(log-scaled into [f0_min, f0_max]), the amplitudes of `n_harmonics` harmonics (zeroed above Nyquist) and the gains
of `n_noise_bands` noise bands. Controls are interpolated linearly from the previous step's value to the current
one across each step (causal: a sample depends on its own step and the one before), the harmonics are summed with
a running phase, and the noise is a gain-weighted sum of fixed band-limited noise tables read at the absolute
sample position, so it is deterministic and identical in one-shot and chunked use. Speech is mostly periodic
excitation shaped by a slowly varying filter; a signal model that knows this gets intelligible speech from far
fewer parameters and steps than a conv stack learning the waveform (Engel et al. 2020, DDSP; Valin & Skoglund
2019, LPCNet). In the codec it is used alone (`head="hnr"`) or added to the SEANet decoder (`"seanet+hnr"`).

Dimension legend: B batch, D latent channels, S latent steps, N samples, K harmonics, M noise bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multistream.streaming import StreamingModule, StreamingState

from .config import HNRConfig


@dataclass
class _HNRState(StreamingState):
    previous: Tensor | None = None  # [B, 1 + K + M] controls of the last step seen
    phase: Tensor | None = None  # [B] float64 running phase of the fundamental (radians, mod 2 pi)
    position: int = 0  # samples produced so far (index into the noise tables)


def noise_tables(bands: int, length: int, sample_rate: int, seed: int = 0) -> Tensor:
    """[M, L] unit-RMS white noise split into `bands` mel-spaced bands (circular FFT masks), reproducible."""
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(length, generator=g, dtype=torch.float64)
    spec = torch.fft.rfft(white)
    freqs = torch.fft.rfftfreq(length, 1 / sample_rate, dtype=torch.float64)
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    edges_mel = torch.linspace(0, mel(sample_rate / 2), bands + 1, dtype=torch.float64)
    edges = 700 * (10 ** (edges_mel / 2595) - 1)
    out = []
    for m in range(bands):
        mask = (freqs >= edges[m]) & (freqs < edges[m + 1] if m < bands - 1 else freqs <= edges[m + 1])
        x = torch.fft.irfft(spec * mask, length)
        out.append(x / (x.pow(2).mean().sqrt() + 1e-12))
    return torch.stack(out).float()  # [M, L]


class HarmonicNoiseHead(StreamingModule):
    """Latent [B, D, S] -> audio [B, 1, S * hop]; see the module docstring."""

    def __init__(self, dim: int, hop: int, sample_rate: int, cfg: HNRConfig):
        super().__init__()
        self.cfg, self.hop, self.sample_rate = cfg, hop, sample_rate
        k, m = cfg.n_harmonics, cfg.n_noise_bands
        self.proj = nn.Conv1d(dim, 1 + k + m, 1)
        with torch.no_grad():  # start nearly silent: the head adds sound as it learns
            self.proj.weight.mul_(0.1)
            self.proj.bias.zero_()
            self.proj.bias[1:].fill_(-6.0)
        self.register_buffer("harmonic_numbers", torch.arange(1, k + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("noise", noise_tables(m, cfg.noise_table, sample_rate), persistent=False)

    def _init_streaming_state(self, batch_size: int) -> _HNRState:
        return _HNRState(batch_size)

    def _reset_rows(self, rows: Tensor) -> None:
        st = self.state
        if st.previous is not None:
            st.previous = torch.where(rows[:, None], st.previous[:, :1].new_full((), float("nan")), st.previous)
            st.phase = torch.where(rows, torch.zeros_like(st.phase), st.phase)
        # the noise position is shared by the batch: a reset row continues the same (stationary) noise

    def forward(self, z: Tensor) -> Tensor:  # [B, D, S] -> [B, 1, S * hop]
        cfg, hop = self.cfg, self.hop
        b, _, s = z.shape
        ctrl = self.proj(z).float().transpose(1, 2)  # [B, S, 1 + K + M] raw controls
        st = self.state
        prev = None if st is None else st.previous
        first = ctrl[:, :1]  # a sequence's first step is held (no ramp from nothing)
        if prev is not None:  # rows reset by _reset_rows hold NaN: they start afresh too
            first = torch.where(torch.isnan(prev[:, None, :1]), first, prev[:, None])
        before = torch.cat([first, ctrl[:, :-1]], dim=1)  # [B, S, 1 + K + M] the previous step's controls
        ramp = torch.arange(1, hop + 1, device=z.device, dtype=torch.float32) / hop  # [hop]
        per_sample = before[:, :, None] + (ctrl - before)[:, :, None] * ramp[None, None, :, None]  # [B, S, hop, C]
        per_sample = per_sample.reshape(b, s * hop, -1)  # [B, N, 1 + K + M]
        k = cfg.n_harmonics
        f0 = cfg.f0_min * (cfg.f0_max / cfg.f0_min) ** torch.sigmoid(per_sample[..., 0])  # [B, N] Hz
        amps = F.softplus(per_sample[..., 1: 1 + k])  # [B, N, K]
        gains = F.softplus(per_sample[..., 1 + k:])  # [B, N, M]
        freqs = f0[..., None] * self.harmonic_numbers  # [B, N, K]
        amps = amps * (freqs < self.sample_rate / 2)  # no aliasing
        # running phase in float64: long signals keep their precision, chunked == one shot
        omega = (2 * math.pi / self.sample_rate) * f0.double()  # [B, N]
        phase0 = torch.zeros(b, dtype=torch.float64, device=z.device) if prev is None else st.phase
        phase = phase0[:, None] + torch.cumsum(omega, dim=1)  # [B, N]
        harmonic = (amps * torch.sin(torch.remainder(phase, 2 * math.pi).float()[..., None]
                                     * self.harmonic_numbers)).sum(-1)  # [B, N]
        pos0 = 0 if st is None else st.position
        idx = (pos0 + torch.arange(s * hop, device=z.device)) % self.noise.shape[1]  # [N]
        noise = torch.einsum("bnm,mn->bn", gains, self.noise[:, idx])  # [B, N]
        if st is not None:
            st.previous = ctrl[:, -1].detach()
            st.phase = torch.remainder(phase[:, -1], 2 * math.pi).detach()
            st.position = pos0 + s * hop
        return (harmonic + noise)[:, None]  # [B, 1, N]
