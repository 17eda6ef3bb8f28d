"""DAgger collection: policy-visited states labelled by the expert, appended to the policy store; the script's
seed checks and one tiny end-to-end round."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multistream.checkpoint import save_checkpoint
from multistream.lm import RQTransformer
from multistream.store import EpisodeStore
from robot.dagger import SOURCE, collect_on_policy, expert_labels
from robot.demos import CollectConfig, collect
from robot.policy import (
    ACTION,
    Policy,
    PolicyConfig,
    PolicyTokenizers,
    build_policy_store,
    drop_action_input,
    model_config,
    policy_binding,
    policy_streams,
    save_policy_files,
    sees_action_input,
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two touch demos -> a policy store, and an untrained tiny policy saved beside it (it acts badly, so the states
    it visits are not the expert's)."""
    tmp = tmp_path_factory.mktemp("dagger")
    collect(CollectConfig(task="touch", episodes=2, seed=10, image_size=IMAGE), tmp / "demos.zarr", progress=False)
    cfg = PolicyConfig(image_size=IMAGE, d_model=32, num_layers=1, num_heads=2, depth_d_model=16, depth_layers=1)
    store = build_policy_store(EpisodeStore.open(tmp / "demos.zarr"), tmp / "policy.zarr", cfg, progress=False)
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok).attach(store)
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams))
    save_checkpoint(tmp / "run" / "checkpoint", model, model.cfg)
    save_policy_files(tmp / "run", cfg, tok, binding)
    return tmp


def _fresh_store(tiny, name):
    shutil.copytree(tiny / "policy.zarr", tiny / name)
    return EpisodeStore.open(tiny / name, mode="a")


def test_collect_appends_expert_labels_of_policy_visited_states(tiny):
    store = _fresh_store(tiny, "agg.zarr")
    n0, f0 = store.num_episodes, store.num_steps
    policy = Policy.load(tiny / "run" / "checkpoint")
    seeds = [20000, 20001, 20002]
    s = collect_on_policy(policy, store, "touch", seeds, beta=0.0, round_=1, batch_size=2)
    assert store.num_episodes == n0 + 3 and s["episodes"] == 3 and s["expert_frames"] == 0
    assert store.num_steps == f0 + s["frames"]
    tok = policy.tok.action
    for j, (seed, res) in enumerate(zip(seeds, s["results"], strict=True)):
        meta = store.episode_meta(n0 + j)
        assert (meta["source"], meta["seed"], meta["dagger_round"]) == (SOURCE, seed, 1)
        codes = store.episode(n0 + j, [ACTION])[ACTION][meta["listen_frames"]:]  # [T, 5] acting frames
        assert len(codes) == res["length"] >= 1
        # labels = the expert's action in the states the *policy's* actions led to (replayed independently)
        labels = expert_labels("touch", seed, res["actions"], IMAGE)
        want = tok.encode(torch.from_numpy(labels.astype(np.float32))[None])[0].T.numpy()
        np.testing.assert_array_equal(codes, want)
    # the policy, not the expert, drove: its executed actions differ from the labels somewhere
    assert any(not np.allclose(r["actions"], tok.decode(torch.from_numpy(
        store.episode(n0 + j, [ACTION])[ACTION][store.episode_meta(n0 + j)["listen_frames"]:].T.astype(np.int64))[None]
    )[0].numpy()) for j, r in enumerate(s["results"]))
    # rerunning the round skips the stored seeds; evaluation seeds are refused
    again = collect_on_policy(policy, store, "touch", seeds, beta=0.0, round_=1)
    assert again["episodes"] == 0 and again["skipped"] == 3 and store.num_episodes == n0 + 3
    with pytest.raises(ValueError, match="held-out evaluation seeds"):
        collect_on_policy(policy, store, "touch", [999, 1000], beta=0.0, round_=2)
    with pytest.raises(ValueError, match="beta must be in"):
        collect_on_policy(policy, store, "touch", [30000], beta=1.5)


def test_beta_one_executes_the_expert(tiny):
    store = _fresh_store(tiny, "agg1.zarr")
    n0 = store.num_episodes
    policy = Policy.load(tiny / "run" / "checkpoint")
    s = collect_on_policy(policy, store, "touch", [20010], beta=1.0, round_=1)
    res = s["results"][0]
    assert s["expert_frames"] == res["length"]
    meta = store.episode_meta(n0)
    codes = store.episode(n0, [ACTION])[ACTION][meta["listen_frames"]:]
    executed = policy.tok.action.decode(torch.from_numpy(codes.T.astype(np.int64))[None])[0].numpy()
    np.testing.assert_allclose(res["actions"], executed)  # the (binned) expert action was what ran
    assert res["success"]  # the expert touches the target


def test_drop_action_input_zeroes_and_freezes(tiny):
    policy = Policy.load(tiny / "run" / "checkpoint")
    assert sees_action_input(policy.model)
    drop_action_input(policy.model)
    assert not sees_action_input(policy.model)
    assert not any(e.weight.requires_grad for e in policy.model.embs[:5])


def _script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "dagger_policy.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_script_refuses_evaluation_seeds(tiny):
    r = _script("--ckpt", tiny / "run" / "checkpoint", "--store", tiny / "policy.zarr", "--out", tiny / "bad",
                "--first-seed", 950, "--episodes", 30, "--rounds", 2)
    assert r.returncode != 0
    assert "held-out evaluation seeds" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_script_one_round_grows_the_store_trains_and_picks_the_best(tiny):
    out = tiny / "dag"
    args = ["--ckpt", tiny / "run" / "checkpoint", "--store", tiny / "policy.zarr", "--out", out, "--rounds", 1,
            "--episodes", 2, "--val-seeds", 2, "--first-seed", 30000, "--train-steps", 2, "--batch", 2,
            "--no-progress", "--no-action-input", "--dagger-frac", 0.5]
    r = _script(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    state = json.loads((out / "dagger.json").read_text())
    assert [x["round"] for x in state["rounds"]] == [0, 1]
    assert state["rounds"][1]["collected"]["episodes"] == 2
    assert EpisodeStore.open(out / "store.zarr").num_episodes == 2 + 2
    trained = Policy.load(state["rounds"][1]["ckpt"])
    assert not sees_action_input(trained.model)
    best = json.loads((out / "best.json").read_text())
    assert best["val_success"] == max(x["val_success"] for x in state["rounds"])
    # a rerun finds every phase done and changes nothing; other settings are refused
    assert _script(*args).returncode == 0
    assert EpisodeStore.open(out / "store.zarr").num_episodes == 4
    r = _script(*[a if a != 0.5 else 0.25 for a in args])
    assert r.returncode != 0 and "other settings" in r.stderr
