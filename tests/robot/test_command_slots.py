"""The command held in view on every frame (`PolicyConfig(command="slots")`): the slot tokenizer, the store layout,
the first-frames loss weight, and a tiny policy that trains and rolls out with it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.instructions import TEMPLATES, make_instruction
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.store import EpisodeStore
from multistream.streams import ZERO_ID
from robot.command import CommandSlots
from robot.demos import CollectConfig, collect
from robot.policy import (
    ACTION,
    COMMAND,
    COMMAND_SLOTS,
    Policy,
    PolicyConfig,
    PolicyTokenizers,
    build_policy_store,
    first_frames_loss,
    model_config,
    policy_binding,
    policy_streams,
    same_config,
    save_policy_files,
)

from .test_policy import overfit_and_reload

ROOT = Path(__file__).resolve().parents[2]


def test_slots_are_the_same_for_every_phrasing_and_refuse_bad_commands():
    slots = CommandSlots()
    rng = np.random.default_rng(0)
    cases = {"touch": {"obj": "red cube"}, "push": {"obj": "blue cylinder", "side": "left"},
             "pick_place": {"obj": "green bar", "target": "plate"}}
    for task, kw in cases.items():
        for split in TEMPLATES[task]:
            got = {tuple(slots.ids(make_instruction(task, split, rng, **kw)[0])) for _ in range(60)}
            assert len(got) == 1, (task, split, got)
    assert slots.text(slots.ids("can you poke the red cube")) == "color=red shape=cube"  # "can" there is a verb
    assert slots.ids("nudge the yellow can all the way to the right side") == [5, 2, 1, ZERO_ID]
    assert slots.ids("take the orange brick and set it in the basket") == [2, 0, ZERO_ID, 0]
    assert slots.encode("tap the purple block").shape == (1, 4, 1)
    with pytest.raises(ValueError, match="names two colors"):
        slots.ids("touch the red cube and the blue bar")
    with pytest.raises(ValueError, match="fills no slot"):
        slots.ids("touch it")
    with pytest.raises(ValueError, match="outside"):
        slots.text([9, 0, ZERO_ID, ZERO_ID])
    with pytest.raises(ValueError, match="command layout"):
        PolicyConfig(command="shout")


def test_committed_checkpoint_loads_and_older_policy_files_get_the_old_defaults(slots_run, tmp_path):
    import json

    from multistream.checkpoint import save_checkpoint

    policy = Policy.load(ROOT / "checkpoints" / "policy_touch")
    want = COMMAND_SLOTS if policy.cfg.command == "slots" else COMMAND
    assert want in policy.streams
    assert same_config({k: v for k, v in vars(PolicyConfig()).items() if k != "command"}, PolicyConfig())
    # a policy.json written before the command layout, early fusion and camera normalisation existed (the first
    # committed policy's): a listening policy with a [0, 1] camera
    _, _, store, cfg = slots_run
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    listen = PolicyConfig(image_size=cfg.image_size, d_model=cfg.d_model, num_layers=cfg.num_layers,
                          depth_d_model=cfg.depth_d_model, depth_layers=cfg.depth_layers)
    streams = policy_streams(listen, tok)
    torch.manual_seed(0)
    model = RQTransformer(model_config(listen, streams))
    save_checkpoint(tmp_path, model.eval(), model.cfg)
    save_policy_files(tmp_path, listen, tok, policy_binding(streams, tok))
    old = {k: v for k, v in json.loads((tmp_path / "policy.json").read_text()).items()
           if k not in ("command", "fuse_command", "camera_norm")}
    (tmp_path / "policy.json").write_text(json.dumps(old))
    loaded = Policy.load(tmp_path)
    assert (loaded.cfg.command, loaded.cfg.fuse_command, loaded.cfg.camera_norm) == ("listen", False, "unit")
    assert COMMAND in loaded.streams and COMMAND_SLOTS not in loaded.streams


@pytest.fixture(scope="module")
def slots_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slots")
    collect(CollectConfig(task="touch", episodes=3, seed=10, image_size=32), tmp / "demos.zarr", progress=False)
    demos = EpisodeStore.open(tmp / "demos.zarr")
    cfg = PolicyConfig(image_size=32, d_model=64, num_layers=2, depth_d_model=32, depth_layers=1, command="slots")
    store = build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False)
    return tmp, demos, store, cfg


def test_store_holds_the_slots_on_every_frame_and_no_listening_prefix(slots_run):
    tmp, demos, store, cfg = slots_run
    slots = CommandSlots()
    assert COMMAND_SLOTS in store.keys and COMMAND not in store.keys
    for i in range(store.num_episodes):
        meta, ep, demo = store.episode_meta(i), store.episode(i), demos.episode(i)
        assert meta["listen_frames"] == 0
        assert len(ep[ACTION]) == len(demo[ACTION]) and (ep[ACTION] >= 0).all()  # acting from the first frame
        want = slots.ids(meta["instruction"])
        assert want[2:] == [ZERO_ID, ZERO_ID] and min(want[:2]) >= 0  # touch: a colour and a shape
        assert (ep[COMMAND_SLOTS] == np.asarray(want)).all() and ep[COMMAND_SLOTS].shape == (len(demo[ACTION]), 4)
        assert slots.text(want).split()[0] == f"color={meta['instruction'].split()[-2]}"
    assert build_policy_store(demos, tmp / "policy.zarr", cfg, progress=False).num_episodes == 3  # resume: no-op
    with pytest.raises(ValueError, match="was made with policy config"):
        build_policy_store(demos, tmp / "policy.zarr", PolicyConfig(image_size=32, d_model=64, num_layers=2,
                                                                    depth_d_model=32, depth_layers=1), progress=False)


def test_first_frames_loss_weights_the_decision(slots_run):
    _, _, store, cfg = slots_run
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok)
    window = max(store.episode_length(i) for i in range(store.num_episodes))
    batch = binding.batch_fn(store, window=window, batch_size=3, seed=0, from_episode_start=True)(0, 0, 0, 1)
    torch.manual_seed(0)
    out = RQTransformer(model_config(cfg, streams))(batch)
    plain = first_frames_loss(out, streams)
    assert torch.allclose(plain.total, lm_loss(out, streams).total)
    assert 0.0 <= plain.metrics["acc_first_xy"] <= 1.0
    # by hand: the mean of per-token CE with the first 2 acting frames of each row counted 4 times
    ce = torch.nn.functional.cross_entropy(out.logits[ACTION].flatten(0, 2),
                                           out.targets[ACTION].clamp_min(0).flatten(), reduction="none")
    ce = ce.view_as(out.targets[ACTION])  # [B, K, T]
    mask = out.mask[ACTION].float()
    w = mask.clone()
    for b in range(mask.shape[0]):
        t0 = int(mask[b, 0].nonzero()[0])
        w[b, :, t0 : t0 + 2] *= 4.0
    want = (ce * w).sum() / w.sum()
    assert torch.allclose(first_frames_loss(out, streams, frames=2, weight=4.0).total, want, atol=1e-5)
    with pytest.raises(ValueError, match="frames >= 1"):
        first_frames_loss(out, streams, frames=0)


def test_tiny_slots_policy_trains_replays_and_rolls_out(slots_run):
    tmp, demos, store, cfg = slots_run
    streams, accuracy, policy = overfit_and_reload(
        tmp, store, cfg, steps=200, loss_fn=lambda out, streams: first_frames_loss(out, streams, frames=3, weight=3.0))
    assert streams[COMMAND_SLOTS].same_frame and streams[COMMAND_SLOTS].num_codebooks == 4
    assert accuracy >= 0.9, accuracy
    assert policy.cfg.command == "slots"
    metas = store.episode_metas()
    res = policy.rollout("touch", [m["seed"] for m in metas], commands=[m["command"] for m in metas], batch_size=2)
    for r, m in zip(res, metas, strict=True):
        assert np.isfinite(r["actions"]).all() and np.abs(r["actions"]).max() <= 1.0  # never an invalid action
        assert r["length"] >= 1 and r["command"] == m["command"]
    assert any(r["success"] for r in res), [(r["seed"], r["success"], r["length"]) for r in res]


def test_probe_refuses_evaluation_seeds():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe_grounding.py"), "--ckpt", "x", "--first-seed",
                        "990", "--seeds", "20"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2 and "seeds 1000-1009 are held-out evaluation seeds" in p.stderr, p.stderr


def test_fused_command_planes_reach_the_camera_and_the_policy_rolls_out(slots_run):
    import dataclasses

    from envs import features as F
    from robot.policy import command_planes_count, fuse_command

    tmp, demos, store, cfg = slots_run
    cfg = dataclasses.replace(cfg, fuse_command=True)
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    p = command_planes_count(tok)
    assert p == 13 and streams[F.IMAGE_FRONT].feature_shape == (32, 32, 3 + p)
    binding = policy_binding(streams, tok)  # reads RGB from the store
    ep = binding.episode(store, 0)
    fused = fuse_command(ep, streams, tok)
    img = fused[F.IMAGE_FRONT]  # [1, T, H, W, 3 + P]
    assert torch.equal(img[..., :3], ep[F.IMAGE_FRONT])
    color, shape = CommandSlots().ids(store.episode_meta(0)["instruction"])[:2]
    want = torch.zeros(p)
    want[color], want[6 + shape] = 1.0, 1.0  # colours, then shapes; side and target unfilled
    assert torch.equal(img[..., 3:], want.expand_as(img[..., 3:]))  # the same planes at every pixel and frame
    with pytest.raises(ValueError, match="fuse_command needs the slots layout"):
        PolicyConfig(fuse_command=True)
    window = max(store.episode_length(i) for i in range(store.num_episodes))
    fn = binding.batch_fn(store, window=window, batch_size=3, seed=0, from_episode_start=True)
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(30):
        lo = first_frames_loss(model(fuse_command(fn(step, 0, 0, 1), streams, tok)), streams, weight=3.0)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
        losses.append(float(lo.total.detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    from multistream.checkpoint import save_checkpoint

    save_checkpoint(tmp / "fused", model.eval(), model.cfg)
    save_policy_files(tmp / "fused", cfg, tok, binding)
    policy = Policy.load(tmp / "fused")
    assert policy.cfg.fuse_command
    res = policy.rollout("touch", [store.episode_meta(0)["seed"]], commands=[store.episode_meta(0)["command"]])
    assert np.isfinite(res[0]["actions"]).all() and np.abs(res[0]["actions"]).max() <= 1.0


def test_standardised_camera_uses_the_store_statistics_and_survives_reload(slots_run):
    import dataclasses

    from envs import features as F
    from multistream.checkpoint import save_checkpoint

    tmp, demos, store, cfg = slots_run
    cfg = dataclasses.replace(cfg, camera_norm="meanstd")
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    streams = policy_streams(cfg, tok)
    binding = policy_binding(streams, tok, cfg.camera_norm).attach(store)
    raw = np.concatenate([store.episode(i, [F.IMAGE_FRONT])[F.IMAGE_FRONT] for i in range(store.num_episodes)])
    raw = raw.reshape(-1, 3).astype(np.float64)
    img = binding.episode(store, 0)[F.IMAGE_FRONT]
    want = (store.episode(0, [F.IMAGE_FRONT])[F.IMAGE_FRONT] - raw.mean(0)) / raw.std(0)
    assert torch.allclose(img[0], torch.as_tensor(want, dtype=torch.float32), atol=1e-3)
    x = img.reshape(-1, 3)
    assert x.abs().max() < 10 and not torch.allclose(x.std(0), torch.zeros(3))
    unit = policy_binding(streams, tok).attach(store).episode(store, 0)[F.IMAGE_FRONT]
    assert 0.0 <= float(unit.min()) and float(unit.max()) <= 1.0  # the default is still uint8 / 255
    with pytest.raises(ValueError, match="camera_norm must be one of"):
        PolicyConfig(camera_norm="minmax")
    with pytest.raises(ValueError, match="camera_norm must be one of"):
        policy_binding(streams, tok, "bogus")
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams))
    save_checkpoint(tmp / "norm", model.eval(), model.cfg)
    save_policy_files(tmp / "norm", cfg, tok, binding)
    policy = Policy.load(tmp / "norm")  # the live observations get the same standardisation
    assert policy.cfg.camera_norm == "meanstd"
    obs = {F.IMAGE_FRONT: torch.as_tensor(store.episode(0, [F.IMAGE_FRONT])[F.IMAGE_FRONT][:1])}
    sh, sc = policy.binding._norm[F.IMAGE_FRONT]
    assert torch.allclose((obs[F.IMAGE_FRONT].float() - sh) / sc, img[0, :1], atol=1e-3)


def test_train_policy_resume_refuses_another_camera_norm(slots_run):
    import json
    import subprocess
    import sys

    tmp, demos, store, cfg = slots_run
    out = tmp / "run_norm"
    base = [sys.executable, str(ROOT / "scripts" / "train_policy.py"), "--store", str(tmp / "policy.zarr"), "--out",
            str(out), "--steps", "2", "--batch", "2", "--threads", "1", "--no-progress", "--warmup", "0"]
    p = subprocess.run([*base, "--camera-norm", "meanstd"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "policy.json").read_text())["camera_norm"] == "meanstd"
    saved = (out / "policy.json").read_text()
    p = subprocess.run([*base, "--steps", "3", "--resume"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode != 0 and "other policy settings" in p.stderr and "camera_norm" in p.stderr, p.stderr
    assert (out / "policy.json").read_text() == saved  # refused before anything was rewritten
