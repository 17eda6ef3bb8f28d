"""The camera VQ tokenizer: round trip and bad input, frame-by-frame equals whole, causality, files, that it learns
real frames, the training script end to end, and a policy that sees the camera as its tokens."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs import features as F
from envs.base import EnvConfig
from robot.camera_vq import FSQ, CameraTokens, CameraVQ, CameraVQConfig, reconstruction_error

ROOT = Path(__file__).resolve().parents[2]
TINY = CameraVQConfig(image_size=32, grid=4, groups=2, levels=(4, 3), width=16)


def env_frames(task: str, seeds: range, steps: int = 4, size: int = 32) -> np.ndarray:
    """Real camera frames [N, size, size, 3] uint8: resets and a few random steps of the env."""
    env = gym.make(envs.TASK_IDS[task], config=EnvConfig(image_size=(size, size)))
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        obs, _ = env.reset(seed=s)
        out.append(obs[F.IMAGE_FRONT])
        for _ in range(steps):
            obs, *_ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
            out.append(obs[F.IMAGE_FRONT])
    env.close()
    return np.stack(out)


def test_round_trip_shapes_and_bad_input():
    tok = CameraVQ(TINY)
    assert (tok.num_codebooks, tok.cardinality, tok.frame_rate) == (32, 12, 12.5)
    x = torch.randint(0, 256, (2, 5, 32, 32, 3), dtype=torch.uint8)
    codes = tok.encode(x)
    assert codes.shape == (2, 32, 5) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 12
    img = tok.decode(codes)
    assert img.shape == (2, 5, 32, 32, 3) and img.dtype == torch.uint8
    assert tok.encode(x[:, :0]).shape == (2, 32, 0)
    with pytest.raises(ValueError, match=r"\[B, T, 32, 32, 3\]"):
        tok.encode(x[0])
    with pytest.raises(ValueError, match=r"\[B, T, 32, 32, 3\]"):
        tok.encode(torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(x.float())
    with pytest.raises(ValueError, match="outside"):
        tok.decode(torch.full((1, 32, 2), 12))
    with pytest.raises(ValueError, match="codebooks"):
        tok.decode(torch.zeros(1, 31, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="power of two"):
        CameraVQConfig(image_size=48, grid=4)
    with pytest.raises(ValueError, match="level"):
        CameraVQConfig(levels=(4, 1))


def test_fsq_indices_name_the_values_they_quantize_to():
    fsq = FSQ((5, 4, 3))
    z = torch.randn(200, 3) * 3
    q, idx = fsq(z)
    assert torch.allclose(fsq.values(idx), q, atol=1e-6)
    assert int(idx.min()) >= 0 and int(idx.max()) < 60 and len(set(idx.tolist())) > 20
    assert q.abs().max() <= 1.0
    # straight-through: gradients reach the pre-quantization values
    z.requires_grad_(True)
    fsq(z)[0].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_frame_by_frame_equals_whole_and_frames_are_independent():
    torch.manual_seed(0)
    tok = CameraVQ(TINY)
    with torch.no_grad():  # an untrained encoder gives nearly the same token everywhere: spread its output
        tok.encoder[-1].weight.mul_(100)
    x = torch.from_numpy(env_frames("touch", range(2), steps=3))[None]  # [1, 8, 32, 32, 3]
    whole = tok.encode(x)
    assert len(torch.unique(whole)) > 3  # the test below is not about constant tokens
    one_by_one = torch.cat([tok.encode(x[:, t : t + 1]) for t in range(x.shape[1])], dim=-1)
    assert torch.equal(whole, one_by_one)
    changed = x.clone()
    changed[:, 5:] = 255 - changed[:, 5:]  # later frames change: earlier tokens must not
    after = tok.encode(changed)
    assert torch.equal(after[..., :5], whole[..., :5]) and not torch.equal(after[..., 5:], whole[..., 5:])


def test_save_load_round_trip_and_refusals(tmp_path):
    torch.manual_seed(1)
    tok = CameraVQ(TINY)
    tok.save(tmp_path / "vq")
    back = CameraVQ.load(tmp_path / "vq")
    x = torch.randint(0, 256, (1, 3, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(back.encode(x), tok.encode(x)) and back.fingerprint == tok.fingerprint
    assert back.cfg == TINY
    saved = CameraTokens.load(tmp_path / "vq").to_json()
    assert CameraTokens.from_json(saved).fingerprint == tok.fingerprint
    torch.manual_seed(2)
    CameraVQ(TINY).save(tmp_path / "vq")  # other weights at the same path
    with pytest.raises(ValueError, match="not the one this policy was trained with"):
        CameraTokens.from_json(saved)
    with pytest.raises(FileNotFoundError, match="no camera tokenizer"):
        CameraVQ.load(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"kind": "codec"}))
    with pytest.raises(ValueError, match="not a camera tokenizer"):
        CameraVQ.load(tmp_path / "other")


def test_a_tiny_tokenizer_learns_real_frames():
    """Trained on frames of two tasks, it reconstructs the objects and the arm of held-out scenes (foreground
    pixels) far better than the mean frame does, which an all-pixel error would not show."""
    train = np.concatenate([env_frames("touch", range(0, 12)), env_frames("pick_place", range(0, 12))])
    held = np.concatenate([env_frames("touch", range(100, 104)), env_frames("pick_place", range(100, 104))])
    background = (train.astype(np.float32) / 255).mean(0)
    bg = torch.from_numpy(background)
    torch.manual_seed(0)
    tok = CameraVQ(CameraVQConfig(image_size=32, grid=8, groups=1, levels=(5, 5), width=32))
    before = reconstruction_error(tok, held, background)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    x_all = torch.from_numpy(train).float() / 255
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = x_all[torch.randint(0, len(x_all), (32,), generator=g)]
        y, _ = tok(x)
        w = 1 + 10 * ((x - bg).abs().amax(-1, keepdim=True) > 0.15).float()  # as train_camera_vq.py weighs
        loss = (((y - x) ** 2) * w).sum() / (w.sum() * 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = reconstruction_error(tok, held, background)
    x = torch.from_numpy(held).float() / 255
    fg = ((x - bg).abs().amax(-1) > 0.15)[..., None]
    mean_frame_fg = float((((x - bg) ** 2) * fg).sum() / (fg.sum() * 3))  # drawing only the mean frame
    assert after["fg_mse"] < 0.6 * mean_frame_fg, (after, mean_frame_fg)
    assert after["mse"] < 0.6 * before["mse"] and after["fg_mse"] < 0.6 * before["fg_mse"], (before, after)
    assert 0 < after["fg_share"] < 0.5


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """The training script on a tiny demo store: a tokenizer, its eval and its plot."""
    from robot.demos import CollectConfig, collect

    tmp = tmp_path_factory.mktemp("camera_vq")
    collect(CollectConfig(task="touch", episodes=3, seed=10, image_size=32), tmp / "demos.zarr", progress=False)
    cmd = [sys.executable, str(ROOT / "scripts/train_camera_vq.py"), "--demos", str(tmp / "demos.zarr"),
           "--out", str(tmp / "vq"), "--grid", "4", "--groups", "2", "--levels", "4", "3", "--width", "16",
           "--steps", "30", "--batch", "8", "--ckpt-every", "20", "--no-progress", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, cmd, r.stdout


def test_train_script_writes_tokenizer_eval_and_plot_and_resumes(vq_run):
    tmp, cmd, stdout = vq_run
    assert "held-out frames" in stdout and "foreground" in stdout
    report = json.loads((tmp / "vq" / "eval.json").read_text())
    assert report["step"] == 30 and report["tokens_per_frame"] == 32 and report["vocabulary"] == 12
    assert 0 < report["mse"] < 1 and 0 < report["fg_mse"] < 1 and report["held_out_frames"] > 0
    assert (tmp / "vq" / "recon.png").stat().st_size > 1000
    tok = CameraVQ.load(tmp / "vq" / "checkpoint")
    assert tok.fingerprint == report["fingerprint"]
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode != 0 and "--resume" in again.stderr  # an existing run is not overwritten
    bad = subprocess.run([*cmd[:3], str(tmp / "nothing.zarr"), "--out", str(tmp / "vq2"), "--steps", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and "no demo store" in bad.stderr


def test_policy_sees_the_camera_as_tokens_trains_and_rolls_out(vq_run):
    from multistream.checkpoint import save_checkpoint
    from multistream.lm import RQTransformer
    from multistream.store import EpisodeStore
    from robot.policy import (
        ACTION,
        Policy,
        PolicyConfig,
        PolicyTokenizers,
        build_policy_store,
        first_frames_loss,
        model_config,
        policy_binding,
        policy_streams,
        save_policy_files,
    )

    tmp, _, _ = vq_run
    vq = str(tmp / "vq" / "checkpoint")
    cfg = PolicyConfig(image_size=32, d_model=64, num_layers=2, depth_d_model=32, depth_layers=1, command="slots")
    store = build_policy_store(EpisodeStore.open(tmp / "demos.zarr"), tmp / "policy.zarr", cfg, progress=False)
    cfg = dataclasses.replace(cfg, camera_tokens=vq)
    tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"]).with_camera(vq)
    streams = policy_streams(cfg, tok)
    cam = streams[F.IMAGE_FRONT]
    assert not cam.continuous and cam.num_codebooks == 32 and cam.same_frame and not cam.predicted
    binding = policy_binding(streams, tok)
    window = max(store.episode_length(i) for i in range(store.num_episodes))
    fn = binding.batch_fn(store, window=window, batch_size=3, seed=0, from_episode_start=True)
    batch = fn(0, 0, 0, 1)
    ep0 = store.episode(0, [F.IMAGE_FRONT])[F.IMAGE_FRONT]
    want = tok.camera.encode(torch.from_numpy(ep0)[None])[0]  # [K, T]: the batch holds the VQ's tokens
    assert any(torch.equal(batch[F.IMAGE_FRONT][b, :, : want.shape[1]], want) for b in range(3))
    torch.manual_seed(0)
    model = RQTransformer(model_config(cfg, streams))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(200):
        lo = first_frames_loss(model(fn(step, 0, 0, 1)), streams)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(binding.episode(store, 0))
    m = out.mask[ACTION]
    assert float((out.logits[ACTION].argmax(-1) == out.targets[ACTION])[m].float().mean()) >= 0.9
    save_checkpoint(tmp / "ckpt", model, model.cfg)
    save_policy_files(tmp / "ckpt", cfg, tok, binding)
    policy = Policy.load(tmp / "ckpt")
    assert policy.tok.camera.fingerprint == tok.camera.fingerprint
    metas = store.episode_metas()
    res = policy.rollout("touch", [m["seed"] for m in metas], commands=[m["command"] for m in metas], batch_size=2)
    assert all(np.isfinite(r["actions"]).all() and np.abs(r["actions"]).max() <= 1.0 for r in res)
    assert any(r["success"] for r in res), [(r["seed"], r["success"], r["length"]) for r in res]
    with pytest.raises(ValueError, match="camera_tokens needs"):
        PolicyConfig(command="slots", fuse_command=True, camera_tokens=vq)
