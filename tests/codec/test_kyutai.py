"""Kyutai Mimi weights map onto the `mimi` preset: names, shapes, and the RoPE convention of the attention."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from multistream.transformer import StreamingTransformer, TransformerConfig
from speech.codec.config import mimi, tiny
from speech.codec.kyutai import OUR_ONLY, interleaved_to_halves, kyutai_name, load_kyutai_mimi
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


def _kyutai_mimi_keys() -> dict[str, tuple[int, ...] | None]:
    """Kyutai's Mimi checkpoint keys, written out from moshi's modules (not from our loader's rules), with the
    shapes we know for certain (None: shape not asserted). SEANet encoder: conv 0, residual blocks at 1/4/7/10
    (block.1 and block.3 are their convs), strided convs at 3/6/9/12, final conv 14; decoder: conv 0, transposed
    convs at 2/5/8/11, residual blocks at 3/6/9/12, final conv 14. Transformers: 8 layers of LayerNorm + attention
    (fused in_proj_weight) + a linear1/linear2 MLP with layer scales. Quantizer: 1 semantic + 31 acoustic
    codebooks, each an EMA codebook with `_initialized`, `cluster_usage`, `embedding_sum`."""
    keys: dict[str, tuple[int, ...] | None] = {}
    for side, convs, blocks in (("encoder", (0, 3, 6, 9, 12, 14), (1, 4, 7, 10)),
                                ("decoder", (0, 14), (3, 6, 9, 12))):
        for i in convs:
            keys[f"{side}.model.{i}.conv.conv.weight"] = None
            keys[f"{side}.model.{i}.conv.conv.bias"] = None
        for i in blocks:
            for j in (1, 3):
                keys[f"{side}.model.{i}.block.{j}.conv.conv.weight"] = None
                keys[f"{side}.model.{i}.block.{j}.conv.conv.bias"] = None
    for i in (2, 5, 8, 11):
        keys[f"decoder.model.{i}.convtr.convtr.weight"] = None
        keys[f"decoder.model.{i}.convtr.convtr.bias"] = None
    keys["encoder.model.0.conv.conv.weight"] = (64, 1, 7)
    keys["encoder.model.14.conv.conv.weight"] = (512, 1024, 3)
    keys["decoder.model.0.conv.conv.weight"] = (1024, 512, 7)
    keys["decoder.model.14.conv.conv.weight"] = (1, 64, 3)
    for side in ("encoder", "decoder"):
        for layer in range(8):
            p = f"{side}_transformer.transformer.layers.{layer}."
            keys[p + "self_attn.in_proj_weight"] = (1536, 512)
            keys[p + "self_attn.out_proj.weight"] = (512, 512)
            keys[p + "linear1.weight"] = (2048, 512)
            keys[p + "linear2.weight"] = (512, 2048)
            for n in ("norm1", "norm2"):
                keys[p + f"{n}.weight"] = keys[p + f"{n}.bias"] = (512,)
            keys[p + "layer_scale_1.scale"] = keys[p + "layer_scale_2.scale"] = (512,)
    keys["downsample.conv.conv.conv.weight"] = (512, 512, 4)
    keys["upsample.convtr.convtr.convtr.weight"] = (512, 1, 4)
    for rvq, n in (("rvq_first", 1), ("rvq_rest", 31)):
        keys[f"quantizer.{rvq}.input_proj.weight"] = (256, 512, 1)
        keys[f"quantizer.{rvq}.output_proj.weight"] = (512, 256, 1)
        for i in range(n):
            p = f"quantizer.{rvq}.vq.layers.{i}._codebook."
            keys[p + "_initialized"] = (1,)
            keys[p + "cluster_usage"] = (2048,)
            keys[p + "embedding_sum"] = (2048, 256)
    return keys


def test_loader_maps_an_independent_list_of_kyutai_names():
    torch.manual_seed(0)
    codec = MimiCodec(mimi())
    own = codec.state_dict()
    keys = _kyutai_mimi_keys()
    assert len(keys) == len(set(keys))
    mapped = {k: kyutai_name(k) for k in keys}
    assert [k for k, v in mapped.items() if v is None or v not in own] == []  # every Kyutai key has a home
    assert len(set(mapped.values())) == len(mapped)  # no two Kyutai keys land on one of ours
    covered = set(mapped.values())
    assert sorted(k for k in own if k not in covered and not OUR_ONLY.match(k)) == []  # and we need no other
    for k, shape in keys.items():
        if shape is not None and not k.endswith("_initialized"):
            assert tuple(own[mapped[k]].shape) == shape, k
    state = {k: (torch.ones(1) if k.endswith("_initialized") else torch.randn(own[mapped[k]].shape)) for k in keys}
    load_kyutai_mimi(codec, state)


def test_mimi_preset_pads_the_downsampling_conv_like_kyutai():
    """Kyutai's ConvDownsample1d pads by replicating the first sample; zeros would change every first frame."""
    codec = MimiCodec(mimi())
    assert codec.cfg.downsample_pad_mode == "replicate" and codec.downsample.pad_mode == "replicate"
    conv = codec.downsample
    x = torch.randn(1, conv.conv.in_channels, 8) + 3.0  # far from zero, so zero padding would differ
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (conv.padding_total, 0), mode="replicate"),
                                     conv.conv.weight, stride=conv.stride)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ref)
        with conv.streaming(1):
            chunked = torch.cat([conv(x[..., :2]), conv(x[..., 2:6]), conv(x[..., 6:])], dim=-1)
        torch.testing.assert_close(chunked, ref)
    assert tiny().downsample_pad_mode == "constant"
    with pytest.raises(ValueError, match="downsample_pad_mode must be"):
        type(tiny())(downsample_pad_mode="reflect")
