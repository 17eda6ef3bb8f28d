"""Checkpoints: a directory with `config.json`, `model.safetensors` and optional extras, written atomically.

The directory is first written under a temporary name next to the target and then swapped into place
(`multistream.atomic.atomic_write_dir`), so a crash never leaves a half-written checkpoint that a later `load`
would accept, and a crash inside the swap is recovered by the next writer (readers only report it). Loading
checks that the saved tensors match the model's keys and shapes exactly and names what differs.

Trainer state (optimizer moments, step, RNG states) is stored without pickle: its tensors and arrays go to
`trainer_state.safetensors` and everything else to `trainer_state.json`, so loading a run directory runs no code
whatever its files hold. A `trainer_state.pt` (the old pickle format) is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from multistream.atomic import atomic_write_dir, recover_dir

__all__ = ["atomic_write_dir", "recover_dir"]  # re-exported: checkpoint writers used to import it from here

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_JSON = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
LEGACY_TRAINER_FILE = "trainer_state.pt"  # pickle: refused


def config_to_dict(cfg: Any) -> Any:
    """Dataclass (possibly nested, with tuples/lists) -> JSON-able dict."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def _build(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value)
    if origin in (tuple,):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        if args:
            return tuple(_build(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    if origin in (list,):
        (arg,) = typing.get_args(tp) or (Any,)
        return [_build(arg, v) for v in value]
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                return _build(arg, value)
    return value


def config_from_dict(cls: type, data: dict) -> Any:
    """Inverse of `config_to_dict` for a (nested) dataclass type; unknown keys raise ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"config for {cls.__name__} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _build(hints[k], v) for k, v in data.items()})


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any,
    extra: dict[str, Any] | None = None,
    files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write `config.json` + `model.safetensors` (+ `trainer_state.{json,safetensors}` from `extra`, + copied
    `files`). `extra` may hold tensors, numpy arrays, tuples, dicts (any scalar keys), lists and JSON scalars."""
    cfg = config_to_dict(config)
    if extra is not None:
        extra_json, extra_tensors = encode_state(extra)  # fails before anything is written
    for name, src in (files or {}).items():
        if not Path(src).is_file():
            raise FileNotFoundError(f"cannot add {name} to checkpoint {path}: {src} is not a file")

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, allow_nan=False))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(state), str(tmp / WEIGHTS_FILE))
        if extra is not None:
            (tmp / TRAINER_JSON).write_text(json.dumps(extra_json, allow_nan=False))
            save_file(extra_tensors, str(tmp / TRAINER_TENSORS))
        for name, src in (files or {}).items():
            shutil.copyfile(src, tmp / name)

    return atomic_write_dir(path, write)


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): give each its own storage."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.setdefault(ptr, k)
    return out


# ---- pickle-free state: JSON for the structure, safetensors for the tensors ----------------------------------------
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__", "__float__")


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, {key: tensor}) for a nested state of tensors, arrays, tuples, lists, dicts, scalars."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, where: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "biuf":
                raise TypeError(f"cannot store {where}: numpy dtype {x.dtype} (numbers only)")
            key = f"t{len(tensors)}"
            raw = np.ascontiguousarray(x).tobytes()
            empty = torch.zeros(0, dtype=torch.uint8)
            tensors[key] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else empty
            return {"__ndarray__": key, "dtype": x.dtype.str, "shape": list(x.shape)}
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, bool | int | str) or x is None:
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"__float__": repr(x)}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and k not in _TAGS for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            for k in x:
                if not isinstance(k, str | int | float | bool) and k is not None:
                    raise TypeError(f"cannot store {where}: dict key {k!r} of type {type(k).__name__}")
            return {"__dict__": [[k, enc(v, f"{where}.{k}")] for k, v in x.items()]}
        raise TypeError(f"cannot store {where}: values of type {type(x).__name__} are not supported "
                        "(tensors, numpy arrays, tuples, lists, dicts and JSON scalars are)")

    return enc(obj, "state"), tensors


