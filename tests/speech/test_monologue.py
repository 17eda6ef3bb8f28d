"""Inner-monologue alignment on hand-made timings, and the sentencepiece text tokenizer."""

import numpy as np
import pytest
import torch

from multistream.tokenizer import Tokenizer, check_codes
from speech.corpus import corpus_text
from speech.monologue import monologue_tokens, num_frames
from speech.text import TextTokenizer

P, E = 3, 4  # pad, epad
FR = 12.5  # 80 ms frames


def test_hand_made_timings_including_words_closer_than_a_frame():
    words = [
        ([10, 11], 0.00, 0.30),  # frames 0-1
        ([12], 0.50, 0.51),  # frame 6 (0.5 * 12.5 = 6.25)
        ([13], 0.52, 0.60),  # also frame 6: closer than one frame -> shifted to frame 7, no EPAD between
        ([14, 15], 1.00, 1.40),  # frame 12 (12.5)
    ]
    out, dropped = monologue_tokens(words, 16, FR, P, E)
    expected = [10, 11, P, P, P, E, 12, 13, P, P, P, E, 14, 15, P, P]
    assert out.tolist() == expected
    assert dropped == 0


def test_long_word_pushes_the_next_one_back():
    words = [([10, 11, 12], 0.0, 0.2), ([13], 0.1, 0.3), ([14], 0.41, 0.5)]  # 13 at frame 1, 14 at frame 5
    out, _ = monologue_tokens(words, 8, FR, P, E)
    assert out.tolist() == [10, 11, 12, 13, E, 14, P, P]


def test_unsorted_input_and_tokens_past_the_end():
    words = [([20], 0.9, 1.0), ([10, 11], 0.0, 0.1)]
    out, dropped = monologue_tokens(words, 12, FR, P, E)  # 0.9 s = frame 11
    assert out.tolist() == [10, 11] + [P] * 8 + [E, 20]
    out, dropped = monologue_tokens(words, 11, FR, P, E)  # the last word falls past the end: no EPAD for it
    assert dropped == 1 and out.tolist() == [10, 11] + [P] * 9


def test_random_timings_keep_every_token_in_order():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 15))
        starts = np.sort(rng.uniform(0, 5, n))
        words = [(list(range(100 + 10 * i, 100 + 10 * i + int(rng.integers(1, 4)))), float(s), float(s) + 0.2)
                 for i, s in enumerate(starts)]
        out, dropped = monologue_tokens(words, 200, FR, P, E)
        text = [t for t in out.tolist() if t not in (P, E)]
        assert dropped == 0 and text == [t for ids, _, _ in words for t in ids]
        for ids, s, _ in words:  # no token before its word starts
            assert out.tolist().index(ids[0]) >= int(s * FR)
        for t in np.flatnonzero(out == E):  # EPAD is always followed by a word's first token
            assert out[t + 1] not in (P, E)


def test_bad_inputs():
    with pytest.raises(ValueError, match="bad word timing"):
        monologue_tokens([([10], 0.5, 0.4)], 10, FR, P, E)
    with pytest.raises(ValueError, match="pad/epad"):
        monologue_tokens([([10, P], 0.0, 0.4)], 10, FR, P, E)
    with pytest.raises(ValueError, match="differ"):
        monologue_tokens([], 10, FR, P, P)
    assert num_frames(1.0, FR) == 13 and num_frames(0.96, FR) == 12


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    TextTokenizer.train(corpus_text("train", 300, 0), vocab_size=400, path=path)
    assert path.is_file()
    return TextTokenizer(path)  # reload from disk


def test_text_tokenizer(tok):
    assert isinstance(tok, Tokenizer)
    assert tok.frame_rate == 12.5 and tok.num_codebooks == 1
    assert len({tok.pad_id, tok.epad_id, tok.bos_id, tok.eos_id, tok.unk_id}) == 5
    assert 16 < tok.cardinality <= 400
    text = "What's the capital of France?"
    assert tok.decode_text(tok.encode_text(text)) == text
    words = [("What's", 0.1, 0.4), ("the", 0.4, 0.5), ("capital", 0.5, 0.9), ("of", 0.9, 1.0), ("France?", 1.0, 1.5)]
    codes = tok.encode([words, words[:2]])
    assert codes.shape == (2, 1, num_frames(1.5, 12.5)) and codes.dtype == torch.int64
    check_codes(codes, 1, tok.cardinality)
    assert tok.decode(codes) == [text, "What's the"]
    assert int(codes[0, 0, 0]) == tok.epad_id  # the first word starts in frame 1
    with pytest.raises(ValueError, match="shape"):
        tok.decode(codes[:, 0])
    with pytest.raises(ValueError, match="no sentencepiece model"):
        TextTokenizer("/nonexistent/tokenizer.model")
