"""Training loop: bf16 autocast, gradient accumulation, cosine schedule with warmup, atomic checkpoints with exact
resume, tqdm progress, JSON-lines metrics and a loss plot; single process or `torchrun` (DDP, gloo on CPU).

Exact resume rests on one rule: the data of optimizer step s is a pure function `batch_fn(step, micro, rank,
world)`, so nothing about the data loader needs saving. A checkpoint holds the weights, the optimizer state, the
step and the RNG state; a run killed at any moment resumes from its last checkpoint and ends with the same
parameters as a run that never stopped.

Resume is refused (ValueError naming each difference) when the run's configuration differs from the checkpoint's:
the model config, the optimisation settings (`RESUME_MAY_CHANGE` lists the ones that may change) and the caller's
`run_info` (settings outside TrainConfig that decide the batches, e.g. batch size, frames, data seed).

A `hook` (see `TrainHook`) lets a training objective own extra state with its own optimizer (e.g. a GAN
discriminator): the trainer tells it the learning-rate scale of every step and saves/restores its state with the
checkpoint, so every training script shares one resume, one schedule, one metrics log and one loss plot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from multistream.atomic import atomic_open, atomic_write_text, recover_dir
from multistream.checkpoint import config_to_dict, load_trainer_state, load_weights, read_config, save_checkpoint
from multistream.loss import LossOutput

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
# TrainConfig fields a resumed run may change; any other difference is refused
RESUME_MAY_CHANGE = frozenset({"out_dir", "max_steps", "ckpt_every", "log_every", "progress", "plot", "max_minutes"})


@dataclasses.dataclass
class TrainConfig:
    out_dir: str
    max_steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_grad: float = 1.0  # 0 = off
    autocast: bool = True  # bf16 autocast (CPU and CUDA)
    ckpt_every: int = 200  # optimizer steps between checkpoints (and one at the end)
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    plot: bool = True
    max_minutes: float | None = None  # wall-clock budget: checkpoint and stop when spent (resume continues)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.ckpt_every < 1 or self.log_every < 1:
            raise ValueError(f"bad warmup/ckpt/log intervals: {self.warmup_steps}, {self.ckpt_every}, "
                             f"{self.log_every}")
        for name in ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "clip_grad"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ValueError(f"max_minutes must be a finite number > 0 (or None), got {self.max_minutes!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")


class TrainHook(Protocol):
    """Extra trainable state beside the model (e.g. a discriminator and its optimizer), driven by the loss_fn.

    The trainer calls `set_lr_scale(lr_at(step) / cfg.lr)` before every optimizer step (one schedule for all) and
    stores `state_dict()` in the checkpoint (tensors, arrays, tuples, lists, dicts, JSON scalars)."""

    def set_lr_scale(self, scale: float) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: every parameter of an `nn.Embedding` (token tables) and
    every parameter with fewer than 2 dims (biases, norm gains, layer scales); matrices of linear/conv layers decay."""
    names = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if isinstance(mod, nn.Embedding) or p.dim() < 2:
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (a crash mid-write) is dropped, a bad line elsewhere is an error."""
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = []
    for i, ln in enumerate(lines):
        try:
            row = json.loads(ln)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not an object with an integer 'step'")
        except ValueError as e:
            if i == len(lines) - 1:  # cut off by a crash: the step it logged is redone after resume
                break
            raise ValueError(f"{path} line {i + 1} is corrupt ({e}); delete that line or the file") from e
        rows.append(row)
    return rows


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no NaN; a diverged loss is logged as null


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def dist_info() -> tuple[int, int]:
    """(rank, world) from torchrun's environment; (0, 1) for a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def plot_metrics(metrics_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return
    keys = sorted({k for r in rows for k in r if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ["loss", *keys]:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), int | float) and r[k] > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=2 if k == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


