"""The multistream RQ-Transformer: a temporal transformer over frames and a depth transformer within a frame.

Training forward (this file) and the one-frame inference step (`generate.py`) share the same modules.

At frame position t the temporal transformer sees the sum of the embeddings of every codebook of every stream at
(delayed) frame t-1 (`initial_id` at t=0), so that predicting frame t never sees any stream's frame t, except the
input-only streams marked `same_frame`, whose (delayed) frame t is in the sum (observe, then act). Its output
h_t predicts the first predicted codebook directly (Moshi's text head); each further predicted codebook j >= 1 is a
step of the depth transformer whose input is `depth_in[j](h_t) + depth_emb[j](token_{j-1})`, the previous
predicted codebook of the same frame (teacher-forced in training, sampled in inference).

Dimension legend:
    B batch, T frames, D temporal width, E depth width, K codebooks of one stream, P predicted codebooks,
    V vocabulary of one codebook, F continuous feature dims (one or more)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from einops import rearrange
from torch import nn

from multistream.encoders import ENCODERS, ContinuousInput
from multistream.streaming import StreamingModule
from multistream.streams import ZERO_ID, StreamSet, StreamSpec, delay, valid_key
from multistream.transformer import RMSNorm, StreamingTransformer, TransformerConfig


@dataclasses.dataclass
class LMConfig:
    streams: StreamSet
    temporal: TransformerConfig = dataclasses.field(default_factory=TransformerConfig)
    depth: TransformerConfig = dataclasses.field(default_factory=lambda: TransformerConfig(d_model=128))
    adapter_hidden: int = 0  # hidden width of continuous-stream encoders; 0 = temporal d_model
    init_std: float = 0.02
    frame_rate: float = 12.5  # the one clock: frames per second of every stream (tokenizers must agree)

    def __post_init__(self) -> None:
        if isinstance(self.streams, tuple | list):
            self.streams = StreamSet(tuple(self.streams))
        if not isinstance(self.streams, StreamSet):
            raise ValueError(f"streams must be a StreamSet, got {type(self.streams).__name__}")
        if not (isinstance(self.frame_rate, int | float) and math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {self.frame_rate!r}")
        for s in self.streams:
            if s.continuous and s.encoder not in ENCODERS:
                raise ValueError(f"stream {s.name!r}: unknown encoder {s.encoder!r}; registered: {sorted(ENCODERS)}")
        n_depth = self.streams.num_predicted - 1
        wps = self.depth.weights_per_step
        if wps and wps != n_depth:
            raise ValueError(f"depth.weights_per_step={wps} must equal the depth steps ({n_depth} = predicted "
                             f"codebooks - 1) or 0")


@dataclasses.dataclass
class LMOutput:
    logits: dict[str, torch.Tensor]  # per predicted stream: [B, K, T, V], aligned with targets
    targets: dict[str, torch.Tensor]  # per predicted stream: [B, K, T] delayed tokens
    mask: dict[str, torch.Tensor]  # per predicted stream: [B, K, T] bool, True where the target counts


def module_key(name: str) -> str:
    """A stream name as an nn.ModuleDict key ('.' is not allowed there)."""
    return name.replace(".", "__")


def shift_time(x: torch.Tensor, n: int, fill: float | int | bool, dim: int) -> torch.Tensor:
    """Shift `x` right by n steps along `dim`, keeping its length: the first n steps hold `fill`."""
    t = x.shape[dim]
    n = min(n, t)
    if n == 0:
        return x
    pad_shape = list(x.shape)
    pad_shape[dim] = n
    return torch.cat([x.new_full(pad_shape, fill), x.narrow(dim, 0, t - n)], dim=dim)


def embed_or_zero(emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Embedding lookup where ZERO_ID ("no input") gives a zero vector. ids [...] -> [..., D]."""
    zero = ids == ZERO_ID
    out = emb(ids.clamp_min(0))
    return out.masked_fill(zero[..., None], 0.0)


