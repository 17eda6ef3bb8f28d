"""The clip-cache builder: a clip it cannot read is rejected with a clear error and the rest kept; a partial build
resumes; recorded clips get no phone label (the phone loss ignores them); no English Asterisk prompts."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from speech.audio import write_wav
from speech.codec.data import IGNORE, NO_PHONE, PhoneVocab, build_cache, load_clip_cache, real_job, snapshot_partial
from speech.codec.real import REAL_SPEAKERS, RealSpeaker, decode, speaker_files

SR, FRAME = 24000, 1920
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian ffmpeg not installed")


def _tone(path: Path, seconds: float, sr: int = 8000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    write_wav(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


@needs_ffmpeg
def test_unreadable_clip_is_rejected_clearly_and_the_rest_kept(tmp_path, capsys):
    good = [_tone(tmp_path / f"ok{i}.wav", 0.5 + 0.25 * i) for i in range(3)]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    jobs = [real_job(good[0], "spk"), real_job(bad, "spk"), real_job(good[1], "spk"), real_job(good[2], "spk")]
    cache = build_cache(tmp_path / "c.npz", jobs, FRAME, SR, shard_size=2)
    assert len(cache) == 3 and cache.texts == ["ok0", "ok1", "ok2"]
    err = capsys.readouterr()
    assert "skipped job 1" in err.err + err.out and "broken.wav: ffmpeg cannot decode it" in err.err + err.out
    on_disk = load_clip_cache(tmp_path / "c.npz")
    assert np.array_equal(on_disk.audio, cache.audio) and not (tmp_path / "c.npz.parts").exists()
    # recordings carry no phone: every frame is ignored by the distillation loss
    assert all(lab == [NO_PHONE] * len(lab) for lab in cache.labels)
    vocab = PhoneVocab.from_labels(cache.labels + [["pau", "a"]], size=8)
    assert NO_PHONE not in vocab.names and (vocab.encode(cache.labels[0]) == IGNORE).all()


def test_a_job_list_that_yields_nothing_raises(tmp_path):
    with pytest.raises(ValueError, match="no clip of the 1 jobs"):
        build_cache(tmp_path / "c.npz", [real_job(tmp_path / "missing.wav", "spk")], FRAME, SR)


@needs_ffmpeg
def test_resume_skips_built_shards_and_refuses_another_job_list(tmp_path, monkeypatch):
    files = [_tone(tmp_path / f"ok{i}.wav", 0.5) for i in range(4)]
    jobs = [real_job(f, "spk") for f in files]
    full = build_cache(tmp_path / "a.npz", jobs, FRAME, SR, shard_size=2)
    # a build interrupted after its first shard: rerunning renders only the second shard
    import speech.codec.data as data

    calls = []
    real_render = data.render_job

    def counting(job, sr):
        calls.append(job["path"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while rendering the second shard
        return real_render(job, sr)

    monkeypatch.setattr(data, "render_job", counting)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tmp_path / "b.npz", jobs, FRAME, SR, shard_size=2)
    assert not (tmp_path / "b.npz").exists() and (tmp_path / "b.npz.parts" / "00000.npz").exists()
    part = snapshot_partial(tmp_path / "b.npz", tmp_path / "partial.npz")  # train on what is built so far
    assert part.texts == ["ok0", "ok1"] and load_clip_cache(tmp_path / "partial.npz").texts == ["ok0", "ok1"]
    calls.clear()
    resumed = build_cache(tmp_path / "b.npz", jobs, FRAME, SR, shard_size=2)
    assert calls == [str(files[2]), str(files[3])]
    assert np.array_equal(resumed.audio, full.audio) and resumed.texts == full.texts
    (tmp_path / "c.npz.parts").mkdir()
    (tmp_path / "c.npz.parts" / "jobs.sha256").write_text("0123")
    with pytest.raises(ValueError, match="different job list"):
        build_cache(tmp_path / "c.npz", jobs, FRAME, SR)


@needs_ffmpeg
def test_long_recordings_are_cut_into_whole_frame_pieces(tmp_path):
    f = _tone(tmp_path / "long.wav", 3.0)
    cache = build_cache(tmp_path / "c.npz", [real_job(f, "spk")], FRAME, SR, max_seconds=1.0, split_long=True)
    # 1 s holds 12 whole frames (23040 samples): 3 s = 3 full pieces + a 2880-sample tail padded to 2 frames
    assert len(cache) == 4 and np.diff(cache.offsets).tolist() == [23040] * 3 + [2 * FRAME]
    with pytest.raises(ValueError, match="over max_seconds"):  # without split_long a long recording is skipped
        build_cache(tmp_path / "d.npz", [real_job(f, "spk")], FRAME, SR, max_seconds=1.0)


def test_english_prompt_folders_are_refused(tmp_path):
    (tmp_path / "en_US_f_Allison").mkdir()
    (tmp_path / "en_US_f_Allison" / "hello.g722").write_bytes(b"x")
    with pytest.raises(ValueError, match="English"):
        speaker_files(RealSpeaker("x", "pkg", ("en_US_f_Allison",), "g722", 16000), root=tmp_path)
    with pytest.raises(FileNotFoundError, match="install Debian pkg"):
        speaker_files(RealSpeaker("x", "pkg", ("fr",), "g722", 16000), root=tmp_path)
    assert all("en" not in s.package.split("-") for s in REAL_SPEAKERS)


@needs_ffmpeg
def test_g722_decodes_at_16_khz(tmp_path):
    src = _tone(tmp_path / "t.wav", 1.0, sr=16000)
    g722 = tmp_path / "t.g722"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-ar", "16000", "-acodec", "g722", "-f", "g722",
                    str(g722)], check=True)
    x = decode(g722, SR)
    assert abs(len(x) / SR - 1.0) < 0.02  # a wrong rate would halve or double the duration
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()] - 220) < 5


@needs_ffmpeg
def test_augmentation_is_seeded_and_warps_duration(tmp_path):
    from speech.codec.data import ClipAugment, render_job

    f = _tone(tmp_path / "t.wav", 1.0)
    aug = ClipAugment(warps=(1.12,), p_degrade=1.0)
    job = real_job(f, "spk", aug_seed=7, augment=aug)
    assert job == real_job(f, "spk", aug_seed=7, augment=aug) and job["warp"] == 1.12
    a, phones, name, _ = render_job(job, SR)
    b, *_ = render_job(job, SR)
    assert np.array_equal(a, b) and phones is None and name == "spk"
    assert abs(len(a) - SR / 1.12) < 30  # played 1.12x faster
    with pytest.raises(ValueError, match="warps"):
        ClipAugment(warps=(3.0,))
