"""Clear errors at the command line: bad numbers stop at parse time naming the value; missing files are named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from multistream.cli import nonneg_float, output_dir, output_file, positive_float, positive_int, probability

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fn, bad, msg", [
    (positive_int, "0", "integer >= 1, got 0"), (positive_int, "x", "integer >= 1, got 'x'"),
    (positive_float, "nan", "finite number > 0, got 'nan'"), (positive_float, "0", "finite number > 0"),
    (positive_float, "inf", "finite number > 0"), (nonneg_float, "-1", "finite number >= 0"),
    (probability, "1.5", r"probability in \[0, 1\]"), (probability, "nan", "finite number >= 0"),
])
def test_value_types_refuse_naming_the_value(fn, bad, msg):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=msg):
        fn(bad)


def test_value_types_accept_good_values(tmp_path):
    assert positive_int("3") == 3 and positive_float("12.5") == 12.5 and nonneg_float("0") == 0.0
    assert probability("1") == 1.0
    assert output_file(str(tmp_path / "a.json")) == tmp_path / "a.json"
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        output_file(str(tmp_path))
    (tmp_path / "f").write_text("x")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file"):
        output_dir(str(tmp_path / "f"))


HELP_RUNNER = """
import contextlib, io, runpy, sys
for spec in sys.argv[1:]:
    path, *argv = spec.split("|||")
    sys.argv = [path, *argv]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
        print("NOEXIT", path)
    except SystemExit as e:
        print("EXIT", e.code, path, err.getvalue().strip().splitlines()[-1:] or str(e.code))
"""


def test_scripts_refuse_bad_numbers_at_parse_time(tmp_path):
    """One interpreter for every case: each must exit 2 with the bad value in the message, before doing work."""
    cases = [
        ("eval_experts.py", ["--seeds", "0"], "got 0"),
        ("eval_experts.py", ["--noise-std", "nan"], "got 'nan'"),
        ("eval_experts.py", ["--out", str(tmp_path)], "is a directory"),
        ("render_episode.py", ["--out", str(tmp_path / "x"), "--fps", "0"], "got '0'"),
        ("bench_envs.py", ["--steps", "0"], "got 0"),
        ("bench_engine.py", ["--steps", "0"], "got 0"),
        ("bench_engine.py", ["--train-batch", "-1"], "got -1"),
        ("bench_codec.py", ["--frames", "0"], "got 0"),
        ("collect_demos.py", ["--task", "touch", "--episodes", "0", "--out", "x"], "got 0"),
        ("collect_demos.py", ["--task", "touch", "--episodes", "1", "--out", "x", "--perturb-prob", "2"], "'2'"),
        ("plot_dialogue.py", ["x.wav", "--start", "-1"], "got '-1'"),
        ("plot_dialogue.py", [str(tmp_path / "none.wav")], "no such wav file"),
        ("render_episode.py", ["--store", str(tmp_path), "--out", str(tmp_path / "r")], "is not an episode store"),
    ]
    specs = ["|||".join([str(ROOT / "scripts" / s), *argv]) for s, argv, _ in cases]
    p = subprocess.run([sys.executable, "-c", HELP_RUNNER, *specs], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("EXIT", "NOEXIT"))]
    assert len(lines) == len(cases), p.stdout + p.stderr
    for (script, argv, msg), line in zip(cases, lines, strict=True):
        assert line.startswith("EXIT 2 ") and msg in line, (script, argv, line)


def test_corpus_stats_names_a_missing_wav(tmp_path, monkeypatch):
    import importlib.util

    from speech.text import TextTokenizer

    spec = importlib.util.spec_from_file_location("corpus_stats_script", ROOT / "scripts" / "corpus_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["corpus_stats.py", str(tmp_path)])
    TextTokenizer.train(["hello world"] * 50, 32, tmp_path / "tokenizer.model")
    (tmp_path / "train.jsonl").write_text(json.dumps({"path": "train/a.wav", "duration": 1.0}) + "\n")
    with pytest.raises(SystemExit, match="a.wav is listed in the manifest but missing"):
        mod.main()
    assert not (tmp_path / "stats.json").exists()
    (tmp_path / "train.jsonl").write_text("{torn\n")
    with pytest.raises(SystemExit, match="train.jsonl:1: not a JSON line"):
        mod.main()
