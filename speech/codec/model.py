"""The Mimi-style codec: SEANet encoder -> bottleneck transformer -> stride-2 conv -> split RVQ -> and back.

Audio at 24 kHz becomes a 25 Hz latent (SEANet hop 960), runs through a causal transformer, is downsampled by a
learnt stride-2 conv to 12.5 Hz and quantized into K codes per 80 ms frame; the decoder upsamples (channel-wise
transposed conv), runs its own transformer and the SEANet decoder. Every part is causal and streamable, so inside
`with codec.streaming(B):` each `encode` of 1920 * n samples returns n frames of codes and each `decode` of n
frames returns 1920 * n samples, equal to the one-shot results. A small classifier on the semantic codebook's
output predicts the phone of each frame (semantic distillation, since we have no WavLM teacher here).
`CodecConfig.head` can replace or complement the SEANet decoder with a harmonic-plus-noise synthesizer driven by
the decoder latent (speech.codec.ddsp) or replace it with an inverse-STFT decoder (`"istft"`), and
`CodecConfig.encoder = "spectral"` replaces the SEANet encoder with convs over a causal log spectrum
(speech.codec.spectral); all streaming and causal.

Implements the engine's `Tokenizer` protocol: `frame_rate`, `num_codebooks`, `cardinality`, `encode`, `decode`.

Dimension legend: B batch, C audio channels, N audio samples, D latent channels, S latent steps (25 Hz),
T frames (12.5 Hz), K codebooks, P phone classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from multistream.streaming import StreamingModule
from multistream.tokenizer import check_codes
from multistream.transformer import StreamingTransformer, TransformerConfig

from .config import BottleneckTransformerConfig, CodecConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .ddsp import HarmonicNoiseHead
from .quantizer import SplitResidualVQ
from .seanet import SEANetDecoder, SEANetEncoder
from .spectral import SpectralDecoder, SpectralEncoder


class BottleneckTransformer(StreamingModule):
    """The engine's causal `StreamingTransformer` over a conv-layout latent [B, D, S]."""

    def __init__(self, dim: int, cfg: BottleneckTransformerConfig):
        super().__init__()
        # Mimi's bottleneck: LayerNorm, plain GELU MLP, no biases in the linear layers, LayerScale
        self.transformer = StreamingTransformer(TransformerConfig(
            d_model=dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads, ffn_mult=cfg.dim_feedforward / dim,
            gated=False, norm="layer", context=cfg.context, rope_theta=cfg.rope_theta, layer_scale=cfg.layer_scale,
            dropout=0.0, bias=False,
        ))

    def forward(self, x: Tensor) -> Tensor:  # [B, D, S] -> [B, D, S]
        y = self.transformer(rearrange(x, "b d s -> b s d"))  # [B, S, D]
        return rearrange(y, "b s d -> b d s")  # [B, D, S]


@dataclass
class CodecOutput:
    audio: Tensor  # [B, C, N] reconstruction
    codes: Tensor  # [B, K, T]
    commitment: Tensor  # scalar commitment loss
    phone_logits: Tensor  # [B, T, P] semantic head on codebook 0's output
    replaced: float  # fraction of dead codebook entries replaced this step
    entropy: float  # normalised codebook usage entropy