class Trainer:
    """`Trainer(model, model_config, cfg, batch_fn, loss_fn).fit()`.

    batch_fn(step, micro, rank, world) -> batch (deterministic). loss_fn(model, batch) -> LossOutput.
    run_info: JSON-able settings outside `cfg` that a resume must share (refused if they differ).
    hook: extra trainable state driven by loss_fn (see `TrainHook`), checkpointed and scheduled with the model.
    files: {name: path} copied into every checkpoint (e.g. a tokenizer or phone vocabulary).
    """

    def __init__(
        self,
        model: nn.Module,
        model_config: Any,
        cfg: TrainConfig,
        batch_fn: Callable[[int, int, int, int], Any],
        loss_fn: Callable[[nn.Module, Any], LossOutput],
        device: str | torch.device | None = None,
        run_info: dict[str, Any] | None = None,
        hook: TrainHook | None = None,
        files: dict[str, str | os.PathLike] | None = None,
    ) -> None:
        self.files = dict(files or {})
        self.cfg = cfg
        self.run_info = dict(run_info or {})
        json.dumps(self.run_info, allow_nan=False)  # must be storable
        self.hook = hook
        self.model_config = model_config
        self.batch_fn = batch_fn
        self.loss_fn = loss_fn
        self.rank, self.world = dist_info()
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.model = model.to(self.device)
        self.out = Path(cfg.out_dir)
        exempt = no_weight_decay(model)
        decay = [p for n, p in model.named_parameters() if n not in exempt]
        no_decay = [p for n, p in model.named_parameters() if n in exempt]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False,
        )
        self.step = 0
        self._resume()
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _resume(self) -> None:
        ck = self.out / CHECKPOINT_DIR
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"output directory {self.out} is a file; pass a directory")
        if self.is_main and ck.parent.is_dir():
            recover_dir(ck)  # a crash inside the last checkpoint swap: finish it before looking
        if self.world > 1:
            dist.barrier()
        if not (ck / "config.json").is_file():
            torch.manual_seed(self.cfg.seed + self.rank)
            if self.is_main:  # rows of a run killed before its first checkpoint: that run restarts from step 0
                self._truncate_metrics(0)
            return
        st = load_trainer_state(ck)
        if st is None:
            raise FileNotFoundError(f"checkpoint {ck} has weights but no trainer state; cannot resume exactly")
        if int(st["step"]) > self.cfg.max_steps:
            raise ValueError(f"checkpoint {ck} is at step {st['step']}, past max_steps={self.cfg.max_steps}; "
                             f"ask for at least {st['step']} steps, or use a new output directory")
        self._check_same_run(ck, st)
        load_weights(ck, self.model, map_location=self.device)
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        if self.hook is not None:
            if st.get("hook") is None:
                raise ValueError(f"checkpoint {ck} has no state for this run's training hook; cannot resume")
            self.hook.load_state_dict(st["hook"])
        _set_rng_state(st["rng"][self.rank] if isinstance(st["rng"], list) else st["rng"])
        if self.is_main:
            self._truncate_metrics(self.step)
            print(f"[trainer] resumed from {ck} at step {self.step}")

    def _check_same_run(self, ck: Path, st: dict[str, Any]) -> None:
        """Refuse a resume whose model, optimisation settings or run_info differ from the checkpoint's."""
        diffs = []
        saved_model, own_model = read_config(ck), json.loads(json.dumps(config_to_dict(self.model_config)))
        for k in sorted(set(saved_model) | set(own_model)):
            if saved_model.get(k) != own_model.get(k):
                diffs.append(f"model {k}: checkpoint {saved_model.get(k)!r}, now {own_model.get(k)!r}")
        saved_cfg, own_cfg = st.get("train_config", {}), dataclasses.asdict(self.cfg)
        for k in sorted(set(saved_cfg) | set(own_cfg)):
            if k not in RESUME_MAY_CHANGE and saved_cfg.get(k) != own_cfg.get(k):
                diffs.append(f"{k}: checkpoint {saved_cfg.get(k)!r}, now {own_cfg.get(k)!r}")
        saved_info = st.get("run_info", {})
        for k in sorted(set(saved_info) | set(self.run_info)):
            if saved_info.get(k) != self.run_info.get(k):
                diffs.append(f"{k}: checkpoint {saved_info.get(k)!r}, now {self.run_info.get(k)!r}")
        if diffs:
            raise ValueError(f"cannot resume {ck}: this run's settings differ from the checkpoint's: "
                             + "; ".join(diffs) + ". Rerun with the checkpoint's settings, or use a new output "
                             "directory to start afresh")

    def _truncate_metrics(self, step: int) -> None:
        f = self.out / METRICS_FILE
        if f.is_file():
            keep = [r for r in read_metrics(f) if r["step"] <= step]
            atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in keep))

    def save(self) -> None:
        rng = _rng_state()
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if self.is_main:
            extra = {"optimizer": self.opt.state_dict(), "step": self.step, "rng": rng,
                     "train_config": dataclasses.asdict(self.cfg), "run_info": self.run_info,
                     "hook": None if self.hook is None else self.hook.state_dict()}
            save_checkpoint(self.out / CHECKPOINT_DIR, self.model, self.model_config, extra=extra, files=self.files)
        if self.world > 1:
            dist.barrier()

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch.to(self.device) if isinstance(batch, torch.Tensor) else batch

    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                   desc="train", dynamic_ncols=True)
        last: dict[str, float] = {}
        if self.step >= cfg.max_steps and self.is_main:  # a finished run: report what it logged last
            rows = read_metrics(self.out / METRICS_FILE)
            last = {k: v for k, v in rows[-1].items() if k.startswith(("loss", "acc/"))} if rows else {}
        t0, tok_acc = time.perf_counter(), 0
        t_start = time.monotonic()
        while self.step < cfg.max_steps:
            lr = lr_at(self.step, cfg)
            for g in self.opt.param_groups:
                g["lr"] = lr
            if self.hook is not None:
                self.hook.set_lr_scale(lr / cfg.lr)
            per_stream: dict[str, float] = {}
            acc: dict[str, float] = {}
            other: dict[str, float] = {}
            total = 0.0
            for micro in range(cfg.grad_accum):
                batch = self._to_device(self.batch_fn(self.step, micro, self.rank, self.world))
                sync = micro == cfg.grad_accum - 1
                ctx = self.ddp.no_sync() if (self.world > 1 and not sync) else contextlib.nullcontext()
                with ctx, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.autocast):
                    lo = self.loss_fn(self.ddp, batch)
                (lo.total / cfg.grad_accum).backward()
                total += float(lo.total.detach()) / cfg.grad_accum
                for k, v in lo.per_stream.items():
                    per_stream[k] = per_stream.get(k, 0.0) + v / cfg.grad_accum
                for k, v in lo.accuracy.items():
                    acc[k] = acc.get(k, 0.0) + v / cfg.grad_accum
                for k, v in lo.metrics.items():
                    other[k] = other.get(k, 0.0) + float(v) / cfg.grad_accum
                tok_acc += lo.tokens
            diverged = not math.isfinite(total)
            if self.world > 1:  # one rank's NaN reaches every rank's gradients: all stop together
                flag = torch.tensor([float(diverged)], device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                diverged = bool(flag.item())
            if diverged:  # stop before the optimizer step: the weights and checkpoints stay sound
                raise ValueError(f"the loss is {total} at step {self.step + 1}: training diverged. The last "
                                 f"checkpoint in {self.out / CHECKPOINT_DIR} is intact; resume from it with a lower "
                                 "lr (in a new output directory) or check the data for NaN")
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad) if cfg.clip_grad else None
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            last = {"loss": total, **{f"loss/{k}": v for k, v in per_stream.items()},
                    **{f"acc/{k}": v for k, v in acc.items()}, **other}
            if self.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{total:.3f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    dt = time.perf_counter() - t0
                    row = {"step": self.step, "lr": lr, **last, "tokens_per_s": tok_acc * self.world / max(dt, 1e-9)}
                    if gnorm is not None:
                        row["grad_norm"] = float(gnorm)
                    row = {k: _json_float(v) if isinstance(v, float) else v for k, v in row.items()}
                    with open(self.out / METRICS_FILE, "a") as f:
                        f.write(json.dumps(row, allow_nan=False) + "\n")
                    t0, tok_acc = time.perf_counter(), 0
            out_of_time = cfg.max_minutes is not None and time.monotonic() - t_start > 60 * cfg.max_minutes
            if self.world > 1:  # every rank stops at the same step
                flag = torch.tensor([float(out_of_time)], device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps or out_of_time:
                self.save()
                if self.is_main and cfg.plot:
                    plot_metrics(self.out / METRICS_FILE, self.out / PLOT_FILE)
            if out_of_time:
                if self.is_main:
                    print(f"[trainer] time budget of {cfg.max_minutes} min spent at step {self.step}; checkpoint saved")
                break
        bar.close()
        return last
