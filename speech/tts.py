"""Text to speech with word and phone timings: espeak-ng, festival and flite behind one function.

`synthesize(text, voice)` returns 24 kHz mono float audio, one `(word, start_s, end_s)` per whitespace token of the
text (the token as written, punctuation kept, as Whisper-style alignments in moshi-finetune keep it), and phone
timings `(phone, start_s, end_s)`:

- espeak-ng runs in-process through the libespeak-ng C API (ctypes): WORD events give word starts, PHONEME events
  give phones; a word ends where its last non-pause phone ends. One sentence (utterance) per call.
- festival runs as a subprocess on a small Scheme script; word and phone times come from the utterance's Word and
  Segment relations, exact by construction.
- flite runs in-process through libflite (ctypes); times come from its utterance like festival's.

Phone names: festival and flite use the CMU/radio phone set (lowercase ARPAbet), espeak its own mnemonics;
silences are named `pau` on every backend. Text must be spoken-style ASCII: letters, digits, spaces and the
punctuation `' , . ? ! - : ;`; every whitespace token needs at least one letter or digit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speech.audio import SAMPLE_RATE, read_wav, resample
from speech.voices import Voice, get_voice

PAUSE = "pau"  # the silence phone on every backend
_ALLOWED = re.compile(r"[A-Za-z0-9 ,.?!'\-:;]+")
_ESPEAK_DEFAULT_WPM = 175


@dataclass
class Synthesis:
    """One synthesized utterance."""

    audio: np.ndarray  # float32 mono [N] at `sample_rate`
    sample_rate: int
    words: list[tuple[str, float, float]]  # (token as written, start_s, end_s), one per whitespace token
    phones: list[tuple[str, float, float]] = field(default_factory=list)  # (phone, start_s, end_s); pau = silence

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def check_text(text: str) -> list[str]:
    """The whitespace tokens of `text`; ValueError for empty text or characters the TTS layer does not accept."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    tokens = text.split()
    if not tokens:
        raise ValueError(f"empty text: {text!r}")
    body = " ".join(tokens)
    if not _ALLOWED.fullmatch(body):
        bad = sorted({c for c in body if not _ALLOWED.fullmatch(c)})
        raise ValueError(f"unsupported characters {bad} in text {text!r}: spell numbers/symbols out, ASCII only")
    for tok in tokens:
        if not any(c.isalnum() for c in tok):
            raise ValueError(f"token {tok!r} in text {text!r} has no letter or digit (attach punctuation to a word)")
    return tokens


def synthesize(text: str, voice: Voice | str) -> Synthesis:
    """Speak `text` (one sentence or a short utterance) with `voice` (a Voice or a voice name)."""
    if isinstance(voice, str):
        voice = get_voice(voice)
    if not isinstance(voice, Voice):
        raise ValueError(f"voice must be a Voice or a voice name, got {type(voice).__name__}")
    tokens = check_text(text)
    text = " ".join(tokens)
    if voice.backend == "espeak":
        audio, sr, words, phones = _espeak(text, tokens, voice)
    elif voice.backend == "festival":
        audio, sr, words, phones = _festival(text, tokens, voice)
    else:
        audio, sr, words, phones = _flite(text, tokens, voice)
    audio = resample(audio, sr, SAMPLE_RATE)
    duration = len(audio) / SAMPLE_RATE
    clip = lambda t: float(min(max(t, 0.0), duration))
    words = [(w, clip(s), clip(max(e, s))) for w, s, e in words]
    phones = [(p, clip(s), clip(max(e, s))) for p, s, e in phones]
    return Synthesis(audio=audio, sample_rate=SAMPLE_RATE, words=words, phones=phones)


# ----------------------------------------------------------------------------------------------------- espeak-ng
class _EspeakEventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):  # espeak_EVENT from speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EspeakEventId)]


