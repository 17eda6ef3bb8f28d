"""One path from an episode store to model batches: the store-to-token binding.

A `StreamBinding` ties one stream of the model to where its data lives and how it becomes model input:
stream spec + store key + tokenizer (raw values -> codes) or normalisation (continuous features, from the store's
statistics) + an optional validity key. A `StoreBinding` holds one binding per stream of a `StreamSet` and turns
windows of raw episodes (floats, uint8 images, per-frame audio samples, pre-computed codes) into the batches
`RQTransformer.forward` takes: `{stream: [B, K, T] tokens | [B, T, *F] features, valid_key(stream): [B, T]}`.
Every application (the chat data, the robot policy, the toy demo) goes through it; there is no second data path.

Store arrays are time-first at the model's frame rate (`data/<key>` is `[T_total, ...]`): a token stream stored
already tokenized is `[T, K]` (or `[T]` for one codebook); raw values are whatever one frame holds (`[T, C]` floats,
`[T, H, W, C]` uint8 images, `[T, samples_per_frame]` audio). A tokenizer given to a binding encodes the raw
window `[B, T, ...]` with `tokenizer.encode_frames(x)` when it has one (its own layout conversion, e.g. a codec
flattening frames of samples into a waveform), else with `tokenizer.encode(x)`.

One clock: the model's `frame_rate`, the store's `fps` and every tokenizer's `frame_rate` must agree, and a
tokenizer must have the spec's codebooks and vocabulary (build specs with `spec_from_tokenizer` to make a mismatch
impossible). A store that holds codes records which tokenizer made them (`tokenizer_record`, under the store attr
`tokenized`); reading it with a binding whose tokenizer differs is refused.

`StoreBinding.batch_fn` draws the windows of optimizer step s from a generator seeded by (seed, step, micro, rank),
which is what makes `Trainer` resume exactly.

Dimension legend: B batch, T frames, K codebooks, F feature dims.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from einops import rearrange

from multistream.store import EpisodeStore, WindowDataset
from multistream.streams import ZERO_ID, StreamSet, StreamSpec, valid_key
from multistream.tokenizer import Tokenizer

TOKENIZED_ATTR = "tokenized"  # store user attr: {store key: tokenizer_record(tokenizer)} for stored codes
NORMALIZE = ("none", "meanstd", "minmax", "unit")
UINT8_MAX = 255.0


def batch_seed(*parts: int) -> int:
    """The seed of one micro-batch from (seed, step, micro, rank[, salt]): a pure function of its arguments, so that
    a resumed run draws the same batches (hash of a tuple of ints is not salted between runs)."""
    return hash(tuple(int(p) for p in parts)) % (2**31)


def tokenizer_record(tok: Tokenizer) -> dict[str, Any]:
    """What a store remembers of the tokenizer that made its codes (a tokenizer may define `fingerprint`, e.g. a
    hash of its checkpoint; otherwise its class name stands in)."""
    return {
        "fingerprint": str(getattr(tok, "fingerprint", None) or type(tok).__name__),
        "frame_rate": float(tok.frame_rate),
        "num_codebooks": int(tok.num_codebooks),
        "cardinality": int(tok.cardinality),
    }


def check_tokenizer(spec: StreamSpec, tok: Tokenizer, frame_rate: float) -> None:
    """Raise ValueError unless `tok` runs on the model's clock with the spec's codebooks and vocabulary."""
    if not isinstance(tok, Tokenizer):
        raise ValueError(f"stream {spec.name!r}: {type(tok).__name__} is not a Tokenizer (needs frame_rate, "
                         "num_codebooks, cardinality, encode, decode)")
    if spec.continuous:
        raise ValueError(f"stream {spec.name!r} is continuous: it takes features, not a tokenizer")
    if not math.isclose(float(tok.frame_rate), float(frame_rate), rel_tol=1e-9):
        raise ValueError(f"stream {spec.name!r}: its tokenizer runs at {tok.frame_rate} frames/s but the model at "
                         f"{frame_rate}; every stream must share the model's clock")
    if tok.num_codebooks != spec.num_codebooks or tok.cardinality != spec.vocab_size:
        raise ValueError(f"stream {spec.name!r}: tokenizer has {tok.num_codebooks} codebooks x {tok.cardinality} "
                         f"entries, the spec {spec.num_codebooks} x {spec.vocab_size}; build the spec with "
                         "spec_from_tokenizer()")


def spec_from_tokenizer(name: str, tok: Tokenizer, **kwargs: Any) -> StreamSpec:
    """A token stream whose codebooks and vocabulary are the tokenizer's (kwargs: delays, predicted, weights...)."""
    kwargs.setdefault("delays", (0,) * tok.num_codebooks)
    return StreamSpec(name, vocab_size=int(tok.cardinality), num_codebooks=int(tok.num_codebooks), **kwargs)


