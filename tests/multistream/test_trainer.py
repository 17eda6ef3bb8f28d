import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multistream.checkpoint import config_from_dict, load_trainer_state, load_weights, read_config, save_checkpoint
from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, RQTransformer
from multistream.loss import lm_loss
from multistream.presets import tiny
from multistream.toy import COPY_LAG, toy_batch, toy_batch_fn, toy_streams
from multistream.trainer import TrainConfig, Trainer, lr_at

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_toy.py"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_lr_schedule():
    cfg = TrainConfig(out_dir="x", max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    assert lr_at(55, cfg) == pytest.approx(0.55)


def test_tiny_learns_toy_task_and_generates_it(tmp_path):
    """Copy an input delayed by 2 frames; a second codebook = f(first codebook of the frame, input)."""
    torch.manual_seed(0)
    ss = toy_streams()
    cfg = tiny(ss)
    model = RQTransformer(cfg)
    tc = TrainConfig(out_dir=str(tmp_path), max_steps=300, lr=3e-3, warmup_steps=20, weight_decay=0.0,
                     ckpt_every=1000, progress=False, plot=False)
    Trainer(model, cfg, tc, toy_batch_fn(32, 32), lambda m, b: lm_loss(m(b), ss)).fit()
    model.eval()
    held = toy_batch(64, 32, seed=987654)  # held-out episodes: a seed never used in training
    with torch.no_grad():
        acc = lm_loss(model(held), ss).accuracy["out"]
    assert acc >= 0.99, acc

    # the same through frame-by-frame sampling at temperature 0, the inputs fed one frame at a time
    src = held["src"][:8]
    outs = []
    with Generator(model, batch_size=8, sampling=Sampling(temperature=0.0)) as gen:
        for t in range(src.shape[2]):
            o = gen.step({"src": src[:, :, t]})
            outs.append(o.tokens["out"])
    gen_out = torch.stack(outs, dim=2)  # [B, 2, T]
    ok = (gen_out[:, :, COPY_LAG:] == held["out"][:8, :, COPY_LAG:]).float().mean().item()
    assert ok >= 0.99, ok


def test_checkpoint_round_trip(tmp_path):
    ss = toy_streams()
    cfg = tiny(ss)
    torch.manual_seed(1)
    m = RQTransformer(cfg)
    save_checkpoint(tmp_path / "ck", m, cfg)
    cfg2 = config_from_dict(LMConfig, read_config(tmp_path / "ck"))
    assert cfg2 == cfg
    m2 = RQTransformer(cfg2)
    load_weights(tmp_path / "ck", m2)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".ck.tmp-*"))
    # a different model does not load silently
    other = RQTransformer(tiny(toy_streams(vocab=8)))
    with pytest.raises(ValueError, match="shape of"):
        load_weights(tmp_path / "ck", other)
    # a model with one more stream loads with allow_missing only; the new stream's parameters keep their init
    from multistream.streams import StreamSet, StreamSpec

    more = RQTransformer(tiny(StreamSet((*ss.streams, StreamSpec("extra", vocab_size=5, predicted=True)))))
    with pytest.raises(ValueError, match="missing"):
        load_weights(tmp_path / "ck", more)
    before = {k: v.clone() for k, v in more.state_dict().items()}
    fresh = load_weights(tmp_path / "ck", more, allow_missing=True)
    assert fresh and all(k in before for k in fresh)
    for k, v in more.state_dict().items():
        assert torch.equal(v, before[k] if k in fresh else m.state_dict()[k]), k
    with pytest.raises(ValueError, match="unexpected"):
        load_weights(tmp_path / "ck", RQTransformer(tiny(StreamSet(ss.streams[1:]))), allow_missing=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_config(tmp_path / "missing")


def test_failed_checkpoint_write_leaves_previous_intact(tmp_path):
    ss = toy_streams()
    cfg = tiny(ss)
    m = RQTransformer(cfg)
    save_checkpoint(tmp_path / "ck", m, cfg)
    before = load_file(str(tmp_path / "ck" / "model.safetensors"))

    import multistream.checkpoint as ckmod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ckmod, "save_file", boom)
        with pytest.raises(RuntimeError, match="disk full"):
            save_checkpoint(tmp_path / "ck", m, cfg, extra={"x": 1})
    after = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def _run(out: Path, steps: int, extra=()) -> subprocess.Popen:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--steps", str(steps), "--ckpt-every", "5",
           "--batch", "8", "--frames", "16", "--threads", "1", "--fp32", "--no-progress", *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    steps = 60
    ref = _run(tmp_path / "ref", steps)
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    victim = _run(tmp_path / "run", steps)
    ck = tmp_path / "run" / "checkpoint" / "config.json"
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    step_at_kill = load_trainer_state(tmp_path / "run" / "checkpoint")["step"]
    assert 0 < step_at_kill < steps

    resumed = _run(tmp_path / "run", steps)
    assert resumed.wait(timeout=300) == 0
    log = resumed.stdout.read()
    assert f"resumed from {tmp_path / 'run' / 'checkpoint'} at step {step_at_kill}" in log

    a = load_file(str(tmp_path / "ref" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, steps + 1, 10))


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_gloo(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), "--out", str(tmp_path / "ddp"),
           "--steps", "40", "--batch", "8", "--frames", "16", "--threads", "1", "--no-progress", "--ckpt-every", "20"]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "ddp" / "checkpoint" / "model.safetensors").exists()
