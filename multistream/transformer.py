"""Causal transformer with RoPE, optional GQA and sliding context, and a streaming KV cache.

The same module serves training (whole sequences, no state) and inference (inside `with m.streaming(B):`, each
call appends its steps to the KV cache and continues the positions). Used by the temporal and depth transformers of
the RQ-Transformer and by the codec's bottleneck.

Dimension legend:
    B: batch, T: new steps in this call, L: cached + new steps (keys), D: d_model,
    H: query heads, G: key/value heads, Dh: head dim, S: number of weight sets (weights_per_step)
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from multistream.streaming import StreamingModule, StreamingState


@dataclasses.dataclass
class TransformerConfig:
    d_model: int = 256  # model width
    num_layers: int = 4
    num_heads: int = 4  # query heads
    num_kv_heads: int | None = None  # key/value heads (GQA); None = num_heads
    ffn_mult: float = 4.0  # hidden = ffn_mult * d_model (2/3 of that per branch when gated)
    gated: bool = True  # SwiGLU feed-forward (Moshi LM); False = plain GELU MLP (Mimi)
    norm: str = "rms"  # "rms" or "layer"
    context: int | None = None  # causal sliding window in steps; None = unlimited
    rope_theta: float = 10000.0
    layer_scale: float | None = None  # initial LayerScale value (Mimi: 0.01); None = off
    dropout: float = 0.0
    weights_per_step: int = 0  # >0: a separate set of weights for each of that many positions (Moshi depformer)
    bias: bool = False

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.num_layers < 0 or self.num_heads <= 0:
            raise ValueError(f"bad transformer sizes: d_model={self.d_model}, layers={self.num_layers}, "
                             f"heads={self.num_heads}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(f"head dim {self.d_model // self.num_heads} must be even for RoPE")
        kv = self.kv_heads
        if kv <= 0 or self.num_heads % kv:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.context is not None and self.context <= 0:
            raise ValueError(f"context must be positive or None, got {self.context}")
        if self.weights_per_step < 0:
            raise ValueError(f"weights_per_step must be >= 0, got {self.weights_per_step}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def hidden_dim(self) -> int:
        h = int(self.ffn_mult * self.d_model)
        return 2 * h // 3 if self.gated else h


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos, sin [T, 1, Dh/2] for integer positions [T]; computed once per transformer call, shared by all layers."""
    half = head_dim // 2
    freqs = torch.exp(-math.log(theta) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None, None] * freqs  # [T, 1, Dh/2]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on x [B, T, heads, Dh] (rotate-halves convention)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class StepLinear(nn.Module):
    """A linear layer, or with `steps > 0` one weight matrix per position (Moshi's multi-linear)."""

    def __init__(self, d_in: int, d_out: int, steps: int, bias: bool) -> None:
        super().__init__()
        self.steps = steps
        if steps == 0:
            self.lin = nn.Linear(d_in, d_out, bias=bias)
        else:
            self.weight = nn.Parameter(torch.empty(steps, d_out, d_in))
            self.bias = nn.Parameter(torch.zeros(steps, d_out)) if bias else None
            for w in self.weight:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.steps == 0:
            return self.lin(x)
        t = x.shape[1]  # x: [B, T, d_in], positions offset..offset+T-1
        if offset + t > self.steps:
            raise ValueError(f"position {offset + t - 1} beyond weights_per_step={self.steps}")
        w = self.weight[offset : offset + t]  # [T, d_out, d_in]
        y = torch.einsum("btd,tod->bto", x, w)
        if self.bias is not None:
            y = y + self.bias[offset : offset + t]
        return y


