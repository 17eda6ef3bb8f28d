"""collect(): a rerun of a finished store is a no-op, a resume with other settings is refused, NaN noise refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from multistream.store import EpisodeStore
from robot.demos import CollectConfig, collect
from robot.experts import ExpertConfig

ROOT = Path(__file__).resolve().parents[2]


def _collect(path, **kw):
    return collect(CollectConfig(**{"task": "touch", "episodes": 2, "image_size": 16, **kw}), path, progress=False)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_rerun_is_a_noop_and_other_settings_are_refused(tmp_path):
    out = tmp_path / "touch.zarr"
    _collect(out)
    before = _files(out)
    summary = _collect(out)
    assert summary["episodes"] == 2 and summary["attempted_this_run"] == 0
    assert _files(out) == before
    for kw, msg in [({"seed": 5}, "seed: store 0, now 5"), ({"noise_std": 0.1}, "noise_std: store 0.0, now 0.1"),
                    ({"instruction_split": "heldout"}, "instruction_split: store 'train', now 'heldout'")]:
        with pytest.raises(ValueError, match=msg):
            _collect(out, episodes=3, **kw)
    assert _files(out) == before
    assert EpisodeStore.open(out).num_episodes == 2
    _collect(out, episodes=3)  # same settings, more episodes: resumes
    assert EpisodeStore.open(out).num_episodes == 3


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_bad_noise_is_refused(value):
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
        CollectConfig(task="touch", noise_std=float(value))
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
        ExpertConfig(noise_std=float(value))
    with pytest.raises(ValueError, match=r"perturb_prob must be in \[0, 1\]"):
        CollectConfig(task="touch", perturb_prob=float(value))


def test_script_reports_bad_noise_without_traceback(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "collect_demos.py"), "--task", "touch", "--episodes",
                        "1", "--out", str(tmp_path / "s.zarr"), "--noise-std", "nan"],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--noise-std: must be a finite number >= 0, got 'nan'" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "s.zarr").exists()


def test_an_episode_with_nan_is_skipped_not_stored(tmp_path, monkeypatch):
    import numpy as np

    import robot.demos as demos

    real = demos.episode_arrays
    calls = {"n": 0}

    def blows_up_once(result):
        arrays = real(result)
        calls["n"] += 1
        if calls["n"] == 1:
            arrays["observation.state"] = arrays["observation.state"].copy()
            arrays["observation.state"][1, 0] = np.nan
        return arrays

    monkeypatch.setattr(demos, "episode_arrays", blows_up_once)
    summary = _collect(tmp_path / "s.zarr")
    assert summary["episodes"] == 2 and summary["nonfinite_this_run"] == 1
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert all(np.isfinite(v).all() for v in store.stats["observation.state"].values())


def test_out_may_be_an_empty_directory_but_not_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _collect(tmp_path / "empty", episodes=1)["episodes"] == 1
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        _collect(tmp_path / "f", episodes=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an episode store"):
        _collect(tmp_path / "other", episodes=1)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
