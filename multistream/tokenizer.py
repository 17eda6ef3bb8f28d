"""The tokenizer protocol every stream's tokenizer implements (codec, text, image VQ, scalar bins, actions).

A tokenizer maps a signal to integer codes `[B, K, T]` at `frame_rate` frames per second (K codebooks of
`cardinality` entries each) and back. A streaming tokenizer is also a `StreamingModule`: inside
`with tok.streaming(batch_size):` successive calls to `encode` / `decode` on consecutive chunks return the same
codes / signal as one call on the whole input.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Tokenizer(Protocol):
    """Signal <-> codes `[B, K, T]`; K = num_codebooks, values in [0, cardinality)."""

    @property
    def frame_rate(self) -> float: ...

    @property
    def num_codebooks(self) -> int: ...

    @property
    def cardinality(self) -> int: ...

    def encode(self, x: Any) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> Any: ...


def check_codes(codes: torch.Tensor, num_codebooks: int, cardinality: int, name: str = "codes") -> None:
    """Raise ValueError naming the offending value when `codes` is not a valid `[B, K, T]` integer tensor."""
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {codes.dtype}")
    if codes.dim() != 3:
        raise ValueError(f"{name} must have shape [B, K, T], got {tuple(codes.shape)}")
    if codes.shape[1] != num_codebooks:
        raise ValueError(f"{name} has {codes.shape[1]} codebooks, expected {num_codebooks}")
    if codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= cardinality:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains id {bad}, outside [0, {cardinality})")
