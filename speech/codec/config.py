"""Configuration of the Mimi-style codec: one dataclass per part, validated on construction, and presets.

`mimi()` has the shapes of Kyutai's released Mimi (SEANet with 64 filters, ratios 8,6,5,4 to a 25 Hz latent of
512 channels, an 8-layer transformer in the bottleneck of encoder and decoder, a learnt stride-2 conv to 12.5 Hz,
a split RVQ of 1 semantic + 31 acoustic codebooks of 2048 entries in 256 dims, 8 of them active = 1.1 kbps),
so that a later step can load their weights. `tiny()` keeps the same time structure (24 kHz -> 12.5 Hz, 1920
samples per frame) with narrow convolutions and a small bottleneck transformer, sized to train on a CPU; `small()`
is the next size up for runs of several CPU hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class SEANetConfig:
    """Causal SEANet conv encoder/decoder (the decoder mirrors the encoder)."""

    channels: int = 1  # audio channels (mono)
    dimension: int = 512  # latent channels at the encoder output / decoder input
    n_filters: int = 64  # channels of the first conv; doubled at each downsampling
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder upsampling order; the encoder uses them reversed
    n_residual_layers: int = 1  # residual units before each downsampling (after each upsampling)
    kernel_size: int = 7  # first conv
    last_kernel_size: int = 3  # last conv
    residual_kernel_size: int = 3
    dilation_base: int = 2  # dilation of residual unit j is dilation_base**j
    compress: int = 2  # residual branch width = dim // compress

    def __post_init__(self):
        for name in ("channels", "dimension", "n_filters", "kernel_size", "last_kernel_size", "residual_kernel_size",
                     "compress", "dilation_base"):
            if getattr(self, name) < 1:
                raise ValueError(f"SEANetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_residual_layers < 0:
            raise ValueError(f"SEANetConfig.n_residual_layers must be >= 0, got {self.n_residual_layers}")
        self.ratios = tuple(int(r) for r in self.ratios)
        if not self.ratios or any(r < 1 for r in self.ratios):
            raise ValueError(f"SEANetConfig.ratios must be positive integers, got {self.ratios}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


@dataclass
class BottleneckTransformerConfig:
    """The causal transformer run on the 25 Hz latent, in encoder and decoder; num_layers=0 disables it."""

    num_layers: int = 8
    num_heads: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # causal sliding window, in latent steps (250 at 25 Hz = 10 s)
    layer_scale: float | None = 0.01
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.num_layers < 0:
            raise ValueError(f"BottleneckTransformerConfig.num_layers must be >= 0, got {self.num_layers}")
        if self.num_layers and (self.num_heads < 1 or self.dim_feedforward < 1):
            raise ValueError(f"bad transformer sizes: num_heads={self.num_heads}, dim_ff={self.dim_feedforward}")
        if self.context < 1:
            raise ValueError(f"BottleneckTransformerConfig.context must be >= 1, got {self.context}")


@dataclass
class QuantizerConfig:
    """Split RVQ: `n_q_semantic` semantic codebooks + acoustic ones, `num_codebooks` of `total_codebooks` active."""

    dimension: int = 256  # codebook vector size (inputs are projected from the latent to this)
    bins: int = 2048  # entries per codebook
    total_codebooks: int = 32  # stored codebooks (Mimi ships 32)
    num_codebooks: int = 8  # active codebooks used by encode/decode and training
    n_q_semantic: int = 1
    decay: float = 0.99  # EMA decay of the codebooks
    threshold_usage_ratio: float = 0.1  # a code used less than this fraction of uniform usage is replaced
    replaced_usage_ratio: float = 1.0  # usage given to a replaced code, as a fraction of uniform usage
    check_unused_every: int = 5  # steps between dead-code checks
    no_quantization_rate: float = 0.5  # training: probability that a sample skips quantization (Mimi: 0.5)
    kmeans_iters: int = 50

    def __post_init__(self):
        if self.dimension < 1 or self.bins < 2:
            raise ValueError(f"QuantizerConfig: dimension={self.dimension}, bins={self.bins} must be >= 1, >= 2")
        if not 1 <= self.n_q_semantic < self.num_codebooks <= self.total_codebooks:
            raise ValueError(
                f"QuantizerConfig needs 1 <= n_q_semantic < num_codebooks <= total_codebooks, got "
                f"{self.n_q_semantic}, {self.num_codebooks}, {self.total_codebooks}"
            )
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"QuantizerConfig.decay must be in (0, 1), got {self.decay}")
        if not 0.0 <= self.no_quantization_rate < 1.0:
            raise ValueError(f"QuantizerConfig.no_quantization_rate must be in [0, 1), got {self.no_quantization_rate}")


@dataclass
class LossConfig:
    """Training losses; weights of the generator objective."""

    mel_scales: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # n_fft of the multi-scale mel loss
    n_mels: int = 64
    mel_weight: float = 1.0
    commitment_weight: float = 1.0
    semantic_weight: float = 1.0  # phone classification on codebook 0's output
    adversarial: bool = True  # multi-scale STFT discriminator + feature matching
    adv_weight: float = 0.1
    feat_weight: float = 1.0
    disc_scales: tuple[int, ...] = (2048, 1024, 512, 256, 128)  # n_fft of the discriminator's STFTs
    disc_filters: int = 32
    # multi-resolution STFT terms (speech.codec.losses.MultiResolutionSTFTLoss); weight 0 = off (older configs)
    stft_weight: float = 0.0  # spectral convergence + log-magnitude L1 on the linear spectrum
    phase_weight: float = 0.0  # L1 between power-law compressed complex spectra (phase-sensitive)
    stft_scales: tuple[int, ...] = (2048, 1024, 512, 256, 128)  # n_fft of the STFT terms
    phase_compress: float = 0.3  # exponent c of |S|^c in the phase-sensitive term
    wave_weight: float = 0.0  # waveform L1 (relative to the reference's mean |x|)

    def __post_init__(self):
        self.mel_scales = tuple(int(s) for s in self.mel_scales)
        self.disc_scales = tuple(int(s) for s in self.disc_scales)
        self.stft_scales = tuple(int(s) for s in self.stft_scales)
        for name in ("mel_weight", "commitment_weight", "semantic_weight", "adv_weight", "feat_weight",
                     "stft_weight", "phase_weight", "wave_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if (self.stft_weight > 0 or self.phase_weight > 0) and (
                not self.stft_scales or any(s < 16 for s in self.stft_scales)):
            raise ValueError(f"LossConfig.stft_scales must be n_fft values >= 16, got {self.stft_scales}")
        if not 0.0 < self.phase_compress <= 1.0:
            raise ValueError(f"LossConfig.phase_compress must be in (0, 1], got {self.phase_compress}")
        if not self.mel_scales or any(s < 16 for s in self.mel_scales):
            raise ValueError(f"LossConfig.mel_scales must be n_fft values >= 16, got {self.mel_scales}")
        if self.adversarial and (not self.disc_scales or any(s < 16 for s in self.disc_scales)):
            raise ValueError(f"LossConfig.disc_scales must be n_fft values >= 16, got {self.disc_scales}")
        if self.n_mels < 1:
            raise ValueError(f"LossConfig.n_mels must be >= 1, got {self.n_mels}")


@dataclass
class HNRConfig:
    """Harmonic-plus-noise decoder head (speech.codec.ddsp), used when CodecConfig.head includes 'hnr'."""

    n_harmonics: int = 64
    n_noise_bands: int = 16
    f0_min: float = 50.0  # Hz; the fundamental is predicted on a log scale between these
    f0_max: float = 600.0
    noise_table: int = 1 << 17  # samples of each fixed band-noise table (5.5 s at 24 kHz) before it repeats

    def __post_init__(self):
        if self.n_harmonics < 1 or self.n_noise_bands < 1:
            raise ValueError(f"HNRConfig needs >= 1 harmonics and noise bands, got {self.n_harmonics}, "
                             f"{self.n_noise_bands}")
        if not 0 < self.f0_min < self.f0_max:
            raise ValueError(f"HNRConfig needs 0 < f0_min < f0_max, got {self.f0_min}, {self.f0_max}")
        if self.noise_table < 1024:
            raise ValueError(f"HNRConfig.noise_table must be >= 1024 samples, got {self.noise_table}")


@dataclass
class SpectralConfig:
    """Spectral encoder / inverse-STFT decoder (speech.codec.spectral), used when CodecConfig.encoder is
    'spectral' (encoder) and CodecConfig.head is 'istft' (decoder). Convs run at sample_rate / hop frames per s."""

    hop: int = 240  # samples per spectral frame (10 ms at 24 kHz); must divide the latent hop
    analysis_fft: int = 960  # encoder window (40 ms), causal: it ends with its frame's hop
    synthesis_fft: int = 480  # decoder frame length (20 ms, 50% overlap-add)
    channels: int = 256  # width of the residual convs at the frame rate
    n_residual_layers: int = 4  # residual units (dilations dilation_base**j) in encoder and decoder
    kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2

    def __post_init__(self):
        for name in ("hop", "analysis_fft", "synthesis_fft", "channels", "kernel_size", "dilation_base", "compress"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpectralConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_residual_layers < 0:
            raise ValueError(f"SpectralConfig.n_residual_layers must be >= 0, got {self.n_residual_layers}")
        for name in ("analysis_fft", "synthesis_fft"):
            n = getattr(self, name)
            if n < self.hop or n % self.hop:
                raise ValueError(f"SpectralConfig.{name} ({n}) must be a multiple of the hop ({self.hop})")


HEADS = ("seanet", "hnr", "seanet+hnr", "istft")
ENCODERS = ("seanet", "spectral")


@dataclass
class CodecConfig:
    """The whole codec. The frame is `sample_rate / frame_rate` samples (1920 = 80 ms at 24 kHz)."""

    sample_rate: int = 24000
    frame_rate: float = 12.5
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    transformer: BottleneckTransformerConfig = field(default_factory=BottleneckTransformerConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    num_phones: int = 128  # classes of the semantic-distillation head (phone ids; 0 = unknown/silence)
    head: str = "seanet"  # decoder output: SEANet conv decoder, harmonic-plus-noise synthesis, or their sum
    hnr: HNRConfig = field(default_factory=HNRConfig)
    encoder: str = "seanet"  # SEANet convs on the waveform, or the spectral encoder (speech.codec.spectral)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    # left padding of the frame-rate downsampling conv: "constant" (zeros) or "replicate" (the first sample,
    # as Kyutai's Mimi `ConvDownsample1d` does); the `mimi` preset replicates, the CPU presets keep zeros
    downsample_pad_mode: str = "constant"

    def __post_init__(self):
        if self.downsample_pad_mode not in ("constant", "replicate"):
            raise ValueError(f"CodecConfig.downsample_pad_mode must be 'constant' or 'replicate', "
                             f"got {self.downsample_pad_mode!r}")
        if self.head not in HEADS:
            raise ValueError(f"CodecConfig.head must be one of {HEADS}, got {self.head!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"CodecConfig.encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if (self.encoder == "spectral" or self.head == "istft") and self.seanet.hop_length % self.spectral.hop:
            raise ValueError(f"the spectral hop {self.spectral.hop} must divide the latent hop "
                             f"{self.seanet.hop_length} (SEANet ratios {self.seanet.ratios})")
        if self.sample_rate < 1 or self.frame_rate <= 0:
            raise ValueError(f"bad rates: sample_rate={self.sample_rate}, frame_rate={self.frame_rate}")
        frame = self.sample_rate / self.frame_rate
        if frame != int(frame):
            raise ValueError(f"sample_rate / frame_rate must be an integer frame size, got {frame}")
        stride = frame / self.seanet.hop_length
        if stride != int(stride) or stride < 1:
            raise ValueError(
                f"frame size {int(frame)} must be a multiple of the SEANet hop {self.seanet.hop_length} "
                f"(ratios {self.seanet.ratios})"
            )
        if self.num_phones < 2:
            raise ValueError(f"CodecConfig.num_phones must be >= 2, got {self.num_phones}")

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def downsample_stride(self) -> int:
        """Stride of the learnt conv from the encoder's latent rate to the frame rate (2 for Mimi)."""
        return self.frame_size // self.seanet.hop_length

    @property
    def bitrate(self) -> float:
        """Bits per second at the active number of codebooks."""
        return self.quantizer.num_codebooks * math.log2(self.quantizer.bins) * self.frame_rate