class RQTransformer(StreamingModule):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ss = cfg.streams
        d = cfg.temporal.d_model
        # one embedding table per token codebook, in stream order (initial_id is the extra last row)
        self.embs = nn.ModuleList(
            nn.Embedding(s.vocab_size + 1, d) for s in ss.token_streams for _ in range(s.num_codebooks)
        )
        hidden = cfg.adapter_hidden or d
        # continuous-stream encoders, keyed by module_key(name) (stream names like "observation.state" have dots)
        self.adapters = nn.ModuleDict({module_key(s.name): ContinuousInput(s, hidden, d) for s in ss if s.continuous})
        if len(self.adapters) != sum(s.continuous for s in ss):
            raise ValueError(f"continuous stream names collide once '.' becomes '__': {[s.name for s in ss]}")
        self.temporal = StreamingTransformer(cfg.temporal)
        self.out_norm = RMSNorm(d)
        # the predicted codebooks in generation order: (spec, codebook index within its stream)
        self.pred: list[tuple[StreamSpec, int]] = [(s, k) for s in ss.predicted for k in range(s.num_codebooks)]
        self.head0 = nn.Linear(d, self.pred[0][0].vocab_size, bias=False)
        n_depth = len(self.pred) - 1
        e = cfg.depth.d_model
        self.depth_in = nn.ModuleList(nn.Linear(d, e, bias=False) for _ in range(n_depth))
        self.depth_emb = nn.ModuleList(nn.Embedding(self.pred[j][0].vocab_size + 1, e) for j in range(n_depth))
        self.depth = StreamingTransformer(cfg.depth) if n_depth else None
        if self.depth is not None:
            self.depth.cache_hint = n_depth  # one cache slot per depth step: the depth cache never grows
        self.depth_norm = RMSNorm(e) if n_depth else None
        self.depth_heads = nn.ModuleList(
            nn.Linear(e, self.pred[j + 1][0].vocab_size, bias=False) for j in range(n_depth)
        )
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=self.cfg.init_std)

    @property
    def streams(self) -> StreamSet:
        return self.cfg.streams

    # ---- pieces shared by the training forward and the inference step ----

    def embed_frames(self, tokens: list[torch.Tensor],
                     features: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Sum of embeddings. tokens: per token codebook [B, T] (already delayed and shifted); features: per
        continuous stream (values [B, T, *F], valid [B, T]) already delayed and shifted -> [B, T, D]."""
        x = embed_or_zero(self.embs[0], tokens[0])
        for emb, ids in zip(self.embs[1:], tokens[1:], strict=True):
            x = x + embed_or_zero(emb, ids)
        for name, (f, valid) in features.items():
            x = x + self.adapters[module_key(name)](f, valid).to(x.dtype)
        return x

    def depth_logits(self, h: torch.Tensor, prev: list[torch.Tensor], start: int) -> list[torch.Tensor]:
        """Depth steps start..start+len(prev)-1 (1-based predicted-codebook index j).

        h [N, D] temporal output per frame; prev[i] [N] token of predicted codebook (start + i - 1) -> logits of
        predicted codebooks start..: list of [N, V]. Outside streaming this must start at 1 (whole frame).
        """
        assert self.depth is not None and self.depth_norm is not None
        xs = [self.depth_in[j - 1](h) + embed_or_zero(self.depth_emb[j - 1], p) for j, p in enumerate(prev, start)]
        x = torch.stack(xs, dim=1)  # [N, S, E]
        y = self.depth_norm(self.depth(x))  # [N, S, E]
        return [self.depth_heads[j - 1](y[:, i]) for i, j in enumerate(range(start, start + len(prev)))]

    # ---- training forward ----

    def forward(self, batch: dict[str, torch.Tensor]) -> LMOutput:
        """batch: per stream tokens [B, K, T] (undelayed) or features [B, T, F]. Returns logits aligned with the
        delayed targets; frames a delay leaves empty are masked out."""
        ss = self.streams
        b, t = ss.check_batch(batch)
        tokens: list[torch.Tensor] = []
        targets: dict[str, torch.Tensor] = {}
        mask: dict[str, torch.Tensor] = {}
        for s in ss.token_streams:
            x = batch[s.name].long()
            dl, valid = delay(x, s.delays, fill=s.initial_id)  # [B, K, T]
            if s.predicted:
                targets[s.name] = dl
                mask[s.name] = valid & (dl != ZERO_ID)
            # frame t sees frame t-1, except same-frame inputs (observe, then act)
            inp = dl if s.same_frame else shift_time(dl, 1, s.initial_id, dim=2)  # [B, K, T]
            tokens.extend(inp.unbind(1))
        features = {}
        for s in ss:
            if s.continuous:
                f = batch[s.name]  # [B, T, *F]
                valid = batch.get(valid_key(s.name))
                valid = torch.ones(b, t, dtype=torch.bool, device=f.device) if valid is None else valid.bool()
                shift = s.delays[0] + (0 if s.same_frame else 1)
                features[s.name] = (shift_time(f, shift, 0.0, dim=1), shift_time(valid, shift, False, dim=1))
        h = self.out_norm(self.temporal(self.embed_frames(tokens, features)))  # [B, T, D]

        all_logits = [self.head0(h)]  # [B, T, V]
        if self.depth is not None:
            flat_t = [rearrange(targets[s.name][:, k], "b t -> (b t)") for s, k in self.pred[:-1]]  # [B*T]
            hf = rearrange(h, "b t d -> (b t) d")  # [B*T, D]
            for lg in self.depth_logits(hf, flat_t, 1):
                all_logits.append(rearrange(lg, "(b t) v -> b t v", b=b))  # [B, T, V]
        logits: dict[str, torch.Tensor] = {}
        i = 0
        for s in ss.predicted:
            logits[s.name] = torch.stack(all_logits[i : i + s.num_codebooks], dim=1)  # [B, K, T, V]
            i += s.num_codebooks
        return LMOutput(logits=logits, targets=targets, mask=mask)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
