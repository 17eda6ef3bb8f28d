"""Inner monologue: word timings -> one text token per frame (12.5 Hz), with PAD and EPAD the Moshi way.

Each word's tokens are written from the frame where the word starts (frame = floor(start * frame_rate)), one token
per frame; frames without a token hold PAD; the frame just before a word's first token becomes EPAD when it would
otherwise be PAD (it announces "a word starts next frame"). When words come closer than their token count allows
(two words in one frame, or a long word running into the next), later tokens are shifted right instead of dropped
(moshi-finetune's `keep_and_shift`), so the stream always carries the full text in order. Tokens that would fall
past the last frame are cut; `monologue_tokens` reports how many.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def num_frames(duration_s: float, frame_rate: float) -> int:
    """Frames covering `duration_s` seconds (the last one may be partial)."""
    if duration_s < 0 or frame_rate <= 0:
        raise ValueError(f"need duration >= 0 and frame_rate > 0, got {duration_s}, {frame_rate}")
    return math.ceil(round(duration_s * frame_rate, 6))


def monologue_tokens(words: list[tuple[list[int], float, float]], n_frames: int, frame_rate: float, pad_id: int,
                     epad_id: int) -> tuple[np.ndarray, int]:
    """Per-frame text tokens `[T]` (int64) from `(token_ids, start_s, end_s)` per word; also the count of tokens
    that did not fit before `n_frames`. Words are taken in start order; empty token lists are skipped."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    if pad_id == epad_id:
        raise ValueError(f"pad_id and epad_id must differ, both are {pad_id}")
    for ids, s, e in words:
        if s < 0 or e < s:
            raise ValueError(f"bad word timing ({s}, {e}) for tokens {ids}")
        if pad_id in ids or epad_id in ids:
            raise ValueError(f"word tokens {ids} contain the pad/epad id ({pad_id}/{epad_id})")
    order = sorted((w for w in words if w[0]), key=lambda w: w[1])
    out = np.full(n_frames, pad_id, dtype=np.int64)
    pending: deque[int] = deque()
    i = 0
    for t in range(n_frames):
        # every word starting at or before this frame queues its tokens (floor(start * rate) <= t)
        while i < len(order) and order[i][1] * frame_rate < t + 1:
            pending.extend(order[i][0])
            i += 1
        if pending:
            if t > 0 and out[t - 1] == pad_id:
                out[t - 1] = epad_id
            out[t] = pending.popleft()
    dropped = len(pending) + sum(len(w[0]) for w in order[i:])
    return out, dropped
