"""Closed-loop control and serving: same-frame inputs, per-stream output timing, per-row reset, prefix forcing,
validity masks, trainable input encoders."""

import pytest
import torch

from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, RQTransformer
from multistream.loss import lm_loss
from multistream.presets import tiny
from multistream.streams import StreamSet, StreamSpec, valid_key
from multistream.transformer import TransformerConfig

from .test_lm import frame_at, mixed_streams, random_batch


def small_model(ss: StreamSet, seed: int = 0) -> RQTransformer:
    torch.manual_seed(seed)
    cfg = LMConfig(streams=ss, temporal=TransformerConfig(d_model=32, num_layers=2, num_heads=4),
                   depth=TransformerConfig(d_model=16, num_layers=1, num_heads=2))
    return RQTransformer(cfg).eval()


@pytest.mark.parametrize("name", ["obs", "img"])
def test_same_frame_input_changes_its_own_frame_and_no_earlier(name):
    ss = mixed_streams()
    m = small_model(ss)
    a = random_batch(ss, t=8)
    if name == "img":
        a[valid_key("img")][:] = True
    b = {k: v.clone() for k, v in a.items()}
    t0 = 5
    if ss[name].continuous:
        b[name][:, t0] = torch.randn_like(b[name][:, t0])
    else:
        b[name][:, 0, t0] = (b[name][:, 0, t0] + 1) % ss[name].vocab_size  # codebook 0 has delay 0
    with torch.no_grad():
        la, lb = m(a).logits, m(b).logits
    for n in la:
        torch.testing.assert_close(la[n][:, :, :t0], lb[n][:, :, :t0], rtol=0, atol=0)
    assert not torch.allclose(la["text"][:, :, t0], lb["text"][:, :, t0])  # its own frame sees it
    # a stream that is not same-frame changes nothing at its own frame
    c = {k: v.clone() for k, v in a.items()}
    c["user"][:, 0, t0] = (c["user"][:, 0, t0] + 1) % ss["user"].vocab_size
    with torch.no_grad():
        lc = m(c).logits
    for n in la:
        torch.testing.assert_close(la[n][:, :, : t0 + 1], lc[n][:, :, : t0 + 1], rtol=0, atol=0)


def control_streams() -> StreamSet:
    """A toy policy: observation (same-frame input), action (predicted, no delay), speech (predicted, delay 2)."""
    return StreamSet((
        StreamSpec("action", vocab_size=12, predicted=True),
        StreamSpec("speech", vocab_size=6, num_codebooks=2, delays=(0, 2), predicted=True),
        StreamSpec("obs", vocab_size=12, same_frame=True),
    ))


def policy(obs: torch.Tensor) -> torch.Tensor:
    return (obs * 5 + 3) % 12  # a bijection: the action is only knowable from the same frame's observation


