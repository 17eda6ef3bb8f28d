"""The `mimi` preset has the parameter shapes of Kyutai's released Mimi (kyutai-labs/moshi `get_mimi`)."""

import torch

from speech.codec.config import mimi
from speech.codec.model import MimiCodec


def test_mimi_shapes_match_kyutai():
    with torch.device("meta"):
        codec = MimiCodec(mimi())
    shapes = {k: tuple(v.shape) for k, v in codec.state_dict().items()}
    # moshi: SEANetEncoder(n_filters=64, ratios=[8, 6, 5, 4], dimension=512, compress=2, last_kernel_size=3)
    expected = {
        "encoder.model.0.conv.weight": (64, 1, 7),
        "encoder.model.1.block.1.conv.weight": (32, 64, 3),
        "encoder.model.1.block.3.conv.weight": (64, 32, 1),
        "encoder.model.3.conv.weight": (128, 64, 8),
        "encoder.model.6.conv.weight": (256, 128, 10),
        "encoder.model.9.conv.weight": (512, 256, 12),
        "encoder.model.12.conv.weight": (1024, 512, 16),
        "encoder.model.14.conv.weight": (512, 1024, 3),
        "decoder.model.0.conv.weight": (1024, 512, 7),
        "decoder.model.2.convtr.weight": (1024, 512, 16),
        "decoder.model.11.convtr.weight": (128, 64, 8),
        "decoder.model.12.block.1.conv.weight": (32, 64, 3),
        "decoder.model.14.conv.weight": (1, 64, 3),
        # ConvDownsample1d(2, learnt) and ConvTrUpsample1d(2, learnt, channel_wise) without bias
        "downsample.conv.weight": (512, 512, 4),
        "upsample.convtr.weight": (512, 1, 4),
        # SplitResidualVectorQuantizer(dimension=256, n_q=32, bins=2048, input/output_dimension=512)
        "quantizer.rvq_first.input_proj.weight": (256, 512, 1),
        "quantizer.rvq_first.output_proj.weight": (512, 256, 1),
        "quantizer.rvq_first.layers.0.embedding_sum": (2048, 256),
        "quantizer.rvq_first.layers.0.cluster_usage": (2048,),
        "quantizer.rvq_rest.input_proj.weight": (256, 512, 1),
        "quantizer.rvq_rest.layers.30.embedding_sum": (2048, 256),
    }
    for k, v in expected.items():
        assert shapes[k] == v, (k, shapes[k], v)
    assert "quantizer.rvq_rest.layers.31.embedding_sum" not in shapes  # 1 + 31 = 32 codebooks
    assert not any(k.endswith("bias") for k in shapes if k.startswith(("downsample", "upsample", "quantizer")))
    # ProjectedTransformer(d_model=512, num_heads=8, num_layers=8, dim_feedforward=2048, layer_scale=0.01):
    # in_proj [1536, 512], out_proj [512, 512], linear1 [2048, 512], linear2 [512, 2048], no biases, LayerNorm
    for side in ("encoder_transformer", "decoder_transformer"):
        layer_shapes = sorted(v for k, v in shapes.items() if k.startswith(f"{side}.transformer.layers.7."))
        assert sorted([(1536, 512), (512, 512), (2048, 512), (512, 2048), (512,), (512,), (512,), (512,), (512,),
                       (512,)]) == layer_shapes
        assert f"{side}.transformer.layers.8.norm1.weight" not in shapes
    n_tr = sum(v.numel() for k, v in codec.state_dict().items() if "transformer" in k)
    assert n_tr == 2 * 8 * (4 * 512 * 512 + 2 * 512 * 2048 + 6 * 512)
    assert codec.num_codebooks == 8 and codec.cardinality == 2048
