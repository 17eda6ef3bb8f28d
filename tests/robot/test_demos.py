"""Demo collection: zarr round trip (what is written is what a replay of the seed gives), episode boundaries,
per-episode instructions, resume, workers, and windows for training."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import features as F
from envs.base import EnvConfig
from multistream.store import EpisodeStore, WindowDataset
from robot.demos import ACTION_EXECUTED, REWARD, SUCCESS, CollectConfig, collect


def _collect(path, **kw):
    cfg = CollectConfig(**{"task": "touch", "episodes": 3, "image_size": 32, **kw})
    return collect(cfg, path, progress=False)


def test_collected_demos_round_trip(tmp_path):
    out = tmp_path / "touch.zarr"
    summary = _collect(out, noise_std=0.2)
    store = EpisodeStore.open(out)
    assert summary["episodes"] == store.num_episodes == 3
    assert store.fps == 12.5 and store.attrs["task"] == "touch"
    assert set(store.keys) == {
        F.IMAGE_FRONT,
        F.STATE,
        F.GRIPPER,
        F.FORCE,
        F.TOUCH,
        F.ACTION,
        ACTION_EXECUTED,
        REWARD,
        SUCCESS,
    }
    env = gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=(32, 32)))
    for i in range(3):
        ep, meta = store.episode(i), store.episode_meta(i)
        T = store.episode_length(i)
        assert meta["length"] == T and meta["success"] and meta["task"] == "touch"
        assert all(len(v) == T for v in ep.values())
        assert ep[SUCCESS][-1] and not ep[SUCCESS][:-1].any()  # the episode ends at its first success
        # replaying the seed with the executed actions gives exactly the stored observations
        obs, info = env.reset(seed=meta["seed"])
        assert info["instruction"] == meta["instruction"]
        for t in range(T):
            for k in (F.IMAGE_FRONT, F.STATE, F.FORCE, F.TOUCH, F.GRIPPER):
                np.testing.assert_array_equal(obs[k], ep[k][t], err_msg=f"{k} at step {t} of episode {i}")
            obs, reward, *_ = env.step(ep[ACTION_EXECUTED][t])
            assert np.float32(reward) == ep[REWARD][t]
    # statistics cover exactly the stored steps
    state = np.concatenate([store.episode(i)[F.STATE] for i in range(3)]).astype(np.float64)
    np.testing.assert_allclose(store.stats[F.STATE]["mean"], state.mean(0), rtol=1e-6, atol=1e-9)
    # training windows stay inside episodes
    ds = WindowDataset(store, [F.ACTION, F.IMAGE_FRONT], window=4)
    for j in range(len(ds)):
        item = ds[j]
        e, s = int(item["episode"]), int(item["start"])
        assert s + 4 <= store.episode_length(e)
        np.testing.assert_array_equal(item[F.ACTION].numpy(), store.episode(e)[F.ACTION][s : s + 4])


def test_resume_and_workers_give_the_same_store(tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    _collect(a, episodes=2)
    first = EpisodeStore.open(a).episode(1)[F.IMAGE_FRONT]
    summary = _collect(a, episodes=4)  # resume: two more episodes, after the recorded seeds
    assert summary["attempted_this_run"] == 2
    _collect(b, episodes=4, workers=2)
    sa, sb = EpisodeStore.open(a), EpisodeStore.open(b)
    assert [sa.episode_meta(i)["seed"] for i in range(4)] == [0, 1, 2, 3]
    np.testing.assert_array_equal(sa.episode_ends, sb.episode_ends)
    for i in range(4):
        assert sa.episode_meta(i)["instruction"] == sb.episode_meta(i)["instruction"]
        for k in sa.keys:
            np.testing.assert_array_equal(sa.episode(i)[k], sb.episode(i)[k])
    np.testing.assert_array_equal(sa.episode(1)[F.IMAGE_FRONT], first)


def test_collect_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        CollectConfig(task="stack")
    with pytest.raises(ValueError, match="episodes"):
        CollectConfig(episodes=0)
    _collect(tmp_path / "t.zarr", episodes=1)
    with pytest.raises(ValueError, match="holds task 'touch'"):
        _collect(tmp_path / "t.zarr", task="push", episodes=2)