def control_batch(b: int, t: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    obs = torch.randint(0, 12, (b, 1, t), generator=g)
    return {"obs": obs, "action": policy(obs), "speech": torch.randint(0, 6, (b, 2, t), generator=g)}


def test_zero_delay_stream_returns_its_own_frame_while_another_has_delay_2():
    ss = control_streams()
    m = small_model(ss)
    g = torch.Generator().manual_seed(0)
    batch = control_batch(2, 6, g)
    with Generator(m, batch_size=2, seed=0) as gen:
        for t in range(6):
            o = gen.step({"obs": batch["obs"][:, :, t]})
            assert o is not None and o.frames["action"].tolist() == [t, t]
            if t < 2:
                assert "speech" not in o.tokens
            else:
                assert o.frames["speech"].tolist() == [t - 2, t - 2]


def test_closed_loop_toy_learned_and_reproduced_by_the_generator():
    """An action that must equal a function of the same frame's observation: >= 99% through the training forward
    with the `tiny` preset, then the same closed loop through Generator at temperature 0."""
    ss = control_streams()
    torch.manual_seed(0)
    m = RQTransformer(tiny(ss))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        lo = lm_loss(m(control_batch(16, 12, g)), ss)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
    m.eval()
    test = control_batch(32, 12, torch.Generator().manual_seed(99))
    with torch.no_grad():
        acc = (m(test).logits["action"].argmax(-1) == test["action"]).float().mean().item()
    assert acc >= 0.99, acc
    hits = 0
    with Generator(m, batch_size=32, sampling=Sampling(temperature=0.0)) as gen:
        for t in range(12):
            o = gen.step({"obs": test["obs"][:, :, t]})  # observe frame t ...
            hits += int((o.tokens["action"][:, 0] == test["action"][:, 0, t]).sum())  # ... act on frame t
    assert hits / (32 * 12) >= 0.99, hits


def run_rows(m, ss, frames, reset_at=None, rows=(1,), new=None, sampling=None):
    """Step a batch through `frames`; at step reset_at reset `rows` and feed `new` frames for them from then on."""
    toks, logits = [], []
    with Generator(m, batch_size=frames[0]["obs"].shape[0], seed=5, sampling=sampling) as gen:
        for t, fr in enumerate(frames):
            if reset_at is not None and t == reset_at:
                gen.reset(list(rows))
            if new is not None and reset_at is not None and t >= reset_at:
                fr = {k: v.clone() for k, v in fr.items()}
                for r in rows:
                    for k in fr:
                        fr[k][r] = new[t - reset_at][k][0]
            o = gen.step(fr)
            toks.append({n: v.clone() for n, v in o.tokens.items()})
            toks[-1].update({f"{n}@frame": f.clone() for n, f in o.frames.items()})
            logits.append({n: v.clone() for n, v in gen.last_logits.items()})
    return toks, logits


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_resetting_one_row_leaves_the_others_bit_identical(temperature):
    ss = mixed_streams()
    m = small_model(ss)
    batch = random_batch(ss, b=3, t=10, seed=4)
    inputs = [{n: v for n, v in frame_at(ss, batch, t).items() if n not in ("text", "agent")} for t in range(10)]
    sampling = Sampling(temperature=temperature, top_k=0)
    ref_t, ref_l = run_rows(m, ss, inputs, sampling=sampling)
    other = random_batch(ss, b=1, t=10, seed=8)
    new = [{n: v for n, v in frame_at(ss, other, t).items() if n not in ("text", "agent")} for t in range(10)]
    got_t, got_l = run_rows(m, ss, inputs, reset_at=4, rows=(1,), new=new, sampling=sampling)
    for t in range(10):
        for n in ref_l[t]:
            for r in (0, 2):
                assert torch.equal(got_l[t][n][r], ref_l[t][n][r]), (t, n, r)
                if n in ref_t[t]:
                    assert torch.equal(got_t[t][n][r], ref_t[t][n][r]), (t, n, r)
    # the reset row behaves like a fresh conversation started with the new inputs (greedy: same tokens)
    if temperature == 0.0:
        fresh_t, fresh_l = run_rows(m, ss, new[:6], sampling=sampling)
        for t in range(6):
            for n in fresh_l[t]:
                torch.testing.assert_close(got_l[4 + t][n][1], fresh_l[t][n][0], atol=1e-5, rtol=1e-5)
            for n in [k for k in got_t[4 + t] if "@" not in k]:
                if n in fresh_t[t]:
                    assert torch.equal(got_t[4 + t][n][1], fresh_t[t][n][0]), (t, n)
                else:  # the other rows have this stream ready; the reset row does not yet
                    assert got_t[4 + t][f"{n}@frame"][1] == -1, (t, n)


def test_teacher_forcing_a_prefix_then_continuing():
    ss = mixed_streams()
    m = small_model(ss)
    batch = random_batch(ss, b=2, t=8, seed=2)
    with torch.no_grad():
        full = m(batch).logits
    with Generator(m, batch_size=2, sampling=Sampling(temperature=0.0)) as gen:
        outs, text_logits = [], []
        for t in range(8):
            fr = frame_at(ss, batch, t)
            if t >= 3:  # force text and agent for frames 0..2, then the model continues on its own
                del fr["text"], fr["agent"]
            outs.append(gen.step(fr))
            text_logits.append(gen.last_logits["text"].clone())
            if t < 3:
                # while everything is forced the step equals the training forward
                torch.testing.assert_close(gen.last_logits["text"], full["text"][:, :, t], atol=1e-4, rtol=1e-4)
        for t in range(3):
            assert torch.equal(outs[t].tokens["text"], batch["text"][:, :, t])
        assert torch.equal(outs[2].tokens["agent"], batch["agent"][:, :, 0])  # forced frame 0, back with delay 2
        assert torch.equal(outs[4].tokens["agent"], batch["agent"][:, :, 2])  # last forced frame
    # frame 3 onward is the model's own (greedy = argmax of its logits), no longer the recorded text
    for t in range(3, 8):
        assert torch.equal(outs[t].tokens["text"][:, 0], text_logits[t][:, 0].argmax(-1))
    assert not all(torch.equal(outs[t].tokens["text"], batch["text"][:, :, t]) for t in range(3, 8))


def test_validity_mask_uses_the_missing_embedding_not_zeros():
    ss = mixed_streams()
    m = small_model(ss)
    batch = random_batch(ss, t=6)
    batch[valid_key("feat")][:] = True
    a = dict(batch)
    a["feat"] = batch["feat"].clone()
    a["feat"][:, 2] = 0.0  # a reading of zero ...
    b = dict(a)
    b[valid_key("feat")] = batch[valid_key("feat")].clone()
    b[valid_key("feat")][:, 2] = False  # ... versus no reading
    c = dict(b)
    c["feat"] = a["feat"].clone()
    c["feat"][:, 2] = 123.0  # an invalid frame's values are ignored
    with torch.no_grad():
        la, lb, lc = m(a).logits, m(b).logits, m(c).logits
    # feat has delay 1 and is not same-frame: frame 2 reaches position 4
    assert not torch.allclose(la["text"][:, :, 4], lb["text"][:, :, 4])
    torch.testing.assert_close(lb["text"], lc["text"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="'feat/valid' must be a bool tensor"):
        m(dict(batch, **{"feat/valid": torch.ones(2, 6)}))
    with pytest.raises(ValueError, match="validity mask 'user/valid' names no continuous stream"):
        m(dict(batch, **{"user/valid": torch.ones(2, 6, dtype=torch.bool)}))


def test_trainable_image_encoder_gets_gradients():
    ss = mixed_streams()
    m = small_model(ss).train()
    lo = lm_loss(m(random_batch(ss, t=6)), ss)
    lo.total.backward()
    enc = m.adapters["img"]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.encoder.parameters())
    assert enc.missing.grad is not None
    assert {id(p) for p in enc.parameters()} <= {id(p) for p in m.parameters()}


def test_stream_spec_errors():
    with pytest.raises(ValueError, match="cannot be same_frame"):
        StreamSpec("a", vocab_size=3, predicted=True, same_frame=True)
    with pytest.raises(ValueError, match="must not contain '/'"):
        StreamSpec("a/b", vocab_size=3)
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        LMConfig(streams=StreamSet((StreamSpec("a", vocab_size=3, predicted=True),
                                    StreamSpec("x", continuous=True, feature_shape=(4,), encoder="vit"))))
    with pytest.raises(ValueError, match="encoder 'conv2d' takes channels-last images"):
        RQTransformer(LMConfig(streams=StreamSet((StreamSpec("a", vocab_size=3, predicted=True),
                                                  StreamSpec("x", continuous=True, feature_dim=4,
                                                             encoder="conv2d")))))
    with pytest.raises(ValueError, match="frame_rate must be a positive"):
        LMConfig(streams=control_streams(), frame_rate=0)
    ss = control_streams()
    assert "obs" in ss and "nope" not in ss


def test_free_id_forces_some_rows_and_lets_the_model_generate_others():
    """Row 0 listens (action forced to ZERO_ID), row 1 acts (FREE_ID): one batched step serves both."""
    from multistream.streams import FREE_ID, ZERO_ID

    ss = control_streams()
    m = small_model(ss)
    obs = torch.randint(0, 12, (2, 1, 5), generator=torch.Generator().manual_seed(3))
    with Generator(m, batch_size=2, sampling=Sampling(temperature=0.0)) as gen:
        for t in range(5):
            forced = torch.tensor([[ZERO_ID], [FREE_ID]])
            speech = torch.full((2, 2), FREE_ID)
            o = gen.step({"obs": obs[:, :, t], "action": forced, "speech": speech})
            assert o.tokens["action"][0, 0] == ZERO_ID
            assert o.tokens["action"][1, 0] == gen.last_logits["action"][1, 0].argmax()
    with Generator(m, batch_size=2) as gen, pytest.raises(ValueError, match="token id -2 out of range"):
        gen.step({"obs": torch.full((2, 1), FREE_ID)})  # FREE_ID is for predicted streams only
