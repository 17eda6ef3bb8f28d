"""Causal transformer with RoPE, optional GQA and sliding context, and a streaming KV cache.

The same module serves training (whole sequences, no state) and inference (inside `with m.streaming(B):`, each
call appends its steps to the KV cache and continues the positions). Used by the temporal and depth transformers of
the RQ-Transformer and by the codec's bottleneck.

Streaming KV cache: a preallocated ring buffer of `context` slots per layer (grown by doubling when the context is
unlimited), written in place, so a decoding step costs the same at frame 10 and at frame 2000 (once the ring is
full its shapes are static). Keys are stored already rotated, so their order in the ring does not matter to
attention. While every row started together the rows share one clock and attention needs no mask; after
`reset_streaming(rows)` (a finished episode, an ended conversation) each row has its own clock and its own record
of which slot holds which position, attention is masked per row, and the other rows go on bit-identically.

Dimension legend:
    B: batch, T: new steps in this call, L: keys attended (cache slots, + T new ones for T > 1), C: cache slots,
    D: d_model,
    H: query heads, G: key/value heads, Dh: head dim, S: number of weight sets (weights_per_step)
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
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
    """cos, sin [T, 1, Dh/2] for positions [T] (or [B, T, 1, Dh/2] for per-row positions [B, T]); computed once per
    transformer call, shared by all layers."""
    half = head_dim // 2
    freqs = torch.exp(-math.log(theta) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[..., None, None] * freqs  # [(B,) T, 1, Dh/2]
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
    k: torch.Tensor | None = None  # [B, G, C, Dh] keys already rotated (allocated at the first call)
    v: torch.Tensor | None = None  # [B, G, C, Dh]


@dataclasses.dataclass
class CacheStep:
    """What the transformer tells every layer about one streaming call (shared: all layers see the same slots)."""

    slot: int  # T == 1: the cache slot the new step is written to
    slots: torch.Tensor | None  # T > 1: [M] long, the slots of the last M new steps (M = min(T, C))
    first: int  # T > 1: index (within the T new steps) of the first step that is written
    mask: torch.Tensor | None  # [B or 1, 1, T, L] bool, which keys each query sees; None = all of them
    view: int  # T == 1: attend over cache slots [0, view) after writing (C once the ring is full)


class Attention(StreamingModule):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h, g, dh = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.qkv = StepLinear(d, (h + 2 * g) * dh, cfg.weights_per_step, cfg.bias)
        self.out = StepLinear(h * dh, d, cfg.weights_per_step, cfg.bias)

    def _init_streaming_state(self, batch_size: int) -> KVCacheState:
        return KVCacheState(batch_size=batch_size)

    def _reset_rows(self, rows: torch.Tensor) -> None:
        pass  # stale keys of a reset row stay in its slots but are masked out (the transformer forgets their positions)

    def grow(self, capacity: int) -> None:
        """Enlarge the cache to `capacity` slots (unlimited context); new slots are empty."""
        st: KVCacheState = self.state
        if st.k is not None and st.k.shape[2] < capacity:
            pad = capacity - st.k.shape[2]
            st.k = torch.cat([st.k, st.k.new_zeros(*st.k.shape[:2], pad, st.k.shape[3])], dim=2)
            st.v = torch.cat([st.v, st.v.new_zeros(*st.v.shape[:2], pad, st.v.shape[3])], dim=2)

    def forward(self, x: torch.Tensor, offset: int, rot: tuple[torch.Tensor, ...], cache: CacheStep | None = None,
                capacity: int = 0) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        h, g = cfg.num_heads, cfg.kv_heads
        # plain view/transpose rather than einops here: this is the per-token decoding hot path
        qkv = self.qkv(x, offset).view(b, t, h + 2 * g, cfg.head_dim)  # [B, T, H + 2G, Dh]
        qk = rope(qkv[:, :, : h + g], *rot)  # [B, T, H + G, Dh]: queries and keys rotated in one go
        q = qk[:, :, :h].transpose(1, 2)  # [B, H, T, Dh]
        k = qk[:, :, h:].transpose(1, 2)  # [B, G, T, Dh]
        v = qkv[:, :, h + g :].transpose(1, 2)  # [B, G, T, Dh]

        if cache is None:
            pos = torch.arange(offset, offset + t, device=x.device)
            delta = pos[:, None] - pos[None, :]  # [T, T]
            allowed = delta >= 0
            if cfg.context is not None:
                allowed = allowed & (delta < cfg.context)
        else:
            st: KVCacheState = self.state
            if st.k is None:
                st.k = k.new_zeros(b, g, capacity, cfg.head_dim)  # [B, G, C, Dh]
                st.v = v.new_zeros(b, g, capacity, cfg.head_dim)
            elif st.k.shape[2] < capacity:
                self.grow(capacity)
            if t == 1:  # the decoding hot path: write in place, attend over the filled slots (no copy)
                st.k[:, :, cache.slot : cache.slot + 1].copy_(k)
                st.v[:, :, cache.slot : cache.slot + 1].copy_(v)
                k, v = st.k[:, :, : cache.view], st.v[:, :, : cache.view]  # [B, G, L, Dh] views
            else:  # several steps (a prefill or a chunk): attend over the cache followed by the new steps
                keys, vals = torch.cat([st.k, k], dim=2), torch.cat([st.v, v], dim=2)  # [B, G, C + T, Dh]
                assert cache.slots is not None
                st.k.index_copy_(2, cache.slots, k[:, :, cache.first :].to(st.k.dtype))
                st.v.index_copy_(2, cache.slots, v[:, :, cache.first :].to(st.v.dtype))
                k, v = keys, vals
            allowed = cache.mask
        drop = cfg.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=allowed, dropout_p=drop,
                                           enable_gqa=g != h)  # [B, H, T, Dh]
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

    def forward(self, x: torch.Tensor, offset: int, rot: tuple[torch.Tensor, ...], cache: CacheStep | None = None,
                capacity: int = 0) -> torch.Tensor:
        x = x + self._branch(self.attn(self.norm1(x), offset, rot, cache, capacity), self.ls1)
        return x + self._branch(self.ffn(self.norm2(x), offset), self.ls2)


@dataclasses.dataclass
class TransformerState(StreamingState):
    capacity: int  # C: cache slots (the context, or a growing size when the context is unlimited)
    write: int = 0  # next slot to write (ring index when the context is bounded)
    filled: int = 0  # slots that hold a key (uniform mode)
    steps: int = 0  # steps taken since streaming started (the offset of per-step weights, shared by all rows)
    # Uniform mode (every row started together): one clock `pos` for all rows, slots filled in order, no masks.
    # After a per-row reset the rows' clocks differ: `positions` [B] and `slot_pos` [B, C] (absolute position of
    # the key in each slot per row, -1 = empty) take over, and attention is masked per row.
    uniform: bool = True
    pos: int = 0
    positions: torch.Tensor | None = None
    slot_pos: torch.Tensor | None = None


UNBOUNDED_CACHE_START = 64  # initial slots of an unlimited-context cache (doubled when full)


class StreamingTransformer(StreamingModule):
    """x [B, T, D] -> [B, T, D]. Causal; in streaming mode positions continue across calls."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        # slots of an unlimited-context cache at the start (an owner that knows its sequence length may set it,
        # e.g. the depth transformer: one slot per depth step)
        self.cache_hint = UNBOUNDED_CACHE_START

    def _init_streaming_state(self, batch_size: int) -> TransformerState:
        cap = self.cfg.context if self.cfg.context is not None else self.cache_hint
        return TransformerState(batch_size=batch_size, capacity=cap)

    def _uniform_slot_positions(self, device: torch.device) -> torch.Tensor:
        """[C] absolute position held by each slot in uniform mode (-1 = empty)."""
        st: TransformerState = self.state
        age = (st.write - 1 - torch.arange(st.capacity, device=device)) % st.capacity  # 0 = the newest key
        return torch.where(age < st.filled, st.pos - 1 - age, torch.full_like(age, -1))

    def _reset_rows(self, rows: torch.Tensor) -> None:
        st: TransformerState = self.state
        if bool(rows.all()):  # a whole reset (the depth transformer, every frame): back to slot 0, in place
            st.write = st.filled = st.steps = st.pos = 0
            st.uniform, st.positions, st.slot_pos = True, None, None
            return
        if st.uniform:  # rows' clocks are about to differ: switch to per-row bookkeeping
            device = next(self.parameters()).device
            st.positions = torch.full((st.batch_size,), st.pos, dtype=torch.long, device=device)
            st.slot_pos = self._uniform_slot_positions(device)[None].repeat(st.batch_size, 1)  # [B, C]
            st.uniform = False
        rows = rows.to(st.positions.device)
        st.positions.masked_fill_(rows, 0)
        st.slot_pos.masked_fill_(rows[:, None], -1)

    @property
    def offset(self) -> int:
        """Steps taken since streaming started (0 outside streaming)."""
        return self.state.steps if self.state is not None else 0

    def _grow(self, needed: int, device: torch.device) -> None:
        st: TransformerState = self.state
        new_cap = max(2 * st.capacity, needed)
        if st.slot_pos is not None:
            st.slot_pos = torch.cat([st.slot_pos, st.slot_pos.new_full((st.batch_size, new_cap - st.capacity), -1)],
                                    dim=1)
        st.capacity = new_cap

    def _cache_step(self, t: int, device: torch.device) -> tuple[CacheStep, torch.Tensor]:
        """Slots, mask and positions ([T], or [B, T] per row) for `t` new steps; advances the state."""
        st: TransformerState = self.state
        ctx = self.cfg.context
        if ctx is None and st.write + t > st.capacity:  # unlimited context: grow by doubling
            self._grow(st.write + t, device)
        cap = st.capacity
        slot = st.write
        slots = None
        first = 0
        if t > 1:
            m = min(t, cap)
            first = t - m
            slots = (st.write + first + torch.arange(m, device=device)) % cap  # [M]
        mask = None
        view = min(st.filled + 1, cap)
        if st.uniform:
            positions = torch.arange(st.pos, st.pos + t, device=device)  # [T]
            if t > 1:
                key_pos = torch.cat([self._uniform_slot_positions(device), positions])  # [C + T]
                delta = positions[:, None] - key_pos[None, :]  # [T, L]
                mask = (key_pos[None, :] >= 0) & (delta >= 0)
                if ctx is not None:
                    mask = mask & (delta < ctx)
                mask = mask[None, None]  # [1, 1, T, L]
            st.pos += t
        else:
            assert st.positions is not None and st.slot_pos is not None
            positions = st.positions[:, None] + torch.arange(t, device=device)  # [B, T]
            if t > 1:
                key_pos = torch.cat([st.slot_pos, positions], dim=1)  # [B, C + T]
                st.slot_pos.index_copy_(1, slots, positions[:, first:])
            else:
                st.slot_pos[:, slot] = positions[:, 0]
                key_pos = st.slot_pos[:, :view]  # [B, L]
            delta = positions[:, :, None] - key_pos[:, None, :]  # [B, T, L]
            mask = (key_pos[:, None, :] >= 0) & (delta >= 0)
            if ctx is not None:
                mask = mask & (delta < ctx)
            mask = mask[:, None]  # [B, 1, T, L]
            st.positions += t
        st.write = (st.write + t) % cap if ctx is not None else st.write + t
        st.filled = min(st.filled + t, cap)
        st.steps += t
        return CacheStep(slot=slot, slots=slots, first=first, mask=mask, view=view), positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"transformer input must be [B, T, {self.cfg.d_model}], got {tuple(x.shape)}")
        offset = self.offset
        if self.state is None:
            positions = torch.arange(offset, offset + x.shape[1], device=x.device)  # [T]
            cache, cap = None, 0
        else:
            if self.state.batch_size != x.shape[0]:
                raise ValueError(f"streaming batch size is {self.state.batch_size}, got input with batch {x.shape[0]}")
            cache, positions = self._cache_step(x.shape[1], x.device)  # positions [T] or [B, T]
            cap = self.state.capacity
        rot = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, offset, rot, cache, cap)
        return x
