"""A streaming duplex chat session: 80 ms of user audio in, 80 ms of agent audio and the monologue text out.

`ChatSession` owns the streaming codec (user audio encoder, agent audio decoder), a `Generator` over the chat
model and the text tokenizer. Every `step(user_pcm)`:

    user pcm [B, S] --codec encode--> user codes [B, K] --Generator.step--> text token [B] (this frame)
                                                                        \\-> agent codes [B, K] (the frame the
                                                                             acoustic delay lets out)
    agent codes --codec decode--> agent pcm [B, S]

It never waits for the user to finish: it listens while it speaks. One session holds B conversations (rows);
`reset(rows)` ends some and starts them afresh while the others go on (per-row streaming state of the codec and
the model), so a server steps every live conversation in one batched call. Until a row's agent audio has cleared
its acoustic delay the row plays silence, and the placeholder frames never reach the decoder's state.

Teacher forcing (replaying a recorded dialogue) goes through `step(..., force={stream: frame})`. A model trained
without the inner monologue (Moshi's ablation, `train_chat.py --no-monologue`) runs with
`ChatOptions(monologue=False)`: its text
stream is fed "no input" every frame, as in its dialogue training, and the session returns no text; one trained to
hear only the first codebooks of the user (`--user-codebooks`) gets the others as "no input". Both are
`ChatOptions`, which the checkpoint records.

Dimension legend: B conversations, S samples per frame (1920 at 24 kHz, 12.5 Hz), K codebooks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from multistream.atomic import atomic_write_bytes, atomic_write_json
from multistream.data import check_tokenizer
from multistream.generate import Generator, Sampling
from multistream.lm import RQTransformer
from multistream.streaming import rows_mask
from multistream.streams import ZERO_ID, keep_codebooks
from speech.streams import AGENT, TEXT, USER, USER_TEXT, CodecFrames, MonologueText


@dataclasses.dataclass(frozen=True)
class ChatOptions:
    """What a chat model hears and says beyond its streams; recorded in chat.json (`chat_options(ckpt)`) by
    train_chat.py, and applied alike to its training windows (speech.chat_data) and its sessions."""
    monologue: bool = True  # False: Moshi's ablation, no inner monologue in the dialogues (text stream fed no input)
    user_codebooks: int = 0  # > 0: the model hears only the first N codebooks of the user's audio (the semantic one
    #                          first); the rest are "no input" (0: all of them)

    def __post_init__(self) -> None:
        if not isinstance(self.monologue, bool):
            raise ValueError(f"'monologue' must be true or false, got {self.monologue!r}")
        n = self.user_codebooks
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"'user_codebooks' must be an integer >= 0, got {self.user_codebooks!r}")


@dataclasses.dataclass
class ChatStep:
    agent_pcm: torch.Tensor  # [B, S] float in [-1, 1]: the agent's audio for this 80 ms (silence until ready)
    text_ids: torch.Tensor  # [B] long: this frame's monologue token (PAD/EPAD included)
    text: list[str | None]  # per row: the monologue piece of this frame; None for PAD/EPAD
    agent_frame: torch.Tensor  # [B] long: which frame `agent_pcm` decodes (-1 = not yet, silence)
    heard: list[str | None] | None = None  # models with a `text.user` stream: per row, the transcript piece of what
    #                                        the user said, written this frame (None for PAD/EPAD or not ready yet)


class ChatSession:
    """`with ChatSession(model, codec, text, batch_size=B) as chat: out = chat.step(pcm)`."""

    def __init__(self, model: RQTransformer, codec: CodecFrames, text: MonologueText, batch_size: int = 1,
                 sampling: Sampling | dict[str, Sampling] | None = None, seed: int | None = None,
                 options: ChatOptions | None = None) -> None:
        ss = model.streams
        for name in (TEXT, AGENT, USER):
            if name not in ss:
                raise ValueError(f"the chat model has no {name!r} stream (streams: {ss.names})")
        check_tokenizer(ss[TEXT], text, model.cfg.frame_rate)
        check_tokenizer(ss[AGENT], codec, model.cfg.frame_rate)
        check_tokenizer(ss[USER], codec, model.cfg.frame_rate)
        self.hears = USER_TEXT in ss
        if self.hears:
            check_tokenizer(ss[USER_TEXT], text, model.cfg.frame_rate)
            if isinstance(sampling, dict) and USER_TEXT not in sampling:  # a transcript: greedy unless told
                sampling = {**sampling, USER_TEXT: Sampling(temperature=0.0)}
        self.model, self.codec, self.text = model.eval(), codec, text
        self.batch_size = batch_size
        self.options = options = options or ChatOptions()
        if options.user_codebooks > ss[USER].num_codebooks:
            raise ValueError(f"user_codebooks={options.user_codebooks}, but the user stream has "
                             f"{ss[USER].num_codebooks} codebooks")
        self.monologue = options.monologue
        self._no_text = torch.full((batch_size, 1), ZERO_ID, dtype=torch.long)
        self.gen = Generator(model, batch_size=batch_size, sampling=sampling, seed=seed)
        self._ctx = None
        self._special = {text.pad_id, text.epad_id}

    def __enter__(self) -> ChatSession:
        self._ctx = self.codec.codec.streaming(self.batch_size)
        self._ctx.__enter__()
        self.gen.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.gen.__exit__(*exc)
        assert self._ctx is not None
        self._ctx.__exit__(*exc)
        self._ctx = None

    @torch.inference_mode()  # as step(): the state it resets holds inference tensors
    def reset(self, rows: torch.Tensor | Sequence[int] | None = None) -> None:
        """End and restart conversations: all (None) or the given rows; the other rows are untouched."""
        self.gen.reset(rows)
        if rows is None:
            self.codec.codec.reset_streaming()
        else:
            self.codec.codec.reset_streaming(rows_mask(rows, self.batch_size))

    def _check_pcm(self, pcm: object) -> torch.Tensor:
        if isinstance(pcm, np.ndarray):
            pcm = torch.from_numpy(pcm)
        if not isinstance(pcm, torch.Tensor):
            raise ValueError(f"user audio must be a tensor [B, {self.codec.frame_size}], got {type(pcm).__name__}")
        if tuple(pcm.shape) != (self.batch_size, self.codec.frame_size):
            raise ValueError(f"user audio must be one frame per conversation [{self.batch_size}, "
                             f"{self.codec.frame_size}] (80 ms at {self.codec.sample_rate} Hz), got {tuple(pcm.shape)}")
        if not pcm.dtype.is_floating_point:
            raise ValueError(f"user audio must be float samples in [-1, 1], got {pcm.dtype}")
        if not torch.isfinite(pcm).all():
            raise ValueError("user audio contains NaN or infinite samples")
        return pcm.float()

    @torch.inference_mode()  # ~15% less per-step overhead than no_grad (no version counters / view tracking)
    def step(self, user_pcm: torch.Tensor, force: dict[str, torch.Tensor] | None = None) -> ChatStep:
        if self._ctx is None:
            raise RuntimeError("use ChatSession inside a `with` block")
        pcm = self._check_pcm(user_pcm)
        codec = self.codec.codec
        user_codes = codec.encode(pcm[:, None, :])[:, :, 0]  # [B, K]
        # as in its training windows: the codebooks after the first user_codebooks are "no input"
        user_codes = keep_codebooks(user_codes, self.options.user_codebooks)
        inputs = {USER: user_codes} if self.monologue else {USER: user_codes, TEXT: self._no_text}
        out = self.gen.step({**inputs, **(force or {})})
        assert out is not None and TEXT in out.tokens  # text has no delay: every step returns it
        # without a monologue the text stream was fed "no input": nothing the model sampled there is said
        ids = out.tokens[TEXT][:, 0] if self.monologue else torch.full((self.batch_size,), self.text.pad_id)
        pieces = self._pieces(ids)
        heard = None
        if self.hears:
            heard = [None] * self.batch_size
            if USER_TEXT in out.tokens:  # rows whose delay has not filled yet (e.g. just reset) hold placeholders
                ready = out.frames[USER_TEXT] >= 0
                heard = self._pieces(torch.where(ready, out.tokens[USER_TEXT][:, 0], self.text.pad_id))
        agent_pcm = pcm.new_zeros(self.batch_size, self.codec.frame_size)
        frame = torch.full((self.batch_size,), -1, dtype=torch.long)
        if AGENT in out.tokens:
            frame = out.frames[AGENT].cpu()
            ready = frame >= 0
            codes = out.tokens[AGENT].clamp(0, self.codec.cardinality - 1)  # placeholders in rows not ready
            audio = codec.decode(codes[:, :, None])[:, 0]  # [B, S]
            agent_pcm = torch.where(ready[:, None].to(audio.device), audio, torch.zeros_like(audio)).clamp(-1, 1)
            if not bool(ready.all()):  # the placeholder frames must not stay in the decoder's state
                for m in self._decoder_modules():
                    m.reset_streaming(~ready)
        return ChatStep(agent_pcm=agent_pcm, text_ids=ids, text=pieces, agent_frame=frame, heard=heard)

    def _pieces(self, ids: torch.Tensor) -> list[str | None]:
        """Text ids [B] -> pieces; they keep their word-boundary spaces (sentencepiece's U+2581), so that clients can
        simply concatenate them."""
        sp = self.text.tok.sp
        n = sp.get_piece_size()
        return [None if int(i) in self._special or not 0 <= int(i) < n or sp.is_control(int(i))
                or sp.is_unknown(int(i)) else sp.id_to_piece(int(i)).replace("\u2581", " ") for i in ids]

    def _decoder_modules(self):
        c = self.codec.codec
        return [m for m in (c.upsample, c.decoder_transformer, c.decoder, getattr(c, "hnr", None)) if m is not None]


# ---- streaming recordings as if live ------------------------------------------------------------------------------
@dataclasses.dataclass
class Streamed:
    user: np.ndarray  # [B, T * S]: the recordings, padded with silence to whole frames + the tail
    agent: np.ndarray  # [B, T * S]: what the agent said
    pieces: list[list[tuple[float, str]]]  # per row: (frame time in s, monologue piece)
    ids: np.ndarray  # [B, T] monologue token ids, PAD/EPAD included
    step_s: list[float]  # wall time of each batched step (encode + model step + decode)
    heard: list[list[tuple[float, str]]] | None = None  # models with `text.user`: per row, (frame time, piece) of
    #                                                      the user transcript the model wrote as it listened


def stream_recordings(model: RQTransformer, codec: CodecFrames, text: MonologueText, users: Sequence[np.ndarray],
                      tail_s: float, sampling=None, seed: int | None = None, progress: bool = False,
                      options: ChatOptions | None = None) -> Streamed:
    """Stream B mono recordings 80 ms at a time through one batched ChatSession, then `tail_s` of silence."""
    import time

    from tqdm import tqdm

    s, b = codec.frame_size, len(users)
    n = max(-(-len(u) // s) for u in users) + round(tail_s * codec.frame_rate)
    user = np.zeros((b, n * s), np.float32)
    for i, u in enumerate(users):
        user[i, : len(u)] = u
    agent = np.zeros_like(user)
    ids = np.zeros((b, n), np.int64)
    pieces: list[list[tuple[float, str]]] = [[] for _ in range(b)]
    heard: list[list[tuple[float, str]]] = [[] for _ in range(b)]
    step_s = []
    with ChatSession(model, codec, text, batch_size=b, sampling=sampling, seed=seed, options=options) as chat:
        for t in tqdm(range(n), desc="streaming", mininterval=5, leave=False, disable=not progress):
            t0 = time.perf_counter()
            out = chat.step(torch.from_numpy(user[:, t * s: (t + 1) * s]))
            step_s.append(time.perf_counter() - t0)
            agent[:, t * s: (t + 1) * s] = out.agent_pcm.numpy()
            ids[:, t] = out.text_ids.numpy()
            for i, p in enumerate(out.text):
                if p is not None:
                    pieces[i].append((round(t / codec.frame_rate, 2), p))
            for i, p in enumerate(out.heard or ()):
                if p is not None:
                    heard[i].append((round(t / codec.frame_rate, 2), p))
        hears = chat.hears
    return Streamed(user, agent, pieces, ids, step_s, heard if hears else None)


# ---- a picture of a conversation ----------------------------------------------------------------------------------
def plot_conversation(user: np.ndarray, agent: np.ndarray, pieces: list[dict], sr: int, path: str | os.PathLike,
                      title: str | None = None, heard: list[dict] | None = None) -> None:
    """Both waveforms, one above the other, with the monologue pieces ({"t": s, "piece": str}) over time, and the
    model's transcript of the user (`heard`, same form) over the user's waveform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(user)) / sr
    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True)
    axes[0].plot(t, user, lw=0.4, color="tab:blue")
    axes[0].set_ylabel("user")
    for p in heard or ():
        axes[0].text(p["t"], 0.9, p["piece"], fontsize=7, rotation=60, va="bottom", color="tab:green",
                     transform=axes[0].get_xaxis_transform())
    axes[1].plot(t, agent, lw=0.4, color="tab:orange")
    axes[1].set_ylabel("agent")
    for p in pieces:
        axes[1].text(p["t"], 0.9, p["piece"], fontsize=7, rotation=60, va="bottom",
                     transform=axes[1].get_xaxis_transform())
    axes[1].set_xlabel("time (s)")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- chat checkpoints ----------------------------------------------------------------------------------------------
