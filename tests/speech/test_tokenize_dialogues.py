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
