"""The commanded policy on the engine: tokenizers, the policy store, and a tiny policy overfit on three episodes
that replays them teacher-forced and then succeeds closed-loop."""

import numpy as np
import pytest
import torch

from envs import features as F
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.store import EpisodeStore
from multistream.streams import ZERO_ID
from robot.command import CommandWords
from robot.demos import CollectConfig, collect
from robot.policy import (
    ACTION,
    COMMAND,
    Policy,
    PolicyConfig,
    build_policy_store,
    model_config,
    policy_binding,
    policy_streams,
    save_policy_files,
)
from robot.tokenizers import QuantileBins, UniformBins


def test_uniform_bins_round_trip_and_errors():
    tok = UniformBins(5, 21)
    x = torch.rand(2, 7, 5) * 2 - 1
    codes = tok.encode(x)
    assert codes.shape == (2, 5, 7) and int(codes.min()) >= 0 and int(codes.max()) < 21
    assert (tok.decode(codes) - x).abs().max() <= 0.05 + 1e-6  # half a bin of 0.1
    assert torch.equal(tok.encode(torch.full((1, 1, 5), 7.0)), torch.full((1, 5, 1), 20))  # clamped
    with pytest.raises(ValueError, match="finite"):
        tok.encode(torch.full((1, 1, 5), float("nan")))
    with pytest.raises(ValueError, match=r"expected values \[B, T, 5\]"):
        tok.encode(torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="contains id 21"):
        tok.decode(torch.full((1, 5, 1), 21))


def test_quantile_bins_spend_codes_where_the_data_is():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, (900, 2)), rng.normal(5, 2, (100, 2))])  # mostly no contact
    tok = QuantileBins.fit(x, 8)
    codes = tok.encode(torch.from_numpy(x).float()[None])
    counts = np.bincount(codes[0, 0].numpy(), minlength=8)
    assert counts.min() > 0.5 * counts.mean()  # roughly equal use of every bin
    err = (tok.decode(codes)[0].numpy() - x)[:900]
    assert np.quantile(np.abs(err), 0.95) < 0.01  # fine resolution near zero, where most readings are
    again = QuantileBins.from_json(tok.to_json())
    assert torch.equal(again.encode(torch.from_numpy(x).float()[None]), codes)
    assert again.fingerprint == tok.fingerprint
    with pytest.raises(ValueError, match="needs 'edges' and 'centers'"):
        QuantileBins.from_json({"edges": []})


def test_command_words_cover_every_instruction_and_refuse_others():
    words = CommandWords()
    ids = words.ids("Nudge the red can all the way to the left side")
    assert words.text(ids) == "nudge the red can all the way to the left side"
    with pytest.raises(ValueError, match="unknown command word 'teleport'"):
        words.ids("teleport the red can")
    with pytest.raises(ValueError, match="non-empty"):
        words.ids("  ")


@pytest.fixture(scope="module")
def touch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy")
    collect(CollectConfig(task="touch", episodes=3, seed=10, image_size=32), tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    cfg = PolicyConfig(image_size=32, d_model=64, num_layers=2, depth_d_model=32, depth_layers=1)
    store = build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False)
    return tmp, demos, store, cfg


def test_policy_store_has_every_stream_and_the_listening_prefix(touch_run):
    tmp, demos, store, cfg = touch_run
    assert store.num_episodes == 3
    meta = store.episode_meta(0)
    n = meta["listen_frames"]
    ep = store.episode(0)
    assert len(ep[ACTION]) == n + len(demos.episode(0)[ACTION])
    assert (ep[ACTION][:n] == ZERO_ID).all() and (ep[ACTION][n:] >= 0).all()
    assert (ep[COMMAND][:n] >= 0).all() and (ep[COMMAND][n:] == ZERO_ID).all()
    assert (ep[F.IMAGE_FRONT][:n] == ep[F.IMAGE_FRONT][:1]).all()  # the robot holds still while listening
    # resuming is a no-op once every demo is converted; another config is refused
    assert build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False).num_episodes == 3
    with pytest.raises(ValueError, match="was made with policy config"):
        build_policy_store(demos, tmp / "policy.zarr", PolicyConfig(image_size=32), progress=False)


def overfit_and_reload(tmp, store, cfg, steps, loss_fn=lm_loss):
    """Train a tiny policy on every episode of `store` (batches of 3 whole episodes) for `steps` steps with
    `loss_fn(out, streams)`, replay the episodes teacher-forced, save and reload it as a Policy.
    Returns (streams, action accuracy of the replay, the reloaded Policy)."""
    from multistream.checkpoint import save_checkpoint
    from robot.policy import PolicyTokenizers

    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok)
    window = max(store.episode_length(i) for i in range(store.num_episodes))
    fn = binding.batch_fn(store, window=window, batch_size=3, seed=0, from_episode_start=True)
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        lo = loss_fn(model(fn(step, 0, 0, 1)), streams)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
    model.eval()
    hits = total = 0
    for i in range(store.num_episodes):  # teacher-forced replay of every stored episode
        with torch.no_grad():
            out = model(binding.episode(store, i))
        valid = out.mask[ACTION]
        hits += int((out.logits[ACTION].argmax(-1) == out.targets[ACTION])[valid].sum())
        total += int(valid.sum())
    save_checkpoint(tmp / "ckpt", model, model.cfg)
    save_policy_files(tmp / "ckpt", cfg, tok, binding)
    return streams, hits / total, Policy.load(tmp / "ckpt")


def test_tiny_policy_overfits_replays_and_succeeds_closed_loop(touch_run):
    tmp, demos, store, cfg = touch_run
    _, accuracy, policy = overfit_and_reload(tmp, store, cfg, steps=250)
    assert accuracy >= 0.95, accuracy
    # closed loop from the same seeds and commands, through the saved and reloaded checkpoint
    metas = store.episode_metas()
    res = policy.rollout("touch", [m["seed"] for m in metas], commands=[m["command"] for m in metas], batch_size=2)
    assert all(np.abs(r["actions"]).max() <= 1.0 for r in res)  # never an invalid action
    assert any(r["success"] for r in res), [(r["seed"], r["success"], r["length"]) for r in res]
