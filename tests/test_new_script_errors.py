"""Bad input to the chat, server, policy and codec-evaluation scripts ends in a usage error naming the value
(exit != 0, no traceback)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("train_chat.py", ["--store", "x", "--phase", "text", "--out", "o", "--window", "0"], "--window must be >= 1"),
    ("train_chat.py", ["--store", "x", "--phase", "text", "--out", "o", "--text-share", "2"], "--text-share"),
    ("train_chat.py", ["--store", "/nonexistent", "--phase", "text", "--out", "/tmp/ms_tc_x"], "no dialogue store"),
    ("train_policy.py", ["--store", "/nonexistent", "--out", "/tmp/ms_tp_x"], "no policy store"),
    ("train_policy.py", ["--store", "x", "--out", "o", "--batch", "0"], "--batch must be >= 1"),
    ("eval_policy.py", ["--ckpt", "x", "--task", "touch", "--seeds", "0"], "--seeds and --batch must be >= 1"),
    ("eval_policy.py", ["--ckpt", "/nonexistent", "--task", "touch"], "no policy_tokenizers.json"),
    ("eval_policy.py", ["--ckpt", "checkpoints/policy_push", "--task", "push", "--conditions", "stop"],
     "needs a policy trained with 'stop'"),
    ("make_robot_data.py", ["--demos", "/nonexistent", "--out", "o"], "no demo store"),
    ("tokenize_dialogues.py", ["--dialogues", "/nonexistent", "--codec", "c", "--out", "o"], "no text tokenizer"),
    ("serve.py", ["--ckpt", "x", "--max-sessions", "0"], "--max-sessions must be >= 1"),
    ("serve.py", ["--ckpt", "/nonexistent"], "is not a chat checkpoint"),
    ("talk.py", ["--in", "/nonexistent.wav"], "no such wav file"),
    ("bench_server.py", ["--clients", "0"], "--clients must be >= 1"),
    ("chat.py", ["--ckpt", "x", "--say", "hi", "--tail", "-1"], "--tail must be in [0, 60]"),
    ("eval_codec.py", ["--ckpt", "/nonexistent_ckpt"], "no checkpoint at /nonexistent_ckpt"),
    ("eval_codec.py", ["--max-real-clips", "-1"], "must be an integer >= 0, got -1"),
    ("eval_codec.py", ["--compare", "/nonexistent_other"], "no checkpoint at /nonexistent_other"),
    ("bench_codec.py", ["--ckpts", "/nonexistent_other"], "no checkpoint at /nonexistent_other"),
    ("compare_codec_losses.py", ["--out", "/tmp/ms_ccl_x", "--data", "/nonexistent.npz"], "no clip cache"),
]


@pytest.mark.parametrize("script,args,message", CASES, ids=[f"{c[0]}:{c[2][:20]}" for c in CASES])
def test_script_refuses_bad_input(script, args, message):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


def test_a_refused_run_leaves_nothing_behind(tmp_path):
    missing = tmp_path / "no_ckpt"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_codec.py"), "--ckpt", str(missing)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode != 0 and not missing.exists()


def test_a_refused_policy_eval_makes_no_output_directory(tmp_path):
    out = tmp_path / "eval_out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_policy.py"), "--ckpt", "checkpoints/policy_push",
                        "--task", "push", "--conditions", "stop", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode != 0 and "needs a policy trained with 'stop'" in r.stderr
    assert not out.exists()
