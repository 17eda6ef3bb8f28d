"""Checkpoints: a directory with `config.json`, `model.safetensors` and optional extras, written atomically.

The directory is first written under a temporary name next to the target and then renamed into place, so a crash
never leaves a half-written checkpoint that a later `load` would accept. Loading checks that the saved tensors
match the model's keys and shapes exactly and names what differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer_state.pt"


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


def atomic_write_dir(target: str | os.PathLike, write: typing.Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` then move tmp_dir to `target`, replacing an existing directory atomically enough:
    the old one is renamed aside first and removed only after the new one is in place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any,
    extra: dict[str, Any] | None = None,
    files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write `config.json` + `model.safetensors` (+ `trainer_state.pt` from `extra`, + copied `files`)."""
    cfg = config_to_dict(config)

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(state), str(tmp / WEIGHTS_FILE))
        if extra is not None:
            torch.save(extra, tmp / TRAINER_FILE)
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


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: {CONFIG_FILE} is missing")
    return json.loads(f.read_text())


def load_weights(path: str | os.PathLike, model: nn.Module, map_location: str | torch.device = "cpu") -> None:
    """Load `model.safetensors` into `model`, requiring exactly the same keys and shapes."""
    path = Path(path)
    f = path / WEIGHTS_FILE
    if not f.is_file():
        raise FileNotFoundError(f"no checkpoint weights at {f}")
    state = load_file(str(f), device=str(map_location))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(f"checkpoint {path}: shape of {k} is {tuple(state[k].shape)}, model has {tuple(own[k].shape)}")
    model.load_state_dict(state)


def load_trainer_state(path: str | os.PathLike) -> dict[str, Any] | None:
    f = Path(path) / TRAINER_FILE
    if not f.is_file():
        return None
    return torch.load(f, map_location="cpu", weights_only=False)
