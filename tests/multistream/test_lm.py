import pytest
import torch

from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, RQTransformer
from multistream.presets import moshi_streams, tiny
from multistream.streams import ZERO_ID, StreamSet, StreamSpec, delay, keep_codebooks, undelay, valid_key
from multistream.transformer import TransformerConfig


def mixed_streams() -> StreamSet:
    """Every kind of stream: predicted text, predicted delayed audio, input audio, an input continuous stream with
    a validity mask, and same-frame inputs (tokens with a delay, images through a trainable CNN)."""
    return StreamSet((
        StreamSpec("text", vocab_size=11, predicted=True, pad_id=0, pad_weight=0.5),
        StreamSpec("agent", vocab_size=13, num_codebooks=3, delays=(0, 2, 1), predicted=True,
                   codebook_weights=(10.0, 1.0, 1.0)),
        StreamSpec("user", vocab_size=13, num_codebooks=2, delays=(0, 1)),
        StreamSpec("feat", continuous=True, feature_dim=5, delays=(1,)),
        StreamSpec("obs", vocab_size=7, num_codebooks=2, delays=(0, 1), same_frame=True),
        StreamSpec("img", continuous=True, feature_shape=(12, 12, 3), encoder="conv2d", same_frame=True),
    ))


def make_model(streams=None, wps=False, seed=0) -> RQTransformer:
    torch.manual_seed(seed)
    streams = streams or mixed_streams()
    cfg = LMConfig(streams=streams,
                   temporal=TransformerConfig(d_model=32, num_layers=2, num_heads=4),
                   depth=TransformerConfig(d_model=16, num_layers=2, num_heads=2,
                                           weights_per_step=streams.num_predicted - 1 if wps else 0))
    return RQTransformer(cfg).eval()


def random_batch(streams: StreamSet, b=2, t=9, seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in streams:
        if s.continuous:
            out[s.name] = torch.randn(b, t, *s.feature_shape, generator=g)
            out[valid_key(s.name)] = torch.rand(b, t, generator=g) > 0.3
        else:
            out[s.name] = torch.randint(0, s.vocab_size, (b, s.num_codebooks, t), generator=g)
    return out


def test_keep_codebooks():
    codes = torch.randint(0, 9, (2, 4, 5))
    kept = keep_codebooks(codes, 2)
    assert (kept[:, :2] == codes[:, :2]).all() and (kept[:, 2:] == ZERO_ID).all() and (codes >= 0).all()
    assert keep_codebooks(codes, 0) is codes and keep_codebooks(codes, 4) is codes
    step = torch.randint(0, 9, (3, 4))  # one frame [B, K], as a session feeds it
    assert (keep_codebooks(step, 1)[:, 1:] == ZERO_ID).all() and (keep_codebooks(step, 1)[:, 0] == step[:, 0]).all()
    for n in (-1, 5):
        with pytest.raises(ValueError, match="codebooks"):
            keep_codebooks(codes, n)


@pytest.mark.parametrize("seed", range(5))
def test_delay_undelay_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 6, (1,), generator=g))
    delays = torch.randint(0, 4, (k,), generator=g).tolist()
    t = int(torch.randint(1, 12, (1,), generator=g))
    x = torch.randint(0, 50, (2, k, t), generator=g)
    d, dvalid = delay(x, delays, fill=-7)
    for i, dl in enumerate(delays):
        assert (d[:, i, : min(dl, t)] == -7).all() and not dvalid[:, i, : min(dl, t)].any()
        assert dvalid[:, i, dl:].all()
    back, valid = undelay(d, delays, fill=-7)
    assert torch.equal(back[valid], x[valid])
    for i, dl in enumerate(delays):
        assert valid[:, i, : max(t - dl, 0)].all() and not valid[:, i, max(t - dl, 0):].any()
    # delay(undelay(y)) == y wherever y came from a real frame
    d2, v2 = delay(back, delays, fill=-7)
    assert torch.equal(d2[v2 & dvalid], d[v2 & dvalid])


