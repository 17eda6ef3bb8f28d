"""Training batches of the chat model: dialogue windows (through the store-to-token binding) and text-only windows
(Moshi's text batches: the monologue stream carries dense written text, the audio streams carry ZERO_ID: no input
and no target), and the deterministic mix of the two.

Every batch function is `fn(step, micro, rank, world) -> batch`, a pure function of its arguments (exact resume).

Dimension legend: B batch, K codebooks, T frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from multistream.data import StoreBinding, StreamBinding, batch_seed
from multistream.store import EpisodeStore
from multistream.streams import ZERO_ID, StreamSet, keep_codebooks
from speech.chat import ChatOptions
from speech.streams import AGENT, TEXT, USER, USER_TEXT, CodecFrames, MonologueText

BatchFn = Callable[[int, int, int, int], dict[str, torch.Tensor]]


def dialogue_batch_fn(store: EpisodeStore, streams: StreamSet, codec: CodecFrames, text: MonologueText,
                      window: int, batch_size: int, split: str = "train", seed: int = 0,
                      options: ChatOptions | None = None) -> BatchFn:
    """Random windows of the dialogues of `split` (by episode metadata), through the chat streams' binding (which
    refuses a store made with another codec or text tokenizer).

    `options` (the model's `ChatOptions`, as its sessions apply them): `monologue=False` is Moshi's ablation, the
    windows carry no inner monologue (the text stream is ZERO_ID: no input and no target), so the model learns to
    answer in audio alone while the text-only batches still train the text stream; `user_codebooks=N` leaves only
    the first N codebooks of the user's audio (the others ZERO_ID: the model does not hear them)."""
    options = options or ChatOptions()
    if options.user_codebooks > streams[USER].num_codebooks:
        raise ValueError(f"user_codebooks={options.user_codebooks}, but the user stream has "
                         f"{streams[USER].num_codebooks} codebooks")
    eps = [i for i, m in enumerate(store.episode_metas()) if m.get("split") == split]
    if not eps:
        raise ValueError(f"{store.path} has no {split!r} dialogues")
    window = min(window, max(store.episode_length(i) for i in eps))
    bound = [StreamBinding(streams[TEXT], tokenizer=text), StreamBinding(streams[AGENT], tokenizer=codec),
             StreamBinding(streams[USER], tokenizer=codec)]
    if USER_TEXT in streams:  # the user transcript stream, when the model has one
        bound.append(StreamBinding(streams[USER_TEXT], tokenizer=text))
    binding = StoreBinding(streams, codec.frame_rate, bound)
    fn = binding.batch_fn(store, window=window, batch_size=batch_size, seed=seed,
                          episodes=[i for i in eps if store.episode_length(i) >= window])
    if options == ChatOptions():
        return fn

    def with_options(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        batch = dict(fn(step, micro, rank, world))
        if not options.monologue:
            batch[TEXT] = torch.full_like(batch[TEXT], ZERO_ID)
        batch[USER] = keep_codebooks(batch[USER], options.user_codebooks)  # [B, K, T]: codebooks from N on
        return batch

    return with_options


def text_batch_fn(sentences: list[str], text: MonologueText, streams: StreamSet, window: int, batch_size: int,
                  seed: int = 0) -> BatchFn:
    """Windows of dense text (sentences joined) in the text stream; the other streams ZERO_ID (no input, no
    target)."""
    ids: list[int] = []
    for s in sentences:
        ids += text.tok.encode_text(s)
    stream = torch.tensor(ids, dtype=torch.long)
    if len(stream) <= window:
        raise ValueError(f"{len(stream)} text tokens do not fill a window of {window} frames")
    k = streams[AGENT].num_codebooks

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(batch_seed(seed, step, micro, rank, 7))
        starts = torch.randint(0, len(stream) - window, (batch_size,), generator=g)
        txt = torch.stack([stream[s : s + window] for s in starts.tolist()])[:, None]  # [B, 1, T]
        none = torch.full((batch_size, k, window), ZERO_ID, dtype=torch.long)
        batch = {TEXT: txt, AGENT: none, USER: none.clone()}
        if USER_TEXT in streams:
            batch[USER_TEXT] = torch.full_like(txt, ZERO_ID)
        return batch

    return fn


def mixed_batch_fn(dialogue_fn: BatchFn, text_fn: BatchFn, text_share: float, seed: int = 0) -> BatchFn:
    """Each micro-batch is text-only with probability `text_share` (Moshi: half), drawn from (seed, step, micro)."""
    if not 0.0 <= text_share <= 1.0:
        raise ValueError(f"text_share must be in [0, 1], got {text_share}")

    def fn(step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        u = np.random.default_rng(batch_seed(seed, step, micro, rank, 11)).random()
        return (text_fn if u < text_share else dialogue_fn)(step, micro, rank, world)

    return fn
