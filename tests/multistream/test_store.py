"""Zarr episode store: round trip, statistics, crash safety, windows within episodes, bad input."""

import numpy as np
import pytest
import torch

from multistream.store import EpisodeStore, WindowDataset, make_loader


def _episode(rng, T, d=3):
    return {
        "observation.state": rng.normal(size=(T, d)).astype(np.float32),
        "observation.images.front": rng.integers(0, 256, size=(T, 4, 4, 3), dtype=np.uint8),
        "tokens": rng.integers(0, 2048, size=(T, 2)).astype(np.int64),
        "step": np.arange(T, dtype=np.int32),
    }


def _fill(path, lengths, seed=0):
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, fps=12.5, attrs={"task": "push"})
    eps = []
    for i, T in enumerate(lengths):
        ep = _episode(rng, T)
        store.append_episode(ep, meta={"instruction": f"push the red cube {i}", "seed": i})
        eps.append(ep)
    return store, eps


def test_round_trip_and_reopen(tmp_path):
    lengths = [5, 1, 9, 4]
    store, eps = _fill(tmp_path / "s.zarr", lengths)
    for st in (store, EpisodeStore.open(tmp_path / "s.zarr")):
        assert st.num_episodes == 4 and st.fps == 12.5 and st.attrs == {"task": "push"}
        np.testing.assert_array_equal(st.episode_ends, np.cumsum(lengths))
        assert st.episode_ends.dtype == np.int64
        assert st.keys == sorted(eps[0])
        for i, ep in enumerate(eps):
            got = st.episode(i)
            for k, v in ep.items():
                assert got[k].dtype == v.dtype
                np.testing.assert_array_equal(got[k], v)
            assert st.episode_meta(i) == {"instruction": f"push the red cube {i}", "seed": i}
        assert st.episode_metas() == [st.episode_meta(i) for i in range(4)]
        assert st.array("step").shape == (sum(lengths),)


