"""Map a Kyutai Mimi state dict (kyutai-labs/moshi `MimiModel`) onto the `mimi` preset of this codec.

The `mimi` preset has the same tensor shapes as Kyutai's release; only names differ (their convs are wrapped twice,
`conv.conv.weight`; their codebooks live under `vq.layers.i._codebook`; their transformer layers are
`self_attn.in_proj`, `linear1`, `layer_scale_1`). Two computations differ from moshi's code, and both are matched:
- RoPE: moshi rotates *interleaved* pairs (x0, x1), (x2, x3), ... whereas `multistream.transformer.rope` rotates
  halves (x_i, x_{i + Dh/2}); permuting the query and key rows of each head's in-projection (done on load) makes
  the two identical.
- Padding of the frame-rate downsampling conv: moshi's `ConvDownsample1d` pads on the left by replicating the
  first sample, our causal convs pad with zeros; the `mimi` preset sets `downsample_pad_mode="replicate"` so its
  downsampling conv pads as Kyutai's does (the CPU presets keep zeros).
Our extra tensors (the phone head, the codebooks' `updates` counters) are not in their checkpoint and keep their
fresh values. This mapping is checked against a list of Kyutai's key names written out independently of these
rules (tests/codec/test_kyutai.py); it has not been run against the released checkpoint file. Nothing here
downloads.

Dimension legend: H heads, Dh head dim, D model dim.
"""

from __future__ import annotations

import re

import torch
from einops import rearrange
from torch import Tensor

from .model import MimiCodec

_RULES = [
    (r"^(encoder|decoder)\.model\.(\d+)\.conv\.conv\.(weight|bias)$", r"\1.model.\2.conv.\3"),
    (r"^(encoder|decoder)\.model\.(\d+)\.block\.(\d+)\.conv\.conv\.(weight|bias)$", r"\1.model.\2.block.\3.conv.\4"),
    (r"^decoder\.model\.(\d+)\.convtr\.convtr\.(weight|bias)$", r"decoder.model.\1.convtr.\2"),
    (r"^downsample\.conv\.conv\.conv\.weight$", "downsample.conv.weight"),
    (r"^upsample\.convtr\.convtr\.convtr\.weight$", "upsample.convtr.weight"),
    (r"^quantizer\.(rvq_first|rvq_rest)\.(input_proj|output_proj)\.weight$", r"quantizer.\1.\2.weight"),
    (r"^quantizer\.(rvq_first|rvq_rest)\.vq\.layers\.(\d+)\._codebook\.(cluster_usage|embedding_sum)$",
     r"quantizer.\1.layers.\2.\3"),
    (r"^quantizer\.(rvq_first|rvq_rest)\.vq\.layers\.(\d+)\._codebook\._initialized$",
     r"quantizer.\1.layers.\2.initialized"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.self_attn\.(in_proj_weight|in_projs\.0\.weight)$",
     r"\1_transformer.transformer.layers.\2.attn.qkv.lin.weight"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.self_attn\.(out_proj\.weight|out_projs\.0\.weight)$",
     r"\1_transformer.transformer.layers.\2.attn.out.lin.weight"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.(norm[12])\.(weight|bias)$",
     r"\1_transformer.transformer.layers.\2.\3.\4"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.linear1\.weight$",
     r"\1_transformer.transformer.layers.\2.ffn.up.lin.weight"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.linear2\.weight$",
     r"\1_transformer.transformer.layers.\2.ffn.down.lin.weight"),
    (r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.layer_scale_([12])\.scale$",
     r"\1_transformer.transformer.layers.\2.ls\3.scale"),
]
OUR_ONLY = re.compile(r"^(semantic_head\.(weight|bias)|quantizer\.(rvq_first|rvq_rest)\.layers\.\d+\.updates)$")


def kyutai_name(name: str) -> str | None:
    """Our parameter name for a Kyutai Mimi state-dict key; None when the key has no counterpart."""
    for pattern, repl in _RULES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def interleaved_to_halves(w: Tensor, num_heads: int) -> Tensor:
    """Reorder the q and k rows of an in-projection [3 * D, D] from moshi's interleaved RoPE pairs to halves."""
    q, k, v = w.chunk(3, dim=0)

    def fix(x: Tensor) -> Tensor:
        x = rearrange(x, "(h e two) d -> h two e d", h=num_heads, two=2)  # [H, 2, Dh/2, D]: even rows, then odd
        return rearrange(x, "h two e d -> (h two e) d")  # [H * Dh, D]

    return torch.cat([fix(q), fix(k), v], dim=0)


def load_kyutai_mimi(codec: MimiCodec, state: dict[str, Tensor]) -> None:
    """Load Kyutai's Mimi weights (a loaded safetensors dict) into a `mimi`-preset codec; raises on any mismatch."""
    own = codec.state_dict()
    mapped: dict[str, Tensor] = {}
    unknown = []
    for k, v in state.items():
        ours = kyutai_name(k)
        if ours is None:
            unknown.append(k)
            continue
        if ours.endswith("attn.qkv.lin.weight"):
            v = interleaved_to_halves(v, codec.cfg.transformer.num_heads)
        if ours.endswith(".initialized"):
            v = v.reshape(own[ours].shape).to(own[ours].dtype)
        mapped[ours] = v
    missing = sorted(k for k in own if k not in mapped and not OUR_ONLY.match(k))
    if unknown or missing:
        raise ValueError(f"Kyutai Mimi state does not match the codec: unknown keys {unknown[:6]}, "
                         f"missing {missing[:6]}")
    bad = [k for k, v in mapped.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"shape mismatch for {k}: Kyutai {tuple(mapped[k].shape)}, ours "
                         f"{tuple(own[k].shape) if k in own else 'absent'}")
    codec.load_state_dict(mapped, strict=False)
