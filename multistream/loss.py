"""Per-stream weighted cross entropy over the aligned logits of `RQTransformer.forward`.

Each predicted stream's loss is a weighted mean over its valid positions: codebook weights (Moshi weights the
semantic codebook above the acoustic ones) times a PAD weight for text (PAD dominates the monologue stream, so it is
usually down-weighted). The total is the sum of stream losses times their `loss_weight`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from multistream.lm import LMOutput
from multistream.streams import StreamSet


@dataclasses.dataclass
class LossOutput:
    total: torch.Tensor  # scalar, differentiable
    per_stream: dict[str, float]  # weighted mean CE per predicted stream
    accuracy: dict[str, float]  # argmax accuracy over valid positions, per predicted stream
    tokens: int  # number of valid target tokens
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # other figures to log as they are


def lm_loss(out: LMOutput, streams: StreamSet) -> LossOutput:
    total = None
    per_stream, accuracy = {}, {}
    n_tokens = 0
    for spec in streams.predicted:
        logits = out.logits[spec.name].float()  # [B, K, T, V]
        tgt, mask = out.targets[spec.name], out.mask[spec.name]  # [B, K, T]
        safe = torch.where(mask, tgt, 0)  # masked positions may hold initial_id / ZERO_ID: not real classes
        ce = F.cross_entropy(logits.flatten(0, 2), safe.flatten(), reduction="none")
        ce = ce.view_as(tgt)  # [B, K, T]
        w = mask.float()
        if spec.codebook_weights is not None:
            w = w * torch.tensor(spec.codebook_weights, device=w.device)[None, :, None]
        if spec.pad_id is not None and spec.pad_weight != 1.0:
            w = torch.where(tgt == spec.pad_id, w * spec.pad_weight, w)
        denom = w.sum().clamp_min(1e-8)
        loss = (ce * w).sum() / denom
        total = spec.loss_weight * loss if total is None else total + spec.loss_weight * loss
        per_stream[spec.name] = float(loss.detach())
        with torch.no_grad():
            n = int(mask.sum())
            correct = ((logits.argmax(-1) == tgt) & mask).sum()
            accuracy[spec.name] = float(correct) / max(n, 1)
            n_tokens += n
    assert total is not None
    return LossOutput(total=total, per_stream=per_stream, accuracy=accuracy, tokens=n_tokens)
