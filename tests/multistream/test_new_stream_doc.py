"""Runs the code block of docs/streams.md, so the documented way to add a stream keeps working."""

import re
from pathlib import Path

import torch

from multistream.generate import Generator
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import tiny
from multistream.tokenizer import Tokenizer
from multistream.toy import toy_batch, toy_streams

DOC = Path(__file__).resolve().parents[2] / "docs" / "streams.md"


def load_example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert len(code.strip().splitlines()) < 50
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)
    return ns


def test_documented_stream_plugs_into_model_and_generator():
    ns = load_example()
    tok, with_force = ns["force_tok"], ns["with_force"]
    assert isinstance(tok, Tokenizer)
    forces = torch.randn(2, 16, 3) * 10
    codes = tok.encode(forces)
    assert codes.shape == (2, 3, 16)
    err = (tok.decode(codes) - forces).abs()
    assert (err <= 0.1 * forces.abs() + 0.05).all()  # mu-law: error grows with the magnitude, fine near zero

    streams = with_force(toy_streams())
    torch.manual_seed(0)
    model = RQTransformer(tiny(streams))
    batch = dict(toy_batch(2, 16, seed=0), **{"observation.force": codes})
    lo = lm_loss(model(batch), streams)
    lo.total.backward()
    assert model.embs[-1].weight.grad.abs().sum() > 0  # the new stream's embeddings take part
    model.eval()
    with Generator(model, batch_size=2, seed=0) as gen:
        outs = [gen.step({"src": batch["src"][:, :, t], "observation.force": codes[:, :, t]}) for t in range(4)]
    assert all(o.tokens["out"].shape == (2, 2) for o in outs)
