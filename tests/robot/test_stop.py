"""The "stop" correction: the env's halt and its success check, the expert that holds still, the halt slot of the
command, the policy store of demos with stops, the eval condition, and the stream-by-stream weight transfer that
starts a policy with the halt slot from one without it."""

import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.base import EnvConfig
from envs.instructions import STOPS, make_stop
from multistream.checkpoint import save_checkpoint, transfer_weights
from multistream.lm import RQTransformer
from multistream.store import EpisodeStore
from multistream.streams import ZERO_ID
from robot.command import CommandSlots, CommandWords, slot_values
from robot.demos import CollectConfig, collect
from robot.experts import ExpertConfig, apply_stop, hold_action, make_expert, run_episode
from robot.policy import (
    COMMAND_SLOTS,
    Policy,
    PolicyConfig,
    PolicyTokenizers,
    build_policy_store,
    corrected_slots,
    model_config,
    policy_binding,
    policy_streams,
)

from ..speech.conftest import HAVE_TTS, make_codec


def touch_env():
    return gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=(32, 32)))


def test_stop_phrasings_fill_only_the_halt_slot():
    slots, words = CommandSlots(slot_values(halt=True)), CommandWords()
    rng = np.random.default_rng(0)
    for split in STOPS:
        for _ in range(10):
            text = make_stop(split, rng)
            assert slots.text(slots.ids(text)) == "halt=stop", text
            words.ids(text)  # in the command vocabulary
    before = slots.ids("touch the red cube")
    assert slots.text(corrected_slots(slots, before, "wait, stop")) == "color=red shape=cube halt=stop"
    with pytest.raises(ValueError, match="fills no slot"):  # four slots: no way to say stop
        CommandSlots().ids("stop")
    # a four-slot listener's ids in a five-slot policy's layout, and back (the halt is dropped)
    four, five = CommandSlots(), CommandSlots(slot_values(halt=True))
    assert four.convert(four.ids("push the red cube to the left"), five) == five.ids("push the red cube to the left")
    assert five.convert(five.ids("stop"), four) == [ZERO_ID] * 4
    with pytest.raises(ValueError, match="slot ids"):
        four.convert([0, 0], five)


def test_halt_succeeds_only_when_the_arm_holds_still():
    env = touch_env()
    u = env.unwrapped
    # holding still after "stop": success once the settle and hold frames have passed, and the episode ends
    env.reset(seed=4)
    for _ in range(3):
        env.step(np.array([0.8, 0.0, -0.5, 0.0, -1.0]))
    u.halt()
    with pytest.raises(ValueError, match="already halted"):
        u.halt()
    n = 0
    while True:
        _, _, terminated, _, info = env.step(hold_action(env))
        n += 1
        if terminated:
            break
        assert not info["is_success"]
    assert info["is_success"] and n == u.HALT_SETTLE + u.HALT_HOLD and info["privileged"]["halted"]
    # moving on after "stop" fails, as soon as the arm leaves where it came to rest
    env.reset(seed=4)
    assert not u.halted
    u.halt()
    terminated, n = False, 0
    while not terminated and n < 30:
        _, _, terminated, _, info = env.step(np.array([1.0, 0.0, 0.0, 0.0, -1.0]))
        n += 1
    assert terminated and not info["is_success"] and n <= u.HALT_SETTLE + u.HALT_HOLD
    env.close()


