"""CUDA checks of the engine (run with `pytest -m gpu`; skipped without CUDA)."""

import pytest
import torch

from multistream.generate import Generator
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import moshi_streams, small, tiny
from multistream.toy import toy_batch, toy_batch_fn, toy_streams
from multistream.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def test_cuda_streaming_equals_full_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ss = moshi_streams(text_vocab=100, audio_vocab=64)
    torch.manual_seed(0)
    m = RQTransformer(tiny(ss)).cuda().eval()
    t = 10
    batch = {s.name: torch.randint(0, s.vocab_size, (2, s.num_codebooks, t), device="cuda") for s in ss}
    with torch.no_grad():
        full = m(batch).logits
    steps = {n: [] for n in full}
    with Generator(m, batch_size=2) as gen:
        for i in range(t):
            gen.step({n: x[:, :, i] for n, x in batch.items()})
            for n in full:
                steps[n].append(gen.last_logits[n])
    for n in full:
        torch.testing.assert_close(torch.stack(steps[n], 2), full[n], atol=1e-3, rtol=1e-3)


def test_cuda_bf16_training_learns_toy(tmp_path):
    ss = toy_streams()
    cfg = tiny(ss)
    torch.manual_seed(0)
    m = RQTransformer(cfg)
    tc = TrainConfig(out_dir=str(tmp_path), max_steps=300, lr=3e-3, warmup_steps=20, weight_decay=0.0,
                     progress=False, plot=False, ckpt_every=1000)
    Trainer(m, cfg, tc, toy_batch_fn(32, 32), lambda mod, b: lm_loss(mod(b), ss), device="cuda").fit()
    m.eval()
    with torch.no_grad():
        held = {k: v.cuda() for k, v in toy_batch(64, 32, seed=99).items()}
        assert lm_loss(m(held), ss).accuracy["out"] >= 0.99


def test_cuda_small_generator_runs_bf16():
    m = RQTransformer(small()).cuda().eval().to(torch.bfloat16)
    user = m.streams["audio.user"]
    with Generator(m, seed=0) as gen:
        outs = [gen.step({"audio.user": torch.randint(0, user.vocab_size, (1, 8), device="cuda")}) for _ in range(5)]
    assert outs[-1].tokens["audio.agent"].shape == (1, 8)


def test_cuda_row_reset_and_ring_cache():
    """Per-row reset on CUDA leaves the other rows identical; a bounded context wraps its ring buffer."""
    from multistream.transformer import StreamingTransformer, TransformerConfig

    torch.manual_seed(0)
    m = StreamingTransformer(TransformerConfig(d_model=32, num_layers=2, num_heads=4, context=4)).cuda().eval()
    x = torch.randn(3, 12, 32, device="cuda")
    with torch.no_grad():
        full = m(x)
        with m.streaming(3):
            ref = torch.cat([m(x[:, i : i + 1]) for i in range(12)], 1)
        with m.streaming(3):
            got = []
            for i in range(12):
                if i == 5:
                    m.reset_streaming([1])
                got.append(m(x[:, i : i + 1]))
            got = torch.cat(got, 1)
    torch.testing.assert_close(ref, full, atol=1e-4, rtol=1e-4)
    assert torch.equal(got[[0, 2]], ref[[0, 2]])
