"""A toy multistream task that exercises what the engine must get right, used by tests, the demo and benchmarks.

Streams: `src` (input-only, 2 codebooks of random tokens) and `out` (predicted, 2 codebooks):
    out[0, t] = src[0, t - 2]                    (copy an input stream delayed by 2 frames; 0 for t < 2)
    out[1, t] = (out[0, t] + src[1, t - 1]) % V  (a function of the same frame's first codebook and an input)
The model at frame t sees every stream up to frame t - 1 only, so `out[1, t]` needs the depth transformer to
condition on `out[0, t]` and the temporal transformer to fetch `src` from the right past frames.
"""

from __future__ import annotations

import torch

from multistream.data import batch_seed
from multistream.streams import StreamSet, StreamSpec

TOY_VOCAB = 16
COPY_LAG = 2


def toy_streams(vocab: int = TOY_VOCAB) -> StreamSet:
    return StreamSet((
        StreamSpec("src", vocab_size=vocab, num_codebooks=2, delays=(0, 0)),
        StreamSpec("out", vocab_size=vocab, num_codebooks=2, delays=(0, 0), predicted=True),
    ))


def toy_target(src: torch.Tensor, vocab: int = TOY_VOCAB) -> torch.Tensor:
    """src [B, 2, T] -> out [B, 2, T] following the rule in the module docstring."""
    b, _, t = src.shape
    out = torch.zeros_like(src)
    out[:, 0, COPY_LAG:] = src[:, 0, : t - COPY_LAG]
    prev = torch.cat([torch.zeros_like(src[:, 1, :1]), src[:, 1, :-1]], dim=1)  # src[1, t - 1], 0 at t = 0
    out[:, 1] = (out[:, 0] + prev) % vocab
    return out


def toy_batch(batch_size: int, frames: int, seed: int, vocab: int = TOY_VOCAB) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, vocab, (batch_size, 2, frames), generator=g)
    return {"src": src, "out": toy_target(src, vocab)}


def toy_batch_fn(batch_size: int, frames: int, seed: int = 0, vocab: int = TOY_VOCAB):
    """Deterministic per (step, micro, rank): what `Trainer` needs for exact resume."""

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        return toy_batch(batch_size, frames, seed=batch_seed(seed, step, micro, rank), vocab=vocab)

    return fn
