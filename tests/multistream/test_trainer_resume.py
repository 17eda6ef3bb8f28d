"""Resume hardening: pickle-free trainer state, torn metrics, a crash inside the checkpoint swap, changed settings."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import multistream.atomic as atomic
from multistream.checkpoint import decode_state, encode_state, load_trainer_state, save_checkpoint
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import tiny
from multistream.toy import toy_batch_fn, toy_streams
from multistream.trainer import METRICS_FILE, TrainConfig, Trainer, no_weight_decay, read_metrics

ROOT = Path(__file__).resolve().parents[2]
SS = toy_streams()


def _trainer(out: Path, steps: int, hook=None, run_info=None, **kw) -> Trainer:
    torch.manual_seed(0)
    cfg = tiny(SS)
    tc = TrainConfig(out_dir=str(out), max_steps=steps, lr=kw.pop("lr", 1e-3), warmup_steps=2, ckpt_every=5,
                     log_every=1, progress=False, plot=False, autocast=False, **kw)
    return Trainer(RQTransformer(cfg), cfg, tc, toy_batch_fn(4, 8), lambda m, b: lm_loss(m(b), SS),
                   run_info={"batch": 4} if run_info is None else run_info, hook=hook)


def _params(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_pickle(marker: Path) -> bytes:
    """A protocol-0 pickle that runs `touch MARKER` when loaded: GLOBAL os.system, MARK, STRING, TUPLE, REDUCE,
    STOP, written out by hand so that no pickle module is imported anywhere in the project."""
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def test_state_round_trip_without_pickle():
    opt = torch.optim.AdamW(nn.Linear(3, 2).parameters())
    import random

    import numpy as np

    st = {"optimizer": opt.state_dict(), "np": np.random.get_state(), "py": random.getstate(), 3: (1.5, None),
          "t": torch.arange(4), "inf": float("inf")}
    js, tensors = encode_state(st)
    back = decode_state(json.loads(json.dumps(js, allow_nan=False)), tensors)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back[3] == (1.5, None) and back["inf"] == float("inf")
    assert torch.equal(back["t"], st["t"])
    assert back["np"][0] == "MT19937" and (back["np"][1] == st["np"][1]).all()
    assert back["py"] == st["py"]
    with pytest.raises(TypeError, match=r"state\.x.*_Evil"):
        encode_state({"x": _Evil(Path("/nonexistent"))})


def test_crafted_pickle_is_refused_and_never_run(tmp_path):
    t = _trainer(tmp_path / "run", 5)
    t.fit()
    ck = tmp_path / "run" / "checkpoint"
    marker = tmp_path / "pwned"
    # the old file name, holding a pickle that would run a command when loaded
    (ck / "trainer_state.json").unlink()
    (ck / "trainer_state.pt").write_bytes(_hostile_pickle(marker))
    with pytest.raises(ValueError, match=r"trainer_state\.pt is a pickle"):
        _trainer(tmp_path / "run", 10)
    # the pickle under the new names
    (ck / "trainer_state.json").write_text('{"step": {"__tensor__": "t0"}}')
    (ck / "trainer_state.safetensors").write_bytes(_hostile_pickle(marker))
    with pytest.raises(ValueError, match=r"trainer_state\.safetensors is not a readable safetensors"):
        load_trainer_state(ck)
    assert not marker.exists()


def test_no_pickle_in_the_project():
    """Nothing in the project unpickles: grep the sources."""
    bad = []
    for f in [*ROOT.glob("multistream/**/*.py"), *ROOT.glob("speech/**/*.py"), *ROOT.glob("robot/**/*.py"),
              *ROOT.glob("envs/**/*.py"), *ROOT.glob("scripts/**/*.py")]:
        text = f.read_text()
        # the needles are assembled so that this file does not contain them itself
        for needle in ("import " + "pickle", "weights_only" + "=False", "allow_pickle" + "=True",
                       "torch" + ".load(", "torch" + ".save("):
            if needle in text:
                bad.append(f"{f.relative_to(ROOT)}: {needle}")
    assert not bad, bad


def test_torn_metrics_line_does_not_block_resume(tmp_path):
    _trainer(tmp_path / "run", 5).fit()
    f = tmp_path / "run" / METRICS_FILE
    with open(f, "a") as fh:
        fh.write('{"step": 6, "loss": 1.2')  # a crash in the middle of a write
    with pytest.raises(ValueError):
        json.loads(f.read_text().splitlines()[-1])
    _trainer(tmp_path / "run", 8).fit()
    assert [r["step"] for r in read_metrics(f)] == list(range(1, 9))
    # corruption elsewhere than the last line is an error naming the file and line
    lines = f.read_text().splitlines()
    lines[2] = "garbage"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{METRICS_FILE} line 3 is corrupt"):
        read_metrics(f)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_crash_inside_checkpoint_swap_resumes(tmp_path, monkeypatch, crash_at):
    """Kill the save of step 10 at each rename of the swap: the next run resumes at 10, never at 0."""
    ref = _trainer(tmp_path / "ref", 10)
    ref.fit()
    t = _trainer(tmp_path / "run", 10)
    t.cfg.ckpt_every = 5
    real_replace = os.replace
    calls = {"n": 0}

    class Crash(BaseException):
        pass

    def replace(a, b):
        if t.step == 10 and "checkpoint" in str(b) + str(a):
            calls["n"] += 1
            if calls["n"] == 1 + crash_at:  # 1: tmp -> .new; 2: target -> .old; 3: .new -> target
                raise Crash
        return real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(Crash):
        t.fit()
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not (tmp_path / "run" / "checkpoint").exists() or crash_at == 1
    resumed = _trainer(tmp_path / "run", 10)
    assert resumed.step == 10
    for k, v in _params(ref).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


def test_resume_refuses_changed_settings_naming_them(tmp_path):
    _trainer(tmp_path / "run", 5).fit()
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.001, now 0\.002.*seed: checkpoint 0, now 3"):
        _trainer(tmp_path / "run", 10, lr=2e-3, seed=3)
    with pytest.raises(ValueError, match=r"batch: checkpoint 4, now 8"):
        _trainer(tmp_path / "run", 10, run_info={"batch": 8})
    # max_steps may change; it must not be below the checkpoint's step
    with pytest.raises(ValueError, match=r"at step 5, past max_steps=3"):
        _trainer(tmp_path / "run", 3)
    done = _trainer(tmp_path / "run", 5).fit()  # already finished: reports the last logged loss
    assert done["loss"] > 0


def test_train_toy_steps_below_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_toy_script", ROOT / "scripts" / "train_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    common = ["--out", str(tmp_path), "--batch", "4", "--frames", "8", "--no-progress", "--fp32", "--ckpt-every", "2"]

    def main(*argv: str):
        monkeypatch.setattr(sys, "argv", ["train_toy.py", *common, *argv])
        mod.main()

    main("--steps", "4")
    with pytest.raises(SystemExit, match="past max_steps=2"):
        main("--steps", "2")
    with pytest.raises(SystemExit, match="lr: checkpoint 0.003, now 0.1"):
        main("--steps", "6", "--lr", "0.1")
    with pytest.raises(SystemExit) as e:
        main("--steps", "0")
    assert e.value.code == 2 and "--steps must be >= 1" in capsys.readouterr().err


def test_weight_decay_exemptions_are_by_module_type():
    model = RQTransformer(tiny(SS))
    exempt = no_weight_decay(model)
    embeddings = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    assert embeddings and embeddings <= exempt
    for n, p in model.named_parameters():
        assert (n in exempt) == (n in embeddings or p.dim() < 2), n


def test_save_checkpoint_refuses_unsupported_extra(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "ck", model, {"a": 1}, extra={"o": object()})
    assert not (tmp_path / "ck").exists()


def test_corrupt_checkpoint_files_are_named(tmp_path):
    from multistream.checkpoint import load_weights, read_config
    from speech.codec.model import load_codec

    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ck", model, {"a": 1}, extra={"step": 1})
    w = tmp_path / "ck" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:20])  # truncated
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file.*truncated"):
        load_weights(tmp_path / "ck", model)
    (tmp_path / "ck" / "config.json").write_text("{garbage")
    with pytest.raises(ValueError, match=r"ck/config\.json is not valid JSON"):
        read_config(tmp_path / "ck")
    with pytest.raises(ValueError, match=r"ck/config\.json is not valid JSON"):
        load_codec(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_config(tmp_path / "ck")
    (tmp_path / "ck" / "trainer_state.json").write_text('{"step": {"__tensor__": "nope"}}')
    with pytest.raises(ValueError, match="refers to tensor 'nope'"):
        load_trainer_state(tmp_path / "ck")


def test_diverged_loss_stops_before_the_update(tmp_path):
    t = _trainer(tmp_path / "run", 4)
    real = t.loss_fn

    def nan_at_step_3(m, b):
        lo = real(m, b)
        if t.step == 2:
            lo.total = lo.total * float("nan")
        return lo

    t.loss_fn = nan_at_step_3
    with pytest.raises(ValueError, match="the loss is nan at step 3: training diverged"):
        t.fit()
    assert t.step == 2  # no update was applied with the NaN gradients
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values() if v.is_floating_point())


def test_fresh_start_drops_rows_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / METRICS_FILE).write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    _trainer(tmp_path / "run", 3).fit()
    rows = read_metrics(tmp_path / "run" / METRICS_FILE)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["loss"] != 9.0
