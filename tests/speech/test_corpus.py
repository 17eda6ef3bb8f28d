"""The text dialogue generator: determinism, spoken style, and held-out valid/test content."""

import pytest

from speech.corpus import SPLITS, dialogue, dialogues, number_words, sentences, split_sentences
from speech.tts import check_text

QA_ACTS = {"arithmetic", "counting", "fact", "spelling", "yesno", "robot"}


def test_deterministic_and_index_addressable():
    a = dialogues("train", 20, seed=3)
    b = dialogues("train", 20, seed=3)
    assert [d.text for d in a] == [d.text for d in b]
    assert dialogue("train", 3, 7).text == a[7].text
    assert dialogues("train", 20, seed=4)[0].text != a[0].text or dialogues("train", 20, seed=4)[1].text != a[1].text


def test_turns_alternate_and_are_speakable():
    for split in SPLITS:
        for d in dialogues(split, 200, seed=0):
            assert d.turns and d.id.startswith(split)
            speakers = [t.speaker for t in d.turns]
            assert speakers[0] == "user" and speakers == ["user", "agent"] * (len(speakers) // 2)
            for t in d.turns:
                check_text(t.text)  # raises on anything the TTS layer would reject
                assert not any(c.isdigit() for c in t.text), t.text  # numbers are spelled out


def test_held_out_questions_never_appear_in_training():
    train = {t.text.lower() for d in dialogues("train", 3000, 0) for t in d.turns if t.act in QA_ACTS}
    for split in ("valid", "test"):
        held = {t.text.lower() for d in dialogues(split, 300, 0) for t in d.turns
                if t.speaker == "user" and t.act in QA_ACTS}
        assert len(held) > 200
        assert not held & train, sorted(held & train)[:5]


def test_interruptions_and_repeats_are_marked():
    turns = [t for d in dialogues("train", 400, 0) for t in d.turns]
    assert any(t.interrupt and t.act == "stop" for t in turns)
    assert any(t.act == "repeat" for t in turns)
    assert all(t.speaker == "user" for t in turns if t.interrupt)


def test_number_words_and_sentences():
    assert number_words(0) == "zero"
    assert number_words(42) == "forty-two"
    assert number_words(105) == "one hundred and five"
    assert number_words(2024) == "two thousand and twenty-four"
    with pytest.raises(ValueError, match="1000000"):
        number_words(10**6)
    assert split_sentences("Sure. One, two. Okay?") == ["Sure.", "One, two.", "Okay?"]
    s = sentences("test", 50, seed=1)
    assert len(s) == len(set(s)) == 50
    with pytest.raises(ValueError, match="split"):
        dialogues("dev", 1)
