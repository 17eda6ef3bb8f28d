"""Split RVQ: k-means init, EMA updates, dead-code replacement, encode/decode consistency, quantization skip."""

import torch

from speech.codec.config import QuantizerConfig
from speech.codec.quantizer import EuclideanCodebook, SplitResidualVQ, kmeans


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centres])
    means, counts = kmeans(x, 3, 20)
    d = torch.cdist(centres, means).min(dim=1).values
    assert (d < 0.2).all() and sorted(counts.tolist()) == [50, 50, 50]


def test_ema_update_moves_codes_and_dead_codes_are_replaced():
    torch.manual_seed(0)
    cfg = QuantizerConfig(dimension=4, bins=8, total_codebooks=2, num_codebooks=2, check_unused_every=1, decay=0.5)
    cb = EuclideanCodebook(4, cfg)
    x = torch.randn(64, 4)
    cb.init_kmeans(x)
    assert bool(cb.initialized)
    # all data far away and assigned to code 0: its entry moves there, unused entries decay and get replaced
    far = torch.randn(64, 4) * 0.01 + 100.0
    before = cb.embedding.clone()
    replaced = [cb.update(far, torch.zeros(64, dtype=torch.long)) for _ in range(5)]
    assert replaced[0] == 0.0  # one step of decay is not enough to call an entry dead
    assert max(replaced) >= 0.5  # after a few steps without use, the other entries are replaced
    assert (cb.embedding[0] - 100).abs().max() < (before[0] - 100).abs().max()
    # replaced entries were drawn from the batch, so most entries now sit near the far data
    assert ((cb.embedding - 100).abs().max(dim=1).values < 1).sum() >= 5


def test_split_rvq_encode_decode_and_residual_improves():
    torch.manual_seed(0)
    cfg = QuantizerConfig(dimension=8, bins=16, total_codebooks=6, num_codebooks=4, no_quantization_rate=0.0)
    q = SplitResidualVQ(12, cfg)
    x = torch.randn(4, 12, 30)
    q.train()
    out = q(x)  # k-means initialises every codebook on this batch
    q.eval()
    codes = q.encode(x)
    assert codes.shape == (4, 4, 30) and codes.max() < 16
    assert torch.equal(codes, out.codes)
    torch.testing.assert_close(q.decode(codes), out.quantized, rtol=1e-4, atol=1e-4)
    # the acoustic residual stack: more codebooks -> smaller error of rvq_rest in its own space
    z = q.rvq_rest.input_proj(x).transpose(1, 2).reshape(-1, 8)
    errs = []
    for k in range(1, 4):
        recon = sum(q.rvq_rest.layers[i].decode(codes[:, 1 + i].reshape(-1)) for i in range(k))
        errs.append(float(((z - recon) ** 2).mean().detach()))
    assert errs[0] > errs[1] > errs[2]


def test_no_quantization_rate_skips_quantization_for_some_samples():
    torch.manual_seed(0)
    cfg = QuantizerConfig(dimension=8, bins=4, total_codebooks=3, num_codebooks=3, no_quantization_rate=0.5)
    q = SplitResidualVQ(12, cfg).train()
    x = torch.randn(64, 12, 5)
    out = q(x)
    exact = q.rvq_first.output_proj(q.rvq_first.input_proj(x)) + q.rvq_rest.output_proj(q.rvq_rest.input_proj(x))
    same = ((out.quantized - exact).abs().amax(dim=(1, 2)) < 1e-5).float().mean()
    assert 0.25 < float(same) < 0.75  # about half of the samples pass through unquantized
    out.quantized.sum().backward()  # straight-through: the projections get gradients
    assert q.rvq_rest.input_proj.weight.grad is not None and q.rvq_rest.input_proj.weight.grad.abs().sum() > 0
