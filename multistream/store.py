"""Zarr episode store in the diffusion-policy layout, and windowed torch datasets over it.

Layout of one store (a zarr 3 group on disk):

    data/<key>          arrays concatenated over time, `[T_total, ...]` (time first), one per stream/feature key
    meta/episode_ends   int64, cumulative end index of every episode (episode i is data[ends[i-1]:ends[i]])
    meta/episode_meta   string, one JSON object per episode (e.g. the instruction text, the seed)
    attrs               fps, per-key statistics, user attrs

Keys follow LeRobot names where they exist (`observation.images.front`, `observation.state`, `action`) plus
`audio.user`, `audio.agent`, `text`. Only whole episodes are appended: appending single steps to zarr is
hundreds of times slower and would expose half-written episodes.

Crash safety: `append_episode` writes the data arrays first, then the episode's metadata entry, then the attrs
(statistics), and `meta/episode_ends` last. Every single file write of zarr's LocalStore is atomic (temp file +
rename), so a crash at any point leaves a store whose readable episodes are exactly the complete ones: data arrays
may be longer than `episode_ends[-1]`, `episode_meta` may hold one extra entry and the statistics may count one
extra episode, but readers go by `episode_ends` (statistics are recomputed from the committed steps when their
episode count disagrees), and the next append overwrites the tail. Growing `episode_ends` is a resize (metadata
file) followed by a chunk write; a crash between the two leaves a trailing fill value (0), which is not a valid
cumulative end and is dropped by readers.

Several writers: `append_episode` holds an exclusive lock (`flock` on `<store>/.append.lock`) and re-reads the
store's metadata under it, so two processes appending to one store interleave whole episodes, never overwrite
each other. A store whose metadata disagrees with its arrays beyond what one crashed append can leave (a lost
`meta/episode_ends` chunk, arrays shorter than the committed steps) is refused on open, never "repaired" by
truncation; a data chunk that is missing on disk is an error on read, not rows of zeros (every chunk is written,
even an all-zero one, so a missing chunk file means lost data).

Statistics (min/max/mean/std over all committed steps) reduce every axis except the last one for arrays with two
or more dims (per-channel for images `[T, H, W, C]`, per-dim for states `[T, D]`), and are scalars for `[T]`
arrays. They are merged per episode with the parallel (Chan et al.) mean/M2 update, in float64.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

DATA_GROUP = "data"
META_GROUP = "meta"
EPISODE_ENDS = "episode_ends"
FPS_ATTR = "fps"
STATS_ATTR = "stats"
EPISODE_META = "episode_meta"
META_CHUNK = 1024
USER_ATTRS = "attrs"
FORMAT_ATTR = "multistream_episode_store"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 22  # ~4 MiB of raw data per chunk along time
ENDS_CHUNK = 1 << 14
ALL_CHUNKS_ATTR = "all_chunks_written"  # set by stores that write empty chunks too (missing chunk = lost data)
LOCK_FILE = ".append.lock"
_WRITE_ALL = {"write_empty_chunks": True}


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
        raise ValueError(f"invalid data key {key!r}: must be a non-empty string without '/' or a leading '.'")
    return key


def _valid_ends(raw: np.ndarray) -> np.ndarray:
    """The leading strictly increasing, positive prefix of a stored episode_ends (drops a crash's fill value)."""
    raw = np.asarray(raw, dtype=np.int64)
    n = 0
    prev = 0
    for v in raw:
        if v <= prev:
            break
        prev = int(v)
        n += 1
    return raw[:n].copy()


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0,) if ndim <= 2 else tuple(range(ndim - 1))


def _episode_stats(x: np.ndarray) -> dict[str, Any]:
    """count/min/max/mean/M2 of one chunk of steps (float64), reducing all axes but the last for ndim >= 2."""
    axes = _reduce_axes(x.ndim)
    xf = x.astype(np.float64)
    count = int(np.prod([x.shape[a] for a in axes]))
    mean = xf.mean(axis=axes, keepdims=True)
    m2 = ((xf - mean) ** 2).sum(axis=axes)
    return {
        "count": count,
        "min": xf.min(axis=axes),
        "max": xf.max(axis=axes),
        "mean": mean.reshape(m2.shape),
        "m2": m2,
    }


def _merge_stats(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if a is None:
        return b
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * (b["count"] / n)
    m2 = a["m2"] + b["m2"] + delta**2 * (a["count"] * b["count"] / n)
    return {
        "count": n,
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
        "mean": mean,
        "m2": m2,
    }


def _stats_to_json(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.tolist() if isinstance(v, np.ndarray) else (float(v) if k != "count" else int(v))) for k, v in s.items()
    }


