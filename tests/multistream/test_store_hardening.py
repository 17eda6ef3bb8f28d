"""EpisodeStore against lost files, corrupt files, NaN episodes and two writers at once."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from multistream.store import EpisodeStore

ROOT = Path(__file__).resolve().parents[2]


def _store(path: Path, n: int = 3) -> EpisodeStore:
    s = EpisodeStore.create(path, fps=10, attrs={"task": "t"})
    for i in range(n):
        s.append_episode({"a": np.full((4, 2), i, np.float32), "b": np.zeros(4, np.int64)}, {"i": i})
    return s


def test_two_writer_processes_lose_nothing(tmp_path):
    N = 12  # episodes per writer; without the lock about a third of them are lost (tried)
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, fps=10)
    code = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        import numpy as np
        from multistream.store import EpisodeStore
        w, go = int(sys.argv[1]), Path(sys.argv[3])
        s = EpisodeStore.open(sys.argv[2], mode="a")  # both open the empty store, then append at the same time
        (go.parent / f"ready{w}").touch()
        while not go.exists():
            time.sleep(0.001)
        for i in range(N):
            v = w * 1000 + i
            s.append_episode({"x": np.full((3 + i % 4, 2), v, np.int64)}, {"v": v})
    """).replace("N", str(N))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w), str(path), str(go)], env=env) for w in (1, 2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{w}").exists() for w in (1, 2)) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    s = EpisodeStore.open(path)
    assert s.num_episodes == 2 * N
    vs = []
    for i in range(s.num_episodes):
        v = s.episode_meta(i)["v"]
        x = s.episode(i)["x"]
        assert (x == v).all() and len(x) == 3 + (v % 1000) % 4, (i, v)  # data and metadata from the same writer
        vs.append(v)
    assert sorted(vs) == sorted([1000 + i for i in range(N)] + [2000 + i for i in range(N)])
    assert s.stats["x"]["max"].tolist() == [2000 + N - 1] * 2


def test_lost_episode_ends_refuses_to_open_and_keeps_data(tmp_path):
    _store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "meta" / "episode_ends" / "c" / "0").unlink()
    data = tmp_path / "s.zarr" / "data" / "a" / "c" / "0" / "0"
    before = data.read_bytes()
    for mode in ("a", "r"):
        with pytest.raises(ValueError, match=r"s\.zarr is inconsistent: meta/episode_ends holds 3 entries"):
            EpisodeStore.open(tmp_path / "s.zarr", mode=mode)
    assert data.read_bytes() == before


def test_lost_metadata_array_is_named(tmp_path):
    _store(tmp_path / "s.zarr")
    import shutil

    shutil.rmtree(tmp_path / "s.zarr" / "meta" / "episode_ends")
    with pytest.raises(ValueError, match="has lost meta/episode_ends"):
        EpisodeStore.open(tmp_path / "s.zarr", mode="a")


def test_missing_data_chunk_is_an_error_not_zeros(tmp_path):
    s = _store(tmp_path / "s.zarr")
    s.append_episode({"a": np.zeros((4, 2), np.float32), "b": np.zeros(4, np.int64)}, {"i": 3})
    assert (EpisodeStore.open(tmp_path / "s.zarr").episode(3)["b"] == 0).all()  # all-zero chunks are written too
    (tmp_path / "s.zarr" / "data" / "a" / "c" / "0" / "0").unlink()
    r = EpisodeStore.open(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match=r"chunk 0 of data/a .* is missing on disk"):
        r.episode(1)
    assert r.episode(1, keys=["b"])["b"].shape == (4,)


def test_corrupt_files_are_named(tmp_path):
    _store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "data" / "a" / "c" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfdgarbage")
    with pytest.raises(ValueError, match=r"cannot read array 'data/a'.*corrupt"):
        EpisodeStore.open(tmp_path / "s.zarr").episode(0)
    (tmp_path / "s.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot open episode store .*s\.zarr: its metadata is unreadable"):
        EpisodeStore.open(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="no zarr.json"):
        EpisodeStore.open(tmp_path)


def test_nan_episode_is_refused_and_stats_stay_finite(tmp_path):
    s = _store(tmp_path / "s.zarr")
    bad = np.zeros((4, 2), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"array 'a' holds NaN or inf \(first at step 2\)"):
        s.append_episode({"a": bad, "b": np.zeros(4, np.int64)})
    assert s.num_episodes == 3
    assert np.isfinite(s.stats["a"]["mean"]).all()
    raw = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert "NaN" not in json.dumps(raw)


def test_streamed_windows_also_detect_a_missing_chunk(tmp_path):
    from multistream.store import WindowDataset

    _store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "data" / "a" / "c" / "0" / "0").unlink()
    ds = WindowDataset(EpisodeStore.open(tmp_path / "s.zarr"), ["a"], window=2, in_memory=False)
    with pytest.raises(ValueError, match="chunk 0 of data/a"):
        ds[0]
