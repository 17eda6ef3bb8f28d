"""The agent's spoken reply while it acts ("okay, the red cube to the left"): its words and the `text` stream.

`agent_reply` composes the confirmation of what the robot understood from the command's slots; `ReplyWords` is the
word tokenizer of the policy's own `text` stream (`PolicyConfig(reply=True)`): a closed vocabulary of every reply
word with PAD at id 0, one word per 80 ms frame from the frame a command (or a correction, or a "stop") arrives,
PAD on every other frame, as the chat model's monologue is laid out on its frames (`speech/monologue.py`). The
policy predicts it beside the action, so the words it says come from the model, not from a template at run time;
With `PolicyConfig(reply_audio=K)` the policy also says them: `ReplyVoice` is the tokenizer of a predicted
`audio.agent` stream (the chat model's name for the agent's audio): the agent voice's TTS of each reply, placed at
the reply's frame on the episode's timeline and encoded by the codec, the first K codebooks. The policy generates
those tokens frame by frame like the chat model's agent audio; `ReplyVoice.decode` turns them into the audio the
robot speaks. A reply takes longer to say than a short episode lasts, so such a policy keeps talking for
`PolicyConfig.reply_tail` frames after the episode ends (the robot holds still; no action is asked).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from envs.instructions import SHAPE_WORDS, SIDE_WORDS, TARGET_WORDS
from envs.scene import PALETTE

TEXT = "text"  # the agent's words: the same stream name as the chat model's monologue
AGENT_AUDIO = "audio.agent"  # the agent's voice: the same stream name as the chat model's agent audio
PAD = "<pad>"
STOP_REPLY = "okay, stopping"
UNSURE_REPLY = "sorry, which object?"


def agent_reply(task: str, slots_text: dict[str, str]) -> str:
    """The agent's confirmation of what it understood, e.g. {"color": "red", "shape": "cube", "side": "left"};
    "okay, stopping" once the halt slot says stop."""
    if slots_text.get("halt") == "stop":
        return STOP_REPLY
    if "color" not in slots_text or "shape" not in slots_text:
        return UNSURE_REPLY
    obj = f"the {slots_text['color']} {slots_text['shape']}"
    if task == "push" and "side" in slots_text:
        return f"okay, {obj} to the {slots_text['side']}"
    if task == "pick_place" and "target" in slots_text:
        prep = "in" if slots_text["target"] == "bowl" else "on"
        return f"okay, {obj} {prep} the {slots_text['target']}"
    return f"okay, {obj}"


def slot_names(slots, ids: list[int]) -> dict[str, str]:
    """Slot ids of a `robot.command.CommandSlots` -> {slot: value name} of the filled ones."""
    return {s: slots.values[s][int(i)] for s, i in zip(slots.slots, ids, strict=True)
            if 0 <= int(i) < len(slots.values[s])}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def reply_vocabulary() -> list[str]:
    """PAD, then every word a reply can hold, sorted."""
    words = set(_words(f"okay the to in on {STOP_REPLY} {UNSURE_REPLY}"))
    words.update(PALETTE)
    words.update(SHAPE_WORDS)
    words.update(SIDE_WORDS)
    words.update(TARGET_WORDS)
    return [PAD, *sorted(words)]


class ReplyWords:
    """Reply text <-> word ids (one codebook; PAD = 0)."""

    def __init__(self, words: list[str] | None = None) -> None:
        self.words = list(words) if words is not None else reply_vocabulary()
        if not self.words or self.words[0] != PAD or len(set(self.words)) != len(self.words):
            raise ValueError(f"reply words must start with {PAD!r} and be distinct, got {self.words[:5]}...")
        self._index = {w: i for i, w in enumerate(self.words)}

    frame_rate = property(lambda self: 12.5)
    num_codebooks = property(lambda self: 1)
    cardinality = property(lambda self: len(self.words))
    pad_id = property(lambda self: 0)

    @property
    def fingerprint(self) -> str:
        return "reply:" + ",".join(self.words)

    def ids(self, text: str) -> list[int]:
        out = []
        for w in _words(text):
            if w not in self._index:
                raise ValueError(f"unknown reply word {w!r} in {text!r}")
            out.append(self._index[w])
        if not out:
            raise ValueError(f"reply {text!r} has no words")
        return out

    def text(self, ids: list[int]) -> str:
        """The words of `ids`, PAD skipped."""
        for i in ids:
            if not 0 <= int(i) < len(self.words):
                raise ValueError(f"reply word id {i} outside [0, {len(self.words)})")
        return " ".join(self.words[int(i)] for i in ids if int(i) != 0)

    # Tokenizer protocol (codes [1, 1, N]) for check_tokenizer / spec_from_tokenizer
    def encode(self, text: str):
        import torch

        return torch.tensor(self.ids(text))[None, None]

    def decode(self, codes) -> str:
        return self.text(codes.reshape(-1).tolist())


def reply_spans(length: int, replies: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """(frame, end, reply) of each (frame, reply) in time order on an episode of `length` frames: a reply may run
    until the next one starts (a later reply cuts an earlier one short) or the episode ends."""
    replies = sorted(replies)
    return [(frame, min(replies[n + 1][0] if n + 1 < len(replies) else length, length), reply)
            for n, (frame, reply) in enumerate(replies)]


def reply_frames(length: int, replies: list[tuple[int, str]], tok: ReplyWords) -> list[int]:
    """The `text` stream of an episode of `length` frames: each (frame, reply) writes its words one per frame from
    that frame on (a later reply cuts an earlier one short), PAD everywhere else."""
    out = [tok.pad_id] * length
    for frame, end, reply in reply_spans(length, replies):
        for j, w in enumerate(tok.ids(reply)[: max(end - frame, 0)]):
            out[frame + j] = w
    return out


def taught_replies(task: str, slots, first: list[int], corrected_at: int | None = None,
                   after: list[int] | None = None) -> list[tuple[int, str]]:
    """[(frame, reply)] a policy store teaches: the reply to the `first` slot ids (of `slots`, a `CommandSlots`) at
    frame 0 and, after a correction or a stop at frame `corrected_at`, the reply to the slots `after` it."""
    replies = [(0, agent_reply(task, slot_names(slots, first)))]
    if corrected_at is not None:
        replies.append((corrected_at, agent_reply(task, slot_names(slots, after))))
    return replies


def taught_reply(task: str, slots, tok: ReplyWords, length: int, first: list[int], corrected_at: int | None = None,
                 after: list[int] | None = None) -> list[int]:
    """The `text` stream a policy store teaches for an episode of `length` frames (and `eval_policy.py` checks):
    `taught_replies` laid out by `reply_frames`."""
    return reply_frames(length, taught_replies(task, slots, first, corrected_at, after), tok)


class ReplyVoice:
    """The agent's voice as a token stream (`audio.agent`): replies spoken by the agent voice (TTS), laid on the
    episode's frames and encoded by a codec, its first `codebooks` codebooks. `codec`: a `speech.streams.CodecFrames`;
    `path`: where it was loaded from (saved with the policy's tokenizers, so that a policy finds its codec)."""

    def __init__(self, codec, codebooks: int, path: str | Path) -> None:
        if not 1 <= codebooks <= codec.num_codebooks:
            raise ValueError(f"reply audio codebooks must be in [1, {codec.num_codebooks}] for this codec, got "
                             f"{codebooks}")
        self.codec, self.codebooks, self.path = codec, int(codebooks), str(path)
        self._speech: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, path: str | Path, codebooks: int) -> ReplyVoice:
        from speech.streams import CodecFrames

        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"no codec checkpoint at {path} (the agent's voice goes through it)")
        return cls(CodecFrames.load(path), codebooks, path)

    frame_rate = property(lambda self: self.codec.frame_rate)
    num_codebooks = property(lambda self: self.codebooks)
    cardinality = property(lambda self: self.codec.cardinality)
    sample_rate = property(lambda self: self.codec.sample_rate)
    frame_size = property(lambda self: self.codec.frame_size)

    @property
    def fingerprint(self) -> str:
        return f"{self.codec.fingerprint}:first{self.codebooks}"

    def to_json(self) -> dict:
        return {"codec": self.path, "fingerprint": self.fingerprint, "codebooks": self.codebooks}

    @classmethod
    def from_json(cls, d: dict) -> ReplyVoice:
        path = Path(d["codec"])
        if not path.is_absolute() and not path.exists():  # a repository path (checkpoints/...) from another cwd
            path = Path(__file__).resolve().parents[1] / path
        voice = cls.load(path, int(d["codebooks"]))
        voice.path = d["codec"]  # saved again as it was given
        if voice.fingerprint != d["fingerprint"]:
            raise ValueError(f"the codec at {d['codec']} is not the one this policy's agent voice was made with "
                             f"({voice.fingerprint} != {d['fingerprint']})")
        return voice

    def speech(self, reply: str) -> np.ndarray:
        """The agent voice saying `reply` at the codec's sample rate (float32 [N]; cached)."""
        if reply not in self._speech:
            from speech.tts import synthesize
            from speech.voices import AGENT_VOICE

            syn = synthesize(reply, AGENT_VOICE)
            if syn.sample_rate != self.sample_rate:
                raise ValueError(f"TTS gives {syn.sample_rate} Hz, the codec needs {self.sample_rate} Hz")
            self._speech[reply] = np.asarray(syn.audio, dtype=np.float32)
        return self._speech[reply]

    def waveform(self, length: int, replies: list[tuple[int, str]]) -> np.ndarray:
        """[length * frame_size] samples: each (frame, reply) spoken from the start of its frame; a later reply cuts
        an earlier one short (the robot starts its new answer); silence elsewhere."""
        n = self.frame_size
        out = np.zeros(length * n, np.float32)
        for frame, end, reply in reply_spans(length, replies):
            x = self.speech(reply)[: max(end - frame, 0) * n]
            out[frame * n: frame * n + len(x)] = x
        return out

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, N] (N a whole number of frames) -> codes [B, codebooks, N / frame_size]."""
        with torch.no_grad():
            return self.codec.encode(audio)[:, : self.codebooks]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, codebooks, T] -> audio [B, 1, T * frame_size]."""
        if codes.dim() != 3 or codes.shape[1] != self.codebooks:
            raise ValueError(f"reply audio codes must be [B, {self.codebooks}, T], got {tuple(codes.shape)}")
        with torch.no_grad():
            return self.codec.codec.decode_prefix(codes)

    def frames(self, length: int, replies: list[tuple[int, str]]) -> np.ndarray:
        """The `audio.agent` stream of an episode of `length` frames: codes [length, codebooks] (store rows)."""
        audio = torch.from_numpy(self.waveform(length, replies))[None, None]
        return self.encode(audio)[0].T.numpy().astype(np.int16)


REPLY_STARTS = ("okay", "sorry")  # every reply begins with one of these


def utterances(ids: list[int], tok: ReplyWords) -> list[tuple[int, str]]:
    """A `text` stream (one id per frame) -> [(first frame, words)] of each reply: a run of words ends at PAD or
    where the next reply begins ("okay ..." right after a reply a correction cut short)."""
    out: list[tuple[int, str]] = []
    start, words = None, []
    for f, i in enumerate([*ids, tok.pad_id]):
        w = tok.words[int(i)]
        if start is not None and (int(i) == tok.pad_id or w in REPLY_STARTS):
            out.append((start, " ".join(words)))
            start, words = None, []
        if int(i) != tok.pad_id:
            start = f if start is None else start
            words.append(w)
    return out
