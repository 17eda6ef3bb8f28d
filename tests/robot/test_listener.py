"""The spoken-command listener: store builder (resume, skipped clips), streaming == full, causality, bad input,
save/load, hearing the first codebooks only, a heard stop, and a tiny listener that learns to hear colours through
the committed codec."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robot.listener as L
from multistream.checkpoint import save_checkpoint
from multistream.lm import RQTransformer
from multistream.streams import ZERO_ID, keep_codebooks
from robot.command import CommandSlots

from ..speech.conftest import HAVE_TTS, make_codec

ROOT = Path(__file__).resolve().parents[2]
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs the Debian TTS packages (scripts/setup.sh installs them)")
SMALL = L.ListenerConfig(d_model=32, num_layers=2, num_heads=4, context=100, depth_d_model=32, depth_layers=1)


def tiny_listener(codec, cfg=SMALL, seed=0):
    torch.manual_seed(seed)
    slots = CommandSlots()
    model = RQTransformer(L.listener_model_config(cfg, L.listener_streams(codec, slots)))
    return L.Listener(model, cfg, codec, slots)


@needs_tts
def test_store_targets_resume_and_refusal(tmp_path):
    codec = make_codec(tmp_path / "codec")
    out = tmp_path / "lis.zarr"
    s = L.build_listener_store(out, codec, 3, progress=False)
    assert s.num_episodes == 3
    s = L.build_listener_store(out, codec, 5, progress=False)  # resumed: two more, the first three kept
    assert s.num_episodes == 5 and [m["item"] for m in s.episode_metas()] == [0, 1, 2, 3, 4]
    slots = CommandSlots()
    tail = L.ListenerConfig().tail
    for i, m in enumerate(s.episode_metas()):
        ep = s.episode(i, [L.AUDIO, L.SLOTS])
        assert ep[L.AUDIO].shape[1] == codec.num_codebooks
        assert (ep[L.SLOTS][:-tail] == ZERO_ID).all()
        assert (ep[L.SLOTS][-tail:] == np.asarray(slots.ids(m["text"]))).all()
        assert m["task"] in L.TASKS and m["voice"].startswith(("espeak", "festival", "flite"))
    with pytest.raises(ValueError, match="other settings"):
        L.build_listener_store(out, codec, 6, voice_split="heldout", progress=False)


@needs_tts
def test_an_unspeakable_clip_is_skipped_and_the_rest_kept(tmp_path, monkeypatch, capsys):
    codec = make_codec(tmp_path / "codec")
    real = L.speak_command
    calls = []

    def flaky(text, voice, *a, **k):
        calls.append(text)
        if len(calls) == 2:
            raise RuntimeError("espeak-ng: cannot synthesize")
        return real(text, voice, *a, **k)

    monkeypatch.setattr(L, "speak_command", flaky)
    s = L.build_listener_store(tmp_path / "lis.zarr", codec, 3, progress=False)
    assert [m["item"] for m in s.episode_metas()] == [0, 2]
    assert s.attrs["skipped"] == [1]
    assert "item 1: skipped (espeak-ng: cannot synthesize)" in capsys.readouterr().out
    s = L.build_listener_store(tmp_path / "lis.zarr", codec, 3, progress=False)  # a rerun does not retry forever
    assert s.num_episodes == 2


def test_streaming_equals_full_forward_and_causality(tmp_path):
    codec = make_codec(tmp_path / "codec")
    lis = tiny_listener(codec)
    rng = np.random.default_rng(0)
    for task in L.TASKS:
        audio = (0.1 * rng.standard_normal(int(1.3 * codec.sample_rate))).astype(np.float32)
        assert lis.listen([audio], task)[0] == lis.listen_streaming(audio, task)
    # causality: the slot logits of frame t do not depend on audio after t
    codes = lis.codes((0.1 * rng.standard_normal(codec.sample_rate)).astype(np.float32))[None]  # [1, K, T]
    t = codes.shape[2]
    zero = torch.full((1, 4, t), ZERO_ID, dtype=torch.long)
    a = lis.model({L.AUDIO: codes, L.SLOTS: zero}).logits[L.SLOTS]
    changed = codes.clone()
    changed[:, :, t // 2 + 1:] = torch.randint(0, codec.cardinality, changed[:, :, t // 2 + 1:].shape)
    b = lis.model({L.AUDIO: changed, L.SLOTS: zero}).logits[L.SLOTS]
    torch.testing.assert_close(a[:, :, : t // 2 + 1], b[:, :, : t // 2 + 1])
    assert not torch.allclose(a[:, :, t // 2 + 1:], b[:, :, t // 2 + 1:])


def test_only_the_last_target_frame_trains():
    s = torch.full((2, 4, 6), ZERO_ID)
    s[0, :2, 2:5] = 3  # targets on frames 2-4 of row 0, then padding
    s[1, :, 3:] = 1  # frames 3-5 of row 1
    out = L.last_target_only({L.AUDIO: torch.zeros(2, 3, 6), L.SLOTS: s})[L.SLOTS]
    assert (out[0, :2, 4] == 3).all() and (out[0, :, :4] == ZERO_ID).all() and (out[0, 2:] == ZERO_ID).all()
    assert (out[1, :, 5] == 1).all() and (out[1, :, :5] == ZERO_ID).all()


def test_a_listener_that_hears_the_first_codebooks_ignores_the_rest(tmp_path):
    codec = make_codec(tmp_path / "codec")
    cfg = L.ListenerConfig(**{**SMALL.__dict__, "audio_codebooks": 1})
    lis = tiny_listener(codec, cfg)
    rng = np.random.default_rng(1)
    codes = lis.codes((0.1 * rng.standard_normal(codec.sample_rate)).astype(np.float32))  # [K, T]
    other = codes.clone()
    other[1:] = torch.randint(0, codec.cardinality, other[1:].shape)
    assert lis.listen_codes(codes, "pick_place") == lis.listen_codes(other, "pick_place")
    audio = (0.1 * rng.standard_normal(int(1.2 * codec.sample_rate))).astype(np.float32)
    assert lis.listen([audio], "push")[0] == lis.listen_streaming(audio, "push")
    # the full listener does hear the acoustic codebooks (so the equality above is the mask's doing)
    full = tiny_listener(codec)
    batch = {L.AUDIO: codes[None], L.SLOTS: torch.full((1, 4, codes.shape[1]), ZERO_ID, dtype=torch.long)}
    masked = keep_codebooks(batch[L.AUDIO], 1)
    assert (masked[0, 0] == codes[0]).all() and (masked[0, 1:] == ZERO_ID).all()
    assert keep_codebooks(batch[L.AUDIO], 0) is batch[L.AUDIO]
    a = full.model(batch).logits[L.SLOTS]
    b = full.model({**batch, L.AUDIO: other[None]}).logits[L.SLOTS]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="audio_codebooks"):
        L.ListenerConfig(audio_codebooks=-1)


def test_bad_input_is_refused_clearly(tmp_path):
    codec = make_codec(tmp_path / "codec")
    lis = tiny_listener(codec)
    with pytest.raises(ValueError, match="mono audio"):
        L.command_audio(np.zeros((2, 100), np.float32), codec.frame_size, 3)
    with pytest.raises(ValueError, match="mono audio"):
        L.command_audio(np.zeros(0, np.float32), codec.frame_size, 3)
    with pytest.raises(ValueError, match="non-finite"):
        L.command_audio(np.full(100, np.nan, np.float32), codec.frame_size, 3)
    with pytest.raises(ValueError, match="codes must be"):
        lis.listen_codes(torch.zeros(3, 5, dtype=torch.long), "touch")
    with pytest.raises(ValueError, match="unknown task"):
        lis.listen([np.zeros(100, np.float32)], "juggle")
    with pytest.raises(FileNotFoundError, match="not a listener run"):
        L.Listener.load(tmp_path / "nowhere", codec=codec)
    with pytest.raises(ValueError, match="tail"):
        L.ListenerConfig(tail=0)
    # ids outside a slot's values (the codebooks share the colours' vocabulary) are no command, not a crash
    slots = CommandSlots()
    assert L.Listener.keep_task_slots([0, 5, 1, 1], "push", slots) == [0, ZERO_ID, 1, ZERO_ID]
    # a heard "stop" keeps the halt slot alone (a stop names no object); "go" keeps the correction's object
    stops = L.listener_slots(stops=True)
    stop, go = stops.values["halt"].index("stop"), stops.values["halt"].index("go")
    assert L.Listener.keep_task_slots([2, 1, 0, 0, stop], "correction", stops) == [ZERO_ID] * 4 + [stop]
    assert L.Listener.keep_task_slots([2, 1, 0, 0, go], "correction", stops) == [2, 1, ZERO_ID, ZERO_ID, go]


def test_save_load_round_trip_and_other_codec_refused(tmp_path):
    codec = make_codec(tmp_path / "codec")
    lis = tiny_listener(codec)
    run = tmp_path / "run"
    L.save_listener_files(run, lis.cfg, codec, lis.slots, str(tmp_path / "codec"))
    save_checkpoint(run / "checkpoint", lis.model, lis.model.cfg)
    again = L.Listener.load(run / "checkpoint")  # the codec comes from the path in listener.json
    audio = np.sin(np.arange(codec.sample_rate) / 7.0).astype(np.float32) * 0.2
    assert again.listen([audio], "pick_place") == lis.listen([audio], "pick_place")
    other = make_codec(tmp_path / "codec2", seed=1)
    with pytest.raises(ValueError, match="trained on codes of"):
        L.Listener.load(run / "checkpoint", codec=other)


@needs_tts
def test_a_tiny_listener_learns_to_hear_colours_through_the_committed_codec():
    """Three colours spoken by four training voices, through checkpoints/codec_spectral: after a few hundred steps
    the listener names the colour (and the shape) of every training utterance."""
    from multistream.loss import lm_loss
    from speech.streams import CodecFrames
    from speech.voices import user_voices

    codec = CodecFrames.load(ROOT / "checkpoints" / "codec_spectral")
    lis = tiny_listener(codec)
    slots = lis.slots
    voices = user_voices("train")[:4]
    items = [(f"touch the {c} cube", v) for c in ("red", "blue", "green") for v in voices]
    rows = [L.encode_command(codec, slots, L.speak_command(t, v), t, SMALL.tail, lead=800 * j)
            for j, (t, v) in enumerate(items)]
    t_max = max(r[L.AUDIO].shape[0] for r in rows)

    def pad(x):
        return np.concatenate([x, np.full((t_max - len(x), x.shape[1]), ZERO_ID, x.dtype)])

    batch = L.last_target_only({k: torch.from_numpy(np.stack([pad(r[k]) for r in rows])).long().transpose(1, 2)
                                for k in (L.AUDIO, L.SLOTS)})
    opt = torch.optim.Adam(lis.model.parameters(), lr=2e-3)
    lis.model.train()
    for _ in range(150):
        loss = lm_loss(lis.model(batch), lis.streams).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    lis.model.eval()
    got = [lis.listen_codes(torch.from_numpy(r[L.AUDIO]).long().T, "touch") for r in rows]
    want = [slots.ids(t)[:2] + [ZERO_ID, ZERO_ID] for t, _ in items]
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 11, (got, want)


@needs_tts
def test_a_store_with_stops_has_a_go_or_stop_halt_target(tmp_path):
    codec = make_codec(tmp_path / "codec")
    s = L.build_listener_store(tmp_path / "stops.zarr", codec, 5, progress=False, stops=True)
    slots = CommandSlots(s.attrs["slots"])
    assert slots.slots[-1] == "halt" and slots.values["halt"] == L.HALT_VALUES
    tail = L.ListenerConfig().tail
    tasks = [m["task"] for m in s.episode_metas()]
    assert tasks == [*L.TASKS, "stop"]  # items cycle through the four kinds and stops
    for i, m in enumerate(s.episode_metas()):
        rows = s.episode(i, [L.SLOTS])[L.SLOTS]
        assert (rows[:-tail] == ZERO_ID).all() and (rows[-tail:] == rows[-1]).all()
        got = rows[-1]
        halt = slots.values["halt"][int(got[-1])]
        assert halt == ("stop" if m["task"] == "stop" else "go"), m
        if m["task"] == "stop":
            assert (got[:4] == ZERO_ID).all()
    # a listener's "go" is no halt for a policy; its "stop" is the policy's halt
    from robot.command import slot_values

    policy_slots = CommandSlots(slot_values(halt=True))
    assert slots.convert(L.command_target(slots, "no, the red cube"), policy_slots)[-1] == ZERO_ID
    assert slots.convert(L.command_target(slots, "freeze"), policy_slots) == policy_slots.ids("freeze")
    with pytest.raises(ValueError, match="other settings"):  # an older store (no stops) is not resumed with stops
        L.build_listener_store(tmp_path / "plain.zarr", codec, 1, progress=False)
        L.build_listener_store(tmp_path / "plain.zarr", codec, 2, progress=False, stops=True)


def test_eval_policy_refuses_a_spoken_stop_to_a_listener_without_the_halt_slot(tmp_path):
    codec = make_codec(tmp_path / "codec")
    lis = tiny_listener(codec)  # four slots: no halt
    run = tmp_path / "run"
    L.save_listener_files(run, lis.cfg, codec, lis.slots, str(tmp_path / "codec"))
    save_checkpoint(run / "checkpoint", lis.model, lis.model.cfg)
    for cond in ("stop-speech", "stop-speech-words"):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_policy.py"), "--ckpt",
                            "checkpoints/policy_touch", "--task", "touch", "--listener", str(run / "checkpoint"),
                            "--conditions", cond], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode != 0 and "needs a listener built with stops" in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