def test_forward_shapes_and_masks():
    ss = mixed_streams()
    m = make_model(ss)
    out = m(random_batch(ss, b=2, t=9))
    assert out.logits["text"].shape == (2, 1, 9, 11)
    assert out.logits["agent"].shape == (2, 3, 9, 13)
    assert set(out.logits) == {"text", "agent"}
    assert not out.mask["agent"][:, 1, :2].any() and out.mask["agent"][:, 1, 2:].all()


@pytest.mark.parametrize("wps", [False, True])
def test_temporal_causality(wps):
    ss = mixed_streams()
    m = make_model(ss, wps=wps)
    a = random_batch(ss, t=10)
    b = {k: v.clone() for k, v in a.items()}
    t0 = 6
    for s in ss:  # change every stream at frames >= t0
        if s.continuous:
            b[s.name][:, t0:] = torch.randn_like(b[s.name][:, t0:])
        else:
            b[s.name][:, :, t0:] = (b[s.name][:, :, t0:] + 1) % s.vocab_size
    with torch.no_grad():
        la, lb = m(a).logits, m(b).logits
    for name in la:
        # delayed position t holds frame t - d: frames >= t0 enter logits only from position t0 on (+1 shift)
        torch.testing.assert_close(la[name][:, :, :t0], lb[name][:, :, :t0])
    assert not torch.allclose(la["agent"][:, :, t0 + 2 :], lb["agent"][:, :, t0 + 2 :])


@pytest.mark.parametrize("wps", [False, True])
def test_depth_causality(wps):
    """Changing predicted codebook k of a frame changes no logits of codebooks <= k of that frame."""
    ss = mixed_streams()
    m = make_model(ss, wps=wps)
    a = random_batch(ss, t=6)
    order = [(s.name, k) for s in ss.predicted for k in range(s.num_codebooks)]
    with torch.no_grad():
        base = m(a).logits
        for j, (name, k) in enumerate(order):
            b = {n: v.clone() for n, v in a.items()}
            # change codebook k at delayed position 4 only (= frame 4 - d_k)
            src = 4 - ss[name].delays[k]
            b[name][:, k, src] = (b[name][:, k, src] + 1) % ss[name].vocab_size
            new = m(b).logits
            for jj, (n2, k2) in enumerate(order):
                same = torch.allclose(base[n2][:, k2, 4], new[n2][:, k2, 4])
                if jj <= j:
                    assert same, f"codebook {n2}/{k2} changed after changing {name}/{k}"
            if j + 1 < len(order):
                n2, k2 = order[j + 1]
                assert not torch.allclose(base[n2][:, k2, 4], new[n2][:, k2, 4])


@pytest.mark.parametrize("wps", [False, True])
def test_streaming_equals_full(wps):
    ss = mixed_streams()
    m = make_model(ss, wps=wps)
    t = 8
    batch = random_batch(ss, b=2, t=t)
    with torch.no_grad():
        full = m(batch).logits
    got = {n: [] for n in full}
    outs = []
    with Generator(m, batch_size=2, seed=0) as gen:
        for i in range(t):
            o = gen.step(frame_at(ss, batch, i))
            for n in full:
                got[n].append(gen.last_logits[n])
            outs.append(o)
    for n in full:
        torch.testing.assert_close(torch.stack(got[n], dim=2), full[n], atol=1e-4, rtol=1e-4)
    # teacher-forced outputs are the recorded frames, undelayed; each stream returns once its own delays filled
    for i, o in enumerate(outs):
        assert o.frames["text"].tolist() == [i, i]
        assert torch.equal(o.tokens["text"], batch["text"][:, :, i])
        if i < 2:
            assert "agent" not in o.tokens
        else:
            assert o.frames["agent"].tolist() == [i - 2, i - 2]
            assert torch.equal(o.tokens["agent"], batch["agent"][:, :, i - 2])


