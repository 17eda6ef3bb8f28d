"""The sampling options of the chat scripts (chat.py, serve.py, eval_chat.py, demo.py), in one place. Importing
this module does not import torch, so the scripts answer --help and argument errors fast."""

from __future__ import annotations

import argparse


def chat_sampling(text_temperature: float = 0.7, text_top_k: int = 25, temperature: float = 0.8,
                  top_k: int = 250) -> dict:
    """Per-stream sampling of a chat session; the defaults are Moshi's (text 0.7 / top-25, audio 0.8 / top-250)."""
    from multistream.generate import Sampling
    from speech.streams import AGENT, TEXT

    return {TEXT: Sampling(temperature=text_temperature, top_k=text_top_k),
            AGENT: Sampling(temperature=temperature, top_k=top_k)}


def add_sampling_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=250, help="audio sampling (Moshi: 0.8, 250)")
    ap.add_argument("--text-temperature", type=float, default=0.7)
    ap.add_argument("--text-top-k", type=int, default=25, help="monologue sampling (Moshi: 0.7, 25)")


def sampling_from_args(args: argparse.Namespace) -> dict:
    return chat_sampling(args.text_temperature, args.text_top_k, args.temperature, args.top_k)