@dataclasses.dataclass(frozen=True)
class StreamBinding:
    spec: StreamSpec
    key: str = ""  # store key of the stream's data; "" = the stream's name
    tokenizer: Tokenizer | None = None  # token streams: raw values -> codes (None: the store holds codes)
    normalize: str = "none"  # continuous: "none", "meanstd", "minmax" (to [-1, 1]) from the store's stats, or
    #                          "unit" (uint8 images / 255 -> [0, 1])
    valid: str = ""  # continuous: store key of a bool [T] array marking the frames that have a value

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.spec.name)
        if self.normalize not in NORMALIZE:
            raise ValueError(f"stream {self.spec.name!r}: normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if not self.spec.continuous and (self.normalize != "none" or self.valid):
            raise ValueError(f"stream {self.spec.name!r}: normalize/valid apply to continuous streams only "
                             "(token streams say 'no value' with ZERO_ID)")


class StoreBinding:
    """The bindings of every stream of a model, checked against the model's clock (and a store, in `attach`)."""

    def __init__(self, streams: StreamSet, frame_rate: float, bindings: Sequence[StreamBinding] = ()) -> None:
        by_name: dict[str, StreamBinding] = {}
        for b in bindings:
            if not isinstance(b, StreamBinding):
                raise ValueError(f"bindings must be StreamBinding objects, got {type(b).__name__}")
            if b.spec.name not in streams:
                raise ValueError(f"binding for unknown stream {b.spec.name!r}; streams are {streams.names}")
            if streams[b.spec.name] != b.spec:
                raise ValueError(f"binding for stream {b.spec.name!r} has a different spec than the model's")
            if b.spec.name in by_name:
                raise ValueError(f"two bindings for stream {b.spec.name!r}")
            by_name[b.spec.name] = b
        self.streams, self.frame_rate = streams, float(frame_rate)
        self.bindings = [by_name.get(s.name, StreamBinding(s)) for s in streams]
        for b in self.bindings:
            if b.tokenizer is not None:
                check_tokenizer(b.spec, b.tokenizer, self.frame_rate)
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # stream -> (shift, scale)
        self._encode: set[str] = set()  # streams whose raw store values are tokenized on the fly

    @property
    def store_keys(self) -> list[str]:
        keys = [b.key for b in self.bindings] + [b.valid for b in self.bindings if b.valid]
        return list(dict.fromkeys(keys))

    def attach(self, store: EpisodeStore) -> StoreBinding:
        """Check the store against the bindings (clock, keys, shapes, tokenizers) and read the normalisation
        statistics. Raises ValueError naming the store, key and value."""
        if not math.isclose(store.fps, self.frame_rate, rel_tol=1e-9):
            raise ValueError(f"store {store.path} runs at {store.fps} frames/s but the model at {self.frame_rate}")
        for k in self.store_keys:
            if k not in store.keys:
                raise ValueError(f"store {store.path} has no key {k!r} (keys: {store.keys})")
        tokenized = store.attrs.get(TOKENIZED_ATTR, {})
        stats = None
        self._encode = set()
        for b in self.bindings:
            s, arr = b.spec, store.array(b.key)
            trailing = tuple(arr.shape[1:])
            if s.continuous:
                if trailing != s.feature_shape:
                    raise ValueError(f"store key {b.key!r} holds frames of shape {trailing}, stream {s.name!r} "
                                     f"wants {s.feature_shape}")
                if b.normalize in ("meanstd", "minmax"):
                    stats = store.stats if stats is None else stats
                    st = stats[b.key]
                    if b.normalize == "meanstd":
                        shift, scale = st["mean"], np.maximum(st["std"], 1e-6)
                    else:  # to [-1, 1]
                        shift = (st["max"] + st["min"]) / 2
                        scale = np.maximum((st["max"] - st["min"]) / 2, 1e-6)
                    self._norm[s.name] = (torch.as_tensor(shift, dtype=torch.float32),
                                          torch.as_tensor(scale, dtype=torch.float32))
                elif b.normalize == "unit":
                    self._norm[s.name] = (torch.zeros(()), torch.tensor(UINT8_MAX))
                if b.valid and store.array(b.valid).dtype != np.bool_:
                    raise ValueError(f"store key {b.valid!r} (validity of {s.name!r}) must be bool, got "
                                     f"{store.array(b.valid).dtype}")
                continue
            rec = tokenized.get(b.key)
            if rec is not None:  # the store holds codes made by a known tokenizer
                if b.tokenizer is not None and rec != tokenizer_record(b.tokenizer):
                    raise ValueError(f"store {store.path} key {b.key!r} was tokenized by {rec}, but this run uses "
                                     f"{tokenizer_record(b.tokenizer)}; re-tokenize the data or use the same "
                                     "tokenizer")
                if (rec["num_codebooks"], rec["cardinality"]) != (s.num_codebooks, s.vocab_size):
                    raise ValueError(f"store key {b.key!r} holds {rec['num_codebooks']} x {rec['cardinality']} "
                                     f"codes, stream {s.name!r} wants {s.num_codebooks} x {s.vocab_size}")
            elif b.tokenizer is not None:
                self._encode.add(s.name)  # raw values: tokenize on the fly
            if s.name not in self._encode:
                if trailing not in ((s.num_codebooks,), ()) or (trailing == () and s.num_codebooks != 1):
                    raise ValueError(f"store key {b.key!r} holds frames of shape {trailing}; codes of stream "
                                     f"{s.name!r} must be [T, {s.num_codebooks}]")
                if arr.dtype.kind not in "iu":
                    raise ValueError(f"store key {b.key!r} holds {arr.dtype} values; stream {s.name!r} needs "
                                     "integer codes (or a tokenizer in its binding)")
        return self

    def norm_state(self) -> dict[str, dict[str, list]]:
        """The normalisation read from the store (JSON-able), to save beside a checkpoint."""
        return {n: {"shift": sh.tolist(), "scale": sc.tolist()} for n, (sh, sc) in self._norm.items()}

    def load_norm_state(self, state: dict[str, dict[str, list]]) -> StoreBinding:
        """Restore `norm_state()` without a store (inference)."""
        for n, v in state.items():
            if n not in self.streams or not self.streams[n].continuous:
                raise ValueError(f"normalisation for {n!r}, which is not a continuous stream of this model")
            self._norm[n] = (torch.as_tensor(v["shift"], dtype=torch.float32),
                             torch.as_tensor(v["scale"], dtype=torch.float32))
        return self

    def raw_to_batch(self, items: dict[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Live values `{key: [B, T, ...]}` of the streams `names` (e.g. one frame of observations from an env)
        -> model inputs, through the same tokenizers and normalisation as training."""
        return self.to_batch(items, names, raw=True)

    def to_batch(self, items: dict[str, torch.Tensor], names: Sequence[str] | None = None,
                 raw: bool = False) -> dict[str, torch.Tensor]:
        """Raw store windows `{key: [B, T, ...]}` -> model batch (of the streams `names`, default all). Call
        `attach(store)` (or `load_norm_state`) first. `raw`: every stream with a tokenizer holds values to tokenize
        (live input), rather than what `attach` found in the store."""
        encode = {b.spec.name for b in self.bindings if b.tokenizer is not None} if raw else self._encode
        out: dict[str, torch.Tensor] = {}
        for b in self.bindings:
            if names is not None and b.spec.name not in names:
                continue
            s, x = b.spec, items[b.key]
            if s.continuous:
                x = x.float()  # [B, T, *F]
                if s.name in self._norm:
                    shift, scale = self._norm[s.name]
                    x = (x - shift) / scale
                out[s.name] = x
                if b.valid:
                    out[valid_key(s.name)] = items[b.valid].bool()  # [B, T]
            elif s.name in encode:
                assert b.tokenizer is not None
                enc = getattr(b.tokenizer, "encode_frames", b.tokenizer.encode)
                with torch.no_grad():
                    codes = enc(x)  # [B, K, T]
                if tuple(codes.shape) != (x.shape[0], s.num_codebooks, x.shape[1]):
                    want = (x.shape[0], s.num_codebooks, x.shape[1])
                    raise ValueError(f"stream {s.name!r}: tokenizer returned codes {tuple(codes.shape)} for a "
                                     f"window of {x.shape[1]} frames; expected {want}")
                out[s.name] = codes.long()
            else:
                if x.dim() == 2:
                    x = x[:, :, None]  # a single-codebook stream stored as [T]
                out[s.name] = rearrange(x, "b t k -> b k t").long()  # [B, K, T]
        return out

    def episode(self, store: EpisodeStore, i: int) -> dict[str, torch.Tensor]:
        """Episode i of an attached store as a batch of one (replay, evaluation)."""
        ep = store.episode(i, self.store_keys)
        return self.to_batch({k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in ep.items()})

    def batch_fn(self, store: EpisodeStore, window: int, batch_size: int, seed: int = 0,
                 episodes: list[int] | None = None, from_episode_start: bool = False,
                 ) -> Callable[[int, int, int, int], dict[str, torch.Tensor]]:
        """A deterministic `batch_fn(step, micro, rank, world)` over random windows of the store.

        `from_episode_start`: every window starts at an episode's first frame (a policy must hear its command);
        shorter episodes are padded, and their padded frames carry ZERO_ID in every token stream (no target)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.attach(store)
        ds = WindowDataset(store, self.store_keys, window, episodes=episodes, pad=from_episode_start)
        if from_episode_start:
            eps = ds.episodes
            # the window starting at frame 0 of each episode: padded windows start at every frame, in order
            index = list(itertools.accumulate((store.episode_length(e) for e in eps), initial=0))[:-1]
        else:
            index = list(range(len(ds)))
        if len(index) == 0:
            raise ValueError(f"no window of {window} frames fits in the selected episodes of {store.path}")

        def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(batch_seed(seed, step, micro, rank))
            pick = torch.randint(0, len(index), (batch_size,), generator=g).tolist()
            items = [ds[index[i]] for i in pick]
            batch = self.to_batch({k: torch.stack([it[k] for it in items]) for k in self.store_keys})
            if from_episode_start:
                real = torch.stack([it["mask"] for it in items])  # [B, T]
                for s in self.streams.token_streams:
                    batch[s.name] = batch[s.name].masked_fill(~real[:, None, :], ZERO_ID)
            return batch

        return fn


def episode_to_arrays(batch_item: dict[str, torch.Tensor], streams: StreamSet) -> dict[str, np.ndarray]:
    """Writing side of the identity binding: one episode `{stream: [K, T] | [T, *F]}` -> time-first numpy."""
    out = {}
    for s in streams:
        x = batch_item[s.name]
        out[s.name] = (x if s.continuous else rearrange(x, "k t -> t k")).cpu().numpy()
    return out


def store_batch_fn(
    store: EpisodeStore, streams: StreamSet, window: int, batch_size: int, seed: int = 0,
    episodes: list[int] | None = None, frame_rate: float | None = None,
) -> Callable[[int, int, int, int], dict[str, torch.Tensor]]:
    """The identity binding's `batch_fn`: every stream read (as codes or features) from the store key of its name.
    `frame_rate` is the model's (`LMConfig.frame_rate`); None takes the store's own fps."""
    rate = store.fps if frame_rate is None else frame_rate
    return StoreBinding(streams, rate).batch_fn(store, window, batch_size, seed=seed, episodes=episodes)
