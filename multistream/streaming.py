"""Streaming state for modules that run frame by frame.

Every module that must remember something between calls (a causal conv's left context, an attention KV cache, a
frame counter) subclasses `StreamingModule` and returns a typed state dataclass from `_init_streaming_state`.
`with module.streaming(batch_size):` creates the state of the module and of every streaming descendant, and drops
it on exit, so the same module serves the training forward (no state) and step-by-step inference (state).
This is the shape of moshi's `modules/streaming.py`, written for this project.

Per-row reset: a batch of B independent sequences (envs, conversations) streams together, and
`reset_streaming(rows)` starts the chosen rows afresh while the others go on untouched. A module supports it by
implementing `_reset_rows(rows)` (rows: bool [B]); one that does not gets a clear error rather than a silent
whole-batch reset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass
class StreamingState:
    """Base state: subclasses add their own fields (caches, counters)."""

    batch_size: int


class StreamingModule(nn.Module):
    """An nn.Module with an optional streaming state (None outside `streaming()`)."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: Any = None
        self._streaming_active = False
        self._streaming_cache: list[StreamingModule] | None = None

    def _init_streaming_state(self, batch_size: int) -> StreamingState | None:
        """Return this module's fresh state; None for a module that only hosts streaming children."""
        return None

    @property
    def is_streaming(self) -> bool:
        return self._streaming_active

    @property
    def state(self) -> Any:
        return self._streaming_state

    def _streaming_modules(self) -> list[StreamingModule]:
        # cached while streaming: reset_streaming() runs once per frame on the depth transformer
        if self._streaming_cache is None:
            self._streaming_cache = [m for m in self.modules() if isinstance(m, StreamingModule)]
        return self._streaming_cache

    def _start_streaming(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"streaming batch_size must be >= 1, got {batch_size}")
        for m in self._streaming_modules():
            if m.is_streaming:
                raise RuntimeError(f"{type(m).__name__} is already streaming; nested streaming() is not allowed")
        for m in self._streaming_modules():
            m._streaming_state = m._init_streaming_state(batch_size)
            m._streaming_active = True

    def _stop_streaming(self) -> None:
        for m in self._streaming_modules():
            m._streaming_state = None
            m._streaming_active = False
        for m in self._streaming_modules():
            m._streaming_cache = None  # the module tree may change between streaming blocks

    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[None]:
        """Run this module (and its streaming children) step by step inside the block."""
        self._start_streaming(batch_size)
        try:
            yield
        finally:
            self._stop_streaming()

    def reset_streaming(self, rows: torch.Tensor | Sequence[int] | None = None) -> None:
        """Start a new sequence without leaving the `streaming()` block: every row (rows=None), or only the given
        rows (indices, or a bool mask [B]) while the other rows continue exactly as if nothing happened."""
        if not self.is_streaming:
            raise RuntimeError("reset_streaming() called outside a streaming() block")
        if rows is None:
            for m in self._streaming_modules():
                if m._streaming_state is not None:
                    m._streaming_state = m._init_streaming_state(m._streaming_state.batch_size)
            return
        mask = None
        for m in self._streaming_modules():
            if m._streaming_state is None:
                continue
            if mask is None:
                mask = rows_mask(rows, m._streaming_state.batch_size)
            if type(m)._reset_rows is StreamingModule._reset_rows:
                raise NotImplementedError(f"{type(m).__name__} cannot reset single batch rows (no _reset_rows)")
            m._reset_rows(mask.to(_state_device(m._streaming_state)))

    def _reset_rows(self, rows: torch.Tensor) -> None:
        """Reset the state of the rows where `rows` (bool [B]) is True; leave the others bit-identical."""
        raise NotImplementedError


def rows_mask(rows: torch.Tensor | Sequence[int], batch_size: int) -> torch.Tensor:
    """Indices or a bool mask of rows -> bool [B]; raises ValueError naming a bad row."""
    if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool:
        if rows.shape != (batch_size,):
            raise ValueError(f"row mask must have shape ({batch_size},), got {tuple(rows.shape)}")
        return rows.cpu()
    idx = [int(r) for r in (rows.tolist() if isinstance(rows, torch.Tensor) else rows)]
    for r in idx:
        if not 0 <= r < batch_size:
            raise ValueError(f"row {r} out of range for batch size {batch_size}")
    mask = torch.zeros(batch_size, dtype=torch.bool)
    mask[idx] = True
    return mask


def _state_device(state: StreamingState) -> torch.device:
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")