def frame_at(ss: StreamSet, batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Frame i of every stream (and validity mask) of a batch, as Generator.step takes it."""
    frame = {}
    for s in ss:
        frame[s.name] = batch[s.name][:, i] if s.continuous else batch[s.name][:, :, i]
        if s.continuous and valid_key(s.name) in batch:
            frame[valid_key(s.name)] = batch[valid_key(s.name)][:, i]
    return frame


def test_generator_seeded_and_bad_input():
    ss = mixed_streams()
    m = make_model(ss)
    inp = random_batch(ss, b=1, t=6, seed=3)

    def run(seed):
        toks = []
        with Generator(m, seed=seed, sampling={"text": Sampling(temperature=1.0, top_k=5)}) as gen:
            for i in range(6):
                o = gen.step({n: v for n, v in frame_at(ss, inp, i).items() if n not in ("text", "agent")})
                if "agent" in o.tokens:
                    toks.append(torch.cat([o.tokens["text"], o.tokens["agent"]], 1))
        return torch.cat(toks)

    assert torch.equal(run(1), run(1))
    good = {n: v for n, v in frame_at(ss, inp, 0).items() if n not in ("text", "agent")}
    with Generator(m) as gen:
        with pytest.raises(ValueError, match="missing input stream 'user'"):
            gen.step({n: v for n, v in good.items() if n != "user"})
        with pytest.raises(ValueError, match="unknown stream 'nope'"):
            gen.step(dict(good, nope=torch.zeros(1, 1)))
        with pytest.raises(ValueError, match=r"token id 13 out of range"):
            gen.step(dict(good, user=torch.full((1, 2), 13)))
        with pytest.raises(ValueError, match=r"\[1, 2\]"):
            gen.step(dict(good, user=torch.zeros(1, 3, dtype=torch.long)))
        with pytest.raises(ValueError, match=r"stream 'user': expected a torch.Tensor or numpy array, got list"):
            gen.step(dict(good, user=[[1, 2]]))
        with pytest.raises(ValueError, match=r"'feat/valid' must be a bool tensor"):
            gen.step(dict(good, **{"feat/valid": torch.ones(1)}))
        with pytest.raises(ValueError, match="inputs must be a dict"):
            gen.step([good])
        o = gen.step({n: v.numpy() for n, v in good.items()})  # numpy frames are accepted
        assert o.tokens["text"].shape == (1, 1)


def test_bad_batches_raise_naming_the_value():
    ss = mixed_streams()
    m = make_model(ss)
    good = random_batch(ss, t=5)
    bad = dict(good, agent=good["agent"][:, :2])
    with pytest.raises(ValueError, match="stream 'agent': got 2 codebooks, expected 3"):
        m(bad)
    bad = dict(good, user=good["user"].clone())
    bad["user"][0, 0, 0] = 99
    with pytest.raises(ValueError, match="token id 99 out of range"):
        m(bad)
    bad = dict(good, text=good["text"][:, :, :4])
    with pytest.raises(ValueError, match=r"stream 'agent': batch/frames \(2, 5\) do not match \(2, 4\)"):
        m(bad)
    with pytest.raises(ValueError, match="unknown stream 'video'"):
        m(dict(good, video=good["user"]))
    with pytest.raises(ValueError, match="unknown stream 'video'"):
        ss["video"]
    with pytest.raises(ValueError, match="missing stream 'feat'"):
        m({k: v for k, v in good.items() if k != "feat"})
    with pytest.raises(ValueError, match="3 delays for 2 codebooks"):
        StreamSpec("x", vocab_size=4, num_codebooks=2, delays=(0, 1, 1))


def test_zero_id_means_no_input():
    """ZERO_ID contributes a zero embedding: with a stream all ZERO_ID, its embedding tables do not matter."""
    ss = mixed_streams()
    m = make_model(ss)
    batch = random_batch(ss, t=5)
    batch["user"][:] = ZERO_ID
    batch["text"][:, :, 2] = ZERO_ID
    with torch.no_grad():
        out = m(batch)
        assert not out.mask["text"][:, 0, 2].any()
        assert torch.isfinite(out.logits["agent"]).all()
        user_tables = [m.embs[i] for i in (4, 5)]  # text (1) + agent (3) codebooks come first
        for e in user_tables:
            assert e.weight.shape[0] == ss["user"].vocab_size + 1
            e.weight[:-1].normal_(std=5.0)  # any token rows: ZERO_ID must not read them (the last is initial_id)
        again = m(batch)
        for e in user_tables:
            e.weight[:-1].zero_()
        zeroed = m(batch)
    for n in out.logits:
        torch.testing.assert_close(again.logits[n], out.logits[n], rtol=0, atol=0)
        torch.testing.assert_close(zeroed.logits[n], out.logits[n], rtol=0, atol=0)


def test_moshi_7b_parameter_count_on_meta():
    from multistream.presets import moshi_7b

    with torch.device("meta"):
        m = RQTransformer(moshi_7b())
    n = m.num_parameters()
    assert abs(n / 1e9 - 7.69) < 0.01, n
    assert m.streams.num_codebooks == 17


def test_tiny_preset_builds():
    m = RQTransformer(tiny(moshi_streams(text_vocab=100, audio_vocab=64)))
    assert m.num_parameters() < 2_000_000


def test_loss_with_delays_and_pad_weights():
    from multistream.loss import lm_loss

    ss = mixed_streams()
    m = make_model(ss)
    batch = random_batch(ss, t=7)
    lo = lm_loss(m(batch), ss)
    assert torch.isfinite(lo.total)
    lo.total.backward()
    # masked positions (delay fill) do not count: tokens = valid targets only
    assert lo.tokens == 2 * (7 + (7 + 5 + 6))
    assert set(lo.per_stream) == {"text", "agent"}


def test_loss_weights_pad_and_codebooks_exactly():
    import torch.nn.functional as F

    from multistream.lm import LMOutput
    from multistream.loss import lm_loss

    ss = StreamSet((
        StreamSpec("text", vocab_size=5, predicted=True, pad_id=0, pad_weight=0.25, loss_weight=2.0),
        StreamSpec("audio", vocab_size=7, num_codebooks=2, delays=(0, 1), predicted=True,
                   codebook_weights=(3.0, 1.0)),
    ))
    g = torch.Generator().manual_seed(0)
    logits = {"text": torch.randn(2, 1, 6, 5, generator=g), "audio": torch.randn(2, 2, 6, 7, generator=g)}
    targets = {"text": torch.tensor([[[0, 1, 0, 2, 0, 3]]] * 2), "audio": torch.randint(0, 7, (2, 2, 6), generator=g)}
    mask = {"text": torch.ones(2, 1, 6, dtype=torch.bool), "audio": torch.ones(2, 2, 6, dtype=torch.bool)}
    mask["audio"][:, 1, 0] = False
    targets["audio"][:, 1, 0] = 7  # the delay fill (initial_id): must be ignored, not crash
    lo = lm_loss(LMOutput(logits, targets, mask), ss)

    ce_t = F.cross_entropy(logits["text"].flatten(0, 2), targets["text"].flatten(), reduction="none")
    w_t = torch.where(targets["text"].flatten() == 0, 0.25, 1.0)
    want_t = (ce_t * w_t).sum() / w_t.sum()
    safe = torch.where(mask["audio"], targets["audio"], 0)
    ce_a = F.cross_entropy(logits["audio"].flatten(0, 2), safe.flatten(), reduction="none").view(2, 2, 6)
    w_a = mask["audio"].float() * torch.tensor([3.0, 1.0])[None, :, None]
    want_a = (ce_a * w_a).sum() / w_a.sum()
    assert lo.per_stream["text"] == pytest.approx(float(want_t), rel=1e-5)
    assert lo.per_stream["audio"] == pytest.approx(float(want_a), rel=1e-5)
    assert float(lo.total) == pytest.approx(float(2.0 * want_t + want_a), rel=1e-5)
    assert lo.tokens == 12 + 22


def test_sampling_top_k_and_temperature():
    from multistream.generate import sample

    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]] * 2000)
    rng = torch.Generator().manual_seed(0)
    ids = sample(logits, Sampling(temperature=1.0, top_k=2), rng)
    assert set(ids.tolist()) == {1, 2}  # only the two best
    frac = (ids == 1).float().mean().item()
    assert abs(frac - torch.softmax(torch.tensor([5.0, 4.0]), 0)[0].item()) < 0.05
    assert torch.equal(sample(logits[:3], Sampling(temperature=0.0), None), torch.tensor([1, 1, 1]))
    hot = sample(logits, Sampling(temperature=100.0), rng)
    assert len(set(hot.tolist())) == 5  # high temperature: close to uniform over the whole vocabulary
