"""Frame-by-frame inference: `Generator.step()` consumes one frame of the world's streams and returns one frame of
the model's streams.

The caller hands in, every frame, the undelayed frame t of each input-only stream (and, to teacher-force or replay
a recorded stream, of predicted streams too: any prefix of frames may be forced and the model continues from
there; `FREE_ID` in a row or codebook of a forced frame lets the model generate that one, so rows in different
phases, one listening and one acting, share a step). Internally the generator keeps the delay lines. At step t the
temporal transformer consumes the delayed frame t-1 of every stream plus the delayed frame t of the `same_frame`
inputs (observe, then act); the predicted codebooks of delayed frame t are then sampled one by one by the depth
transformer.

Output timing is per stream: stream s comes back as soon as its own delays have filled, i.e. step t returns the
undelayed frame t - D_s of s (D_s = the largest delay of s). A zero-delay action stream returns the frame it was
asked for while an audio stream with an acoustic delay of 2 returns the frame two steps back.

Rows are independent: each batch row has its own frame clock, and `reset(rows)` restarts some rows (an env that
finished, a conversation that ended) while the others continue bit-identically.

Dimension legend: B batch, K codebooks of a stream, F continuous feature dims, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from multistream.lm import RQTransformer
from multistream.streaming import rows_mask
from multistream.streams import FREE_ID, VALID_SUFFIX, StreamSpec, valid_key


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8  # <= 0: greedy (argmax)
    top_k: int = 0  # 0: whole vocabulary

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclasses.dataclass
class StepOutput:
    tokens: dict[str, torch.Tensor]  # per predicted stream that has a frame ready in at least one row: [B, K]
    frames: dict[str, torch.Tensor]  # per stream in `tokens`: [B] long, the undelayed frame of each row; -1 where
    #                                  that row's delays have not filled yet (its tokens there are `initial_id`)

    @property
    def frame(self) -> int:
        """The one frame index, when every returned stream and row agree (a single episode started together)."""
        vals = {int(v) for f in self.frames.values() for v in f.tolist()}
        if len(vals) != 1:
            raise ValueError(f"streams/rows are at different frames {sorted(vals)}; read StepOutput.frames")
        return vals.pop()


def sample(logits: torch.Tensor, s: Sampling, rng: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> ids [B]."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        top = torch.topk(logits, s.top_k, dim=-1)  # sample among the k best only: [B, k]
        pick = torch.multinomial(torch.softmax(top.values, dim=-1), 1, generator=rng)  # [B, 1]
        return top.indices.gather(1, pick).squeeze(1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=rng).squeeze(1)


@dataclasses.dataclass
class _Features:
    values: torch.Tensor  # [B, *F]
    valid: torch.Tensor  # [B] bool


class Generator:
    """`with Generator(model, ...) as gen: out = gen.step({"user": frame, ...})`."""

    def __init__(
        self,
        model: RQTransformer,
        batch_size: int = 1,
        sampling: Sampling | dict[str, Sampling] | None = None,
        seed: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.ss = model.streams
        self.batch_size = batch_size
        default = sampling if isinstance(sampling, Sampling) else Sampling()
        per = sampling if isinstance(sampling, dict) else {}
        for n in per:
            if not self.ss[n].predicted:  # raises on an unknown stream name
                raise ValueError(f"sampling given for input-only stream {n!r}")
        self.sampling = {s.name: per.get(s.name, default) for s in self.ss.predicted}
        p = next(model.parameters())
        self.device = p.device
        self.dtype = p.dtype  # a model cast to bf16 runs in bf16 without autocast's per-call weight casts
        self.rng = torch.Generator(device=self.device)
        if seed is not None:
            self.rng.manual_seed(seed)
        self.autocast_dtype = autocast_dtype
        self.out_delay = max(s.max_delay for s in self.ss.predicted)
        # every token codebook in embedding order: its stream and its index within the stream
        self._token_codebooks = [s for s in self.ss.token_streams for _ in range(s.num_codebooks)]
        self._codebook_index = [k for s in self.ss.token_streams for k in range(s.num_codebooks)]
        self._ctx = None
        self.last_logits: dict[str, torch.Tensor] = {}  # per predicted stream [B, K, V] at the last step

    # ---- lifecycle ----

    def __enter__(self) -> Generator:
        self._ctx = self.model.streaming(self.batch_size)
        self._ctx.__enter__()
        self._reset_state()
        return self

    def __exit__(self, *exc) -> None:
        assert self._ctx is not None
        self._ctx.__exit__(*exc)
        self._ctx = None

    def reset(self, rows: torch.Tensor | Sequence[int] | None = None) -> None:
        """Start a new episode inside the same `with` block: for every row (rows=None) or only the given rows
        (indices or bool mask [B]); the other rows continue exactly as if nothing happened."""
        if self._ctx is None:
            raise RuntimeError("use Generator inside a `with` block")
        if rows is None:
            self.model.reset_streaming()
            self._reset_state()
            return
        mask = rows_mask(rows, self.batch_size).to(self.device)
        self.model.reset_streaming(mask)
        self.row_t.masked_fill_(mask, 0)
        self.min_row_t = 0
        for i, s in enumerate(self._token_codebooks):
            self.prev_tokens[i].masked_fill_(mask, s.initial_id)
        for f in self.prev_features.values():
            f.valid.masked_fill_(mask, False)

    def _reset_state(self) -> None:
        b = self.batch_size
        self.t = 0  # steps since the `with` block started (all rows)
        self.row_t = torch.zeros(b, dtype=torch.long, device=self.device)  # frames of each row since its reset
        self.min_row_t = 0  # a lower bound of row_t (python int): no per-row gating once every delay has filled
        keep = max(s.max_delay for s in self.ss) + 2
        # caller-supplied undelayed frames, newest last; None where a predicted stream was not forced
        self.history: dict[str, deque] = {s.name: deque(maxlen=keep) for s in self.ss}
        self.generated: deque = deque(maxlen=self.out_delay + 1)  # delayed predicted tokens of each step
        # temporal input of the next step for streams fed one frame late (all but same-frame inputs)
        self.prev_tokens = [torch.full((b,), s.initial_id, dtype=torch.long, device=self.device)
                            for s in self._token_codebooks]
        self.prev_features = {s.name: self._missing(s) for s in self.ss if s.continuous}

    def _missing(self, s: StreamSpec) -> _Features:
        b = self.batch_size
        return _Features(torch.zeros(b, *s.feature_shape, device=self.device, dtype=self.dtype),
                         torch.zeros(b, dtype=torch.bool, device=self.device))

    # ---- inputs ----

    def _as_tensor(self, name: str, x: object) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"stream {name!r}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
        return x

    def _check_frame(self, name: str, x: object, valid: object) -> torch.Tensor | _Features:
        spec = self.ss[name]
        b = self.batch_size
        if spec.continuous:
            if x is None:
                return self._missing(spec)
            x = self._as_tensor(name, x)
            if tuple(x.shape) != (b, *spec.feature_shape):
                raise ValueError(f"stream {name!r}: expected a frame of features {[b, *spec.feature_shape]}, "
                                 f"got {list(x.shape)}")
            if not x.dtype.is_floating_point:
                raise ValueError(f"stream {name!r}: features must be floating point, got {x.dtype}")
            if valid is None:
                v = torch.ones(b, dtype=torch.bool, device=self.device)
            else:
                v = self._as_tensor(valid_key(name), valid)
                if v.dtype != torch.bool or tuple(v.shape) != (b,):
                    raise ValueError(f"{valid_key(name)!r} must be a bool tensor of shape ({b},), got {v.dtype} "
                                     f"{tuple(v.shape)}")
                v = v.to(self.device)
            # contiguous: results must not depend on how the caller laid out its tensors (GEMM paths differ)
            return _Features(x.to(self.device, self.dtype).contiguous(), v)
        if x is None:
            raise ValueError(f"stream {name!r}: a token frame cannot be None (use ZERO_ID for 'no input')")
        x = self._as_tensor(name, x)
        if tuple(x.shape) != (b, spec.num_codebooks):
            raise ValueError(f"stream {name!r}: expected a frame of tokens [{b}, {spec.num_codebooks}], "
                             f"got {list(x.shape)}")
        spec.check_token_values(x, allow_free=spec.predicted)
        return x.to(self.device, torch.long).contiguous()

    def _at(self, spec: StreamSpec, d: int):
        """The caller's frame of `spec` at delay d from the newest (None if not supplied or before the start)."""
        hist = self.history[spec.name]
        return hist[len(hist) - 1 - d] if d < len(hist) else None

    def _delayed_token(self, spec: StreamSpec, k: int) -> torch.Tensor:
        """Codebook k of a caller-supplied token stream at the current delayed frame: undelayed frame t - d_k of
        each row, or `initial_id` in rows whose clock has not reached d_k."""
        d = spec.delays[k]
        frame = self._at(spec, d)
        if frame is not None and self.min_row_t >= d:  # the hot path: every row past the delay, nothing to build
            return frame[:, k]
        init = torch.full((self.batch_size,), spec.initial_id, dtype=torch.long, device=self.device)
        return init if frame is None else torch.where(self.row_t >= d, frame[:, k], init)

    def _delayed_features(self, spec: StreamSpec) -> _Features:
        d = spec.delays[0]
        frame = self._at(spec, d)
        if frame is None:
            return self._missing(spec)
        return _Features(frame.values, frame.valid & (self.row_t >= d))

    # ---- one frame ----

    @torch.no_grad()
    def step(self, inputs: dict[str, object] | None = None) -> StepOutput | None:
        """inputs: undelayed frame t per input-only stream ([B, K] tokens or [B, *F] features; a continuous stream
        may be None or carry a validity mask under `valid_key(name)`, bool [B]), required; and optionally per
        predicted stream (teacher forcing, at any frames). Returns, per predicted stream whose delays have filled
        in some row, its undelayed frame t - D_s; None when no stream is ready yet."""
        if self._ctx is None:
            raise RuntimeError("use Generator inside a `with` block")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise ValueError(f"inputs must be a dict of stream name -> frame, got {type(inputs).__name__}")
        frames: dict[str, object] = {}
        for n in inputs:
            if isinstance(n, str) and n.endswith(VALID_SUFFIX):
                base = n[: -len(VALID_SUFFIX)]
                if base not in self.ss or not self.ss[base].continuous:
                    raise ValueError(f"validity mask {n!r} names no continuous stream")
                if base not in inputs:
                    raise ValueError(f"validity mask {n!r} given without the stream's features")
                continue
            self.ss[n]  # raises on an unknown stream name
        for s in self.ss.inputs:
            if s.name not in inputs:
                raise ValueError(f"missing input stream {s.name!r} at frame {self.t}")
        for s in self.ss:
            if s.name in inputs:
                frames[s.name] = self._check_frame(s.name, inputs[s.name], inputs.get(valid_key(s.name)))
        for s in self.ss:
            self.history[s.name].append(frames.get(s.name))

        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            chosen = self._frame()
        self.t += 1
        self.row_t += 1
        self.min_row_t += 1
        self.generated.append(chosen)

        out: dict[str, torch.Tensor] = {}
        out_frames: dict[str, torch.Tensor] = {}
        i = 0
        for s in self.ss.predicted:
            ds = s.max_delay
            frame = self.row_t - 1 - ds  # [B]
            if self.min_row_t - 1 - ds >= 0 or bool((frame >= 0).any()):
                cols = []
                for k in range(s.num_codebooks):
                    # codebook k of undelayed frame f was produced at row step f + d_k, (D_s - d_k) steps ago
                    tok = self.generated[len(self.generated) - 1 - (ds - s.delays[k])][i + k]
                    if self.min_row_t - 1 - ds < 0:
                        tok = torch.where(frame >= 0, tok, torch.full_like(tok, s.initial_id))
                    cols.append(tok)
                out[s.name] = torch.stack(cols, dim=1)  # [B, K]
                out_frames[s.name] = frame.clamp_min(-1)
            i += s.num_codebooks
        if not out:
            return None
        return StepOutput(tokens=out, frames=out_frames)

    def _frame(self) -> list[torch.Tensor]:
        m = self.model
        # temporal input: delayed frame t-1 of every stream, delayed frame t of the same-frame inputs
        toks = []
        for i, s in enumerate(self._token_codebooks):
            if s.same_frame:
                toks.append(self._delayed_token(s, self._codebook_index[i]))
            else:
                toks.append(self.prev_tokens[i])
        feats = {}
        for s in self.ss:
            if s.continuous:
                f = self._delayed_features(s) if s.same_frame else self.prev_features[s.name]
                feats[s.name] = (f.values[:, None], f.valid[:, None])
        x = m.embed_frames([p[:, None] for p in toks], feats)  # [B, 1, D]
        h = m.out_norm(m.temporal(x))[:, 0]  # [B, D]

        chosen: list[torch.Tensor] = []
        logits_all: list[torch.Tensor] = []
        if m.depth is not None:
            m.depth.reset_streaming()
        for j, (spec, k) in enumerate(m.pred):
            if j == 0:
                lg = m.head0(h)
            else:
                (lg,) = m.depth_logits(h, [chosen[-1]], j)
            lg = lg.float()  # [B, V]
            logits_all.append(lg)
            forced = self._at(spec, spec.delays[k])
            if forced is not None:
                tok = self._delayed_token(spec, k)
                free = tok == FREE_ID  # rows the caller leaves to the model
                if bool(free.any()):
                    tok = torch.where(free, sample(lg, self.sampling[spec.name], self.rng), tok)
            else:
                tok = sample(lg, self.sampling[spec.name], self.rng)
                if self.min_row_t < spec.delays[k]:
                    init = torch.full_like(tok, spec.initial_id)
                    tok = torch.where(self.row_t >= spec.delays[k], tok, init)
            chosen.append(tok)

        # the delayed frame t of every stream becomes the temporal input of the next step
        nxt, i_pred = [], 0
        for i, s in enumerate(self._token_codebooks):
            if s.predicted:
                nxt.append(chosen[i_pred])
                i_pred += 1
            elif s.same_frame:
                nxt.append(self.prev_tokens[i])  # unused: same-frame inputs are read from the history
            else:
                nxt.append(self._delayed_token(s, self._codebook_index[i]))
        self.prev_tokens = nxt
        for s in self.ss:
            if s.continuous and not s.same_frame:
                self.prev_features[s.name] = self._delayed_features(s)
        i = 0
        self.last_logits = {}
        for s in self.ss.predicted:
            self.last_logits[s.name] = torch.stack(logits_all[i : i + s.num_codebooks], dim=1)  # [B, K, V]
            i += s.num_codebooks
        return chosen