def mimi() -> CodecConfig:
    """Kyutai Mimi's published shapes (moshi `loaders._mimi_config`), 8 active codebooks = 1.1 kbps, and its
    edge-replicating downsampling pad (see speech.codec.kyutai)."""
    return CodecConfig(downsample_pad_mode="replicate")


def tiny() -> CodecConfig:
    """A CPU-trainable codec: same 24 kHz -> 12.5 Hz structure, 8 codebooks x 1024 = 1.0 kbps."""
    return CodecConfig(
        seanet=SEANetConfig(dimension=128, n_filters=16),
        transformer=BottleneckTransformerConfig(num_layers=2, num_heads=4, dim_feedforward=256, context=250),
        quantizer=QuantizerConfig(dimension=64, bins=1024, total_codebooks=8, num_codebooks=8),
        loss=LossConfig(adversarial=False, disc_filters=16),
    )


def small() -> CodecConfig:
    """The next size up from `tiny` for long CPU runs (issue 9): wider convs, a 4-layer bottleneck transformer,
    8 codebooks x 2048 = 1.1 kbps, 7.6 M parameters (37 MB as fp32 with the codebook buffers), STFT loss on."""
    return CodecConfig(
        seanet=SEANetConfig(dimension=192, n_filters=24),
        transformer=BottleneckTransformerConfig(num_layers=4, num_heads=4, dim_feedforward=768, context=250),
        quantizer=QuantizerConfig(dimension=96, bins=2048, total_codebooks=8, num_codebooks=8),
        loss=LossConfig(adversarial=False, disc_filters=16, stft_weight=1.0),
    )


def spectral() -> CodecConfig:
    """`tiny`'s latent, bottleneck transformer and quantizer (8 codebooks x 1024 = 1.0 kbps) between a spectral
    encoder and an inverse-STFT decoder whose convs run at 100 Hz (speech.codec.spectral); mel + STFT losses."""
    cfg = tiny()
    cfg.encoder, cfg.head = "spectral", "istft"
    cfg.loss.stft_weight = 1.0
    return cfg


PRESETS = {"tiny": tiny, "small": small, "mimi": mimi, "spectral": spectral}


def preset(name: str) -> CodecConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown codec preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