_EV_LIST_TERMINATED, _EV_WORD, _EV_END, _EV_PHONEME = 0, 1, 5, 7
_AUDIO_OUTPUT_SYNCHRONOUS, _INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 2, 0x0001, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_P_RATE, _P_PITCH, _P_RANGE = 1, 3, 4
_ESPEAK_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                              ctypes.POINTER(_EspeakEvent))


class _Espeak:
    """One load of libespeak-ng. The library keeps hidden state between utterances (the pitch-flutter phase is a
    function-level static that neither espeak_Terminate nor espeak_Initialize resets), so the same sentence comes
    out slightly different depending on what was said before. `_espeak` therefore loads a fresh copy per call
    (dlopen), and unloads it after (dlclose): ~10 ms, and synthesis becomes a pure function of (text, voice)."""

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise RuntimeError("libespeak-ng is not installed (Debian package libespeak-ng1; scripts/setup.sh)") from e
        self.sr = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, None,
                                             _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.sr <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sr})")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, str]] = []  # (type, text_position 1-based, sample, phone)
        self._cb = _ESPEAK_CB(self._callback)  # keep a reference: the C side holds only the pointer
        self.lib.espeak_SetSynthCallback(self._cb)

    def _callback(self, wav, n, events) -> int:
        if n > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0)
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            e = events[i]
            phone = e.id.string.decode("ascii", "replace") if e.type == _EV_PHONEME else ""
            self.events.append((e.type, e.text_position, e.sample, phone))
            i += 1
        return 0

    def close(self) -> None:
        import _ctypes

        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
        spec = f"{voice.voice_id}+{voice.variant}" if voice.variant else voice.voice_id
        if self.lib.espeak_SetVoiceByName(spec.encode()) != 0:
            raise ValueError(f"espeak-ng does not know voice {spec!r} (voice {voice.name!r})")
        self.lib.espeak_SetParameter(_P_RATE, int(round(_ESPEAK_DEFAULT_WPM * voice.rate)), 0)
        self.lib.espeak_SetParameter(_P_PITCH, int(voice.pitch), 0)
        self.lib.espeak_SetParameter(_P_RANGE, int(voice.pitch_range), 0)
        self.chunks, self.events = [], []
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return audio, list(self.events)


_LIBC = ctypes.CDLL(None)
_ESPEAK_LOCK = threading.Lock()  # the library is process-global: one synthesis at a time


def _espeak(text: str, tokens: list[str], voice: Voice):
    with _ESPEAK_LOCK:
        eng = _Espeak()
        _LIBC.srand(0)  # in case a voice draws noise from libc rand()
        try:
            audio, events = eng.synth(text, voice)
        finally:
            eng.close()
    sr, n = eng.sr, len(audio)
    # 0-based char offset where each token starts
    tok_pos, pos = [], 0
    for tok in tokens:
        pos = text.index(tok, pos)
        tok_pos.append(pos)
        pos += len(tok)
    # phones with [start, end) in samples; the last phone ends at the end of the audio
    ph = [(p, s) for t, _, s, p in events if t == _EV_PHONEME]
    phones = []
    for k, (p, s) in enumerate(ph):
        e = ph[k + 1][1] if k + 1 < len(ph) else n
        if e > s:
            phones.append((PAUSE if p.startswith("_") else p, s / sr, e / sr))
    # A word event starts a word and owns the phones up to the next word event. espeak sometimes speaks several
    # tokens as one word ("of the"): those tokens share the event's phones, split in proportion to their length.
    word_events = [(tp - 1, s) for t, tp, s, _ in events if t == _EV_WORD]
    if not word_events:
        raise RuntimeError(f"espeak-ng gave no word events for {text!r}")
    words: list[tuple[str, float, float] | None] = [None] * len(tokens)
    for k, (cp, s) in enumerate(word_events):
        next_cp, nxt = word_events[k + 1] if k + 1 < len(word_events) else (len(text) + 1, n + 1)
        first = k == 0
        mine = [i for i, tp in enumerate(tok_pos) if (first or tp >= cp) and tp < next_cp and words[i] is None]
        if not mine:
            continue
        own = [(a, b) for p, a, b in phones if s / sr <= a < nxt / sr and p != PAUSE]
        if not own:
            own = [(s / sr, min(nxt, n) / sr)]
        weights = np.cumsum([max(1, sum(c.isalnum() for c in tokens[i])) for i in mine], dtype=float)
        bounds = np.round(weights / weights[-1] * len(own)).astype(int)
        lo = 0
        for i, hi in zip(mine, bounds, strict=True):
            hi = min(max(hi, lo + 1), len(own))
            seg = own[min(lo, len(own) - 1): hi]
            words[i] = (tokens[i], seg[0][0], seg[-1][1])
            lo = hi
    missing = [tokens[i] for i, w in enumerate(words) if w is None]
    if missing:
        raise RuntimeError(f"espeak-ng gave no word event for tokens {missing} of {text!r}")
    return audio, sr, words, phones