CHAT_FILE = "chat.json"  # beside config.json + model.safetensors: which codec and text tokenizer the model speaks
TOKENIZER_FILE = "tokenizer.model"


def save_chat_files(ckpt: str | os.PathLike, codec_dir: str | os.PathLike, tokenizer: str | os.PathLike,
                    options: ChatOptions | None = None) -> None:
    """Record the codec (by path, relative to the checkpoint when possible, and fingerprint) and the model's
    `ChatOptions`, and copy the text tokenizer into a chat checkpoint directory."""
    options = options or ChatOptions()
    ckpt, codec_dir = Path(ckpt), Path(codec_dir)
    codec = CodecFrames.load(codec_dir)
    text = MonologueText(tokenizer)
    atomic_write_bytes(ckpt / TOKENIZER_FILE, Path(tokenizer).read_bytes())
    try:
        rel = os.path.relpath(codec_dir.resolve(), ckpt.resolve())
    except ValueError:  # another drive
        rel = str(codec_dir.resolve())
    atomic_write_json(ckpt / CHAT_FILE, {"codec": rel, "codec_fingerprint": codec.fingerprint,
                                         "text_fingerprint": text.fingerprint,
                                         **dataclasses.asdict(options)}, indent=2)


def _chat_file(ckpt: Path) -> Path:
    # the chat files sit in the checkpoint directory, or in the training run directory above it
    base = next((d for d in (ckpt, ckpt.parent) if (d / CHAT_FILE).is_file()), None)
    if base is None:
        raise FileNotFoundError(f"{ckpt} is not a chat checkpoint: {CHAT_FILE} is missing (here and in its parent)")
    return base / CHAT_FILE


