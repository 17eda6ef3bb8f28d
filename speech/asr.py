"""An independent recognizer (pocketsphinx: its own en-us acoustic model, language model and dictionary from the
PyPI wheel, offline) and word error rate, to judge what our models *say*: the project never trains or tunes it.

    asr = Recognizer()
    asr(audio, sample_rate) -> "what it heard"
    wer(reference_text, hypothesis_text) -> (edits, reference words)
"""

from __future__ import annotations

import re

import numpy as np

ASR_RATE = 16000


def words(text: str) -> list[str]:
    """Lower-case words, hyphens split ("twenty-one" -> "twenty one"), punctuation dropped."""
    return [w for w in re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split() if w]


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words); sum both over a set before dividing."""
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)), len(ref)


class Recognizer:
    """pocketsphinx on float audio in [-1, 1] at any sample rate (resampled to 16 kHz)."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as e:  # a dependency of the project: the setup installs it
            raise RuntimeError("pocketsphinx is not installed (run `make test` or scripts/setup.sh)") from e
        self._dec = Decoder(samprate=ASR_RATE, logfn="/dev/null")

    def __call__(self, audio: np.ndarray, sample_rate: int) -> str:
        from speech.audio import resample

        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"the recognizer takes mono audio [N], got shape {x.shape}")
        if sample_rate != ASR_RATE:
            x = resample(x, sample_rate, ASR_RATE)
        if len(x) < ASR_RATE // 10:
            return ""
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
        # every utterance from the same feature state: pocketsphinx carries its noise and cepstral-mean estimates
        # over from the previous utterance, which made a transcript depend on what was recognised before it
        self._dec.reinit_feat()
        self._dec.start_utt()
        self._dec.process_raw(pcm, full_utt=True)
        self._dec.end_utt()
        hyp = self._dec.hyp()
        return hyp.hypstr if hyp is not None else ""
