import pytest
import torch

from multistream.transformer import StreamingTransformer, TransformerConfig


def _model(**kw) -> StreamingTransformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, num_layers=2, num_heads=4, **kw)
    return StreamingTransformer(cfg).eval()


@pytest.mark.parametrize("kw", [{}, {"num_kv_heads": 2}, {"context": 5}, {"layer_scale": 0.1, "gated": False,
                                                                          "norm": "layer"}])
def test_chunked_equals_full(kw):
    m = _model(**kw)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        full = m(x)
        outs = []
        with m.streaming(2):
            for a, b in [(0, 1), (1, 5), (5, 6), (6, 13), (13, 17)]:
                outs.append(m(x[:, a:b]))
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"context": 4}])
def test_causality(kw):
    m = _model(**kw)
    x = torch.randn(1, 12, 32)
    y = x.clone()
    y[:, 7:] = torch.randn(1, 5, 32)
    with torch.no_grad():
        a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_sliding_context_forgets():
    m = _model(context=3)
    x = torch.randn(1, 10, 32)
    y = x.clone()
    y[:, 0] += 1.0
    with torch.no_grad():
        a, b = m(x), m(y)
    # With 2 layers and a window of 3, position p sees positions >= p - 4 at most.
    torch.testing.assert_close(a[:, 5:], b[:, 5:])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_weights_per_step_chunked_equals_full():
    m = _model(weights_per_step=6)
    x = torch.randn(3, 6, 32)
    with torch.no_grad():
        full = m(x)
        with m.streaming(3):
            steps = [m(x[:, i : i + 1]) for i in range(6)]
        with pytest.raises(ValueError, match="weights_per_step"):
            m(torch.randn(3, 7, 32))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="num_heads=3"):
        TransformerConfig(d_model=32, num_heads=3)
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        TransformerConfig(d_model=32, num_heads=4, num_kv_heads=3)
    m = _model()
    with pytest.raises(ValueError, match=r"\[B, T, 32\]"):
        m(torch.randn(2, 5, 16))
    with m.streaming(2), pytest.raises(ValueError, match="batch 3"):
        m(torch.randn(3, 1, 32))


@pytest.mark.parametrize("kw", [{"context": 5}, {"context": 5, "num_kv_heads": 2}, {}])
def test_ring_cache_chunked_equals_full_past_wrap_and_growth(kw):
    """Chunks larger than the ring (context 5), single steps after many wraps, and (unlimited context) growth of
    the preallocated cache past its initial size."""
    m = _model(**kw)
    m.cache_hint = 4  # an unlimited cache starts at 4 slots and must grow by doubling
    x = torch.randn(2, 40, 32)
    cuts = [0, 1, 8, 9, 10, 23, 24, 25, 26, 40]
    with torch.no_grad():
        full = m(x)
        with m.streaming(2):
            outs = [m(x[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            slots = m.state.capacity
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert slots == (5 if kw else 64)


def test_ring_cache_is_preallocated_and_written_in_place():
    m = _model(context=8)
    with torch.no_grad(), m.streaming(1):
        m(torch.randn(1, 1, 32))
        k = m.layers[0].attn.state.k
        ptr, shape = k.data_ptr(), tuple(k.shape)
        for _ in range(30):
            m(torch.randn(1, 1, 32))
        assert m.layers[0].attn.state.k.data_ptr() == ptr and tuple(m.layers[0].attn.state.k.shape) == shape
    assert shape == (1, 4, 8, 8)  # [B, G, C = context, Dh]


@pytest.mark.parametrize("kw", [{"context": 4}, {}])
def test_reset_one_row(kw):
    """Resetting row 1 leaves rows 0 and 2 bit-identical; row 1 then matches a fresh run of its new input."""
    m = _model(**kw)
    x = torch.randn(3, 12, 32)
    fresh_in = torch.randn(1, 7, 32)
    with torch.no_grad():
        with m.streaming(3):
            ref = torch.cat([m(x[:, i : i + 1]) for i in range(12)], 1)
        with m.streaming(3):
            got = []
            for i in range(12):
                xi = x[:, i : i + 1].clone()
                if i == 5:
                    m.reset_streaming([1])
                if i >= 5:
                    xi[1] = fresh_in[:, i - 5]
                got.append(m(xi))
            got = torch.cat(got, 1)
        fresh = m(fresh_in)
    assert torch.equal(got[[0, 2]], ref[[0, 2]])
    torch.testing.assert_close(got[1, 5:], fresh[0], atol=1e-5, rtol=1e-5)
    with m.streaming(3), pytest.raises(ValueError, match="row 3 out of range"):
        m.reset_streaming([3])
