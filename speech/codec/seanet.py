"""Causal SEANet encoder and decoder (the conv part of Mimi / EnCodec).

The encoder is a first conv, then per ratio (reversed: 4, 5, 6, 8) residual units and a strided conv doubling the
channels, then ELU and a last conv to `dimension`: 24 kHz audio becomes a 25 Hz latent (hop 960). The decoder
mirrors it with transposed convs. All convs are causal and streamable (see `conv.py`), so the whole stack runs
chunk by chunk. Layer shapes follow moshi's `modules/seanet.py` so Mimi's weights map one to one.

Dimension legend: B batch, C channels, T time steps (audio samples or latent steps).
"""

from __future__ import annotations

from torch import Tensor, nn

from multistream.streaming import StreamingModule

from .config import SEANetConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d


class ResidualUnit(StreamingModule):
    """x + conv1(ELU(conv_k(ELU(x)))) with a dilated kernel-k conv and a width reduction by `compress`."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(),
            StreamingConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            StreamingConv1d(hidden, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T] -> [B, C, T]
        return x + self.block(x)


class SEANetEncoder(StreamingModule):
    """Audio [B, channels, T] -> latent [B, dimension, T / hop_length]."""

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        self.cfg = cfg
        mult = 1
        layers: list[nn.Module] = [StreamingConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            for j in range(cfg.n_residual_layers):
                layers.append(ResidualUnit(mult * cfg.n_filters, cfg.residual_kernel_size, cfg.dilation_base**j,
                                           cfg.compress))
            layers += [nn.ELU(), StreamingConv1d(mult * cfg.n_filters, 2 * mult * cfg.n_filters, 2 * ratio,
                                                 stride=ratio)]
            mult *= 2
        layers += [nn.ELU(), StreamingConv1d(mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class SEANetDecoder(StreamingModule):
    """Latent [B, dimension, T] -> audio [B, channels, T * hop_length]."""

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        self.cfg = cfg
        mult = 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [StreamingConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size)]
        for ratio in cfg.ratios:
            layers += [nn.ELU(), StreamingConvTranspose1d(mult * cfg.n_filters, mult * cfg.n_filters // 2,
                                                          2 * ratio, stride=ratio)]
            for j in range(cfg.n_residual_layers):
                layers.append(ResidualUnit(mult * cfg.n_filters // 2, cfg.residual_kernel_size, cfg.dilation_base**j,
                                           cfg.compress))
            mult //= 2
        layers += [nn.ELU(), StreamingConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)
