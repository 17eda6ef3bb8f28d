import pytest
import torch

from multistream.generate import Generator
from multistream.lm import LMConfig, RQTransformer
from multistream.presets import moshi_streams
from multistream.quantize import quantize_int8
from multistream.transformer import TransformerConfig


def test_int8_generator_logits_track_fp32():
    ss = moshi_streams(text_vocab=50, audio_vocab=32)
    torch.manual_seed(0)
    cfg = LMConfig(streams=ss, temporal=TransformerConfig(d_model=64, num_layers=2, num_heads=4),
                   depth=TransformerConfig(d_model=32, num_layers=2, num_heads=2), init_std=0.2)
    m = RQTransformer(cfg).eval()
    q = quantize_int8(m)
    assert type(m.head0) is torch.nn.Linear  # the original is untouched
    assert type(q.head0) is not torch.nn.Linear and "quantized" in type(q.head0).__module__
    batch = {s.name: torch.randint(0, s.vocab_size, (1, s.num_codebooks, 6)) for s in ss}
    logs = {}
    for name, model in [("fp32", m), ("int8", q)]:
        with Generator(model) as gen:
            got = []
            for t in range(6):
                gen.step({n: x[:, :, t] for n, x in batch.items()})  # all streams teacher-forced
                got.append(gen.last_logits["audio.agent"])
        logs[name] = torch.stack(got)
    rel = (logs["int8"] - logs["fp32"]).norm() / logs["fp32"].norm()
    assert rel < 0.1, float(rel)
    agree = (logs["int8"].argmax(-1) == logs["fp32"].argmax(-1)).float().mean()
    assert agree > 0.8, float(agree)


def test_int8_refuses_training_mode():
    m = RQTransformer(LMConfig(streams=moshi_streams(text_vocab=50, audio_vocab=32)))
    with pytest.raises(ValueError, match="eval"):
        quantize_int8(m)
