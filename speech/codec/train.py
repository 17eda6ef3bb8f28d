"""One training step of the codec (generator and, when enabled, the MS-STFT discriminator) with exact resume.

`CodecTrainer.step()` draws a batch from a `ClipDataset` with its own seeded numpy generator, runs the codec,
and updates it with multi-scale mel + commitment + phone-distillation (+ hinge adversarial + feature matching)
losses. `state_dict()` holds everything a resumed run needs to continue bit-for-bit: optimizers, step, the data
generator's state and torch's RNG (quantizer skip masks, k-means and dead-code sampling draw from it); codebook
EMA buffers and their step counters live in the model's own state dict.

Dimension legend: B batch, C channels, N samples, T frames, P phone classes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import CodecConfig
from .data import IGNORE, ClipDataset
from .losses import CodecLoss, MultiScaleSTFTDiscriminator, discriminator_loss
from .model import MimiCodec


@dataclass
class TrainConfig:
    """Optimisation settings of a codec run."""

    steps: int = 2000  # total optimizer steps (a time budget may stop earlier)
    batch_size: int = 8
    segment_frames: int = 25  # crop length in frames (25 = 2 s)
    lr: float = 1e-3
    disc_lr: float = 3e-4
    betas: tuple[float, float] = (0.8, 0.99)
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.segment_frames < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, segment_frames={self.segment_frames}"
                             " must all be >= 1")
        if self.lr <= 0 or self.disc_lr <= 0:
            raise ValueError(f"learning rates must be positive, got lr={self.lr}, disc_lr={self.disc_lr}")
        self.betas = tuple(self.betas)


class CodecTrainer:
    def __init__(self, codec: MimiCodec, dataset: ClipDataset, cfg: TrainConfig):
        self.codec, self.data, self.cfg = codec, dataset, cfg
        ccfg: CodecConfig = codec.cfg
        self.loss_cfg = ccfg.loss
        self.loss_fn = CodecLoss(ccfg.sample_rate, ccfg.loss, IGNORE)
        self.opt = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=0.0)
        self.disc = None
        self.disc_opt = None
        if ccfg.loss.adversarial:
            self.disc = MultiScaleSTFTDiscriminator(ccfg.loss.disc_scales, ccfg.loss.disc_filters)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas,
                                              weight_decay=0.0)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.step_count = 0

    def _lr_scale(self) -> float:
        s = self.step_count
        if s < self.cfg.warmup_steps:
            return (s + 1) / self.cfg.warmup_steps
        progress = min(1.0, (s - self.cfg.warmup_steps) / max(1, self.cfg.steps - self.cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10%

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.codec.train()
        x, ids = self.data.batch(self.cfg.batch_size, self.rng)  # [B, 1, N], [B, T]
        scale = self._lr_scale()
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * scale
        out = self.codec(x)
        metrics: dict[str, float] = {}
        if self.disc is not None:
            assert self.disc_opt is not None
            for g in self.disc_opt.param_groups:
                g["lr"] = self.cfg.disc_lr * scale
            d_loss = discriminator_loss(self.disc(x), self.disc(out.audio.detach()))
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            metrics["disc"] = float(d_loss.detach())
        loss, loss_metrics = self.loss_fn(out, x, ids, self.disc)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.codec.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        metrics.update(step=self.step_count, loss=float(loss.detach()), **loss_metrics,
                       entropy=out.entropy, replaced=out.replaced,
                       grad_norm=float(gnorm), lr=self.cfg.lr * scale, sec=time.perf_counter() - t0)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "opt": self.opt.state_dict(),
            "disc": None if self.disc is None else self.disc.state_dict(),
            "disc_opt": None if self.disc_opt is None else self.disc_opt.state_dict(),
            "data_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        self.opt.load_state_dict(state["opt"])
        if (state["disc"] is None) != (self.disc is None):
            raise ValueError("checkpoint and run disagree on the adversarial loss (loss.adversarial)")
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
        self.rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])


@torch.no_grad()
def reconstruct(codec: MimiCodec, audio: torch.Tensor) -> torch.Tensor:
    """Encode then decode [B, C, N] (N padded up to whole frames), cropped back to N."""
    n = audio.shape[-1]
    padded = codec.pad_to_frame(audio)
    return codec.decode(codec.encode(padded))[..., :n]
