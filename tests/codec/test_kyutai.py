"""Kyutai Mimi weights map onto the `mimi` preset: names, shapes, and the RoPE convention of the attention."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from multistream.transformer import StreamingTransformer, TransformerConfig
from speech.codec.config import mimi
from speech.codec.kyutai import interleaved_to_halves, kyutai_name, load_kyutai_mimi
from speech.codec.model import MimiCodec


def _moshi_attention(x, w_in, w_out, num_heads, max_period=10000.0):
    """moshi StreamingMultiheadAttention (causal, interleaved RoPE, no context limit), written from its source."""
    b, t, d = x.shape
    q, k, v = rearrange(x @ w_in.T, "b t (p h e) -> p b h t e", p=3, h=num_heads)
    dh = d // num_heads
    freqs = torch.exp(torch.arange(dh // 2) * (-math.log(max_period) * 2 / dh))
    ts = torch.arange(t, dtype=torch.float32)[:, None]
    rotr, roti = torch.cos(freqs * ts), torch.sin(freqs * ts)

    def rot(z):
        z = z.view(*z.shape[:-1], dh // 2, 2)
        zr, zi = z[..., 0], z[..., 1]
        return torch.stack([zr * rotr - zi * roti, zr * roti + zi * rotr], dim=-1).view(*z.shape[:-2], dh)

    mask = torch.ones(t, t, dtype=torch.bool).tril()
    y = F.scaled_dot_product_attention(rot(q), rot(k), v, attn_mask=mask)
    return rearrange(y, "b h t e -> b t (h e)") @ w_out.T


def _moshi_layer(x, w, num_heads):
    """moshi StreamingTransformerLayer (pre-norm LayerNorm, GELU MLP without bias, LayerScale)."""
    ln = lambda z: F.layer_norm(z, z.shape[-1:], eps=1e-5)
    x = x + w["ls1"] * _moshi_attention(ln(x), w["in"], w["out"], num_heads)
    return x + w["ls2"] * (F.gelu(ln(x) @ w["l1"].T) @ w["l2"].T)


def test_rope_permutation_makes_the_transformer_layer_identical():
    torch.manual_seed(0)
    d, h = 32, 4
    w = {"in": torch.randn(3 * d, d) / d**0.5, "out": torch.randn(d, d) / d**0.5, "l1": torch.randn(4 * d, d) / d**0.5,
         "l2": torch.randn(d, 4 * d) / (4 * d) ** 0.5, "ls1": torch.rand(d), "ls2": torch.rand(d)}
    x = torch.randn(2, 7, d)
    tr = StreamingTransformer(TransformerConfig(d_model=d, num_heads=h, num_layers=1, gated=False, norm="layer",
                                                ffn_mult=4.0, layer_scale=0.01, bias=False))
    state = {
        "layers.0.attn.qkv.lin.weight": interleaved_to_halves(w["in"], h), "layers.0.attn.out.lin.weight": w["out"],
        "layers.0.ffn.up.lin.weight": w["l1"], "layers.0.ffn.down.lin.weight": w["l2"],
        "layers.0.ls1.scale": w["ls1"], "layers.0.ls2.scale": w["ls2"],
    }
    tr.load_state_dict(state, strict=False)  # norms keep their fresh (1, 0) affine, as in the reference
    with torch.no_grad():
        torch.testing.assert_close(tr(x), _moshi_layer(x, w, h), rtol=1e-4, atol=1e-5)
        tr.load_state_dict({"layers.0.attn.qkv.lin.weight": w["in"]}, strict=False)
        assert not torch.allclose(tr(x), _moshi_layer(x, w, h), atol=1e-3)  # the permutation is needed


def _kyutai_names(codec: MimiCodec) -> dict[str, tuple[int, ...]]:
    """Kyutai key -> shape, built from the module structure of moshi's MimiModel (names from its source)."""
    out = {}
    for k, v in codec.state_dict().items():
        parts = k.split(".")
        if k.startswith(("encoder.", "decoder.")):
            if parts[-2] in ("conv", "convtr"):
                parts.insert(-1, parts[-2])
        elif k.startswith("downsample."):
            parts = ["downsample", "conv", "conv", "conv", "weight"]
        elif k.startswith("upsample."):
            parts = ["upsample", "convtr", "convtr", "convtr", "weight"]
        elif ".layers." in k and k.startswith("quantizer."):
            if parts[-1] == "updates":
                continue
            parts = parts[:2] + ["vq", "layers", parts[3], "_codebook",
                                 "_initialized" if parts[-1] == "initialized" else parts[-1]]
        elif "transformer" in k:
            sub = ".".join(parts[4:])
            sub = {"attn.qkv.lin.weight": "self_attn.in_proj_weight",
                   "attn.out.lin.weight": "self_attn.out_proj.weight",
                   "ffn.up.lin.weight": "linear1.weight", "ffn.down.lin.weight": "linear2.weight",
                   "ls1.scale": "layer_scale_1.scale", "ls2.scale": "layer_scale_2.scale"}.get(sub, sub)
            parts = parts[:4] + sub.split(".")
        elif k.startswith("semantic_head"):
            continue
        out[".".join(parts)] = tuple(v.shape)
    return out


def test_load_kyutai_state_into_mimi_preset():
    torch.manual_seed(0)
    codec = MimiCodec(mimi())
    names = _kyutai_names(codec)
    assert "encoder.model.0.conv.conv.weight" in names and "decoder.model.2.convtr.convtr.weight" in names
    assert "quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum" in names
    assert "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight" in names
    state = {k: torch.randn(s) if k.split(".")[-1] != "_initialized" else torch.ones(1) for k, s in names.items()}
    load_kyutai_mimi(codec, state)
    own = codec.state_dict()
    torch.testing.assert_close(own["encoder.model.0.conv.weight"], state["encoder.model.0.conv.conv.weight"])
    torch.testing.assert_close(own["quantizer.rvq_rest.layers.30.embedding_sum"],
                               state["quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum"])
    w = state["decoder_transformer.transformer.layers.3.self_attn.in_proj_weight"]
    torch.testing.assert_close(own["decoder_transformer.transformer.layers.3.attn.qkv.lin.weight"],
                               interleaved_to_halves(w, 8))
    assert kyutai_name("encoder.model.0.conv.conv.weight") == "encoder.model.0.conv.weight"
    del state["upsample.convtr.convtr.convtr.weight"]
    with pytest.raises(ValueError, match="missing.*upsample.convtr.weight"):
        load_kyutai_mimi(codec, state)
