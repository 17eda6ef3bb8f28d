"""Dialogue directory (moshi-finetune layout, `scripts/make_dialogues.py`) -> episode store of chat streams.

Per dialogue, one episode of T frames (12.5 Hz): `text` [T] (the agent's inner monologue from its word alignments,
PAD/EPAD), `audio.agent` [T, K] (channel 0 through the codec), `audio.user` [T, K] (channel 1 through the codec),
`text.user` [T] (the user's words, each from the frame where the word ends: what the model has heard; training uses
it only when the model has that stream).
The store's attrs record the codec and text tokenizer that made the codes (`multistream.data.TOKENIZED_ATTR`), so
the training binding refuses a different codec or tokenizer. Resumable: episodes are whole dialogues appended
atomically, and a rerun skips the dialogues already stored (by path). `codes_from`: another store made with the same
codec, whose audio codes are copied for the dialogues it holds instead of encoding them again (the codec is the slow
part; e.g. after adding dialogues or a text stream).

Dimension legend: T frames, K codebooks, N samples.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from multistream.data import TOKENIZED_ATTR, tokenizer_record
from multistream.store import EpisodeStore
from speech.corpus import SPLITS
from speech.dataset import AGENT_LABEL, USER_LABEL, read_item, read_manifest, speaker_words
from speech.duplex import AGENT_CH, USER_CH
from speech.monologue import num_frames
from speech.streams import AGENT, TEXT, USER, USER_TEXT, CodecFrames, MonologueText


def dialogue_arrays(path: str | os.PathLike, codec: CodecFrames, text: MonologueText,
                    codes: dict[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """One dialogue's store rows and metadata; `codes` ({AGENT: [T, K], USER: [T, K]}, from a store made with the same
    codec) skips the codec."""
    audio, sr, meta = read_item(path)
    if sr != codec.sample_rate:
        raise ValueError(f"{path}: sample rate {sr} Hz, the codec takes {codec.sample_rate} Hz")
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"{path}: expected stereo audio (agent, user), got shape {audio.shape}")
    t = num_frames(audio.shape[1] / sr, codec.frame_rate)
    n = t * codec.frame_size
    x = np.zeros((2, n), dtype=np.float32)
    x[:, : audio.shape[1]] = audio[:, :n]
    if codes is None:
        with torch.no_grad():
            c = codec.encode(torch.from_numpy(x)[:, None])  # [2, K, T]
        codes = {AGENT: c[AGENT_CH].T.numpy(), USER: c[USER_CH].T.numpy()}  # [T, K]
    elif any(codes[k].shape != (t, codec.num_codebooks) for k in (AGENT, USER)):
        raise ValueError(f"{path}: reused codes have shapes {[codes[k].shape for k in (AGENT, USER)]}, the dialogue "
                         f"needs {(t, codec.num_codebooks)}")
    words = speaker_words(meta, AGENT_LABEL)
    mono, dropped = text.tok.frames(words, t)
    heard, _ = text.tok.frames([(w, e, e) for w, _s, e in speaker_words(meta, USER_LABEL)], t)
    arrays = {
        TEXT: mono.astype(np.int16),
        AGENT: codes[AGENT].astype(np.int16),  # [T, K]
        USER: codes[USER].astype(np.int16),
        USER_TEXT: heard.astype(np.int16),
    }
    info = {"path": str(path), "split": meta.get("split"), "duration": meta.get("duration"), "frames": t,
            "text_tokens_dropped": int(dropped), "dialogue_id": meta.get("dialogue_id")}
    return arrays, info


def tokenize_dialogues(dialogues: str | os.PathLike, codec: CodecFrames, text: MonologueText,
                       out: str | os.PathLike, splits: tuple[str, ...] = SPLITS, codec_path: str = "",
                       progress: bool = True, codes_from: str | os.PathLike | None = None) -> EpisodeStore:
    """Create or resume the store at `out` with every dialogue of `splits`; returns the store."""
    from tqdm import tqdm

    dialogues, out = Path(dialogues), Path(out)
    records = {TEXT: tokenizer_record(text), AGENT: tokenizer_record(codec), USER: tokenizer_record(codec),
               USER_TEXT: tokenizer_record(text)}
    reuse: dict[str, int] = {}
    if codes_from is not None:
        src = EpisodeStore.open(codes_from)
        theirs = src.attrs.get(TOKENIZED_ATTR, {})
        if any(theirs.get(k) != records[k] for k in (AGENT, USER)):
            raise ValueError(f"{codes_from} holds codes of {theirs.get(AGENT)}, not of this codec {records[AGENT]}")
        reuse = {m["path"]: i for i, m in enumerate(src.episode_metas())}
    if out.exists():
        store = EpisodeStore.open(out, mode="a")
        have = store.attrs.get(TOKENIZED_ATTR)
        if have != records:
            raise ValueError(f"{out} was tokenized with {have}, not {records}: use another --out for another codec "
                             "or text tokenizer")
    else:
        store = EpisodeStore.create(out, fps=codec.frame_rate, attrs={
            TOKENIZED_ATTR: records, "dialogues": str(dialogues.resolve()), "codec": codec_path,
            "text_pad_id": text.pad_id, "text_epad_id": text.epad_id})
    done = {m["path"] for m in store.episode_metas()}
    rows = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
        manifest = dialogues / f"{split}.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(f"no manifest {manifest} (make the dialogues with scripts/make_dialogues.py)")
        rows += read_manifest(manifest)
    todo = [r for r in rows if r["path"] not in done]
    for row in tqdm(todo, desc="tokenize", disable=not progress):
        i = reuse.get(row["path"])
        codes = None if i is None else src.episode(i, keys=[AGENT, USER])
        arrays, info = dialogue_arrays(row["path"], codec, text, codes)
        store.append_episode(arrays, info)
    return store