def decode_state(data: Any, tensors: dict[str, torch.Tensor], source: str = "state") -> Any:
    """Inverse of `encode_state`; builds only tensors, arrays and plain containers (no code runs)."""

    def tensor(key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in tensors:
            raise ValueError(f"{source}: refers to tensor {key!r}, which the tensor file does not hold")
        return tensors[key]

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        tags = [t for t in _TAGS if t in x]
        if not tags:
            return {k: dec(v) for k, v in x.items()}
        tag = tags[0]
        if tag == "__tensor__":
            return tensor(x[tag])
        if tag == "__ndarray__":
            dtype = np.dtype(str(x.get("dtype")))
            if dtype.kind not in "biuf":
                raise ValueError(f"{source}: array dtype {dtype} is not a number type")
            return np.frombuffer(tensor(x[tag]).numpy().tobytes(), dtype=dtype).reshape(x["shape"]).copy()
        if tag == "__tuple__":
            return tuple(dec(v) for v in x[tag])
        if tag == "__float__":
            return float(x[tag])
        return {k: dec(v) for k, v in x[tag]}

    return dec(data)


def _load_safetensors(f: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(f), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{f} is not a readable safetensors file ({e}); it is truncated or corrupt: "
                         "restore it or delete the checkpoint and train again") from e


def _read_json(f: Path) -> Any:
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON ({e}); it is corrupt: restore it or delete the checkpoint") from e


def _check_interrupted_swap(path: Path) -> None:
    """Readers never rename (a writer may be mid-swap); they say how to finish an interrupted one."""
    if not path.exists() and any((path.parent / f".{path.name}.{s}").is_dir() for s in ("new", "old")):
        raise FileNotFoundError(f"checkpoint {path} is missing but a copy from an interrupted save is beside it; "
                                "resuming the training run restores it (or call multistream.atomic.recover_dir)")


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file():
        _check_interrupted_swap(path)
        raise FileNotFoundError(f"no checkpoint at {path}: {CONFIG_FILE} is missing")
    cfg = _read_json(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{f} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def _read_weights(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    """The tensors of `path`'s weights file (a clear error where it is missing or a swap was interrupted)."""
    f = path / WEIGHTS_FILE
    if not f.is_file():
        _check_interrupted_swap(path)
        raise FileNotFoundError(f"no checkpoint weights at {f}")
    return _load_safetensors(f, device=str(map_location))


def load_weights(path: str | os.PathLike, model: nn.Module, map_location: str | torch.device = "cpu",
                 allow_missing: bool = False) -> list[str]:
    """Load `model.safetensors` into `model`, requiring exactly the same keys and shapes; with `allow_missing` the
    model may have parameters the checkpoint lacks (e.g. a stream added after pretraining), which keep their
    initialisation. Returns those missing keys (always [] without `allow_missing`)."""
    path = Path(path)
    state = _read_weights(path, map_location)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if (missing and not allow_missing) or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    bad = [k for k in state if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(f"checkpoint {path}: shape of {k} is {tuple(state[k].shape)}, model has {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=not missing)
    return missing


def load_lm(path: str | os.PathLike, streams: Any = None, files: str | os.PathLike = "",
            map_location: str | torch.device = "cpu") -> nn.Module:
    """The `RQTransformer` saved at `path` (config.json + weights). `streams`: the StreamSet its application expects
    (from its tokenizer files, found in `files`); a checkpoint with other streams is refused."""
    from multistream.lm import LMConfig, RQTransformer

    cfg = config_from_dict(LMConfig, read_config(path))
    if streams is not None and cfg.streams != streams:
        raise ValueError(f"checkpoint {path} streams differ from the files in {files or path}")
    model = RQTransformer(cfg)
    load_weights(path, model, map_location=map_location)
    return model


def transfer_weights(path: str | os.PathLike, model: nn.Module, map_location: str | torch.device = "cpu") -> dict:
    """Start `model` (an `RQTransformer`) from the checkpoint of one with other streams (a slot, a stream or a
    codebook added; a wider input). Per-codebook tables (input embeddings; the depth transformer's per-step input,
    embedding and head) are matched by (stream, codebook), not by position, so a codebook added before others does
    not shift them; another tensor with the same name is copied when its shape is the same, or into the leading
    slice when the model's is larger in some dimensions (e.g. a first convolution with more input planes); what
    has no counterpart keeps its initialisation. A table whose vocabulary changed is refused. Returns {"copied",
    "grown", "new"}: lists of the model's parameter names."""
    from multistream.lm import LMConfig

    path = Path(path)
    state = _read_weights(path, map_location)
    src_streams = config_from_dict(LMConfig, read_config(path)).streams
    dst_streams = model.cfg.streams

    def tables(ss) -> dict[str, tuple[str, int]]:
        keys = [(s.name, k) for s in ss.token_streams for k in range(s.num_codebooks)]
        pred = [(s.name, k) for s in ss.predicted for k in range(s.num_codebooks)]
        out = {f"embs.{i}.weight": key for i, key in enumerate(keys)}
        for j, key in enumerate(pred[1:]):  # depth step j predicts pred[j + 1]
            out.update({f"depth_in.{j}.weight": ("in",) + key, f"depth_emb.{j}.weight": ("emb",) + key,
                        f"depth_heads.{j}.weight": ("head",) + key})
        return out

    src_tab, dst_tab = tables(src_streams), tables(dst_streams)
    by_key = {v: k for k, v in src_tab.items()}
    own = model.state_dict()
    new_state, report = {}, {"copied": [], "grown": [], "new": []}
    for name, t in own.items():
        src = by_key.get(dst_tab[name]) if name in dst_tab else (name if name not in src_tab else None)
        if src is None or src not in state:
            report["new"].append(name)
            continue
        w = state[src]
        if w.shape == t.shape:
            new_state[name] = w
            report["copied"].append(name)
        elif name in dst_tab:
            raise ValueError(f"checkpoint {path}: {src} {tuple(w.shape)} and {name} {tuple(t.shape)} embed the same "
                             f"codebook {dst_tab[name]} with other vocabularies")
        elif w.dim() == t.dim() and all(a <= b for a, b in zip(w.shape, t.shape, strict=True)):
            grown = t.clone()
            grown[tuple(slice(0, n) for n in w.shape)] = w
            new_state[name] = grown
            report["grown"].append(name)
        else:
            report["new"].append(name)
    model.load_state_dict(new_state, strict=False)
    return report


def load_trainer_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `extra` saved with a checkpoint, or None if it has none. Never unpickles anything."""
    path = Path(path)
    f_json, f_tensors = path / TRAINER_JSON, path / TRAINER_TENSORS
    if not f_json.is_file():
        if (path / LEGACY_TRAINER_FILE).exists():
            raise ValueError(f"{path / LEGACY_TRAINER_FILE} is a pickle file, which can run arbitrary code when "
                             "loaded, so it is refused; resume only from checkpoints with trainer_state.json + "
                             "trainer_state.safetensors, or start the run afresh")
        return None
    if not f_tensors.is_file():
        raise FileNotFoundError(f"{f_json} has no companion {f_tensors}; the checkpoint is incomplete")
    return decode_state(_read_json(f_json), _load_safetensors(f_tensors), source=str(f_json))
