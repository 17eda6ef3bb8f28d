"""Duplex rendering (turn-taking, interruptions, backchannels) and the moshi-finetune dataset layout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speech.audio import SAMPLE_RATE, read_wav, write_wav
from speech.corpus import Dialogue, Turn
from speech.dataset import (
    AGENT_LABEL,
    USER_LABEL,
    DatasetConfig,
    make_item,
    read_item,
    read_manifest,
    speaker_words,
    write_manifest,
)
from speech.duplex import AGENT_CH, USER_CH, DuplexConfig, render
from speech.voices import user_voices

ROOT = Path(__file__).resolve().parents[2]
QUIET = DuplexConfig(p_overlap=0.0, p_backchannel=0.0, p_long_gap=0.0, p_mid_pause=0.0)


def _dialogue(interrupt: bool) -> Dialogue:
    return Dialogue("hand-0", "train", [
        Turn("user", "Tell me about the elephant.", "fact"),
        Turn("agent", "An elephant is a mammal. Elephants are the largest animals that live on land.", "fact"),
        Turn("user", "Stop.", "stop", interrupt=interrupt),
        Turn("agent", "Okay, I'll stop.", "stop"),
    ])


def _rms(x: np.ndarray, a: float, b: float) -> float:
    seg = x[int(a * SAMPLE_RATE): int(b * SAMPLE_RATE)]
    return float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0


@pytest.fixture(scope="module")
def espeak_user():
    return next(v for v in user_voices("train") if v.backend == "espeak")


def test_turns_without_interruption_take_turns(espeak_user):
    r = render(_dialogue(False), espeak_user, np.random.default_rng(0), QUIET)
    assert r.audio.shape[0] == 2 and r.audio.dtype == np.float32 and r.sample_rate == SAMPLE_RATE
    assert r.events == []
    starts = [w[1] for w in r.words]
    assert starts == sorted(starts)
    # turns follow each other with a gap: each channel is silent while the other speaks
    for prev, nxt in zip(r.turns, r.turns[1:], strict=False):
        lo, hi = QUIET.agent_gap_s if nxt["speaker"] == "agent" else QUIET.gap_s
        assert lo - 1e-3 <= nxt["start"] - prev["end"] <= hi + 1e-3
    for t in r.turns:
        other = USER_CH if t["speaker"] == "agent" else AGENT_CH
        own = AGENT_CH if t["speaker"] == "agent" else USER_CH
        assert _rms(r.audio[other], t["start"], t["end"]) == 0.0
        assert _rms(r.audio[own], t["start"], t["end"]) > 0.01
    assert not any(t["interrupted"] for t in r.turns)
    assert [w[0] for w in r.words if w[3] == "agent"] == " ".join(
        t.text for t in _dialogue(False).turns if t.speaker == "agent").split()


def test_interruption_stops_the_agent_within_the_reaction_time(espeak_user):
    r = render(_dialogue(True), espeak_user, np.random.default_rng(0), QUIET)
    (ev,) = [e for e in r.events if e["type"] == "interruption"]
    agent_turn = r.turns[1]
    assert agent_turn["interrupted"] and agent_turn["end"] == pytest.approx(ev["agent_stop"], abs=2e-3)
    assert QUIET.reaction_s[0] - 1e-3 <= ev["reaction_s"] <= QUIET.reaction_s[1] + 1e-3
    user_start = r.turns[2]["start"]
    assert agent_turn["start"] < user_start < ev["agent_stop"]
    # the agent's channel goes silent after the stop, until its next turn; both talk during the reaction time
    assert _rms(r.audio[AGENT_CH], ev["agent_stop"] + 1e-3, r.turns[3]["start"]) == 0.0
    assert _rms(r.audio[USER_CH], user_start, ev["agent_stop"]) > 0.0
    # only the words the agent started before the stop are in the alignment, cut at the stop
    full = _dialogue(True).turns[1].text.split()
    said = agent_turn["spoken"].split()
    assert 0 < len(said) < len(full) and said == full[: len(said)]
    # (the agent's next turn may start right at the stop: the answer gap can be 0)
    agent_words = [w for w in r.words if w[3] == "agent" and w[1] < min(ev["agent_stop"], r.turns[3]["start"])]
    assert all(e <= ev["agent_stop"] + 5e-4 for _, _, e, _ in agent_words)  # the event is rounded to 1 ms


def test_backchannels_and_overlaps(espeak_user):
    cfg = DuplexConfig(p_overlap=1.0, p_backchannel=1.0, p_long_gap=0.0, backchannel_min_turn_s=1.0)
    r = render(_dialogue(False), espeak_user, np.random.default_rng(1), cfg)
    kinds = [e["type"] for e in r.events]
    assert "backchannel" in kinds and "overlap" in kinds
    bc = next(t for t in r.turns if t["backchannel"])
    agent = next(t for t in r.turns if t["speaker"] == "agent")
    assert agent["start"] < bc["start"] < agent["end"]  # said while the agent talks
    ov = next(e for e in r.events if e["type"] == "overlap")
    both = (np.abs(r.audio[0]) > 1e-3) & (np.abs(r.audio[1]) > 1e-3)
    assert both[int(ov["time"] * SAMPLE_RATE): int((ov["time"] + ov["overlap_s"]) * SAMPLE_RATE)].any()


def test_mid_sentence_pause_in_a_user_question(espeak_user):
    cfg = DuplexConfig(p_overlap=0.0, p_backchannel=0.0, p_long_gap=0.0, p_mid_pause=1.0)
    d = Dialogue("hand-1", "train", [Turn("user", "What is seven times three, please?", "arithmetic"),
                                     Turn("agent", "Seven times three is twenty-one.", "arithmetic")])
    r = render(d, espeak_user, np.random.default_rng(0), cfg)
    (ev,) = [e for e in r.events if e["type"] == "pause"]
    assert cfg.mid_pause_s[0] - 1e-3 <= ev["pause_s"] <= cfg.mid_pause_s[1] + 1e-3
    user, agent = r.turns
    assert user["start"] < ev["time"] and ev["time"] + ev["pause_s"] < user["end"]  # inside the question
    # silence on both channels during the pause; user words on both sides of it; the agent answers after the end
    assert _rms(r.audio[USER_CH], ev["time"] + 0.06, ev["time"] + ev["pause_s"] - 0.06) == 0.0
    assert _rms(r.audio[AGENT_CH], 0, user["end"]) == 0.0
    user_words = [w for w in r.words if w[3] == "user"]
    assert any(w[2] <= ev["time"] for w in user_words) and any(w[1] >= ev["time"] + ev["pause_s"] for w in user_words)
    assert [w[1] for w in r.words] == sorted(w[1] for w in r.words)
    assert agent["start"] >= user["end"]


def test_config_validation():
    with pytest.raises(ValueError, match="mid_pause_s"):
        DuplexConfig(mid_pause_s=(1.0, 0.5))
    with pytest.raises(ValueError, match="interrupt_at"):
        DuplexConfig(interrupt_at=(0.5, 1.2))
    with pytest.raises(ValueError, match="gap_s"):
        DuplexConfig(gap_s=(1.0, 0.5))
    with pytest.raises(ValueError, match="p_overlap"):
        DuplexConfig(p_overlap=-0.1)
    with pytest.raises(ValueError, match="p_augment"):
        DatasetConfig(p_augment=2.0)
    with pytest.raises(ValueError, match="no turns"):
        render(Dialogue("empty", "train", []), user_voices("train")[0], np.random.default_rng(0))


def test_wav_io_round_trip(tmp_path):
    x = (np.random.default_rng(0).uniform(-0.9, 0.9, (2, 1000))).astype(np.float32)
    write_wav(tmp_path / "a.wav", x)
    y, sr = read_wav(tmp_path / "a.wav")
    assert sr == SAMPLE_RATE and y.shape == (2, 1000) and np.abs(y - x).max() < 1e-4
    write_wav(tmp_path / "m.wav", x[0], 16000)
    y, sr = read_wav(tmp_path / "m.wav")
    assert sr == 16000 and y.shape == (1, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "m.wav"]  # no temp files left
    with pytest.raises(ValueError, match="shape"):
        write_wav(tmp_path / "b.wav", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="floating"):
        write_wav(tmp_path / "b.wav", np.zeros(4, np.int16))
    with pytest.raises(ValueError, match="no such wav"):
        read_wav(tmp_path / "missing.wav")


def test_manifest_round_trip(tmp_path):
    rows = [{"path": "train/a.wav", "duration": 12.5}, {"path": "train/b.wav", "duration": 3.25}]
    write_manifest(tmp_path / "train.jsonl", rows)
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert lines == rows  # exactly moshi-finetune's {"path", "duration"} rows
    back = read_manifest(tmp_path / "train.jsonl")
    assert [r["path"] for r in back] == [str(tmp_path / "train" / n) for n in ("a.wav", "b.wav")]
    assert [r["duration"] for r in back] == [12.5, 3.25]
    write_manifest(tmp_path / "abs.jsonl", rows, absolute=True)
    assert read_manifest(tmp_path / "abs.jsonl") == back
    assert all(Path(json.loads(x)["path"]).is_absolute() for x in (tmp_path / "abs.jsonl").read_text().splitlines())
    with pytest.raises(ValueError, match="duration"):
        write_manifest(tmp_path / "bad.jsonl", [{"path": "a.wav"}])
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_manifest(tmp_path / "bad.jsonl")


@pytest.mark.slow
def test_make_item_is_deterministic_and_resumable(tmp_path):
    cfg = DatasetConfig(seed=5)
    a = make_item(tmp_path / "a", "test", 2, cfg)
    b = make_item(tmp_path / "b", "test", 2, cfg)
    wav_a, wav_b = tmp_path / "a" / a["path"], tmp_path / "b" / b["path"]
    assert a == b and wav_a.read_bytes() == wav_b.read_bytes()
    assert wav_a.with_suffix(".json").read_text() == wav_b.with_suffix(".json").read_text()
    mtime = wav_a.stat().st_mtime_ns
    assert make_item(tmp_path / "a", "test", 2, cfg) == a and wav_a.stat().st_mtime_ns == mtime  # skipped
    audio, sr, meta = read_item(wav_a)
    assert audio.shape[0] == 2 and abs(audio.shape[1] - a["duration"] * sr) <= 1 and meta["split"] == "test"
    assert meta["user_voice"]["name"] in {v.name for v in user_voices("heldout")}
    starts = [s for _, (s, _), _ in meta["alignments"]]
    assert starts == sorted(starts)
    assert {spk for _, _, spk in meta["alignments"]} == {AGENT_LABEL, USER_LABEL}
    assert speaker_words(meta) and speaker_words(meta, USER_LABEL)


@pytest.mark.slow
def test_make_dialogues_script_deterministic_across_worker_counts(tmp_path):
    def run(out, workers):
        subprocess.run([sys.executable, str(ROOT / "scripts/make_dialogues.py"), "--hours", "0.004", "--out",
                        str(out), "--workers", str(workers), "--seed", "1", "--tokenizer-dialogues", "300"],
                       check=True, capture_output=True)

    run(tmp_path / "a", 0)
    run(tmp_path / "b", 2)
    for split in ("train", "valid", "test"):
        ma = (tmp_path / "a" / f"{split}.jsonl").read_text()
        assert ma and ma == (tmp_path / "b" / f"{split}.jsonl").read_text()
        for row in read_manifest(tmp_path / "a" / f"{split}.jsonl"):
            other = Path(str(row["path"]).replace(str(tmp_path / "a"), str(tmp_path / "b")))
            assert Path(row["path"]).read_bytes() == other.read_bytes()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["hours_made"] >= 0.004 and meta["speech_hours_per_cpu_hour"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.wav")}
    run(tmp_path / "a", 0)  # resume: everything already there is skipped
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.wav")} == mtimes
