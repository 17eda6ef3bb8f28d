"""Scripts refuse instead of deleting: demo --fresh, make_dialogues with a smaller --hours, bad numbers."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from speech.audio import read_wav, write_wav
from speech.dataset import finished_item

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_fresh_deletes_only_its_own_directory(tmp_path):
    demo = _script("demo_toy")
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    for fresh in (True, False):
        with pytest.raises(ValueError, match="holds files the demo did not make"):
            demo.prepare_out(mine, fresh=fresh)
    assert (mine / "chapter1.tex").read_text() == "years of work"
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        demo.prepare_out(tmp_path / "f", fresh=True)
    run = tmp_path / "run"
    demo.prepare_out(run, fresh=False)  # new: made and marked
    (run / "metrics.jsonl").write_text("{}")
    demo.prepare_out(run, fresh=False)  # rerun keeps it
    assert (run / "metrics.jsonl").exists()
    demo.prepare_out(run, fresh=True)  # marked: --fresh starts over
    assert sorted(p.name for p in run.iterdir()) == [demo.MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    demo.prepare_out(empty, fresh=True)
    assert (empty / demo.MARKER).is_file()


def test_make_dialogues_refuses_a_smaller_hours_and_other_settings(tmp_path, monkeypatch, capsys):
    md = _script("make_dialogues")

    def main(*argv: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["make_dialogues.py", *argv])
        with pytest.raises(SystemExit) as e:
            md.main()
        return (e.value.code if isinstance(e.value.code, int) else 1), capsys.readouterr().err + str(e.value.code)

    out = tmp_path / "d"
    out.mkdir()
    request = {"seed": 0, "valid_share": 0.05, "test_share": 0.05, "hours": 1.0}
    (out / "request.json").write_text(json.dumps(request))
    (out / "train").mkdir()
    (out / "train" / "train-0-0000000.wav").write_bytes(b"finished work")
    rc, err = main("--hours", "0.5", "--out", str(out), "--workers", "0")
    assert rc == 1 and "would delete the finished ones" in err and "--overwrite" in err
    rc, err = main("--hours", "1", "--seed", "3", "--out", str(out), "--workers", "0")
    assert rc == 1 and "seed: dataset 0, now 3" in err
    assert json.loads((out / "request.json").read_text()) == request
    assert (out / "train" / "train-0-0000000.wav").read_bytes() == b"finished work"
    for bad in ("nan", "0", "-1", "inf"):
        rc, err = main("--hours", bad, "--out", str(out))
        assert rc == 2 and "--hours must be a finite number > 0" in err
    (tmp_path / "file").write_text("x")
    rc, err = main("--hours", "1", "--out", str(tmp_path / "file"))
    assert rc == 1 and "is a file" in err


def test_truncated_wav_is_not_a_finished_item(tmp_path):
    wav = tmp_path / "train" / "x.wav"
    write_wav(wav, np.zeros((2, 24000), np.float32), 24000)
    wav.with_suffix(".json").write_text(json.dumps({"duration": 1.0}))
    assert finished_item(wav) == 1.0
    wav.write_bytes(wav.read_bytes()[: 44 + 2 * 2 * 12000])  # a wav cut off half way
    with pytest.raises(ValueError, match="is truncated: its header promises 24000 frames, it holds 12000"):
        read_wav(wav)
    assert finished_item(wav) is None  # made again on the rerun, not listed at full duration
    wav.write_bytes(b"RIFF garbage")
    with pytest.raises(ValueError, match="is not a readable wav file"):
        read_wav(wav)
    assert finished_item(wav) is None


def test_speech_files_errors_name_the_file(tmp_path):
    from speech.text import TextTokenizer

    (tmp_path / "bad.model").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.model' is not a sentencepiece model"):
        TextTokenizer(tmp_path / "bad.model")
    with pytest.raises(ValueError, match="frame_rate must be a finite number > 0"):
        TextTokenizer(tmp_path / "bad.model", frame_rate=float("nan"))
    with pytest.raises(ValueError, match=r"x\.wav' holds NaN"):
        write_wav(tmp_path / "x.wav", np.full((1, 10), np.nan, np.float32))
    assert not (tmp_path / "x.wav").exists()
