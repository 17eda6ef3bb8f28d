"""Codec training on the engine's `multistream.trainer.Trainer`: a batch function, a loss function and a
discriminator hook, so the codec shares the one resume, schedule, metrics log and loss plot of every other run.

- `codec_batch_fn(dataset, batch_size, seed)`: the batch of (step, micro, rank) is drawn with a numpy generator
  seeded by exactly those numbers, a pure function as the Trainer's exact resume requires.
- `CodecObjective`: `loss_fn(model, batch)` runs the codec and calls `speech.codec.losses.CodecLoss` (the generator
  objective: mel + commitment + phone distillation, + STFT/phase/wave, + adversarial and feature matching). With
  `loss.adversarial` it owns the MS-STFT discriminator and its optimizer (`Discriminator`, a `TrainHook`): each
  loss call first updates the discriminator on (real, detached reconstruction), then returns the generator loss.
  The Trainer schedules the discriminator's learning rate with the codec's and checkpoints its state.
- `make_trainer(...)`: the Trainer with the codec's settings (fp32, AdamW betas (0.8, 0.99), no weight decay,
  warmup then cosine to 10%).

Torch RNG (quantizer skip masks, k-means and dead-code draws) is saved by the Trainer; codebook EMA buffers and
their counters live in the model's state dict. Dimension legend: B batch, C channels, N samples, T frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from multistream.loss import LossOutput
from multistream.trainer import TrainConfig, Trainer

from .data import IGNORE, ClipDataset
from .losses import CodecLoss, MultiScaleSTFTDiscriminator, discriminator_loss
from .model import MimiCodec

CODEC_BETAS = (0.8, 0.99)


def codec_batch_fn(dataset: ClipDataset, batch_size: int, seed: int) -> Callable[[int, int, int, int], dict]:
    """batch(step, micro, rank, world) -> {"audio": [B, 1, N], "ids": [B, T]}, deterministic in its arguments."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        audio, ids = dataset.batch(batch_size, np.random.default_rng([seed, step, micro, rank]))
        return {"audio": audio, "ids": ids}

    return fn


class Discriminator:
    """The MS-STFT discriminator with its own AdamW; a `multistream.trainer.TrainHook`."""

    def __init__(self, loss_cfg: Any, lr: float, device: str | torch.device = "cpu") -> None:
        if not lr > 0:
            raise ValueError(f"discriminator lr must be > 0, got {lr!r}")
        self.lr = lr
        self.disc = MultiScaleSTFTDiscriminator(loss_cfg.disc_scales, loss_cfg.disc_filters).to(device)
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=CODEC_BETAS, weight_decay=0.0)

    def set_lr_scale(self, scale: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.lr * scale

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One discriminator step on real [B, C, N] vs reconstructed [B, C, N] (detached) audio."""
        d_loss = discriminator_loss(self.disc(real), self.disc(fake.detach()))
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        return float(d_loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])


class CodecObjective:
    """`loss_fn` for the Trainer: codec forward, discriminator update (if adversarial), `CodecLoss`."""

    def __init__(self, codec: MimiCodec, disc_lr: float = 3e-4, device: str | torch.device = "cpu") -> None:
        ccfg = codec.cfg
        self.loss = CodecLoss(ccfg.sample_rate, ccfg.loss, IGNORE).to(device)
        self.disc = Discriminator(ccfg.loss, disc_lr, device) if ccfg.loss.adversarial else None

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        x, ids = batch["audio"], batch["ids"]  # [B, 1, N], [B, T]
        out = model(x)
        extra: dict[str, float] = {"entropy": float(out.entropy), "replaced": float(out.replaced)}
        if self.disc is not None:
            extra["disc"] = self.disc.update(x, out.audio)
        loss, m = self.loss(out, x, ids, None if self.disc is None else self.disc.disc)
        acc = m.pop("phone_acc")
        return LossOutput(total=loss, per_stream=m, accuracy={"phone": acc}, tokens=int(ids.numel()), metrics=extra)


def make_trainer(codec: MimiCodec, dataset: ClipDataset, out_dir: str | Path, steps: int, batch_size: int,
                 lr: float = 1e-3, disc_lr: float = 3e-4, warmup_steps: int = 50, grad_clip: float = 1.0,
                 seed: int = 0, ckpt_every: int = 50, log_every: int = 1, max_minutes: float | None = None,
                 progress: bool = True, files: dict[str, str | Path] | None = None,
                 device: str | torch.device = "cpu") -> Trainer:
    """The engine Trainer set up for the codec (fp32, no weight decay, cosine to 10% of lr)."""
    tc = TrainConfig(out_dir=str(out_dir), max_steps=steps, lr=lr, min_lr_ratio=0.1, warmup_steps=warmup_steps,
                     weight_decay=0.0, beta1=CODEC_BETAS[0], beta2=CODEC_BETAS[1], clip_grad=grad_clip,
                     autocast=False, ckpt_every=ckpt_every, log_every=log_every, seed=seed, progress=progress,
                     max_minutes=max_minutes)
    objective = CodecObjective(codec, disc_lr, device)
    run_info = {"batch_size": batch_size, "segment_frames": dataset.num_frames, "disc_lr": disc_lr}
    return Trainer(codec, codec.cfg, tc, codec_batch_fn(dataset, batch_size, seed), objective, device=device,
                   run_info=run_info, hook=objective.disc, files=files)


@torch.no_grad()
def reconstruct(codec: MimiCodec, audio: torch.Tensor) -> torch.Tensor:
    """Encode then decode [B, C, N] (N padded up to whole frames), cropped back to N."""
    n = audio.shape[-1]
    padded = codec.pad_to_frame(audio)
    return codec.decode(codec.encode(padded))[..., :n]
