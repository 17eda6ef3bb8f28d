"""From an episode store to model batches: windows of token/feature arrays -> `{stream: [B, K, T] | [B, T, F]}`.

Store arrays are time-first (`data/<stream name>` is `[T_total, K]` for token streams, `[T_total, F]` for
continuous ones); the model wants codebooks first. `store_batch_fn` draws the windows of optimizer step s from a
generator seeded by (seed, step, micro, rank), which is what makes `Trainer` resume exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from einops import rearrange

from multistream.store import EpisodeStore, WindowDataset
from multistream.streams import StreamSet


def windows_to_batch(items: list[dict[str, torch.Tensor]], streams: StreamSet) -> dict[str, torch.Tensor]:
    """Stack WindowDataset items ([T, K] or [T] tokens, [T, F] features) into a model batch."""
    out = {}
    for s in streams:
        x = torch.stack([it[s.name] for it in items])  # [B, T, ...]
        if s.continuous:
            out[s.name] = x.float()  # [B, T, F]
        else:
            if x.dim() == 2:
                x = x[:, :, None]  # a single-codebook stream stored as [T]
            out[s.name] = rearrange(x, "b t k -> b k t").long()  # [B, K, T]
    return out


def episode_to_arrays(batch_item: dict[str, torch.Tensor], streams: StreamSet) -> dict[str, np.ndarray]:
    """Inverse direction for writing: one episode `{stream: [K, T] | [T, F]}` -> time-first numpy arrays."""
    out = {}
    for s in streams:
        x = batch_item[s.name]
        out[s.name] = (x if s.continuous else rearrange(x, "k t -> t k")).cpu().numpy()
    return out


def store_batch_fn(
    store: EpisodeStore, streams: StreamSet, window: int, batch_size: int, seed: int = 0,
    episodes: list[int] | None = None,
) -> Callable[[int, int, int, int], dict[str, torch.Tensor]]:
    """A deterministic `batch_fn(step, micro, rank, world)` over random windows of the store."""
    ds = WindowDataset(store, streams.names, window, episodes=episodes)
    if len(ds) == 0:
        raise ValueError(f"no window of {window} frames fits in the selected episodes")

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash((seed, step, micro, rank)) % (2**31))
        idx = torch.randint(0, len(ds), (batch_size,), generator=g).tolist()
        return windows_to_batch([ds[i] for i in idx], streams)

    return fn
