"""Scalar tokenizers for robot streams: per-dimension bins, one codebook per dimension.

Both implement `multistream.tokenizer.Tokenizer` on the 12.5 Hz frame clock. Input is time-first, as stored:
floats `[B, T, C]` -> codes `[B, C, T]`; `decode` returns the bin centres `[B, T, C]`.

- `UniformBins`: equal-width bins over a fixed range (actions: the env's action box is [-1, 1]). Values outside the
  range are clamped; NaN is refused.
- `QuantileBins`: edges at the quantiles of the demonstrations, per dimension (force, torque, touch: most readings
  sit near zero, contact forces are rare and large; quantile bins spend the vocabulary where the data is, which
  mu-law does only for symmetric, zero-centred signals). Fitted once on training data and saved as JSON.

Dimension legend: B batch, T frames, C channels (dimensions), E bin edges (bins - 1).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from multistream.tokenizer import check_codes

FRAME_RATE = 12.5  # the model's clock (one env step per frame)


def _check_values(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor [B, T, {channels}], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[2] != channels:
        raise ValueError(f"{name}: expected values [B, T, {channels}], got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: values must be finite, got NaN or inf")
    return x


class UniformBins:
    """`bins` equal-width bins over [low, high] per dimension."""

    def __init__(self, channels: int, bins: int, low: float = -1.0, high: float = 1.0, name: str = "uniform bins"):
        if channels < 1 or bins < 2 or not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"UniformBins needs channels >= 1, bins >= 2 and low < high; got channels={channels}, "
                             f"bins={bins}, low={low}, high={high}")
        self.channels, self.bins, self.low, self.high, self.name = channels, bins, float(low), float(high), name

    frame_rate = property(lambda self: FRAME_RATE)
    num_codebooks = property(lambda self: self.channels)
    cardinality = property(lambda self: self.bins)

    @property
    def fingerprint(self) -> str:
        return f"uniform:{self.channels}x{self.bins}:{self.low}:{self.high}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_values(x, self.channels, self.name)
        u = (x.clamp(self.low, self.high) - self.low) / (self.high - self.low)  # [0, 1]
        codes = (u * (self.bins - 1)).round().long()  # [B, T, C]
        return codes.transpose(1, 2).contiguous()  # [B, C, T]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.channels, self.bins, name=f"{self.name} codes")
        u = codes.float() / (self.bins - 1)
        return (self.low + u * (self.high - self.low)).transpose(1, 2)  # [B, T, C]


class QuantileBins:
    """Per-dimension bins whose edges are data quantiles; `decode` gives each bin's median value."""

    def __init__(self, edges: np.ndarray, centers: np.ndarray, name: str = "quantile bins"):
        edges, centers = np.asarray(edges, dtype=np.float64), np.asarray(centers, dtype=np.float64)
        if edges.ndim != 2 or centers.ndim != 2 or centers.shape != (edges.shape[0], edges.shape[1] + 1):
            raise ValueError(f"QuantileBins: edges [C, E] and centers [C, E + 1] expected, got {edges.shape} and "
                             f"{centers.shape}")
        if not (np.isfinite(edges).all() and np.isfinite(centers).all()):
            raise ValueError("QuantileBins: edges and centers must be finite")
        if (np.diff(edges, axis=1) < 0).any():
            raise ValueError("QuantileBins: edges must be non-decreasing per dimension")
        self.edges, self.centers, self.name = edges, centers, name
        self._edges_t = torch.as_tensor(edges, dtype=torch.float32)  # [C, E]
        self._centers_t = torch.as_tensor(centers, dtype=torch.float32)  # [C, E + 1]

    @classmethod
    def fit(cls, x: np.ndarray, bins: int, name: str = "quantile bins") -> QuantileBins:
        """x [N, C] training values -> bins per dimension (repeated quantiles, e.g. of a mostly-zero signal, merge:
        codes stay valid, some bins are simply never used)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"{name}: fit needs values [N >= 2, C], got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: fit values must be finite")
        if bins < 2:
            raise ValueError(f"{name}: bins must be >= 2, got {bins}")
        qs = np.linspace(0, 1, bins + 1)
        cuts = np.quantile(x, qs, axis=0).T  # [C, bins + 1]
        edges = cuts[:, 1:-1]  # [C, bins - 1]
        centers = np.empty((x.shape[1], bins))
        for c in range(x.shape[1]):
            idx = np.searchsorted(edges[c], x[:, c], side="right")
            for b in range(bins):
                sel = x[idx == b, c]
                centers[c, b] = np.median(sel) if len(sel) else (cuts[c, b] + cuts[c, b + 1]) / 2
        return cls(edges, centers, name=name)

    frame_rate = property(lambda self: FRAME_RATE)
    num_codebooks = property(lambda self: self.edges.shape[0])
    cardinality = property(lambda self: self.edges.shape[1] + 1)

    @property
    def fingerprint(self) -> str:
        return "quantile:" + hashlib.sha256(json.dumps(self.to_json()).encode()).hexdigest()[:16]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_values(x, self.num_codebooks, self.name)
        edges = self._edges_t.to(x.device)
        cols = [torch.searchsorted(edges[c].contiguous(), x[..., c].contiguous(), right=True)
                for c in range(self.num_codebooks)]  # each [B, T]
        return torch.stack(cols, dim=1)  # [B, C, T]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.num_codebooks, self.cardinality, name=f"{self.name} codes")
        centers = self._centers_t.to(codes.device)  # [C, bins]
        vals = torch.gather(centers[None].expand(codes.shape[0], -1, -1), 2, codes)  # [B, C, T]
        return vals.transpose(1, 2)  # [B, T, C]

    def to_json(self) -> dict:
        return {"edges": self.edges.tolist(), "centers": self.centers.tolist(), "name": self.name}

    @classmethod
    def from_json(cls, d: dict) -> QuantileBins:
        if not isinstance(d, dict) or not {"edges", "centers"} <= set(d):
            got = sorted(d) if isinstance(d, dict) else d
            raise ValueError(f"QuantileBins JSON needs 'edges' and 'centers', got {got!r}")
        return cls(np.asarray(d["edges"]), np.asarray(d["centers"]), name=d.get("name", "quantile bins"))
