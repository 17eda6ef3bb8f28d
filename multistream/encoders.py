"""Input encoders of continuous streams, trained with the model.

A continuous stream's features `[B, T, *feature_shape]` enter the temporal transformer through an encoder named by
`StreamSpec.encoder`: the LLaMA-Omni adapter MLP (`"mlp"`, vectors `[F]`) or a small CNN over image-like frames
(`"conv2d"`, channels-last `[H, W, C]`, values already normalised, e.g. to [0, 1]). Each frame is encoded on its
own, so encoders are causal and stream without state. An application registers its own with `register_encoder`.

A frame without a value (validity mask False, or a frame that a delay or the one-frame shift leaves empty) is
embedded as the stream's learned `missing` vector instead of the encoder's output: "no reading" and "a reading of
zero" stay different things.

Dimension legend: B batch, T frames, N = B*T, F feature dim, H/W/C image height/width/channels, D model width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import nn

from multistream.streams import StreamSpec

EncoderFactory = Callable[[StreamSpec, int, int], nn.Module]  # (spec, hidden, d_model) -> module [N, *shape] -> [N, D]
ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: make `factory(spec, hidden, d_model)` available as `StreamSpec(encoder=name)`."""

    def deco(factory: EncoderFactory) -> EncoderFactory:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = factory
        return factory

    return deco


class Adapter(nn.Module):
    """LLaMA-Omni-style projector: features [N, F] -> [N, D]."""

    def __init__(self, f: int, hidden: int, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(f, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("mlp")
def _mlp(spec: StreamSpec, hidden: int, d: int) -> nn.Module:
    if len(spec.feature_shape) != 1:
        raise ValueError(f"stream {spec.name!r}: encoder 'mlp' takes vectors, got feature_shape {spec.feature_shape}")
    return Adapter(spec.feature_shape[0], hidden, d)


class ConvEncoder(nn.Module):
    """Small CNN for image frames: [N, H, W, C] (channels last, normalised) -> [N, D].

    Stride-2 3x3 convs halve the image until it is at most 8x8, then a linear layer reads the flattened map (it
    keeps where things are, which a policy needs; a global pool would throw that away).
    """

    def __init__(self, shape: tuple[int, int, int], hidden: int, d: int, width: int = 32) -> None:
        super().__init__()
        h, w, c = shape
        layers: list[nn.Module] = []
        ch = c
        while h > 8 or w > 8:
            layers += [nn.Conv2d(ch, width, 3, stride=2, padding=1), nn.GELU()]
            ch, h, w = width, (h + 1) // 2, (w + 1) // 2
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width * h * w, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(rearrange(x, "n h w c -> n c h w"))  # [N, width, h, w]
        return self.head(rearrange(y, "n c h w -> n (c h w)"))  # [N, D]


@register_encoder("conv2d")
def _conv2d(spec: StreamSpec, hidden: int, d: int) -> nn.Module:
    if len(spec.feature_shape) != 3:
        raise ValueError(f"stream {spec.name!r}: encoder 'conv2d' takes channels-last images [H, W, C], got "
                         f"feature_shape {spec.feature_shape}")
    return ConvEncoder(spec.feature_shape, hidden, d)  # type: ignore[arg-type]


class ContinuousInput(nn.Module):
    """One continuous stream's way in: encoder + learned `missing` vector. [B, T, *shape], valid [B, T] -> [B, T, D]."""

    def __init__(self, spec: StreamSpec, hidden: int, d: int) -> None:
        super().__init__()
        if spec.encoder not in ENCODERS:
            raise ValueError(f"stream {spec.name!r}: unknown encoder {spec.encoder!r}; registered: {sorted(ENCODERS)}")
        self.encoder = ENCODERS[spec.encoder](spec, hidden, d)
        self.missing = nn.Parameter(torch.randn(d) * 0.02)  # distinct from a zero embedding from the start

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        flat = rearrange(x, "b t ... -> (b t) ...")  # [N, *shape]
        y = rearrange(self.encoder(flat), "(b t) d -> b t d", b=b)  # [B, T, D]
        return torch.where(valid[..., None], y, self.missing.to(y.dtype))
