"""Shared fixtures: a tiny real dialogue directory (TTS-rendered) and an untrained tiny codec checkpoint."""

import shutil

import pytest
import torch

from multistream.checkpoint import save_checkpoint
from speech.codec.config import tiny as tiny_codec
from speech.codec.model import MimiCodec
from speech.streams import CodecFrames

HAVE_TTS = shutil.which("espeak-ng") is not None and shutil.which("text2wave") is not None


@pytest.fixture(scope="session")
def dialogues(tmp_path_factory):
    if not HAVE_TTS:
        pytest.skip("needs the Debian TTS packages (scripts/setup.sh installs them)")
    from speech.corpus import corpus_text
    from speech.dataset import make_item, write_manifest
    from speech.text import TextTokenizer

    d = tmp_path_factory.mktemp("dialogues")
    rows = [make_item(d, "train", i) for i in range(2)]
    write_manifest(d / "train.jsonl", rows)
    TextTokenizer.train(corpus_text("train", 200, 0), 64, d / "tokenizer.model")
    return d


def make_codec(path, seed: int = 0) -> CodecFrames:
    torch.manual_seed(seed)
    codec = MimiCodec(tiny_codec()).eval()
    save_checkpoint(path, codec, codec.cfg)
    return CodecFrames.load(path)
