"""Frame-by-frame inference: `Generator.step()` consumes one frame of the world's streams and returns one frame of
the model's streams.

The caller hands in, every frame, the undelayed frame t of each input-only stream (and, to teacher-force or replay
a recorded stream, of predicted streams too). Internally the generator keeps the delay lines: at step t the
temporal transformer consumes the delayed tokens of frame t-1, the predicted codebooks of delayed frame t are
sampled one by one (the depth transformer with its own per-frame KV cache), and once every delay has filled the
step returns the undelayed frame t - D (D = the largest delay of a predicted stream); before that it returns None.

Dimension legend: B batch, K codebooks of a stream, F continuous features, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import torch

from multistream.lm import RQTransformer
from multistream.streams import StreamSpec


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8  # <= 0: greedy (argmax)
    top_k: int = 0  # 0: whole vocabulary

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclasses.dataclass
class StepOutput:
    frame: int  # index of the undelayed frame these tokens belong to
    tokens: dict[str, torch.Tensor]  # per predicted stream: [B, K]


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
        self.model = model
        self.ss = model.streams
        self.batch_size = batch_size
        default = sampling if isinstance(sampling, Sampling) else Sampling()
        per = sampling if isinstance(sampling, dict) else {}
        for n in per:
            self.ss[n]  # raises on an unknown stream name
        self.sampling = {s.name: per.get(s.name, default) for s in self.ss.predicted}
        p = next(model.parameters())
        self.device = p.device
        self.dtype = p.dtype  # a model cast to bf16 runs in bf16 without autocast's per-call weight casts
        self.rng = torch.Generator(device=self.device)
        if seed is not None:
            self.rng.manual_seed(seed)
        self.autocast_dtype = autocast_dtype
        self.out_delay = max(s.max_delay for s in self.ss.predicted)
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

    def reset(self) -> None:
        """Start a new episode inside the same `with` block."""
        self.model.reset_streaming()
        self._reset_state()

    def _reset_state(self) -> None:
        self.t = 0
        depth_keep = max(s.max_delay for s in self.ss) + 2
        # undelayed frames seen so far, per stream (inputs and teacher-forced predicted streams)
        self.history: dict[str, deque] = {s.name: deque(maxlen=depth_keep) for s in self.ss}
        self.generated: deque = deque(maxlen=self.out_delay + 1)  # delayed predicted tokens per step
        b = self.batch_size
        self.prev_tokens = [torch.full((b,), s.initial_id, dtype=torch.long, device=self.device)
                            for s in self.ss.token_streams for _ in range(s.num_codebooks)]
        self.prev_features = {s.name: torch.zeros(b, s.feature_dim, device=self.device, dtype=self.dtype)
                              for s in self.ss if s.continuous}
        self._forced_prev: dict[str, bool] = {}

    # ---- one frame ----

    def _check_frame(self, name: str, x: torch.Tensor) -> torch.Tensor:
        spec = self.ss[name]
        b = self.batch_size
        if spec.continuous:
            if x.shape != (b, spec.feature_dim):
                raise ValueError(f"stream {name!r}: expected a frame of features [{b}, {spec.feature_dim}], "
                                 f"got {tuple(x.shape)}")
            return x.to(self.device, self.dtype)
        if x.shape != (b, spec.num_codebooks):
            raise ValueError(f"stream {name!r}: expected a frame of tokens [{b}, {spec.num_codebooks}], "
                             f"got {tuple(x.shape)}")
        spec.check_token_values(x)
        return x.to(self.device, torch.long)

    def _delayed(self, spec: StreamSpec, k: int) -> torch.Tensor:
        """Token of codebook k of a caller-supplied stream at delayed frame t: frame t - d_k, or initial."""
        src = self.t - spec.delays[k]
        if src < 0:
            return torch.full((self.batch_size,), spec.initial_id, dtype=torch.long, device=self.device)
        hist = self.history[spec.name]
        return hist[len(hist) - 1 - (self.t - src)][:, k]

    @torch.no_grad()
    def step(self, inputs: dict[str, torch.Tensor] | None = None) -> StepOutput | None:
        """inputs: undelayed frame t per input-only stream ([B, K] tokens or [B, F] features), required; and
        optionally per predicted stream (teacher forcing). Returns the undelayed frame t - D, or None while t < D."""
        if self._ctx is None:
            raise RuntimeError("use Generator inside a `with` block")
        inputs = dict(inputs or {})
        for n in inputs:
            self.ss[n]
        for s in self.ss.inputs:
            if s.name not in inputs:
                raise ValueError(f"missing input stream {s.name!r} at frame {self.t}")
        for n, x in inputs.items():
            self.history[n].append(self._check_frame(n, x))
        forced = {s.name for s in self.ss.predicted if s.name in inputs}
        if self.t > 0:
            for s in self.ss.predicted:  # a stream is teacher-forced for a whole run or not at all
                if (s.name in forced) != self._forced_prev.get(s.name, s.name in forced):
                    raise ValueError(f"stream {s.name!r} was teacher-forced at some frames and not at others")
        self._forced_prev = {s.name: s.name in forced for s in self.ss.predicted}

        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            chosen = self._frame(forced)
        self.t += 1
        self.generated.append(chosen)
        if self.t - 1 < self.out_delay:
            return None
        frame = self.t - 1 - self.out_delay
        out: dict[str, torch.Tensor] = {}
        i = 0
        for s in self.ss.predicted:
            cols = []
            for k in range(s.num_codebooks):
                step_idx = frame + s.delays[k]  # the delayed step that produced this token
                cols.append(self.generated[len(self.generated) - 1 - (self.t - 1 - step_idx)][i + k])
            out[s.name] = torch.stack(cols, dim=1)  # [B, K]
            i += s.num_codebooks
        return StepOutput(frame=frame, tokens=out)

    def _frame(self, forced: set[str]) -> list[torch.Tensor]:
        m = self.model
        x = m.embed_frames([p[:, None] for p in self.prev_tokens],
                           {n: f[:, None] for n, f in self.prev_features.items()})  # [B, 1, D]
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
            if spec.name in forced or self.t < spec.delays[k]:
                tok = self._delayed(spec, k) if spec.name in forced else \
                    torch.full((self.batch_size,), spec.initial_id, dtype=torch.long, device=self.device)
            else:
                tok = sample(lg, self.sampling[spec.name], self.rng)
            chosen.append(tok)

        # the delayed frame t of every stream becomes the temporal input of the next step
        nxt, i_pred = [], 0
        for s in self.ss.token_streams:
            for k in range(s.num_codebooks):
                if s.predicted:
                    nxt.append(chosen[i_pred])
                    i_pred += 1
                else:
                    nxt.append(self._delayed(s, k))
        self.prev_tokens = nxt
        for s in self.ss:
            if s.continuous:
                src = self.t - s.delays[0]
                hist = self.history[s.name]
                self.prev_features[s.name] = hist[len(hist) - 1 - (self.t - src)] if src >= 0 else \
                    torch.zeros(self.batch_size, s.feature_dim, device=self.device, dtype=self.dtype)
        i = 0
        self.last_logits = {}
        for s in self.ss.predicted:
            self.last_logits[s.name] = torch.stack(logits_all[i : i + s.num_codebooks], dim=1)  # [B, K, V]
            i += s.num_codebooks
        return chosen
