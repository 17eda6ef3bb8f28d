"""scripts/train_codec.py: one engine Trainer, --seed decides the weights, an existing run is never wiped silently."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from multistream.trainer import METRICS_FILE, read_metrics
from speech.codec.data import ClipCache, _save_cache

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_codec.py"


def _cache(path: Path) -> Path:
    rng = np.random.default_rng(0)
    clips = [np.round(0.1 * rng.standard_normal(1920 * 6) * 32767).astype(np.int16) for _ in range(3)]
    offsets = np.cumsum([0] + [len(c) for c in clips])
    labels = [["a", "e", "a", "i", "e", "a"]] * 3
    _save_cache(path, ClipCache(np.concatenate(clips), offsets, labels, ["v"] * 3, [""] * 3, 24000, 1920))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--threads", "1", "--no-progress", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _main():
    spec = importlib.util.spec_from_file_location("train_codec_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_argument_and_data_errors(tmp_path, capsys):
    main = _main()
    cases = [(["--batch-size", "0"], "--batch-size must be >= 1"),
             (["--minutes", "nan"], "--minutes must be a finite number > 0"),
             (["--lr", "inf"], "--lr must be a finite number > 0"),
             (["--device", "tpu"], "is not a device"), (["--device", "mps"], "--device must be cpu or cuda")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "has no CUDA device"))
    for argv, msg in cases:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--out", str(tmp_path / "r")])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="scripts/make_codec_data.py") as e:
        main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "r")])
    assert "--build-data" not in str(e.value)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"bad\.npz is not a readable clip cache"):
        main(["--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        main(["--resume", "--out", str(tmp_path / "r")])
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(FileExistsError, match="already holds a codec run"):
        main(["--out", str(run), "--data", str(tmp_path / "none.npz")])
    with pytest.raises(FileNotFoundError, match="no clip cache"):
        main(["--out", str(run), "--data", str(tmp_path / "none.npz"), "--overwrite"])
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'  # a bad --data deletes nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        main(["--out", str(tmp_path / "file")])


@pytest.mark.slow
def test_seed_refusal_overwrite_resume(tmp_path):
    data = _cache(tmp_path / "train.npz")
    common = ["--data", str(data), "--batch-size", "2", "--segment-frames", "2", "--ckpt-every", "1",
              "--adversarial", "off"]
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        p = _run(*common, "--steps", "1", "--seed", "0", "--out", str(out))
        assert p.returncode == 0, p.stderr
    wa = load_file(str(a / "checkpoint" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the model is built after the seed is set

    before = (a / "checkpoint" / "model.safetensors").read_bytes(), (a / METRICS_FILE).read_text()
    p = _run(*common, "--steps", "1", "--seed", "1", "--out", str(a))
    assert p.returncode == 1 and "already holds a codec run" in p.stderr and "--overwrite" in p.stderr
    assert ((a / "checkpoint" / "model.safetensors").read_bytes(), (a / METRICS_FILE).read_text()) == before

    p = _run(*common, "--steps", "2", "--seed", "0", "--out", str(a), "--resume")
    assert p.returncode == 0, p.stderr
    assert [r["step"] for r in read_metrics(a / METRICS_FILE)] == [1, 2]
    assert (a / "checkpoint" / "phones.json").is_file() and (a / "loss.png").is_file()
    p = _run(*common, "--steps", "3", "--seed", "0", "--out", str(a), "--resume", "--lr", "0.5")
    assert p.returncode == 1 and "lr: checkpoint 0.001, now 0.5" in p.stderr

    (b / "notes.txt").write_text("mine")
    p = _run(*common, "--steps", "1", "--seed", "1", "--out", str(b), "--overwrite")
    assert p.returncode == 0, p.stderr
    assert (b / "notes.txt").read_text() == "mine"  # --overwrite deletes only what a run writes
    assert [r["step"] for r in read_metrics(b / METRICS_FILE)] == [1]


def test_compare_arm_grows_the_transformers_and_adds_the_discriminator(tmp_path):
    """compare_codec_losses.py --transformer-layers keeps the init's layers and appends new ones; --adversarial
    trains the MS-STFT discriminator beside the codec (its loss is logged); shrinking is refused."""
    from multistream.checkpoint import save_checkpoint
    from speech.codec.config import tiny
    from speech.codec.data import PhoneVocab
    from speech.codec.model import MimiCodec

    torch.manual_seed(0)
    init = MimiCodec(tiny())
    save_checkpoint(tmp_path / "init", init, init.cfg)
    PhoneVocab.from_labels([["a", "e", "i"]], init.cfg.num_phones).save(tmp_path / "init" / "phones.json")
    data = _cache(tmp_path / "c.npz")
    script = ROOT / "scripts" / "compare_codec_losses.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    layers = init.cfg.transformer.num_layers
    r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "arm"), "--data", str(data), "--init",
                        str(tmp_path / "init"), "--steps", "2", "--batch-size", "2", "--segment-frames", "2",
                        "--transformer-layers", str(layers + 1), "--adversarial", "--disc-filters", "4",
                        "--disc-scales", "256", "128"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "starting fresh: ['decoder_transformer', 'encoder_transformer']" in r.stdout
    got = load_file(str(tmp_path / "arm" / "checkpoint" / "model.safetensors"))
    grown = [k for k in got if f"transformer.layers.{layers}." in k]
    assert grown and all(k.startswith(("encoder_transformer", "decoder_transformer")) for k in grown)
    rows = read_metrics(tmp_path / "arm" / METRICS_FILE)
    assert len(rows) == 2 and all("disc" in row and "loss/adv" in row for row in rows)
    r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "arm2"), "--data", str(data), "--init",
                        str(tmp_path / "init"), "--steps", "1", "--transformer-layers", str(layers - 1)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "can only grow them" in r.stderr and "Traceback" not in r.stderr
