"""Training loop: bf16 autocast, gradient accumulation, cosine schedule with warmup, atomic checkpoints with exact
resume, tqdm progress, JSON-lines metrics and a loss plot; single process or `torchrun` (DDP, gloo on CPU).

Exact resume rests on one rule: the data of optimizer step s is a pure function `batch_fn(step, micro, rank,
world)`, so nothing about the data loader needs saving. A checkpoint holds the weights, the optimizer state, the
step and the RNG state; a run killed at any moment resumes from its last checkpoint and ends with the same
parameters as a run that never stopped.
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
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from multistream.checkpoint import load_trainer_state, load_weights, save_checkpoint
from multistream.loss import LossOutput

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


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

    if not metrics_path.is_file():
        return
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = sorted({k for r in rows for k in r if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ["loss", *keys]:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=2 if k == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("cross entropy")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)


class Trainer:
    """`Trainer(model, model_config, cfg, batch_fn, loss_fn).fit()`.

    batch_fn(step, micro, rank, world) -> batch (deterministic). loss_fn(model, batch) -> LossOutput.
    """

    def __init__(
        self,
        model: nn.Module,
        model_config: Any,
        cfg: TrainConfig,
        batch_fn: Callable[[int, int, int, int], Any],
        loss_fn: Callable[[nn.Module, Any], LossOutput],
        device: str | torch.device | None = None,
    ) -> None:
        self.cfg = cfg
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
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
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
        if not (ck / "config.json").is_file():
            torch.manual_seed(self.cfg.seed + self.rank)
            return
        load_weights(ck, self.model, map_location=self.device)
        st = load_trainer_state(ck)
        if st is None:
            raise FileNotFoundError(f"checkpoint {ck} has weights but no trainer state; cannot resume exactly")
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        _set_rng_state(st["rng"][self.rank] if isinstance(st["rng"], list) else st["rng"])
        if self.is_main:
            self._truncate_metrics(self.step)
            print(f"[trainer] resumed from {ck} at step {self.step}")

    def _truncate_metrics(self, step: int) -> None:
        f = self.out / METRICS_FILE
        if f.is_file():
            keep = [ln for ln in f.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
            tmp = f.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, f)

    def save(self) -> None:
        rng = _rng_state()
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if self.is_main:
            extra = {"optimizer": self.opt.state_dict(), "step": self.step, "rng": rng,
                     "train_config": dataclasses.asdict(self.cfg)}
            save_checkpoint(self.out / CHECKPOINT_DIR, self.model, self.model_config, extra=extra)
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
        t0, tok_acc = time.perf_counter(), 0
        while self.step < cfg.max_steps:
            lr = lr_at(self.step, cfg)
            for g in self.opt.param_groups:
                g["lr"] = lr
            per_stream: dict[str, float] = {}
            acc: dict[str, float] = {}
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
                tok_acc += lo.tokens
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad) if cfg.clip_grad else None
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            last = {"loss": total, **{f"loss/{k}": v for k, v in per_stream.items()},
                    **{f"acc/{k}": v for k, v in acc.items()}}
            if self.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{total:.3f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    dt = time.perf_counter() - t0
                    row = {"step": self.step, "lr": lr, **last, "tokens_per_s": tok_acc * self.world / max(dt, 1e-9)}
                    if gnorm is not None:
                        row["grad_norm"] = float(gnorm)
                    with open(self.out / METRICS_FILE, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    t0, tok_acc = time.perf_counter(), 0
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
                self.save()
                if self.is_main and cfg.plot:
                    plot_metrics(self.out / METRICS_FILE, self.out / PLOT_FILE)
        bar.close()
        return last