class RMSNorm(nn.Module):
    """RMS norm with a learned scale; same parameters as nn.RMSNorm, fewer Python layers on the decoding path."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(kind: str, d: int) -> nn.Module:
    return RMSNorm(d) if kind == "rms" else nn.LayerNorm(d, eps=1e-5)


@dataclasses.dataclass
class KVCacheState(StreamingState):
    k: torch.Tensor | None = None  # [B, G, L, Dh], keys already rotated
    v: torch.Tensor | None = None  # [B, G, L, Dh]
    offset: int = 0  # absolute position of the next step


class Attention(StreamingModule):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h, g, dh = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.qkv = StepLinear(d, (h + 2 * g) * dh, cfg.weights_per_step, cfg.bias)
        self.out = StepLinear(h * dh, d, cfg.weights_per_step, cfg.bias)

    def _init_streaming_state(self, batch_size: int) -> KVCacheState:
        return KVCacheState(batch_size=batch_size)

    def forward(self, x: torch.Tensor, offset: int, rot: tuple[torch.Tensor, ...]) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        h, g = cfg.num_heads, cfg.kv_heads
        # plain view/transpose rather than einops here: this is the per-token decoding hot path
        qkv = self.qkv(x, offset).view(b, t, h + 2 * g, cfg.head_dim)  # [B, T, H + 2G, Dh]
        qk = rope(qkv[:, :, : h + g], *rot)  # [B, T, H + G, Dh]: queries and keys rotated in one go
        q = qk[:, :, :h].transpose(1, 2)  # [B, H, T, Dh]
        k = qk[:, :, h:].transpose(1, 2)  # [B, G, T, Dh]
        v = qkv[:, :, h + g :].transpose(1, 2)  # [B, G, T, Dh]

        st: KVCacheState | None = self.state
        if st is not None:
            if st.batch_size != b:
                raise ValueError(f"streaming batch size is {st.batch_size}, got input with batch {b}")
            if st.k is not None:
                k = torch.cat([st.k, k], dim=2)  # [B, G, L, Dh]
                v = torch.cat([st.v, v], dim=2)
            # Keep only what a future query can still see: with a window of `context` steps the next query
            # attends to itself plus the previous context-1 steps.
            keep = k.shape[2] if cfg.context is None else min(k.shape[2], cfg.context - 1)
            st.k, st.v = k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :]
        if cfg.kv_heads != cfg.num_heads:
            rep = cfg.num_heads // cfg.kv_heads
            k = repeat(k, "b g l e -> b (g r) l e", r=rep)  # [B, H, L, Dh]
            v = repeat(v, "b g l e -> b (g r) l e", r=rep)
        if t == 1 and (cfg.context is None or k.shape[2] <= cfg.context):
            allowed = None  # one query that sees every cached key (the decoding hot path)
        else:
            pos_q = torch.arange(offset, offset + t, device=x.device)
            pos_k = torch.arange(offset + t - k.shape[2], offset + t, device=x.device)
            delta = pos_q[:, None] - pos_k[None, :]  # [T, L]
            allowed = delta >= 0
            if cfg.context is not None:
                allowed = allowed & (delta < cfg.context)
        drop = cfg.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)  # [B, H, T, Dh]
        y = y.transpose(1, 2).reshape(b, t, h * cfg.head_dim)  # [B, T, H * Dh]
        return self.out(y, offset)


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.gated = cfg.gated
        n_in = 2 * cfg.hidden_dim if cfg.gated else cfg.hidden_dim
        self.up = StepLinear(cfg.d_model, n_in, cfg.weights_per_step, cfg.bias)
        self.down = StepLinear(cfg.hidden_dim, cfg.d_model, cfg.weights_per_step, cfg.bias)

    def forward(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        h = self.up(x, offset)
        if self.gated:
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = F.gelu(h)
        return self.down(h, offset)


class LayerScale(nn.Module):
    def __init__(self, d: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((d,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Block(StreamingModule):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = make_norm(cfg.norm, cfg.d_model)
        self.ffn = FeedForward(cfg)
        has_ls = cfg.layer_scale is not None
        self.ls1 = LayerScale(cfg.d_model, cfg.layer_scale) if has_ls else None
        self.ls2 = LayerScale(cfg.d_model, cfg.layer_scale) if has_ls else None
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None

    def _branch(self, y: torch.Tensor, ls: LayerScale | None) -> torch.Tensor:
        # optional pieces are skipped rather than called as Identity: this runs ~40 times per decoded frame
        if ls is not None:
            y = ls(y)
        if self.drop is not None and self.training:
            y = self.drop(y)
        return y

    def forward(self, x: torch.Tensor, offset: int, rot: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = x + self._branch(self.attn(self.norm1(x), offset, rot), self.ls1)
        return x + self._branch(self.ffn(self.norm2(x), offset), self.ls2)


@dataclasses.dataclass
class OffsetState(StreamingState):
    offset: int = 0


class StreamingTransformer(StreamingModule):
    """x [B, T, D] -> [B, T, D]. Causal; in streaming mode positions continue across calls."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])

    def _init_streaming_state(self, batch_size: int) -> OffsetState:
        return OffsetState(batch_size=batch_size)

    @property
    def offset(self) -> int:
        return self.state.offset if self.state is not None else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"transformer input must be [B, T, {self.cfg.d_model}], got {tuple(x.shape)}")
        offset = self.offset
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        rot = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, offset, rot)
        if self.state is not None:
            self.state.offset += x.shape[1]
        return x