def test_stats_match_numpy(tmp_path):
    store, eps = _fill(tmp_path / "s.zarr", [6, 3, 7])
    stats = EpisodeStore.open(tmp_path / "s.zarr").stats
    state = np.concatenate([e["observation.state"] for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-9)
    np.testing.assert_allclose(stats["observation.state"]["min"], state.min(0))
    img = np.concatenate([e["observation.images.front"] for e in eps]).astype(np.float64)
    assert stats["observation.images.front"]["mean"].shape == (3,)  # per channel
    np.testing.assert_allclose(stats["observation.images.front"]["mean"], img.mean((0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(stats["observation.images.front"]["max"], img.max((0, 1, 2)))
    step = np.concatenate([e["step"] for e in eps]).astype(np.float64)
    assert np.ndim(stats["step"]["mean"]) == 0
    np.testing.assert_allclose(stats["step"]["std"], step.std(), rtol=1e-9)


def _crash(monkeypatch, method):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(EpisodeStore, method, boom)


@pytest.mark.parametrize("where", ["_write_meta", "_write_attrs", "_commit"])
def test_crash_mid_append_leaves_complete_episodes(tmp_path, monkeypatch, where):
    path = tmp_path / "s.zarr"
    store, eps = _fill(path, [4, 6])
    rng = np.random.default_rng(99)
    with monkeypatch.context() as m:
        _crash(m, where)
        with pytest.raises(RuntimeError, match="simulated crash"):
            store.append_episode(_episode(rng, 8), meta={"instruction": "lost"})
    st = EpisodeStore.open(path, mode="a")
    assert st.num_episodes == 2
    assert st.array("step").shape[0] == 18  # the crashed episode's data is on disk, past episode_ends
    np.testing.assert_array_equal(st.episode(1)["step"], eps[1]["step"])
    state = np.concatenate([e["observation.state"] for e in eps]).astype(np.float64)
    np.testing.assert_allclose(st.stats["observation.state"]["mean"], state.mean(0), rtol=1e-9)
    # the next append overwrites the tail
    new = _episode(rng, 3)
    st.append_episode(new, meta={"instruction": "next"})
    st = EpisodeStore.open(path)
    assert st.num_episodes == 3 and st.array("step").shape[0] == 13
    np.testing.assert_array_equal(st.episode(2)["observation.state"], new["observation.state"])
    assert st.episode_meta(2) == {"instruction": "next"}
    assert [m.get("instruction") for m in st.episode_metas()] == ["push the red cube 0", "push the red cube 1", "next"]
    state = np.concatenate([eps[0]["observation.state"], eps[1]["observation.state"], new["observation.state"]])
    np.testing.assert_allclose(st.stats["observation.state"]["mean"], state.astype(np.float64).mean(0), rtol=1e-9)


def test_crash_between_resize_and_write_of_episode_ends(tmp_path):
    path = tmp_path / "s.zarr"
    store, eps = _fill(path, [4, 6])
    store._ends_arr.resize((3,))  # what a crash right after the resize in _commit leaves: a trailing fill value
    st = EpisodeStore.open(path, mode="a")
    assert st.num_episodes == 2
    st.append_episode(_episode(np.random.default_rng(1), 2))
    np.testing.assert_array_equal(EpisodeStore.open(path).episode_ends, [4, 10, 12])


def test_bad_input(tmp_path):
    path = tmp_path / "s.zarr"
    store, eps = _fill(path, [3])
    rng = np.random.default_rng(0)
    good = _episode(rng, 4)
    with pytest.raises(ValueError, match="observation.state"):
        store.append_episode({**good, "observation.state": np.zeros((4, 5), np.float32)})
    with pytest.raises(ValueError, match="float64"):
        store.append_episode({**good, "observation.state": good["observation.state"].astype(np.float64)})
    with pytest.raises(ValueError, match="lengths"):
        store.append_episode({**good, "step": np.arange(5, dtype=np.int32)})
    with pytest.raises(ValueError, match="missing \\['tokens'\\]"):
        store.append_episode({k: v for k, v in good.items() if k != "tokens"})
    with pytest.raises(ValueError, match="empty episode"):
        store.append_episode({k: v[:0] for k, v in good.items()})
    with pytest.raises(ValueError, match="JSON"):
        store.append_episode(good, meta={"x": object()})
    with pytest.raises(ValueError, match="read-only"):
        EpisodeStore.open(path).append_episode(good)
    with pytest.raises(ValueError, match="mode"):
        EpisodeStore.open(path, mode="w")
    with pytest.raises(ValueError, match="fps"):
        EpisodeStore.create(tmp_path / "t.zarr", fps=0)
    with pytest.raises(FileExistsError):
        EpisodeStore.create(path, fps=10)
    with pytest.raises(FileNotFoundError):
        EpisodeStore.open(tmp_path / "nope.zarr")
    with pytest.raises(IndexError):
        store.episode(1)
    assert EpisodeStore.open(path).num_episodes == 1  # nothing above changed the store


def test_windows_never_cross_boundaries(tmp_path):
    lengths = [5, 2, 7, 3]
    store, eps = _fill(tmp_path / "s.zarr", lengths)
    ds = WindowDataset(store, ["step", "observation.state"], window=3)
    assert len(ds) == sum(max(L - 3 + 1, 0) for L in lengths)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        e, s = int(item["episode"]), int(item["start"])
        assert item["step"].shape == (3,) and item["observation.state"].shape == (3, 3)
        # the "step" key counts 0..T-1 within each episode: consecutive and inside the episode
        np.testing.assert_array_equal(item["step"].numpy(), np.arange(s, s + 3))
        assert s + 3 <= lengths[e]
        np.testing.assert_array_equal(item["observation.state"].numpy(), eps[e]["observation.state"][s : s + 3])
        seen.add((e, s))
    assert len(seen) == len(ds)
    assert 1 not in {e for e, _ in seen}  # episode 1 is shorter than the window

    split = WindowDataset(store, ["step"], window=2, episodes=[2], in_memory=False)
    assert len(split) == 6 and {int(split[i]["episode"]) for i in range(len(split))} == {2}

    padded = WindowDataset(store, ["step"], window=4, pad=True)
    assert len(padded) == sum(lengths)
    for i in range(len(padded)):
        item = padded[i]
        e, s = int(item["episode"]), int(item["start"])
        n_real = min(4, lengths[e] - s)
        assert item["mask"].tolist() == [True] * n_real + [False] * (4 - n_real)
        expect = np.minimum(np.arange(s, s + 4), lengths[e] - 1)  # edge padding repeats the last step
        np.testing.assert_array_equal(item["step"].numpy(), expect)


def test_loader_is_seeded(tmp_path):
    store, _ = _fill(tmp_path / "s.zarr", [6, 8, 5])

    def order(seed):
        return [b["start"].tolist() + b["episode"].tolist() for b in make_loader(store, ["tokens"], 2, 4, seed)]

    a, b, c = order(0), order(0), order(1)
    assert a == b and a != c
    batch = next(iter(make_loader(store, ["tokens", "observation.images.front"], 2, 4, 0)))
    assert batch["tokens"].shape == (4, 2, 2) and batch["tokens"].dtype == torch.int64
    assert batch["observation.images.front"].shape == (4, 2, 4, 4, 3)
    with pytest.raises(ValueError, match="window"):
        WindowDataset(store, ["tokens"], window=0)
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        WindowDataset(store, ["nope"], window=2)
    with pytest.raises(ValueError, match="episode index 7"):
        WindowDataset(store, ["tokens"], window=2, episodes=[7])
    with pytest.raises(ValueError, match="no windows"):
        make_loader(store, ["tokens"], 50, 2, 0)