def chat_options(ckpt: str | os.PathLike) -> ChatOptions:
    """What a chat checkpoint was trained to hear and say (chat.json; files from before the options: defaults)."""
    f = _chat_file(Path(ckpt))
    try:
        info = json.loads(f.read_text())
        return ChatOptions(monologue=info.get("monologue", True), user_codebooks=info.get("user_codebooks", 0))
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{f} is malformed ({e}); remake the checkpoint") from e
    except ValueError as e:
        raise ValueError(f"{f}: {e}") from e


def load_chat(ckpt: str | os.PathLike, map_location: str = "cpu") -> tuple[RQTransformer, CodecFrames, MonologueText]:
    """A chat checkpoint -> (model, codec, text tokenizer), checking that the codec and tokenizer are the ones the
    model was trained with."""
    from multistream.checkpoint import load_lm

    ckpt = Path(ckpt)
    f = _chat_file(ckpt)
    base = f.parent
    try:
        info = json.loads(f.read_text())
        codec_dir = Path(info["codec"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{f} is malformed ({e}); remake the checkpoint") from e
    codec_dir = codec_dir if codec_dir.is_absolute() else (base / codec_dir)
    if not (codec_dir / "config.json").is_file():
        raise FileNotFoundError(f"the codec of {ckpt} is not at {codec_dir} (named in {f})")
    codec = CodecFrames.load(codec_dir, map_location=map_location)
    text = MonologueText(base / TOKENIZER_FILE)
    for what, have, want in (("codec", codec.fingerprint, info.get("codec_fingerprint")),
                             ("text tokenizer", text.fingerprint, info.get("text_fingerprint"))):
        if have != want:
            raise ValueError(f"{ckpt} was trained with {what} {want}, but {have} was found; use the matching one")
    model = load_lm(ckpt, map_location=map_location)
    return model.eval(), codec, text
