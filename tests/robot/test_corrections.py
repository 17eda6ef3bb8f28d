"""Mid-episode corrections ("no, the blue cube"): phrasings and slots, the env's retarget, the expert that follows a
correction, the policy store whose slots switch at the correction frame, and the rollout hooks that feed spoken
(heard) commands and corrections to a policy."""

import numpy as np
import pytest
import torch

from envs.instructions import CORRECTIONS, make_correction
from multistream.lm import RQTransformer
from multistream.store import EpisodeStore
from multistream.streams import ZERO_ID
from robot.command import CommandSlots, CommandWords
from robot.demos import CollectConfig, collect
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


def test_corrections_name_an_object_and_keep_the_other_slots():
    slots, words = CommandSlots(), CommandWords()
    rng = np.random.default_rng(0)
    for split in CORRECTIONS:
        for _ in range(30):
            text = make_correction(split, rng, "blue cylinder")
            assert slots.text(slots.ids(text)) == "color=blue shape=cylinder", text
            words.ids(text)  # every word is in the command vocabulary
    push = slots.ids("push the red cube to the left")
    assert slots.text(corrected_slots(slots, push, "no, the green bar")) == "color=green shape=bar side=left"
    with pytest.raises(ValueError, match="split"):
        make_correction("all", rng, "red cube")


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corrections")
    cfg = CollectConfig(task="touch", episodes=3, seed=20, image_size=32, correct_prob=1.0, correct_frames=(2, 4))
    collect(cfg, tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    pcfg = PolicyConfig(image_size=32, d_model=32, num_layers=1, depth_d_model=32, depth_layers=1, command="slots")
    store = build_policy_store(demos, tmp / "policy.zarr", pcfg, progress=False)
    return tmp, demos, store, pcfg


def test_the_expert_follows_a_correction_and_the_store_switches_slots(corrected):
    tmp, demos, store, pcfg = corrected
    slots = CommandSlots()
    for i, m in enumerate(demos.episode_metas()):
        c = m["correction"]
        assert 2 <= c["frame"] <= 4 and m["success"]  # judged on the new object
        assert c["target"] != m["target"] and slots.ids(c["text"])[:2] == slots.ids(f"touch the {c['target']}")[:2]
        rows = store.episode(i, [COMMAND_SLOTS])[COMMAND_SLOTS]
        assert (rows[: c["frame"]] == slots.ids(m["instruction"])).all()
        assert (rows[c["frame"]:] == corrected_slots(slots, slots.ids(m["instruction"]), c["text"])).all()
    listen = PolicyConfig(image_size=32)  # the listening layout cannot take a correction mid-episode
    with pytest.raises(ValueError, match="slots layout"):
        build_policy_store(demos, tmp / "listen.zarr", listen, progress=False)
    with pytest.raises(ValueError, match="other settings"):  # a resume with another correction share is refused
        collect(CollectConfig(task="touch", episodes=4, seed=20, image_size=32, correct_prob=0.5,
                              correct_frames=(2, 4)), tmp / "demos.zarr", progress=False)


def test_retarget_refuses_unknown_or_current_objects():
    import gymnasium as gym

    import envs
    from envs.base import EnvConfig

    env = gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=(32, 32)))
    env.reset(seed=3)
    u = env.unwrapped
    with pytest.raises(ValueError, match="unknown object"):
        u.retarget("sphere")
    with pytest.raises(ValueError, match="already the target"):
        u.retarget(u.target)
    other = next(o for o in u.colors if o != u.target)
    u.retarget(other)
    assert u.privileged_state()["target"] == other
    env.close()


def test_rollout_takes_heard_slots_and_corrections(corrected):
    tmp, demos, store, pcfg = corrected
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(pcfg, tok)
    torch.manual_seed(0)
    policy = Policy(RQTransformer(model_config(pcfg, streams)), pcfg, tok, policy_binding(streams, tok).attach(store))
    heard_ids = tok.slots.ids("touch the red cube")
    calls = []

    def correct(i, frame, env, before):
        calls.append((i, frame))
        if frame != 2:
            return None
        other = next(o for o in env.unwrapped.colors if o != env.unwrapped.target)
        env.unwrapped.retarget(other)
        return corrected_slots(tok.slots, before, f"no, the {env.unwrapped.colors[other]} {other}")

    res = policy.rollout("touch", [5, 6], hear=lambda i, text: heard_ids, correct=correct, batch_size=2)
    for r in res:
        assert r["corrected_at"] == 2 and r["slots"] != heard_ids and r["slots"][2:] == [ZERO_ID, ZERO_ID]
        assert np.isfinite(r["actions"]).all() and np.abs(r["actions"]).max() <= 1.0
    assert max(f for _, f in calls) == 2  # asked before every acting frame until the correction
    with pytest.raises(ValueError, match="slot ids"):
        policy.rollout("touch", [5], hear=lambda i, text: [99, 0, ZERO_ID, ZERO_ID])
