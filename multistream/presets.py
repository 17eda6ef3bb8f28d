"""Model presets as functions: `tiny` (tests), `small` (CPU demos), `moshi_7b` (Moshi's published shape).

A preset fixes the transformer sizes; the streams come from the application (speech, robot, a toy task).
`moshi_streams()` builds Moshi's 17 codebooks: inner-monologue text, agent audio (8) and user audio (8) with the
acoustic delay of one frame on codebooks 1..7.
"""

from __future__ import annotations

from multistream.lm import LMConfig
from multistream.streams import StreamSet, StreamSpec
from multistream.transformer import TransformerConfig


def moshi_streams(text_vocab: int = 32000, audio_vocab: int = 2048, num_q: int = 8, acoustic_delay: int = 1,
                  text_pad_id: int | None = None, semantic_weight: float = 100.0) -> StreamSet:
    delays = (0,) + (acoustic_delay,) * (num_q - 1)
    cb_w = (semantic_weight,) + (1.0,) * (num_q - 1)
    return StreamSet((
        StreamSpec("text", vocab_size=text_vocab, predicted=True, pad_id=text_pad_id,
                   pad_weight=0.5 if text_pad_id is not None else 1.0),
        StreamSpec("audio.agent", vocab_size=audio_vocab, num_codebooks=num_q, delays=delays, predicted=True,
                   codebook_weights=cb_w),
        StreamSpec("audio.user", vocab_size=audio_vocab, num_codebooks=num_q, delays=delays, predicted=False),
    ))


def _depth_steps(streams: StreamSet) -> int:
    return streams.num_predicted - 1


def tiny(streams: StreamSet) -> LMConfig:
    return LMConfig(
        streams=streams,
        temporal=TransformerConfig(d_model=64, num_layers=2, num_heads=4),
        depth=TransformerConfig(d_model=64, num_layers=1, num_heads=4),
    )


def base(streams: StreamSet) -> LMConfig:
    """Between tiny and small: what two CPU cores train in a few hours (the committed chat model's size). The
    temporal context (10 s) equals the training window, so a long conversation keeps a flat step cost."""
    return LMConfig(
        streams=streams,
        temporal=TransformerConfig(d_model=256, num_layers=4, num_heads=4, context=125),
        depth=TransformerConfig(d_model=128, num_layers=2, num_heads=4),
    )


def small(streams: StreamSet | None = None) -> LMConfig:
    streams = streams or moshi_streams(text_vocab=8000)
    return LMConfig(
        streams=streams,
        temporal=TransformerConfig(d_model=512, num_layers=6, num_heads=8, context=500),
        depth=TransformerConfig(d_model=256, num_layers=4, num_heads=4),
    )


def moshi_7b(streams: StreamSet | None = None) -> LMConfig:
    """Moshi 7B: temporal d=4096 x 32 layers x 32 heads (context 3000), depth d=1024 x 6 x 16 with one weight set
    per depth step, SwiGLU with hidden 4.125 x d. Build it on the meta device to count parameters (~7.69 B)."""
    streams = streams or moshi_streams()
    return LMConfig(
        streams=streams,
        temporal=TransformerConfig(d_model=4096, num_layers=32, num_heads=32, ffn_mult=4.125, context=3000),
        depth=TransformerConfig(d_model=1024, num_layers=6, num_heads=16, ffn_mult=4.125, context=8,
                                weights_per_step=_depth_steps(streams)),
    )


PRESETS = {"tiny": tiny, "base": base, "small": small, "moshi_7b": moshi_7b}
