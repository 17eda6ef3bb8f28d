"""The streaming chat session: per-row codec state, teacher-forced equality with the batch forward on a recorded
dialogue, and clear errors."""

import numpy as np
import pytest
import torch

from multistream.lm import RQTransformer
from multistream.presets import tiny
from speech.chat import ChatOptions, ChatSession
from speech.chat_args import chat_sampling
from speech.streams import AGENT, TEXT, USER, USER_TEXT, MonologueText, chat_streams
from speech.tokenize import tokenize_dialogues

from .conftest import make_codec


def test_codec_row_reset_leaves_other_rows_bit_identical(tmp_path):
    codec = make_codec(tmp_path / "codec").codec
    s = codec.frame_size
    x = torch.randn(3, 10, s) * 0.1
    fresh = torch.randn(1, 5, s) * 0.1
    with torch.no_grad():
        with codec.streaming(3):
            ref = []
            for i in range(10):
                c = codec.encode(x[:, i, None])
                ref.append((c, codec.decode(c)))
        with codec.streaming(3):
            got = []
            for i in range(10):
                xi = x[:, i, None].clone()
                if i == 5:
                    codec.reset_streaming([1])
                if i >= 5:
                    xi[1] = fresh[:, i - 5]
                c = codec.encode(xi)
                got.append((c, codec.decode(c)))
        with codec.streaming(1):
            alone = []
            for i in range(5):
                c = codec.encode(fresh[:, i, None])
                alone.append((c, codec.decode(c)))
    for (ce, de), (ge, gd) in zip(ref, got, strict=True):
        assert torch.equal(ge[[0, 2]], ce[[0, 2]]) and torch.equal(gd[[0, 2]], de[[0, 2]])
    for i in range(5):  # the reset row behaves like a fresh stream
        assert torch.equal(got[5 + i][0][1], alone[i][0][0])
        torch.testing.assert_close(got[5 + i][1][1], alone[i][1][0], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def chat_setup(dialogues, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    codec = make_codec(tmp / "codec")
    text = MonologueText(dialogues / "tokenizer.model")
    store = tokenize_dialogues(dialogues, codec, text, tmp / "chat.zarr", ("train",), progress=False)
    streams = chat_streams(codec, text)
    torch.manual_seed(0)
    model = RQTransformer(tiny(streams)).eval()
    return codec, text, store, model


@pytest.mark.parametrize("hears", [False, True], ids=["3-streams", "with-user-transcript"])
def test_streaming_session_equals_batch_forward_teacher_forced(chat_setup, hears):
    codec, text, store, model = chat_setup
    from speech.dataset import read_item

    if hears:  # the fourth stream: the transcript of the user, two frames after each word ends
        torch.manual_seed(1)
        model = RQTransformer(tiny(chat_streams(codec, text, user_text_delay=2))).eval()
    meta = store.episode_meta(0)
    audio, _, _ = read_item(meta["path"])
    t = min(meta["frames"], 40)
    ep = store.episode(0)
    batch = {TEXT: torch.from_numpy(ep[TEXT][:t].astype(np.int64))[None, None],
             AGENT: torch.from_numpy(ep[AGENT][:t].T.astype(np.int64))[None],
             USER: torch.from_numpy(ep[USER][:t].T.astype(np.int64))[None]}
    if hears:
        batch[USER_TEXT] = torch.from_numpy(ep[USER_TEXT][:t].astype(np.int64))[None, None]
    with torch.no_grad():
        full = model(batch).logits
    s = codec.frame_size
    user = np.zeros(t * s, dtype=np.float32)
    n = min(len(user), audio.shape[1])
    user[:n] = audio[1, :n]
    got = {TEXT: [], AGENT: []} | ({USER_TEXT: []} if hears else {})
    heard = []
    with ChatSession(model, codec, text, sampling=chat_sampling()) as chat:
        assert chat.hears == hears
        for i in range(t):
            out = chat.step(torch.from_numpy(user[i * s : (i + 1) * s])[None],
                            force={k: batch[k][:, :, i] for k in got})
            heard.append(out.heard)
            for k in got:
                got[k].append(chat.gen.last_logits[k])
            assert out.agent_pcm.shape == (1, s)
            if i == 0:
                assert out.agent_frame.tolist() == [-1] and out.agent_pcm.abs().max() == 0  # delay: silence
            else:
                assert out.agent_frame.tolist() == [i - 1]
    for k in got:  # the session's own streaming user encoding reproduces the stored user codes
        torch.testing.assert_close(torch.stack(got[k], dim=2), full[k], atol=1e-4, rtol=1e-4)
    if not hears:
        assert all(h is None for h in heard)
    else:  # the forced transcript comes back as pieces, two frames late
        assert heard[0] == [None] and heard[1] == [None]
        pieces = "".join(h[0] for h in heard if h[0] is not None)
        want = text.decode(batch[USER_TEXT][:, :, : t - 2])[0]
        assert want.strip()  # the user said something in these frames
        assert pieces.split() == want.split()


def test_session_errors(chat_setup):
    codec, text, store, model = chat_setup
    with ChatSession(model, codec, text, batch_size=2) as chat:
        with pytest.raises(ValueError, match=r"one frame per conversation \[2, 1920\]"):
            chat.step(torch.zeros(1, 1920))
        with pytest.raises(ValueError, match="float samples"):
            chat.step(torch.zeros(2, 1920, dtype=torch.int16))
        with pytest.raises(ValueError, match="NaN"):
            chat.step(torch.full((2, 1920), float("nan")))
        out = chat.step(np.zeros((2, 1920), dtype=np.float32))
        assert out.text_ids.shape == (2,)
        chat.reset([0])
        chat.step(torch.zeros(2, 1920))
    with pytest.raises(RuntimeError, match="inside a `with` block"):
        ChatSession(model, codec, text).step(torch.zeros(1, 1920))
    other = chat_streams(codec, text, acoustic_delay=1)
    assert other == model.streams
    # with the user transcript stream (delay 2): a row reset while another row is past its delay must not turn the
    # reset row's placeholder tokens into text (it did: an out-of-range piece id crashed the server's tick)
    torch.manual_seed(2)
    hears = RQTransformer(tiny(chat_streams(codec, text, user_text_delay=2))).eval()
    with ChatSession(hears, codec, text, batch_size=2, sampling=chat_sampling(), seed=0) as chat:
        for _ in range(3):
            chat.step(torch.zeros(2, 1920))
        chat.reset([1])
        for i in range(3):
            out = chat.step(0.01 * torch.randn(2, 1920))
            assert out.heard is not None and len(out.heard) == 2
            if i < 2:
                assert out.heard[1] is None  # not ready: nothing heard yet


@pytest.fixture(scope="module")
def chat_ckpt(chat_setup, dialogues, tmp_path_factory):
    from multistream.checkpoint import save_checkpoint
    from speech.chat import save_chat_files

    codec, text, store, model = chat_setup
    d = tmp_path_factory.mktemp("ckpt")
    codec_dir = d / "codec"
    make_codec(codec_dir)
    save_checkpoint(d / "chat", model, model.cfg)
    save_chat_files(d / "chat", codec_dir, dialogues / "tokenizer.model")
    return d / "chat"


def run_chat(*args):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, str(root / "scripts" / "chat.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=root, timeout=300)


def test_chat_script_writes_reply_and_refuses_bad_input(chat_ckpt, dialogues, tmp_path):
    from speech.audio import read_wav, write_wav
    from speech.dataset import read_item

    audio, sr, _ = read_item(sorted((dialogues / "train").glob("*.wav"))[0])
    q = tmp_path / "q.wav"
    write_wav(q, audio[1, : 2 * sr], sr)
    r = run_chat("--ckpt", chat_ckpt, "--in", q, "--out", tmp_path / "reply.wav", "--tail", 1.0)
    assert r.returncode == 0, r.stderr
    out, osr = read_wav(tmp_path / "reply.wav")
    assert osr == 24000 and out.shape[0] == 2 and out.shape[1] >= 3 * 24000 - 1920
    assert (tmp_path / "reply.json").is_file() and (tmp_path / "reply.png").stat().st_size > 1000
    bad = {
        "16k.wav": (audio[1, :16000], 16000, "sampled at 16000 Hz; the codec takes 24000 Hz"),
        "stereo.wav": (audio[:, :24000], 24000, "has 2 channels; give the user's voice as mono"),
        "empty.wav": (np.zeros(0, dtype=np.float32), 24000, "is empty"),
    }
    for name, (x, rate, msg) in bad.items():
        write_wav(tmp_path / name, x, rate)
        r = run_chat("--ckpt", chat_ckpt, "--in", tmp_path / name, "--out", tmp_path / "x.wav")
        assert r.returncode != 0 and msg in r.stderr, (name, r.stderr)
    (tmp_path / "notes.txt").write_text("hello")
    r = run_chat("--ckpt", chat_ckpt, "--in", tmp_path / "notes.txt")
    assert r.returncode != 0 and "expected a .wav file" in r.stderr
    (tmp_path / "fake.wav").write_text("not a wav")
    r = run_chat("--ckpt", chat_ckpt, "--in", tmp_path / "fake.wav")
    assert r.returncode != 0 and "not a readable wav file" in r.stderr
    r = run_chat("--ckpt", tmp_path, "--in", q)
    assert r.returncode != 0 and "is not a chat checkpoint" in r.stderr


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_conv_row_reset_equals_a_fresh_stream(pad_mode):
    from speech.codec.conv import StreamingConv1d

    torch.manual_seed(0)
    conv = StreamingConv1d(3, 4, kernel_size=8, stride=4, pad_mode=pad_mode).eval()
    x = torch.randn(2, 3, 32) + 1.0  # an offset makes replicate padding differ from zeros
    with torch.no_grad(), conv.streaming(2):
        conv(x[:, :, :16])
        conv.reset_streaming([1])
        got = conv(x[:, :, 16:])
    with torch.no_grad():
        fresh = conv(x[1:, :, 16:])  # one-shot call on the new stream alone
    torch.testing.assert_close(got[1:], fresh)


def test_export_chat_makes_a_compact_checkpoint_that_loads(chat_ckpt, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from speech.chat import load_chat

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "scripts" / "export_chat.py"), "--run", str(chat_ckpt), "--out",
                        str(tmp_path / "exported")], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "argmax agreement" in r.stdout
    src = (chat_ckpt / "model.safetensors").stat().st_size
    assert (tmp_path / "exported" / "model.safetensors").stat().st_size < 0.6 * src  # bf16: about half
    model, codec, text = load_chat(tmp_path / "exported")
    ref, _, _ = load_chat(chat_ckpt)
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-2, atol=1e-2), k
    r = subprocess.run([sys.executable, str(root / "scripts" / "export_chat.py"), "--run", str(tmp_path / "none"),
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode != 0 and "export_chat.py: error:" in r.stderr


def test_session_without_monologue_feeds_no_text(chat_setup):
    """A model trained without the monologue (train_chat.py --no-monologue) hears 'no input' in its text stream
    every frame, exactly as a session forced with ZERO_ID would, and says no text."""
    from multistream.streams import ZERO_ID

    codec, text, store, model = chat_setup
    g = torch.Generator().manual_seed(0)
    frames = [0.05 * torch.randn(1, codec.frame_size, generator=g) for _ in range(8)]
    runs = {}
    for name, kwargs, force in (("ablation", {"options": ChatOptions(monologue=False)}, None),
                                ("forced", {}, {TEXT: torch.full((1, 1), ZERO_ID)}),
                                ("monologue", {}, None)):
        logits, outs = [], []
        with ChatSession(model, codec, text, sampling=chat_sampling(), seed=0, **kwargs) as chat:
            for x in frames:
                out = chat.step(x, force=force)
                outs.append(out)
                logits.append(chat.gen.last_logits[AGENT])
        runs[name] = (torch.stack(logits), outs)
    assert all(o.text == [None] and o.text_ids.tolist() == [text.pad_id] for o in runs["ablation"][1])
    torch.testing.assert_close(runs["ablation"][0], runs["forced"][0])
    for a, b in zip(runs["ablation"][1], runs["forced"][1], strict=True):
        assert torch.equal(a.agent_pcm, b.agent_pcm)
    assert not torch.allclose(runs["ablation"][0], runs["monologue"][0])  # the flag changes what the model hears


def test_chat_checkpoint_records_its_options(chat_ckpt, chat_setup, tmp_path):
    import json
    import shutil

    from speech.chat import CHAT_FILE, chat_options, save_chat_files

    assert chat_options(chat_ckpt) == ChatOptions()
    d = tmp_path / "ablation"
    shutil.copytree(chat_ckpt, d)
    codec_dir = chat_ckpt.parent / "codec"
    want = ChatOptions(monologue=False, user_codebooks=2)
    save_chat_files(d, codec_dir, chat_ckpt / "tokenizer.model", options=want)
    assert chat_options(d) == want and chat_options(d / "checkpoint") == want  # also from a run's checkpoint
    info = json.loads((d / CHAT_FILE).read_text())
    (d / CHAT_FILE).write_text(json.dumps({k: v for k, v in info.items() if k not in ("monologue", "user_codebooks")}))
    assert chat_options(d) == ChatOptions()  # files written before the options existed: the defaults
    for bad, msg in (({"monologue": "no"}, "'monologue' must be true or false"),
                     ({"user_codebooks": -1}, "'user_codebooks' must be an integer >= 0")):
        (d / CHAT_FILE).write_text(json.dumps({**info, **bad}))
        with pytest.raises(ValueError, match=msg):
            chat_options(d)
    with pytest.raises(FileNotFoundError, match="not a chat checkpoint"):
        chat_options(tmp_path)
    codec, text, _, chat_model = chat_setup
    with pytest.raises(ValueError, match="user_codebooks=9, but the user stream has 8 codebooks"):
        ChatSession(chat_model, codec, text, options=ChatOptions(user_codebooks=9))