class MimiCodec(StreamingModule):
    """Streaming neural audio codec; see the module docstring."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        dim, stride = cfg.seanet.dimension, cfg.downsample_stride
        hop = cfg.seanet.hop_length  # latent step in samples
        self.encoder = (SpectralEncoder(cfg.spectral, dim, hop) if cfg.encoder == "spectral"
                        else SEANetEncoder(cfg.seanet))
        self.decoder = (SEANetDecoder(cfg.seanet) if "seanet" in cfg.head
                        else SpectralDecoder(cfg.spectral, dim, hop) if cfg.head == "istft" else None)
        # optional harmonic-plus-noise synthesis from the decoder latent (speech.codec.ddsp)
        self.hnr = (HarmonicNoiseHead(dim, cfg.seanet.hop_length, cfg.sample_rate, cfg.hnr)
                    if "hnr" in cfg.head else None)
        tr = cfg.transformer
        self.encoder_transformer = BottleneckTransformer(dim, tr) if tr.num_layers else None
        self.decoder_transformer = BottleneckTransformer(dim, tr) if tr.num_layers else None
        # Mimi: learnt full conv down, channel-wise (groups=dim) transposed conv up, no bias
        self.downsample = (StreamingConv1d(dim, dim, 2 * stride, stride=stride, bias=False,
                                           pad_mode=cfg.downsample_pad_mode) if stride > 1 else None)
        self.upsample = (StreamingConvTranspose1d(dim, dim, 2 * stride, stride=stride, groups=dim, bias=False)
                         if stride > 1 else None)
        self.quantizer = SplitResidualVQ(dim, cfg.quantizer)
        self.semantic_head = nn.Linear(dim, cfg.num_phones)

    # --- Tokenizer protocol -------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def channels(self) -> int:
        return self.cfg.seanet.channels

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.cfg.quantizer.bins

    def check_audio(self, x: Tensor, sample_rate: int | None = None) -> None:
        """Raise ValueError naming what is wrong with an audio batch [B, C, N] given to `encode`."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"audio sample rate is {sample_rate} Hz, the codec needs {self.sample_rate} Hz "
                             "(resample first, e.g. speech.audio.resample)")
        if not isinstance(x, Tensor):
            raise ValueError(f"audio must be a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"audio must be floating point in [-1, 1], got dtype {x.dtype}")
        if x.dim() != 3:
            raise ValueError(f"audio must have shape [B, C, N] with C={self.channels}, got {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            kind = "mono" if self.channels == 1 else f"{self.channels}-channel"
            raise ValueError(f"the codec expects {kind} audio ({self.channels} channel), got {x.shape[1]} channels "
                             f"in shape {tuple(x.shape)}")
        n = x.shape[-1]
        if n == 0 or n % self.frame_size:
            raise ValueError(f"audio length {n} is not a positive multiple of the frame size {self.frame_size} "
                             f"({1000 / self.frame_rate:g} ms); pad it, e.g. with pad_to_frame()")
        if not torch.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")

    def pad_to_frame(self, x: Tensor) -> Tensor:
        """Right-pad [..., N] with zeros to a whole number of frames (at least one)."""
        n = x.shape[-1]
        target = max(1, -(-n // self.frame_size)) * self.frame_size
        return torch.nn.functional.pad(x, (0, target - n))

    # --- model --------------------------------------------------------------------------------------------------
    def _encode_latent(self, x: Tensor) -> Tensor:  # [B, C, N] -> [B, D, T]
        z = self.encoder(x)  # [B, D, S]
        if self.encoder_transformer is not None:
            z = self.encoder_transformer(z)
        if self.downsample is not None:
            z = self.downsample(z)  # [B, D, T]
        return z

    def _decode_latent(self, q: Tensor) -> Tensor:  # [B, D, T] -> [B, C, N]
        if self.upsample is not None:
            q = self.upsample(q)  # [B, D, S]
        if self.decoder_transformer is not None:
            q = self.decoder_transformer(q)
        if self.hnr is None:
            return self.decoder(q)
        synth = self.hnr(q)  # [B, 1, N]
        return synth if self.decoder is None else self.decoder(q) + synth

    def forward(self, x: Tensor) -> CodecOutput:
        """Training forward on whole clips [B, C, N] (N a multiple of the frame size)."""
        self.check_audio(x)
        z = self._encode_latent(x)
        q = self.quantizer(z)
        audio = self._decode_latent(q.quantized)
        logits = self.semantic_head(rearrange(q.semantic, "b d t -> b t d"))  # [B, T, P]
        return CodecOutput(audio, q.codes, q.commitment, logits, q.replaced, q.entropy)

    def encode(self, x: Tensor, sample_rate: int | None = None) -> Tensor:
        """Audio [B, C, N] (N = n * frame_size) -> codes [B, K, n]. Streaming inside `streaming()`."""
        self.check_audio(x, sample_rate)
        return self.quantizer.encode(self._encode_latent(x))

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [B, K, T] -> audio [B, C, T * frame_size]. Streaming inside `streaming()`."""
        check_codes(codes, self.num_codebooks, self.cardinality)
        if codes.shape[-1] == 0:
            raise ValueError("codes have no frames (T = 0)")
        return self._decode_latent(self.quantizer.decode(codes.long()))

    def decode_prefix(self, codes: Tensor) -> Tensor:
        """The first K' <= K codebooks [B, K', T] -> audio [B, C, T * frame_size]: the RVQ's lower bitrate (as Mimi
        decodes with fewer codebooks). `decode` keeps refusing a wrong codebook count; this says it on purpose."""
        if not isinstance(codes, Tensor) or codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_codebooks:
            got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be [B, K', T] with 1 <= K' <= {self.num_codebooks}, got {got}")
        check_codes(codes, codes.shape[1], self.cardinality)
        if codes.shape[-1] == 0:
            raise ValueError("codes have no frames (T = 0)")
        return self._decode_latent(self.quantizer.decode(codes.long()))

    def semantic_features(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Codes [B, K, T] -> (semantic codebook output [B, T, D], acoustic codebooks' output [B, T, D])."""
        check_codes(codes, self.num_codebooks, self.cardinality)
        codes = codes.long()
        n_s = self.cfg.quantizer.n_q_semantic
        sem = self.quantizer.rvq_first.decode(codes[:, :n_s])
        ac = self.quantizer.rvq_rest.decode(codes[:, n_s:])
        return rearrange(sem, "b d t -> b t d"), rearrange(ac, "b d t -> b t d")  # [B, T, D] each


def load_codec(path, map_location: str | torch.device = "cpu") -> MimiCodec:
    """Build a codec from a checkpoint directory written by `scripts/train_codec.py`, in eval mode."""
    from multistream.checkpoint import config_from_dict, load_weights, read_config

    cfg = config_from_dict(CodecConfig, read_config(path))
    codec = MimiCodec(cfg)
    load_weights(path, codec, map_location=map_location)
    return codec.eval()
