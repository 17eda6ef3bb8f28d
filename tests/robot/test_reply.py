"""The agent's own words (`PolicyConfig(reply=True)`, robot/reply.py): the reply tokenizer, the `text` stream laid
out on the episode's frames (the command's reply from frame 0, a correction's or a stop's from its frame), and a
tiny policy that learns to say the reply while it acts and says it closed loop."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from multistream.store import EpisodeStore
from robot.command import CommandSlots, slot_values
from robot.demos import CollectConfig, collect
from robot.policy import COMMAND_SLOTS, PolicyConfig, PolicyTokenizers, build_policy_store, first_frames_loss
from robot.reply import PAD, STOP_REPLY, TEXT, ReplyWords, agent_reply, reply_frames, slot_names, utterances

from ..speech.conftest import HAVE_TTS, make_codec
from .test_policy import overfit_and_reload


def eval_policy_script():
    """scripts/eval_policy.py as a module (its reply and voice checks)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("eval_policy", Path(__file__).parents[2] / "scripts/eval_policy.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    return ev


def trained_policy(tmp, store, cfg, steps):
    """The tiny policy the learning test trained in `tmp` (trained here when that test did not run first)."""
    from robot.policy import Policy

    if not (tmp / "ckpt" / "config.json").is_file():
        overfit_and_reload(tmp, store, cfg, steps=steps,
                           loss_fn=lambda out, s: first_frames_loss(out, s, frames=3, weight=3.0))
    return Policy.load(tmp / "ckpt")


def test_reply_words_round_trip_and_refuse_unknown_words():
    tok = ReplyWords()
    assert tok.words[0] == PAD and tok.pad_id == 0
    for text in ("okay, the red cube to the left", "okay, the blue bar on the plate", STOP_REPLY,
                 "sorry, which object?"):
        assert tok.text(tok.ids(text)) == " ".join(text.replace(",", "").replace("?", "").split())
    with pytest.raises(ValueError, match="unknown reply word"):
        tok.ids("okay, the red banana")
    with pytest.raises(ValueError, match="outside"):
        tok.text([len(tok.words)])
    with pytest.raises(ValueError, match="start with"):
        ReplyWords(["okay", PAD])
    slots = CommandSlots(slot_values(halt=True))
    assert agent_reply("touch", slot_names(slots, slots.ids("touch the red cube"))) == "okay, the red cube"
    assert agent_reply("touch", slot_names(slots, [4, 1, -1, -1, 0])) == STOP_REPLY


def test_reply_frames_lay_words_from_their_frame_and_cut_short():
    tok = ReplyWords()
    ids = reply_frames(10, [(0, "okay, the red cube"), (2, "okay, stopping")], tok)
    words = [tok.words[i] for i in ids]
    assert words[:2] == ["okay", "the"] and words[2:4] == ["okay", "stopping"] and set(words[4:]) == {PAD}
    assert reply_frames(2, [(0, "okay, the red cube")], tok) == tok.ids("okay the")  # cut at the episode's end
    assert utterances(ids, tok) == [(0, "okay the"), (2, "okay stopping")]
    assert utterances([0, 0], tok) == []


@pytest.fixture(scope="module")
def reply_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reply")
    collect(CollectConfig(task="touch", episodes=3, seed=10, image_size=32, correct_prob=0.5, correct_frames=(3, 4)),
            tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    cfg = PolicyConfig(image_size=32, d_model=64, num_layers=2, depth_d_model=32, depth_layers=1, command="slots",
                       reply=True)
    store = build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False)
    return tmp, demos, store, cfg


def test_the_store_holds_the_replies_on_their_frames(reply_run):
    tmp, demos, store, cfg = reply_run
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    corrected = 0
    for i, m in enumerate(store.episode_metas()):
        ep = store.episode(i, [TEXT, COMMAND_SLOTS])
        slots0 = ep[COMMAND_SLOTS][0].tolist()
        first = tok.reply.ids(agent_reply("touch", slot_names(tok.slots, slots0)))
        k = m["correction"]["frame"] if m.get("correction") else len(ep[TEXT])
        n = min(len(first), k)  # a correction cuts the first reply short
        assert ep[TEXT][:n].tolist() == first[:n]
        if m.get("correction"):
            corrected += 1
            again = tok.reply.ids(agent_reply("touch", slot_names(tok.slots, ep[COMMAND_SLOTS][k].tolist())))
            assert ep[TEXT][k:k + len(again)].tolist() == again and (ep[TEXT][n:k] == 0).all()
        else:
            assert (ep[TEXT][n:] == 0).all()
    assert corrected >= 1
    with pytest.raises(ValueError, match="slots layout"):
        PolicyConfig(reply=True)


def test_a_tiny_policy_learns_to_say_its_reply_while_acting(reply_run):
    tmp, demos, store, cfg = reply_run
    streams, accuracy, policy = overfit_and_reload(
        tmp, store, cfg, steps=250, loss_fn=lambda out, s: first_frames_loss(out, s, frames=3, weight=3.0))
    assert [s.name for s in streams.predicted] == ["action", TEXT]
    assert accuracy >= 0.9, accuracy
    metas = [m for m in store.episode_metas() if not m.get("correction")]  # closed loop: the command's reply
    res = policy.rollout("touch", [m["seed"] for m in metas], commands=[m["command"] for m in metas], batch_size=2)
    for r, m in zip(res, metas, strict=True):
        assert np.abs(r["actions"]).max() <= 1.0 and len(r["reply_ids"]) == r["length"]
        want = policy.tok.reply.ids(agent_reply("touch", slot_names(policy.tok.slots,
                                                                    policy.tok.slots.ids(m["command"]))))
        n = min(len(want), r["length"])
        assert r["reply_ids"][:n] == want[:n], (r["reply"], want)  # said from the first acting frame, word by word
    # eval_policy's "reply right": the whole stream, frame for frame, as the demos lay it out
    ev = eval_policy_script()
    assert all(ev.reply_ok(policy, "touch", r) for r in res), [r["reply_ids"] for r in res]
    wrong = {**res[0], "reply_ids": [policy.tok.reply.pad_id] * len(res[0]["reply_ids"])}
    assert not ev.reply_ok(policy, "touch", wrong)


@pytest.mark.skipif(not HAVE_TTS or shutil.which("ffmpeg") is None, reason="needs TTS packages and ffmpeg")
def test_the_episode_video_says_the_models_own_words(reply_run, tmp_path):
    from robot.episode_video import render_policy_episode

    tmp, demos, store, cfg = reply_run
    policy = trained_policy(tmp, store, cfg, steps=250)
    make_codec(tmp_path / "codec")
    seed = store.episode_meta(0)["seed"]
    s = render_policy_episode(policy, "touch", seed, tmp_path / "ep", view_size=(48, 64), codec_path=tmp_path / "codec")
    assert s["reply_by"] == "model" and s["success"] == s["rollout_success"]
    res = policy.rollout("touch", [seed], split="train")[0]  # the same episode (greedy, same seed and command)
    said = utterances(res["reply_ids"], policy.tok.reply)
    assert s["reply"] == (said[0][1] if said else "")


# --- the agent's voice: a predicted audio.agent stream (PolicyConfig.reply_audio) and the talking tail -----------

TAIL = 4


@pytest.fixture(scope="module")
def voice_run(tmp_path_factory):
    if not HAVE_TTS:
        pytest.skip("needs the TTS packages")
    from robot.reply import ReplyVoice

    tmp = tmp_path_factory.mktemp("voice")
    # the committed codec: an untrained one encodes everything to code 0, which a policy would "learn" trivially
    codec = Path(__file__).resolve().parents[2] / "checkpoints" / "codec_spectral"
    collect(CollectConfig(task="touch", episodes=3, seed=10, image_size=32, correct_prob=0.5, correct_frames=(3, 4)),
            tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    cfg = PolicyConfig(image_size=32, d_model=64, num_layers=2, depth_d_model=32, depth_layers=1, command="slots",
                       reply=True, reply_audio=2, reply_tail=TAIL)
    store = build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False,
                               voice=ReplyVoice.load(codec, 2))
    return tmp, demos, store, cfg


def test_the_store_speaks_the_replies_on_their_frames_and_talks_on_after_the_end(voice_run):
    from multistream.streams import ZERO_ID
    from robot.policy import ACTION
    from robot.reply import AGENT_AUDIO, taught_replies

    tmp, demos, store, cfg = voice_run
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    assert tok.voice is not None and tok.voice.num_codebooks == 2
    for i, m in enumerate(store.episode_metas()):
        ep = store.episode(i, [TEXT, COMMAND_SLOTS, ACTION, AGENT_AUDIO])
        n = len(demos.episode(i, [ACTION])[ACTION])
        assert len(ep[ACTION]) == n + TAIL and (ep[ACTION][n:] == ZERO_ID).all() and (ep[ACTION][:n] >= 0).all()
        k = m["correction"]["frame"] if m.get("correction") else None
        replies = taught_replies("touch", tok.slots, ep[COMMAND_SLOTS][0].tolist(), k,
                                 None if k is None else ep[COMMAND_SLOTS][k].tolist())
        assert ep[AGENT_AUDIO].shape == (n + TAIL, 2)
        assert (ep[AGENT_AUDIO] == tok.voice.frames(n + TAIL, replies)).all()
        assert len(np.unique(ep[AGENT_AUDIO][:, 0])) >= 5  # speech: the codes vary from frame to frame
        assert (ep[COMMAND_SLOTS][n:] == ep[COMMAND_SLOTS][n - 1]).all()  # the tail repeats the last slots
    # the voice's waveform: each reply from its frame, a later one cutting the earlier short, silence elsewhere
    fs = tok.voice.frame_size
    w = tok.voice.waveform(12, [(0, "okay, the red cube"), (3, "okay, stopping")])
    said = tok.voice.speech("okay, the red cube")
    assert np.array_equal(w[: 3 * fs], said[: 3 * fs])
    stop = tok.voice.speech("okay, stopping")[: 9 * fs]
    assert np.array_equal(w[3 * fs: 3 * fs + len(stop)], stop) and not w[3 * fs + len(stop):].any()
    with pytest.raises(ValueError, match="need reply=True"):
        PolicyConfig(command="slots", reply_audio=2)
    with pytest.raises(ValueError, match="codebooks"):
        PolicyTokenizers.fit(demos, cfg)  # reply_audio without a voice


def test_a_tiny_policy_learns_to_speak_its_reply_and_talks_after_the_episode(voice_run):
    from robot.reply import taught_replies

    tmp, demos, store, cfg = voice_run
    streams, accuracy, policy = overfit_and_reload(
        tmp, store, cfg, steps=300, loss_fn=lambda out, s: first_frames_loss(out, s, frames=3, weight=3.0))
    assert [s.name for s in streams.predicted] == ["action", TEXT, "audio.agent"]
    assert accuracy >= 0.9, accuracy
    metas = [m for m in store.episode_metas() if not m.get("correction")]
    res = policy.rollout("touch", [m["seed"] for m in metas], commands=[m["command"] for m in metas], batch_size=2)
    voice = policy.tok.voice
    hits = total = 0
    for r, m in zip(res, metas, strict=True):
        frames = r["length"] + TAIL  # it kept talking for the tail after the episode ended
        assert len(r["reply_ids"]) == frames and r["reply_codes"].shape == (2, frames)
        assert r["reply_audio"].shape == (frames * voice.frame_size,) and np.isfinite(r["reply_audio"]).all()
        slots = policy.tok.slots.ids(m["command"])
        want = voice.frames(frames, taught_replies("touch", policy.tok.slots, slots)).T  # [2, frames]
        hits += int((r["reply_codes"] == want).sum())
        total += want.size
    assert hits / total >= 0.9, hits / total  # closed loop, it says what the demos taught, token by token
    # eval_policy's "voice right" is that share per episode; a silent voice is not right
    ev = eval_policy_script()
    assert np.mean([ev.voice_accuracy(policy, "touch", r) for r in res]) == pytest.approx(hits / total)
    wrong = {**res[0], "reply_codes": np.zeros_like(res[0]["reply_codes"])}
    assert ev.voice_accuracy(policy, "touch", wrong) < 0.5


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_the_episode_video_plays_the_policys_own_voice(voice_run, tmp_path):
    from robot.episode_video import render_policy_episode

    tmp, demos, store, cfg = voice_run
    policy = trained_policy(tmp, store, cfg, steps=300)
    s = render_policy_episode(policy, "touch", store.episode_meta(0)["seed"], tmp_path / "ep", view_size=(48, 64))
    assert s["voice_by"] == "model" and s["reply_by"] == "model" and (tmp_path / "ep.mp4").stat().st_size > 0


def test_a_voice_named_by_its_repository_path_loads_from_any_directory(tmp_path, monkeypatch):
    from robot.reply import ReplyVoice

    here = ReplyVoice.load(Path(__file__).resolve().parents[2] / "checkpoints" / "codec_spectral", 2)
    record = {**here.to_json(), "codec": "checkpoints/codec_spectral"}  # as a committed policy names it
    monkeypatch.chdir(tmp_path)
    voice = ReplyVoice.from_json(record)
    assert voice.fingerprint == here.fingerprint and voice.to_json()["codec"] == "checkpoints/codec_spectral"
    with pytest.raises(ValueError, match="not the one"):
        ReplyVoice.from_json({**record, "fingerprint": "codec:0000:first2"})
    with pytest.raises(FileNotFoundError, match="no codec checkpoint"):
        ReplyVoice.from_json({**record, "codec": "checkpoints/no_such_codec"})
