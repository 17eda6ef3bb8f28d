"""Chat training: the text-only and dialogue phases run and make a loadable chat checkpoint; a tiny model trained on
two dialogues emits the monologue text of a training dialogue when it hears the user."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, RQTransformer
from multistream.loss import lm_loss
from multistream.transformer import TransformerConfig
from speech.chat import ChatOptions
from speech.chat_data import dialogue_batch_fn, mixed_batch_fn, text_batch_fn
from speech.knowledge import facts
from speech.streams import AGENT, TEXT, USER, USER_TEXT, CodecFrames, MonologueText, chat_streams
from speech.tokenize import tokenize_dialogues

from .conftest import make_codec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chat_store(dialogues, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_chat")
    codec = make_codec(tmp / "codec")
    text = MonologueText(dialogues / "tokenizer.model")
    store = tokenize_dialogues(dialogues, codec, text, tmp / "chat.zarr", ("train",), codec_path=str(tmp / "codec"),
                               progress=False)
    return tmp, codec, text, store


def test_knowledge_text_states_facts_of_every_split():
    f = facts(0)
    assert "The capital of Australia is Canberra." in f and "A parrot squawks." in f
    assert any("seven times eight is fifty-six" in s.lower() for s in f)
    assert facts(0) == f and facts(1) != f


def test_mixed_batches_are_deterministic_and_text_batches_have_no_audio(chat_store):
    tmp, codec, text, store = chat_store
    streams = chat_streams(codec, text)
    tf = text_batch_fn(facts(0), text, streams, window=20, batch_size=2)
    df = dialogue_batch_fn(store, streams, codec, text, window=20, batch_size=2)
    mf = mixed_batch_fn(df, tf, 0.5)
    kinds = []
    for step in range(20):
        a, b = mf(step, 0, 0, 1), mf(step, 0, 0, 1)
        assert all(torch.equal(a[k], b[k]) for k in a)
        kinds.append(bool((a[AGENT] == -1).all()))
    assert 4 <= sum(kinds) <= 16  # about half text-only
    t = tf(0, 0, 0, 1)
    assert (t[USER] == -1).all() and (t[TEXT] >= 0).all()
    # with the user transcript stream: dialogue windows carry it, text-only windows leave it out (ZERO_ID)
    streams4 = chat_streams(codec, text, user_text_delay=2)
    d4 = dialogue_batch_fn(store, streams4, codec, text, window=60, batch_size=2)(0, 0, 0, 1)
    t4 = text_batch_fn(facts(0), text, streams4, window=20, batch_size=2)(0, 0, 0, 1)
    assert d4[USER_TEXT].shape == (2, 1, 60) and (d4[USER_TEXT] != text.pad_id).any()
    assert (t4[USER_TEXT] == -1).all() and set(t4) == set(d4)


def test_train_chat_script_phases_make_a_chat_checkpoint(chat_store):
    tmp, codec, text, store = chat_store
    common = ["--store", store.path, "--steps", "3", "--batch", "2", "--window", "16", "--no-progress"]
    r = subprocess.run([sys.executable, "scripts/train_chat.py", "--phase", "text", "--out", tmp / "text", *common],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "scripts/train_chat.py", "--phase", "dialogue", "--out", tmp / "dia",
                        "--init", tmp / "text" / "checkpoint", *common], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    from speech.chat import load_chat

    model, c2, t2 = load_chat(tmp / "dia" / "checkpoint")
    assert c2.fingerprint == codec.fingerprint and t2.fingerprint == text.fingerprint
    r = subprocess.run([sys.executable, "scripts/train_chat.py", "--phase", "text", "--out", tmp / "text", *common],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "pass --resume" in r.stderr
    # a model with the user transcript stream trains and loads with it
    r = subprocess.run([sys.executable, "scripts/train_chat.py", "--phase", "dialogue", "--out", tmp / "hears",
                        "--init", tmp / "text" / "checkpoint", "--user-text-delay", "2", *common],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "new parameters start fresh" in r.stdout  # from the 3-stream text phase
    model, _, _ = load_chat(tmp / "hears" / "checkpoint")
    assert USER_TEXT in model.streams and model.streams[USER_TEXT].delays == (2,)


def test_tiny_chat_model_learns_to_say_the_answer_text(chat_store, dialogues):
    """With the committed codec (an untrained one maps all audio to one code, so the user is not heard)."""
    tmp, _, text, _ = chat_store
    codec = CodecFrames.load(ROOT / "checkpoints" / "codec_tiny")
    store = tokenize_dialogues(dialogues, codec, text, tmp / "chat_codec_tiny.zarr", ("train",), progress=False)
    streams = chat_streams(codec, text)
    torch.manual_seed(0)
    cfg = LMConfig(streams=streams, temporal=TransformerConfig(d_model=96, num_layers=2, num_heads=4),
                   depth=TransformerConfig(d_model=64, num_layers=1, num_heads=4))
    model = RQTransformer(cfg)
    # windows from the start of each dialogue (a conversation starts fresh), long enough for the first answer
    from multistream.data import StoreBinding, StreamBinding

    ep = store.episode(0)
    spoken = np.flatnonzero(~np.isin(ep[TEXT], [text.pad_id, text.epad_id]))
    window = int(spoken[0]) + 24
    binding = StoreBinding(streams, codec.frame_rate, [StreamBinding(streams[n], tokenizer=tok) for n, tok in
                                                       ((TEXT, text), (AGENT, codec), (USER, codec))])
    fn = binding.batch_fn(store, window=window, batch_size=2, from_episode_start=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(200):
        lo = lm_loss(model(fn(step, 0, 0, 1)), streams)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
    model.eval()
    # hear the user's side of training dialogue 0 and let the model produce its own text and audio
    user = torch.from_numpy(ep[USER][:window].T.astype(np.int64))[None]  # [1, K, T]
    ref = ep[TEXT][:window]
    got = []
    with Generator(model, sampling=Sampling(temperature=0.0)) as gen:
        for t in range(window):
            got.append(int(gen.step({USER: user[:, :, t]}).tokens[TEXT][0, 0]))
    words = [i for i in ref if i not in (text.pad_id, text.epad_id)]
    said = [i for i in got if i not in (text.pad_id, text.epad_id)]
    assert len(words) >= 5
    # the words it says are the reference monologue's (timing may slip by a frame or two)
    import difflib

    sim = difflib.SequenceMatcher(a=said, b=words).ratio()
    assert sim >= 0.8, (sim, text.tok.decode_text(said), text.tok.decode_text(words))


def test_dialogue_batches_without_the_monologue(chat_store):
    """Moshi's ablation: the same windows with the text stream 'no input, no target'; the rest untouched."""
    tmp, codec, text, store = chat_store
    streams = chat_streams(codec, text, user_text_delay=2)
    with_m = dialogue_batch_fn(store, streams, codec, text, window=60, batch_size=2)
    without = dialogue_batch_fn(store, streams, codec, text, window=60, batch_size=2,
                                options=ChatOptions(monologue=False))
    a, b = with_m(3, 0, 0, 1), without(3, 0, 0, 1)
    assert (a[TEXT] >= 0).all() and (b[TEXT] == -1).all()
    for k in (AGENT, USER, USER_TEXT):
        assert torch.equal(a[k], b[k])
    # hearing only the first two user codebooks: the others 'no input', the rest of the window untouched
    two = dialogue_batch_fn(store, streams, codec, text, window=60, batch_size=2,
                            options=ChatOptions(user_codebooks=2))(3, 0, 0, 1)
    assert torch.equal(two[USER][:, :2], a[USER][:, :2]) and (two[USER][:, 2:] == -1).all()
    assert (a[USER][:, 2:] >= 0).all() and all(torch.equal(two[k], a[k]) for k in (TEXT, AGENT, USER_TEXT))
    with pytest.raises(ValueError, match="user_codebooks=9, but the user stream has 8 codebooks"):
        dialogue_batch_fn(store, streams, codec, text, window=60, batch_size=2, options=ChatOptions(user_codebooks=9))
    torch.manual_seed(0)
    from multistream.presets import tiny

    model = RQTransformer(tiny(streams))
    out = lm_loss(model(b), streams)
    assert TEXT not in out.per_stream or out.per_stream[TEXT] == 0.0
    assert torch.isfinite(out.total) and out.per_stream[AGENT] > 0


def test_train_chat_refuses_no_monologue_in_the_text_phase(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_chat.py"), "--store", str(tmp_path / "s"),
                        "--phase", "text", "--out", str(tmp_path / "o"), "--no-monologue"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "apply to --phase dialogue" in r.stderr
