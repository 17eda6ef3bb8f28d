"""A spectral encoder and an inverse-STFT decoder for the codec: the conv stacks run at 100 Hz instead of 24 kHz.

The SEANet stack spends most of its compute on narrow convolutions at the audio rate, and a CPU-sized SEANet
(16 base filters) is the codec's bottleneck: decoding the *unquantized* latent of `codec_tiny` gives held-out STOI
0.67, barely above its quantized 0.65 (`docs/codec_issue9.md`). Here the encoder takes the log-magnitude of a causal
short-time Fourier transform (hop 10 ms, window 40 ms), runs wide residual convolutions at that frame rate and
downsamples with a strided conv to the 25 Hz latent; the decoder upsamples the latent to 100 Hz, runs its residual
convolutions and predicts, per 10 ms frame, the log-magnitude and phase of a short spectrum that an inverse FFT
and a windowed overlap-add turn into audio (the Vocos / iSTFTNet idea). Same latent shape and rate as SEANet, so
the bottleneck transformer, quantizer and semantic head are unchanged.

Causal and streamable: analysis frame t covers samples [(t+1) * hop - n_fft, (t+1) * hop) (the window ends with
its own hop; earlier samples come from the state, zeros before the start); synthesis frame t covers
[t * hop, t * hop + n_fft) and its tail beyond the hop is kept and added to the next chunk (overlap-add), so
output sample n depends only on frames <= n // hop. In streaming mode chunks give the same result as one call.

Dimension legend: B batch, N samples, T spectral frames (100 Hz), F frequency bins, C channels, D latent
channels, S latent steps (25 Hz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multistream.streaming import StreamingModule, StreamingState

from .config import SpectralConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .seanet import ResidualUnit


@dataclass
class _FramesState(StreamingState):
    previous: Tensor | None = None  # [B, n_fft - hop] the last samples of the previous chunk


@dataclass
class _OverlapState(StreamingState):
    partial: Tensor | None = None  # [B, n_fft - hop] overlap-add tail not yet complete


def _hann(n: int) -> Tensor:
    return torch.hann_window(n, periodic=True, dtype=torch.float32)


class CausalLogSpectrum(StreamingModule):
    """Audio [B, 1, N] -> log-magnitude spectra [B, n_fft // 2 + 1, N // hop] of causal windowed frames."""

    def __init__(self, n_fft: int, hop: int, floor: float = 1e-4):
        super().__init__()
        self.n_fft, self.hop, self.floor = n_fft, hop, floor
        self.register_buffer("window", _hann(n_fft), persistent=False)

    def _init_streaming_state(self, batch_size: int) -> _FramesState:
        return _FramesState(batch_size)

    def _reset_rows(self, rows: Tensor) -> None:
        st = self.state
        if st.previous is not None:  # a reset row starts from silence, as a one-shot call does
            st.previous = st.previous.masked_fill(rows.to(st.previous.device)[:, None], 0.0)

    def forward(self, x: Tensor) -> Tensor:  # [B, 1, N] -> [B, F, N // hop]
        if x.shape[-1] % self.hop:
            raise ValueError(f"length {x.shape[-1]} is not a multiple of the spectral hop {self.hop}")
        x = x[:, 0].float()  # [B, N]
        keep = self.n_fft - self.hop
        st = self.state
        prev = x.new_zeros(x.shape[0], keep) if st is None or st.previous is None else st.previous
        x = torch.cat([prev, x], dim=-1)  # [B, keep + N]
        if st is not None:
            st.previous = x[:, x.shape[-1] - keep:]
        frames = x.unfold(-1, self.n_fft, self.hop)  # [B, T, n_fft]
        mag = torch.fft.rfft(frames * self.window, dim=-1).abs()  # [B, T, F]
        return torch.log(mag + self.floor).transpose(1, 2)  # [B, F, T]


class OverlapAddSynthesis(StreamingModule):
    """Per-frame log-magnitude and phase [B, 2F, T] -> audio [B, 1, T * hop] (inverse FFT, window, overlap-add)."""

    def __init__(self, n_fft: int, hop: int, max_log_mag: float = math.log(100.0)):
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"synthesis n_fft {n_fft} must be a multiple of the hop {hop}")
        self.n_fft, self.hop, self.max_log_mag = n_fft, hop, max_log_mag
        # shifted by the hop, periodic Hann windows sum to n_fft / (2 hop) = window.sum() / hop: scale that to 1
        window = _hann(n_fft)
        self.register_buffer("window", window * hop / window.sum(), persistent=False)

    def _init_streaming_state(self, batch_size: int) -> _OverlapState:
        return _OverlapState(batch_size)

    def _reset_rows(self, rows: Tensor) -> None:
        st = self.state
        if st.partial is not None:
            st.partial = st.partial.masked_fill(rows.to(st.partial.device)[:, None], 0.0)

    def forward(self, spec: Tensor) -> Tensor:  # [B, 2F, T] -> [B, 1, T * hop]
        bins = self.n_fft // 2 + 1
        log_mag, phase = spec.float().transpose(1, 2).split(bins, dim=-1)  # [B, T, F] each
        mag = torch.exp(log_mag.clamp(max=self.max_log_mag))
        frames = torch.fft.irfft(torch.polar(mag, phase), n=self.n_fft, dim=-1) * self.window  # [B, T, n_fft]
        b, t, _ = frames.shape
        n = t * self.hop
        total = (t - 1) * self.hop + self.n_fft
        y = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, self.n_fft),
                   stride=(1, self.hop))[:, 0, 0]  # [B, total] overlap-added
        st = self.state
        if st is not None:
            if st.partial is not None:
                keep = st.partial.shape[-1]
                y = torch.cat([y[:, :keep] + st.partial, y[:, keep:]], dim=-1)
            st.partial = y[:, n:]
        return y[:, None, :n]  # [B, 1, N]


