"""The committed checkpoints: each has its README (the commands that made it), no file reaches the 40 MB limit, and
each committed policy loads with the files beside it and runs a held-out episode of its task."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPTS = sorted(p for p in (ROOT / "checkpoints").iterdir() if p.is_dir())
POLICIES = [p for p in CKPTS if p.name.startswith("policy_")]
LIMIT = 40 * 2**20


def test_there_are_committed_checkpoints():
    names = {p.name for p in CKPTS}
    assert {"chat", "codec_spectral", "listener", "policy_touch", "policy_push", "policy_pick_place"} <= names


@pytest.mark.parametrize("ckpt", CKPTS, ids=[p.name for p in CKPTS])
def test_checkpoint_has_a_readme_and_stays_under_the_limit(ckpt):
    readme = ckpt / "README.md"
    assert readme.is_file(), f"{ckpt.name} has no README.md"
    assert "```" in readme.read_text(), f"{ckpt.name}/README.md gives no commands"
    assert list(ckpt.glob("*.safetensors")), f"{ckpt.name} holds no weights"
    for f in ckpt.rglob("*"):
        assert not f.name.endswith(".tmp"), f"a half-written file: {f}"
        if f.is_file():
            assert f.stat().st_size < LIMIT, f"{f} is {f.stat().st_size / 2**20:.1f} MB (limit 40 MB)"


@pytest.mark.parametrize("ckpt", POLICIES, ids=[p.name for p in POLICIES])
def test_committed_policy_loads(ckpt):
    from robot.policy import Policy

    policy = Policy.load(ckpt)
    task = ckpt.name.removeprefix("policy_")
    assert task in ("touch", "push", "pick_place"), f"{ckpt.name}: policy_<task> names no task"
    (r,) = policy.rollout(task, [1000], split="heldout", batch_size=1)  # one held-out episode, closed loop
    assert 1 <= r["length"] <= 100 and isinstance(r["success"], bool) and r["command"]