def _stats_from_json(s: dict[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if k == "count" else np.asarray(v, dtype=np.float64)) for k, v in s.items()}


class EpisodeStore:
    """Whole-episode zarr store. Create with `EpisodeStore.create`, open with `EpisodeStore.open`."""

    def __init__(self, group: zarr.Group, path: Path, mode: str) -> None:
        self.path = path
        self.mode = mode
        self._load(group)

    def _load(self, group: zarr.Group) -> None:
        """Read the store's metadata and check it against its arrays (ValueError naming what is wrong)."""
        path = self.path
        if FPS_ATTR not in group.attrs or META_GROUP not in group:
            raise ValueError(f"{path} is not an episode store (no '{FPS_ATTR}' attr or '{META_GROUP}' group)")
        for name in (EPISODE_ENDS, EPISODE_META):
            if f"{META_GROUP}/{name}" not in group:
                raise ValueError(f"episode store {path} has lost {META_GROUP}/{name}; it cannot be read or appended "
                                 "to safely: restore it from a copy (its data arrays are untouched)")
        if DATA_GROUP not in group:
            raise ValueError(f"episode store {path} has lost its '{DATA_GROUP}' group; restore it from a copy")
        self._group = group
        self._ends_arr = group[f"{META_GROUP}/{EPISODE_ENDS}"].with_config(_WRITE_ALL)
        self._meta_arr = group[f"{META_GROUP}/{EPISODE_META}"].with_config(_WRITE_ALL)
        self._data = group[DATA_GROUP]
        raw = self._read(self._ends_arr, f"{META_GROUP}/{EPISODE_ENDS}")
        self._ends = _valid_ends(raw)
        self._check_consistent(len(raw))

    def _read(self, arr: zarr.Array, name: str, sel: Any = slice(None)) -> np.ndarray:
        try:
            return arr[sel]
        except Exception as e:  # zarr raises codec/JSON/IO errors of many types for a damaged chunk
            raise ValueError(f"episode store {self.path}: cannot read array '{name}' ({type(e).__name__}: {e}); "
                             "a chunk file is corrupt: restore the store from a copy") from e

    def _check_consistent(self, n_raw: int) -> None:
        """What one crashed append can leave is fine; anything beyond it means lost metadata or data."""
        n, steps = len(self._ends), self.num_steps
        problems = []
        if n_raw > n + 1:  # only one trailing fill value (a crash between resize and write) is expected
            problems.append(f"{META_GROUP}/{EPISODE_ENDS} holds {n_raw} entries but only the first {n} are valid "
                            "(a chunk of it is missing or overwritten)")
        if self._meta_arr.shape[0] < n:
            problems.append(f"{META_GROUP}/{EPISODE_META} has {self._meta_arr.shape[0]} entries for {n} episodes")
        elif self._meta_arr.shape[0] > n + 1:
            problems.append(f"{META_GROUP}/{EPISODE_META} has {self._meta_arr.shape[0]} entries, more than the "
                            f"{n} committed episodes plus one crashed append")
        counted = self._group.attrs.get(STATS_ATTR, {}).get("num_episodes", 0)
        if counted > n + 1:
            problems.append(f"the statistics count {counted} episodes but {META_GROUP}/{EPISODE_ENDS} has {n}")
        for k in self._data.array_keys():
            rows = self._data[k].shape[0]
            if rows < steps:
                problems.append(f"data/{k} has {rows} rows, fewer than the {steps} committed steps")
        if problems:
            raise ValueError(f"episode store {self.path} is inconsistent: " + "; ".join(problems)
                             + ". Refusing to use it (appending could overwrite data): restore it from a copy")

    def _check_chunks(self, key: str, arr: zarr.Array, a: int, b: int) -> None:
        """Raise if a chunk holding rows [a, b) of data/key is missing on disk (it would read back as zeros)."""
        if b <= a or not self._group.attrs.get(ALL_CHUNKS_ATTR, False):
            return
        c = arr.chunks[0]
        tail = "/0" * (arr.ndim - 1)  # chunks span every trailing dim whole
        for i in range(a // c, (b - 1) // c + 1):
            if not (self.path / DATA_GROUP / key / "c" / f"{i}{tail}").is_file():
                raise ValueError(f"episode store {self.path}: chunk {i} of data/{key} (rows {i * c}..{(i + 1) * c - 1})"
                                 " is missing on disk, so those rows are lost; restore the store from a copy")

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, fps: float, attrs: dict | None = None) -> EpisodeStore:
        """Create a new, empty store at `path` (which must not exist). `attrs` must be JSON-serializable."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"cannot create episode store: {path} already exists")
        if not (isinstance(fps, int | float) and np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        attrs = dict(attrs or {})
        try:
            json.dumps(attrs)
        except TypeError as e:
            raise ValueError(f"attrs must be JSON-serializable: {e}") from e
        group = zarr.open_group(str(path), mode="w-")
        group.create_group(DATA_GROUP)
        meta = group.create_group(META_GROUP)
        meta.create_array(EPISODE_ENDS, shape=(0,), dtype="int64", chunks=(ENDS_CHUNK,), fill_value=0,
                          config=_WRITE_ALL)
        meta.create_array(EPISODE_META, shape=(0,), dtype=str, chunks=(META_CHUNK,), config=_WRITE_ALL)
        group.attrs.update(
            {
                FORMAT_ATTR: FORMAT_VERSION,
                ALL_CHUNKS_ATTR: True,
                FPS_ATTR: float(fps),
                STATS_ATTR: {"num_episodes": 0, "keys": {}},
                USER_ATTRS: attrs,
            }
        )
        return cls(group, path, "a")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        """Open an existing store read-only (`"r"`) or for appending (`"a"`)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no episode store at {path}")
        return cls(cls._open_group(path, mode), path, mode)

    @staticmethod
    def _open_group(path: Path, mode: str) -> zarr.Group:
        if not (path / "zarr.json").is_file():
            raise ValueError(f"{path} is not an episode store (no zarr.json in it)")
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
            group.attrs.asdict()
            return group
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise ValueError(f"cannot open episode store {path}: its metadata is unreadable ({type(e).__name__}: "
                             f"{e}); a zarr.json file is corrupt: restore the store from a copy") from e

    # ---- read side ----------------------------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return float(self._group.attrs[FPS_ATTR])

    @property
    def attrs(self) -> dict:
        """The user attrs given to `create`."""
        return dict(self._group.attrs.get(USER_ATTRS, {}))

    def update_attrs(self, **values) -> None:
        """Set user attrs (JSON-serializable; a store opened for writing), e.g. a builder's list of skipped items."""
        try:
            json.dumps(values)
        except TypeError as e:
            raise ValueError(f"attrs must be JSON-serializable: {e}") from e
        self._group.attrs[USER_ATTRS] = {**self.attrs, **values}

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def num_episodes(self) -> int:
        return len(self._ends)

    @property
    def num_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def keys(self) -> list[str]:
        return sorted(self._data.array_keys())

    def _check_index(self, i: int) -> int:
        if not isinstance(i, int | np.integer) or not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode index {i!r} out of range for {self.num_episodes} episodes")
        return int(i) % self.num_episodes

    def episode_bounds(self, i: int) -> tuple[int, int]:
        i = self._check_index(i)
        start = int(self._ends[i - 1]) if i > 0 else 0
        return start, int(self._ends[i])

    def episode_length(self, i: int) -> int:
        a, b = self.episode_bounds(i)
        return b - a

    def episode(self, i: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All arrays (or the chosen `keys`) of episode `i`, each `[T_i, ...]`."""
        a, b = self.episode_bounds(i)
        keys = self.keys if keys is None else list(keys)
        for k in keys:
            if k not in self._data:
                raise ValueError(f"unknown key {k!r}; store has {self.keys}")
        return {k: self.read_rows(k, a, b) for k in keys}

    def episode_meta(self, i: int) -> dict:
        i = self._check_index(i)
        return self._decode_meta(self._read(self._meta_arr, f"{META_GROUP}/{EPISODE_META}", i))

    def episode_metas(self) -> list[dict]:
        """The metadata of every episode (one read)."""
        raw = self._read(self._meta_arr, f"{META_GROUP}/{EPISODE_META}", slice(0, self.num_episodes))
        return [self._decode_meta(m) for m in raw]

    def _decode_meta(self, raw: Any) -> dict:
        raw = str(raw)
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"episode store {self.path}: an entry of {META_GROUP}/{EPISODE_META} is not JSON "
                             f"({e}); restore the store from a copy") from e

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of data/key, checked: a chunk missing on disk or a corrupt one is a ValueError."""
        if key not in self._data:
            raise ValueError(f"unknown key {key!r}; store has {self.keys}")
        arr = self._data[key]
        self._check_chunks(key, arr, start, stop)
        return self._read(arr, f"{DATA_GROUP}/{key}", slice(start, stop))

    def array(self, key: str) -> zarr.Array:
        """The raw zarr array of `key` (may be longer than `num_steps` after a crash; slice with episode_ends)."""
        if key not in self._data:
            raise ValueError(f"unknown key {key!r}; store has {self.keys}")
        return self._data[key]

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-key min/max/mean/std over all committed steps."""
        raw = self._group.attrs[STATS_ATTR]
        if raw["num_episodes"] == self.num_episodes:
            acc = {k: _stats_from_json(v) for k, v in raw["keys"].items()}
        else:  # a crash between the attrs write and the commit: recompute from the committed steps
            acc = self._recompute_stats()
        return {
            k: {"min": s["min"], "max": s["max"], "mean": s["mean"], "std": np.sqrt(s["m2"] / max(s["count"], 1))}
            for k, s in acc.items()
        }

    def _recompute_stats(self) -> dict[str, dict[str, Any]]:
        acc: dict[str, dict[str, Any]] = {}
        for i in range(self.num_episodes):
            for k, x in self.episode(i).items():
                acc[k] = _merge_stats(acc.get(k), _episode_stats(x))
        return acc

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, episodes={self.num_episodes}, steps={self.num_steps}, fps={self.fps})"

    # ---- write side ---------------------------------------------------------------------------------------------
    def append_episode(self, arrays: dict[str, np.ndarray], meta: dict | None = None) -> int:
        """Append one whole episode; returns its index. All arrays share the first (time) dim T >= 1."""
        if self.mode != "a":
            raise ValueError(f"store {self.path} is open read-only (mode={self.mode!r}); open it with mode='a'")
        if not isinstance(arrays, dict) or not arrays:
            raise ValueError("arrays must be a non-empty dict of key -> array")
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except TypeError as e:
            raise ValueError(f"episode meta must be JSON-serializable: {e}") from e
        arrays = {_check_key(k): np.asarray(v) for k, v in arrays.items()}
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
        for k, v in arrays.items():
            if v.ndim == 0:
                raise ValueError(f"array {k!r} is a scalar; arrays must be [T, ...] with time first")
            if v.dtype == object or v.dtype.kind in "USV":
                raise ValueError(f"array {k!r} has unsupported dtype {v.dtype}; store numbers (tokenize text first)")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays must share the time dim, got lengths {lengths}")
        T = next(iter(lengths.values()))
        if T == 0:
            raise ValueError("cannot append an empty episode (T=0)")
        for k, v in arrays.items():
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                bad = int(np.argwhere(~np.isfinite(v))[0][0])
                raise ValueError(f"array {k!r} holds NaN or inf (first at step {bad}); the store's statistics would "
                                 "become NaN for good: drop or fix the episode")
        with self._append_lock():
            self._load(self._open_group(self.path, "a"))  # another writer may have appended since we opened
            return self._append_locked(arrays, meta, T)

    @contextlib.contextmanager
    def _append_lock(self):
        with open(self.path / LOCK_FILE, "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _append_locked(self, arrays: dict[str, np.ndarray], meta: dict, T: int) -> int:
        existing = self.keys
        if existing:
            if sorted(arrays) != existing:
                missing, extra = sorted(set(existing) - set(arrays)), sorted(set(arrays) - set(existing))
                raise ValueError(f"episode keys differ from the store's: missing {missing}, unexpected {extra}")
            for k, v in arrays.items():
                arr = self._data[k]
                if v.shape[1:] != tuple(arr.shape[1:]):
                    raise ValueError(f"array {k!r} has trailing shape {v.shape[1:]}, store has {tuple(arr.shape[1:])}")
                if v.dtype != arr.dtype:
                    raise ValueError(f"array {k!r} has dtype {v.dtype}, store has {arr.dtype}")

        n, start = self.num_episodes, self.num_steps
        stats = self._base_stats()
        self._write_data(arrays, start)
        for k, v in arrays.items():
            stats[k] = _merge_stats(stats.get(k), _episode_stats(v))
        self._write_meta(n, meta)
        self._write_attrs(
            {STATS_ATTR: {"num_episodes": n + 1, "keys": {k: _stats_to_json(s) for k, s in stats.items()}}}
        )
        self._commit(start + T)
        return n

    def _base_stats(self) -> dict[str, dict[str, Any]]:
        raw = self._group.attrs[STATS_ATTR]
        if raw["num_episodes"] == self.num_episodes:
            return {k: _stats_from_json(v) for k, v in raw["keys"].items()}
        return self._recompute_stats()

    def _write_data(self, arrays: dict[str, np.ndarray], start: int) -> None:
        T = next(iter(arrays.values())).shape[0]
        for k, v in arrays.items():
            if k not in self._data:
                step_bytes = max(1, int(np.prod(v.shape[1:], dtype=np.int64)) * v.dtype.itemsize)
                chunk_t = int(max(1, min(1 << 16, CHUNK_BYTES // step_bytes)))
                self._data.create_array(k, shape=(0, *v.shape[1:]), dtype=v.dtype, chunks=(chunk_t, *v.shape[1:]),
                                        config=_WRITE_ALL)
            arr = self._data[k].with_config(_WRITE_ALL)
            # resizing to start + T also drops any tail left by a crashed append
            arr.resize((start + T, *arr.shape[1:]))
            arr[start : start + T] = v

    def _write_meta(self, n: int, meta: dict) -> None:
        self._meta_arr.resize((n + 1,))  # also drops an entry left by a crashed append
        self._meta_arr[n] = json.dumps(meta)

    def _write_attrs(self, update: dict[str, Any]) -> None:
        self._group.attrs.update(update)

    def _commit(self, end: int) -> None:
        """Publish the episode: grow episode_ends by one (the last write of an append)."""
        n = self.num_episodes
        self._ends_arr.resize((n + 1,))
        self._ends_arr[n] = end
        self._ends = np.append(self._ends, np.int64(end))


# ---- torch datasets -------------------------------------------------------------------------------------------------
class WindowDataset(Dataset):
    """Windows of `window` consecutive steps that never cross an episode boundary.

    Item: `{key: tensor [window, ...] for key in keys, "episode": int64 scalar, "start": int64 scalar}`.
    With `pad=False` an episode of length L gives L - window + 1 windows (none if L < window). With `pad=True`
    every step starts a window; steps past the episode's end repeat its last step, and `"mask"` (bool
    `[window]`) marks the real ones. `episodes` selects a split (episode indices); arrays are read into memory
    once (the selected episodes only) unless `in_memory=False`.
    """

    def __init__(
        self,
        store: EpisodeStore,
        keys: list[str],
        window: int,
        episodes: list[int] | None = None,
        pad: bool = False,
        in_memory: bool = True,
    ) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if not keys:
            raise ValueError("keys must name at least one data key")
        for k in keys:
            if k not in store.keys:
                raise ValueError(f"unknown key {k!r}; store has {store.keys}")
        if episodes is None:
            episodes = list(range(store.num_episodes))
        for e in episodes:
            if not isinstance(e, int | np.integer) or not 0 <= e < store.num_episodes:
                raise ValueError(f"episode index {e!r} out of range for {store.num_episodes} episodes")
        self.store, self.keys, self.window, self.pad = store, list(keys), window, pad
        self.episodes = [int(e) for e in episodes]
        self._cache: dict[int, dict[str, np.ndarray]] | None = (
            {e: store.episode(e, self.keys) for e in self.episodes} if in_memory else None
        )
        index = []
        for e in self.episodes:
            length = store.episode_length(e)
            last = length if pad else length - window + 1
            index.extend((e, s) for s in range(max(last, 0)))
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)  # [N, 2] = (episode, start)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"window index {idx} out of range for {len(self)} windows")
        e, s = (int(v) for v in self._index[idx])
        length = self.store.episode_length(e)
        stop = min(s + self.window, length)
        if self._cache is not None:
            arrays = {k: v[s:stop] for k, v in self._cache[e].items()}
        else:
            a, _ = self.store.episode_bounds(e)
            arrays = {k: self.store.read_rows(k, a + s, a + stop) for k in self.keys}
        n_real = stop - s
        out: dict[str, torch.Tensor] = {}
        for k, v in arrays.items():
            if n_real < self.window:  # edge padding: repeat the episode's last step
                v = np.concatenate([v, np.repeat(v[-1:], self.window - n_real, axis=0)], axis=0)
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        out["episode"] = torch.tensor(e, dtype=torch.int64)
        out["start"] = torch.tensor(s, dtype=torch.int64)
        if self.pad:
            out["mask"] = torch.arange(self.window) < n_real
        return out


def make_loader(
    store: EpisodeStore,
    keys: list[str],
    window: int,
    batch_size: int,
    seed: int,
    episodes: list[int] | None = None,
    pad: bool = False,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of shuffled (seeded) batches of windows: the same seed gives the same batch order."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    ds = WindowDataset(store, keys, window, episodes=episodes, pad=pad)
    if len(ds) == 0:
        raise ValueError(f"no windows of length {window} in the selected episodes (pad={pad})")
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen, num_workers=num_workers
    )