# ------------------------------------------------------------------------------------------------------ festival
_FESTIVAL_DUMP = r"""
(define (ms_dump_words w)
  (if w (begin
    (if (item.relation w 'Word)
      (format t "\t%f\t%f" (item.feat (item.relation w 'Word) "word_start")
                           (item.feat (item.relation w 'Word) "word_end")))
    (ms_dump_words (item.next w)))))
(define (ms_dump_tokens tok)
  (if tok (begin
    (format t "T\t%s" (item.name tok))
    (ms_dump_words (item.daughter1 tok))
    (format t "\n")
    (ms_dump_tokens (item.next tok)))))
(define (ms_dump_segs s)
  (if s (begin
    (format t "S\t%s\t%f\t%f\n" (item.name s) (item.feat s "segment_start") (item.feat s "end"))
    (ms_dump_segs (item.next s)))))
"""


def _festival(text: str, tokens: list[str], voice: Voice):
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        wav = Path(tmp) / "out.wav"
        script = Path(tmp) / "synth.scm"
        script.write_text(
            _FESTIVAL_DUMP
            + f"(voice_{voice.voice_id})\n"
            + f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})\n"
            + f'(set! utt (utt.synth (Utterance Text "{text}")))\n'
            + f'(utt.save.wave utt "{wav}" \'riff)\n'
            + "(ms_dump_tokens (utt.relation.first utt 'Token))\n"
            + "(ms_dump_segs (utt.relation.first utt 'Segment))\n"
        )
        try:
            out = subprocess.run(["festival", "--batch", str(script)], capture_output=True, text=True, timeout=120)
        except FileNotFoundError as e:
            raise RuntimeError("festival is not installed (Debian package festival; scripts/setup.sh)") from e
        if out.returncode != 0 or not wav.exists():
            raise RuntimeError(f"festival failed on {text!r} with voice {voice.voice_id!r}: {out.stderr[-500:]}")
        audio, sr = read_wav(wav)
    words, phones = [], []
    tok_lines = [ln.split("\t") for ln in out.stdout.splitlines() if ln.startswith("T\t")]
    for ln in out.stdout.splitlines():
        if ln.startswith("S\t"):
            _, p, s, e = ln.split("\t")
            phones.append((PAUSE if p == "pau" else p, float(s), float(e)))
    if len(tok_lines) != len(tokens):
        raise RuntimeError(f"festival split {text!r} into {len(tok_lines)} tokens, expected {len(tokens)}")
    for tok, parts in zip(tokens, tok_lines, strict=True):
        times = [float(x) for x in parts[2:]]
        if not times:
            raise RuntimeError(f"festival gave no words for token {tok!r} of {text!r}")
        words.append((tok, min(times[0::2]), max(times[1::2])))
    return audio[0], sr, words, phones


# --------------------------------------------------------------------------------------------------------- flite
class _FliteWave(ctypes.Structure):  # cst_wave
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class _FliteVoice(ctypes.Structure):  # the head of cst_voice
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p)]