class SpectralEncoder(StreamingModule):
    """Audio [B, 1, N] -> latent [B, D, N / (hop * ratio)]: log spectrum, residual convs at 100 Hz, strided conv."""

    def __init__(self, cfg: SpectralConfig, dimension: int, latent_hop: int):
        super().__init__()
        ratio = latent_hop // cfg.hop
        c = cfg.channels
        layers: list[nn.Module] = [CausalLogSpectrum(cfg.analysis_fft, cfg.hop),
                                   StreamingConv1d(cfg.analysis_fft // 2 + 1, c, cfg.kernel_size)]
        layers += [ResidualUnit(c, cfg.kernel_size, cfg.dilation_base ** j, cfg.compress)
                   for j in range(cfg.n_residual_layers)]
        layers += [nn.ELU(), StreamingConv1d(c, dimension, 2 * ratio, stride=ratio)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class SpectralDecoder(StreamingModule):
    """Latent [B, D, S] -> audio [B, 1, S * hop * ratio]: upsampling conv, residual convs at 100 Hz, iSTFT."""

    def __init__(self, cfg: SpectralConfig, dimension: int, latent_hop: int):
        super().__init__()
        ratio = latent_hop // cfg.hop
        c = cfg.channels
        bins = cfg.synthesis_fft // 2 + 1
        layers: list[nn.Module] = [StreamingConvTranspose1d(dimension, c, 2 * ratio, stride=ratio)]
        layers += [ResidualUnit(c, cfg.kernel_size, cfg.dilation_base ** j, cfg.compress)
                   for j in range(cfg.n_residual_layers)]
        out = StreamingConv1d(c, 2 * bins, 1)
        with torch.no_grad():  # start quiet (log-magnitude -5) with small random phases
            out.conv.weight.mul_(0.1)
            out.conv.bias.zero_()
            out.conv.bias[:bins].fill_(-5.0)
        layers += [nn.ELU(), out, OverlapAddSynthesis(cfg.synthesis_fft, cfg.hop)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)