def test_the_expert_holds_still_after_a_stop():
    env = touch_env()
    expert = make_expert(env, ExpertConfig(noise_std=0.2, seed=1))
    r = run_episode(env, expert, 7, correction={"frame": 3, "rng": np.random.default_rng(0), "stop": True})
    c = r["correction"]
    assert c["stop"] and c["target"] is None and c["frame"] == 3 and c["text"] in STOPS["train"]
    u = env.unwrapped
    assert r["success"] and r["length"] == 3 + u.HALT_SETTLE + u.HALT_HOLD
    after = np.stack([s["action_executed"] for s in r["steps"][3:]])
    assert np.all(after[:, :4] == 0)  # no motion (and no noise) after the stop
    # apply_stop directly: the env halts and the user's words come back
    env.reset(seed=8)
    out = apply_stop(env, np.random.default_rng(1), "heldout")
    assert env.unwrapped.halted and out["text"] in STOPS["heldout"]
    env.close()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stops")
    cfg = CollectConfig(task="touch", episodes=3, seed=40, image_size=32, stop_prob=1.0, correct_frames=(2, 4))
    collect(cfg, tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    pcfg = PolicyConfig(image_size=32, d_model=32, num_layers=1, depth_d_model=32, depth_layers=1, command="slots",
                        fuse_command=True)
    store = build_policy_store(demos, tmp / "policy.zarr", pcfg, progress=False)
    return tmp, demos, store, pcfg


def test_a_store_with_stops_has_the_halt_slot(stopped):
    tmp, demos, store, pcfg = stopped
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    assert tok.slots.slots[-1] == "halt"
    for i, m in enumerate(demos.episode_metas()):
        k = m["correction"]["frame"]
        rows = store.episode(i, [COMMAND_SLOTS])[COMMAND_SLOTS]
        assert (rows[:k, -1] == ZERO_ID).all() and (rows[k:, -1] == 0).all()
        assert (rows[:, :4] == tok.slots.ids(m["instruction"])[:4]).all()  # the object stays named


def test_transfer_to_the_halt_slot_and_the_stop_condition(stopped, tmp_path):
    tmp, demos, store, pcfg = stopped
    tok5 = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    tok4 = PolicyTokenizers.from_json({**tok5.to_json(), "slots": slot_values()})
    s4, s5 = policy_streams(pcfg, tok4), policy_streams(pcfg, tok5)
    assert s4 != s5
    torch.manual_seed(0)
    m4 = RQTransformer(model_config(pcfg, s4))
    save_checkpoint(tmp_path / "four", m4, m4.cfg)
    torch.manual_seed(1)
    m5 = RQTransformer(model_config(pcfg, s5))
    fresh = {k: v.clone() for k, v in m5.state_dict().items()}
    rep = transfer_weights(tmp_path / "four", m5)
    assert rep["grown"] and rep["new"]
    # embeddings are matched by (stream, codebook): the streams after command.slots keep theirs
    names4 = [(s.name, k) for s in s4.token_streams for k in range(s.num_codebooks)]
    names5 = [(s.name, k) for s in s5.token_streams for k in range(s.num_codebooks)]
    for j, key in enumerate(names5):
        w = m5.embs[j].weight
        if key in names4:
            assert torch.equal(w, m4.embs[names4.index(key)].weight), key
        else:
            assert key == (COMMAND_SLOTS, 4) and torch.equal(w, fresh[f"embs.{j}.weight"])
    conv = [k for k in rep["grown"] if "convs.0.weight" in k][0]  # one more command plane into the camera CNN
    w4, w5 = m4.state_dict()[conv], m5.state_dict()[conv]
    assert w5.shape[1] == w4.shape[1] + 1 and torch.equal(w5[:, : w4.shape[1]], w4)
    assert torch.equal(w5[:, -1], fresh[conv][:, -1])
    # the policy with the halt slot runs the stop condition of eval_policy: the correction hook halts the env
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("eval_policy", Path(__file__).parents[2] / "scripts/eval_policy.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    policy = Policy(m5.eval(), pcfg, tok5, policy_binding(s5, tok5).attach(store))
    heard = {}
    res = policy.rollout("touch", [1000, 1001], correct=ev.make_correct(None, policy, [1000, 1001], heard, stop=True),
                         batch_size=2)
    for r in res:
        assert r["corrected_at"] is not None and r["slots"][-1] == 0
        assert r["length"] <= r["corrected_at"] + 9  # the env ends a halted episode within settle + hold frames
    # the control (stop-untold): the env halts at the same frame, the policy's slots stay as they were
    untold = policy.rollout("touch", [1000], correct=ev.make_correct(None, policy, [1000], {}, stop=True, tell=False))
    assert untold[0]["corrected_at"] == res[0]["corrected_at"] and untold[0]["slots"][-1] == ZERO_ID


@pytest.mark.skipif(not HAVE_TTS or shutil.which("ffmpeg") is None, reason="needs TTS packages and ffmpeg")
def test_a_stop_episode_video(stopped, tmp_path):
    import json
    import subprocess

    from robot.episode_video import render_policy_episode

    tmp, demos, store, pcfg = stopped
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(pcfg, tok)
    torch.manual_seed(0)
    policy = Policy(RQTransformer(model_config(pcfg, streams)).eval(), pcfg, tok,
                    policy_binding(streams, tok).attach(store))
    make_codec(tmp_path / "codec")
    s = render_policy_episode(policy, "touch", 1003, tmp_path / "ep", correct_frame=2, stop=True, view_size=(48, 64),
                              codec_path=tmp_path / "codec")
    assert s["corrected_at"] == 2 and s["correction"] in STOPS["train"]
    assert s["success"] == s["rollout_success"]  # the replay halts where the rollout did
    probe = subprocess.run(["ffprobe", "-loglevel", "error", "-show_entries", "stream=codec_type", "-of", "json",
                            s["path"]], capture_output=True, text=True, check=True)
    assert sorted(x["codec_type"] for x in json.loads(probe.stdout)["streams"]) == ["audio", "video"]
    with pytest.raises(ValueError, match="correct_frame"):
        render_policy_episode(policy, "touch", 1003, tmp_path / "ep2", stop=True, codec_path=tmp_path / "codec")
