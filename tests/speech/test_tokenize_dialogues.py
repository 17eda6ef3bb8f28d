"""Dialogues -> chat episode store: round trip through the codec, resume, and refusal of another codec."""

import numpy as np
import pytest
import torch

from multistream.data import StoreBinding, StreamBinding
from speech.dataset import read_item
from speech.streams import AGENT, TEXT, USER, MonologueText, chat_streams
from speech.tokenize import tokenize_dialogues

from .conftest import make_codec


def test_tokenize_round_trip_resume_and_refusal(dialogues, tmp_path):
    codec = make_codec(tmp_path / "codec", 0)
    text = MonologueText(dialogues / "tokenizer.model")
    store = tokenize_dialogues(dialogues, codec, text, tmp_path / "chat.zarr", splits=("train",), progress=False)
    assert store.num_episodes == 2
    ep = store.episode(0)
    meta = store.episode_meta(0)
    audio, sr, _ = read_item(meta["path"])
    t = meta["frames"]
    assert ep[AGENT].shape == (t, codec.num_codebooks) and ep[TEXT].shape == (t,)
    # decoding the stored agent tokens gives the codec's own reconstruction of channel 0
    n = t * codec.frame_size
    x = np.zeros((1, 1, n), dtype=np.float32)
    x[0, 0, : audio.shape[1]] = audio[0, :n]
    with torch.no_grad():
        want = codec.decode(codec.encode(torch.from_numpy(x)))
        got = codec.decode(torch.from_numpy(ep[AGENT].T.astype(np.int64))[None])
    torch.testing.assert_close(got, want)
    assert (ep[TEXT] != text.pad_id).sum() > 5  # the agent said something
    # resume is a no-op; the binding of the chat streams reads it; another codec is refused
    assert tokenize_dialogues(dialogues, codec, text, tmp_path / "chat.zarr", ("train",), progress=False) \
        .num_episodes == 2
    streams = chat_streams(codec, text)
    binding = StoreBinding(streams, codec.frame_rate, [StreamBinding(streams[n], tokenizer=tok)
                                                       for n, tok in ((TEXT, text), (AGENT, codec), (USER, codec))])
    batch = binding.attach(store).episode(store, 1)
    assert batch[AGENT].shape[1] == codec.num_codebooks
    other = make_codec(tmp_path / "codec2", 1)
    with pytest.raises(ValueError, match="was tokenized with"):
        tokenize_dialogues(dialogues, other, text, tmp_path / "chat.zarr", ("train",), progress=False)
    other_binding = StoreBinding(streams, codec.frame_rate, [StreamBinding(streams[AGENT], tokenizer=other),
                                                             StreamBinding(streams[USER], tokenizer=other)])
    with pytest.raises(ValueError, match="re-tokenize the data or use the same tokenizer"):
        other_binding.attach(store)


def test_user_transcript_stream_and_code_reuse(dialogues, tmp_path):
    """`text.user` holds the user's words from the frame each word ends; a second store copies the first one's audio
    codes (--codes-from) bit for bit, and a store made with another codec is refused as a source."""
    from speech.dataset import USER_LABEL, speaker_words
    from speech.streams import USER_TEXT

    codec = make_codec(tmp_path / "codec", 0)
    text = MonologueText(dialogues / "tokenizer.model")
    first = tokenize_dialogues(dialogues, codec, text, tmp_path / "a.zarr", ("train",), progress=False)
    ep = first.episode(0)
    _, _, meta = read_item(first.episode_meta(0)["path"])
    words = speaker_words(meta, USER_LABEL)
    assert words
    heard = ep[USER_TEXT]
    first_piece = int(np.flatnonzero((heard != text.pad_id) & (heard != text.epad_id))[0])
    assert first_piece == int(words[0][2] * codec.frame_rate)  # where the first user word ends, not where it starts
    assert first_piece > int(words[0][1] * codec.frame_rate)
    said = text.decode(torch.from_numpy(heard.astype(np.int64))[None, None])[0]
    want = text.tok.decode_text([i for w, _, _ in words for i in text.tok.encode_text(w)])
    assert said.split() == want.split() and len(want.split()) >= len(words)
    second = tokenize_dialogues(dialogues, codec, text, tmp_path / "b.zarr", ("train",), progress=False,
                                codes_from=tmp_path / "a.zarr")
    for i in range(first.num_episodes):
        a, b = first.episode(i), second.episode(i)
        assert all(np.array_equal(a[k], b[k]) for k in (TEXT, AGENT, USER, USER_TEXT))
    other = make_codec(tmp_path / "codec2", 1)
    with pytest.raises(ValueError, match="holds codes of"):
        tokenize_dialogues(dialogues, other, text, tmp_path / "c.zarr", ("train",), progress=False,
                           codes_from=tmp_path / "a.zarr")
    # the chat streams with the transcript stream read it through the binding
    streams = chat_streams(codec, text, user_text_delay=2)
    assert streams[USER_TEXT].predicted and streams[USER_TEXT].delays == (2,)
    binding = StoreBinding(streams, codec.frame_rate, [StreamBinding(streams[USER_TEXT], tokenizer=text)])
    assert torch.equal(binding.attach(second).episode(second, 0)[USER_TEXT][0, 0],
                       torch.from_numpy(heard.astype(np.int64)))