class _Flite:
    """libflite loaded in-process; voices registered lazily; calls serialized by a lock."""

    def __init__(self):
        g = os.RTLD_GLOBAL
        try:
            self.lib = ctypes.CDLL("libflite.so.1", mode=g)
            for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):
                ctypes.CDLL(dep, mode=g)
        except OSError as e:
            raise RuntimeError("libflite is not installed (Debian package flite; scripts/setup.sh)") from e
        vp, cp, f = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float
        sigs = {"flite_synth_text": (vp, [cp, vp]), "utt_relation": (vp, [vp, cp]), "relation_head": (vp, [vp]),
                "item_next": (vp, [vp]), "item_daughter": (vp, [vp]), "item_as": (vp, [vp, cp]),
                "item_feat_string": (cp, [vp, cp]), "item_feat_float": (f, [vp, cp]),
                "ffeature_float": (f, [vp, cp]), "utt_wave": (vp, [vp]), "delete_utterance": (None, [vp]),
                "feat_set_float": (None, [vp, cp, f])}
        for name, (res, args) in sigs.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib.flite_init()
        self.voices: dict[str, int] = {}
        self.lock = threading.Lock()

    def voice(self, vid: str) -> int:
        if vid not in self.voices:
            try:
                lib = ctypes.CDLL(f"libflite_cmu_us_{vid}.so.1", mode=os.RTLD_GLOBAL)
            except OSError as e:
                raise ValueError(f"flite has no voice {vid!r} (no libflite_cmu_us_{vid}.so.1)") from e
            reg = getattr(lib, f"register_cmu_us_{vid}")
            reg.restype, reg.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            self.voices[vid] = reg(None)
        return self.voices[vid]

    def _iter(self, item):
        while item:
            yield item
            item = self.lib.item_next(item)

    def synth(self, text: str, tokens: list[str], voice: Voice):
        L = self.lib
        with self.lock:
            v = self.voice(voice.voice_id)
            feats = ctypes.cast(v, ctypes.POINTER(_FliteVoice)).contents.features
            L.feat_set_float(feats, b"duration_stretch", 1.0 / voice.rate)
            # clustergen voices draw excitation noise from libc rand(): a fixed seed makes each call repeatable
            _LIBC.srand(0)
            utt = L.flite_synth_text(text.encode(), v)
            try:
                w = ctypes.cast(L.utt_wave(utt), ctypes.POINTER(_FliteWave)).contents
                audio = np.ctypeslib.as_array(w.samples, shape=(w.num_samples,)).astype(np.float32) / 32768.0
                sr = w.sample_rate
                toks = list(self._iter(L.relation_head(L.utt_relation(utt, b"Token"))))
                if len(toks) != len(tokens):
                    raise RuntimeError(f"flite split {text!r} into {len(toks)} tokens, expected {len(tokens)}")
                words = []
                for tok, item in zip(tokens, toks, strict=True):
                    spans = []
                    for d in self._iter(L.item_daughter(item)):
                        wd = L.item_as(d, b"Word")
                        if wd:
                            spans.append((L.ffeature_float(wd, b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"),
                                          L.ffeature_float(wd, b"R:SylStructure.daughtern.daughtern.R:Segment.end")))
                    if not spans:
                        raise RuntimeError(f"flite gave no words for token {tok!r} of {text!r}")
                    words.append((tok, min(s for s, _ in spans), max(e for _, e in spans)))
                phones, prev = [], 0.0
                for seg in self._iter(L.relation_head(L.utt_relation(utt, b"Segment"))):
                    end = float(L.item_feat_float(seg, b"end"))
                    phones.append((L.item_feat_string(seg, b"name").decode(), prev, end))
                    prev = end
            finally:
                L.delete_utterance(utt)
        return audio, sr, words, phones


_flite_instance: _Flite | None = None


def _flite(text: str, tokens: list[str], voice: Voice):
    global _flite_instance
    if _flite_instance is None:
        _flite_instance = _Flite()
    return _flite_instance.synth(text, tokens, voice)
