"""Training-batch augmentation for the policy: random camera shifts and brightness jitter, and trimming of
all-padding frames.

Why: 400 touch demos were memorised (train action-token accuracy 0.98, held-out 0.63); the camera CNN is the
largest input and the easiest to overfit. A random shift of the whole image by a few pixels (DrQ, Kostrikov et al.
2020; replicate padding, then a crop back to the original size) and a brightness factor are drawn once per batch
row, so the frames of one episode stay consistent (a slightly moved camera, not a jittering one).

Only training batches are augmented: `augmented_batch_fn` wraps the deterministic `batch_fn(step, micro, rank,
world)` of `StoreBinding.batch_fn`, drawing its random numbers from a generator seeded by the same (seed, step,
micro, rank) plus a salt, so an exact resume draws the same augmentation. Evaluation (`Policy.rollout`,
teacher-forced replay through `StoreBinding.episode`) never goes through it.

`trim_padding`: `from_episode_start` windows are as long as the longest episode of the store and shorter episodes
are padded with ZERO_ID frames, which carry no target and, the model being causal, change nothing before them;
cutting the frames that are padding in every row of the batch gives the same loss for less compute.

Dimension legend: B batch, T frames, H/W image height/width, C channels, K codebooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as nnf
from einops import rearrange

from multistream.data import batch_seed
from multistream.streams import ZERO_ID, StreamSet

AUGMENT_SALT = 0xA06  # keeps the augmentation's generator apart from the one that picks the windows

BatchFn = Callable[[int, int, int, int], dict[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    shift: int = 0  # max translation in pixels, each axis, drawn per batch row (0 = off)
    brightness: float = 0.0  # max relative brightness change: pixels * U(1 - b, 1 + b) per row, clipped to [0, 1]

    def __post_init__(self) -> None:
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise ValueError(f"image shift must be an int >= 0 pixels, got {self.shift!r}")
        if not 0.0 <= self.brightness < 1.0:
            raise ValueError(f"image brightness jitter must be in [0, 1), got {self.brightness!r}")

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.brightness > 0


Norm = tuple[torch.Tensor, torch.Tensor]  # (shift, scale) per channel: model input = (uint8 pixel - shift) / scale


def augment_images(x: torch.Tensor, aug: ImageAugment, g: torch.Generator, norm: Norm | None = None) -> torch.Tensor:
    """`x`: [B, T, H, W, C] float images -> augmented copy, same shape and dtype (one shift and one brightness
    factor per batch row). `norm`: how `x` was made from uint8 pixels (the binding's normalisation); None means
    pixels / 255, i.e. `x` in [0, 1]. Brightness is applied and clipped in pixel space, whatever the normalisation."""
    if x.dim() != 5 or not x.is_floating_point():
        raise ValueError(f"expected float images [B, T, H, W, C], got {x.dtype} {tuple(x.shape)}")
    if not aug.active:
        return x
    b, t, h, w, _ = x.shape
    s = aug.shift
    if s >= min(h, w):
        raise ValueError(f"image shift {s} must be smaller than the image ({h}x{w})")
    out = x
    if s > 0:
        planes = rearrange(x, "b t h w c -> b (t c) h w")  # [B, T*C, H, W]
        padded = nnf.pad(planes, (s, s, s, s), mode="replicate")  # [B, T*C, H+2s, W+2s]
        dy = torch.randint(0, 2 * s + 1, (b,), generator=g).tolist()
        dx = torch.randint(0, 2 * s + 1, (b,), generator=g).tolist()
        crops = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])  # [B, T*C, H, W]
        out = rearrange(crops, "b (t c) h w -> b t h w c", t=t)  # [B, T, H, W, C]
    if aug.brightness > 0:
        f = 1.0 + (torch.rand(b, generator=g) * 2 - 1) * aug.brightness  # [B]
        f = f.to(out.dtype)[:, None, None, None, None]
        if norm is None:
            out = (out * f).clamp(0.0, 1.0)
        else:  # back to pixels, brighten and clip there, normalise again
            shift, scale = (torch.as_tensor(v, dtype=out.dtype) for v in norm)
            out = ((out * scale + shift) * f).clamp(0.0, 255.0).sub(shift).div(scale)
    return out.contiguous()


def augmented_batch_fn(batch_fn: BatchFn, image_keys: Sequence[str], aug: ImageAugment, seed: int = 0,
                       norms: dict[str, Norm] | None = None) -> BatchFn:
    """`batch_fn` with `augment_images` applied to the streams `image_keys` of every batch; deterministic in
    (seed, step, micro, rank). `norms`: per image stream, the binding's (shift, scale) that made the batch's values
    from uint8 pixels (None or absent: pixels / 255). An inactive `aug` returns `batch_fn` itself."""
    if not aug.active:
        return batch_fn
    if not image_keys:
        raise ValueError("image augmentation asked for, but the policy has no camera stream")

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        batch = batch_fn(step, micro, rank, world)
        g = torch.Generator().manual_seed(batch_seed(seed, step, micro, rank, AUGMENT_SALT))
        for k in image_keys:
            if k not in batch:
                raise ValueError(f"image stream {k!r} is not in the batch (keys: {sorted(batch)})")
            batch[k] = augment_images(batch[k], aug, g, (norms or {}).get(k))
        return batch

    return fn


def trim_padding(batch: dict[str, torch.Tensor], streams: StreamSet) -> dict[str, torch.Tensor]:
    """Cut the trailing frames that are padding in every row: frames where every token stream holds ZERO_ID. The
    batch must have at least one token stream (a frame with no token stream could not be told from padding)."""
    tokens = [batch[s.name] for s in streams.token_streams if s.name in batch]  # each [B, K, T]
    if not tokens:
        raise ValueError("trim_padding needs a token stream in the batch")
    real = torch.stack([(x != ZERO_ID).any(dim=1) for x in tokens]).any(dim=0).any(dim=0)  # [T]
    idx = real.nonzero()
    t = int(idx.max()) + 1 if len(idx) else 1
    if t == real.numel():
        return batch
    return {k: (v[:, :, :t] if k in streams and not streams[k].continuous else v[:, :t]) for k, v in batch.items()}
