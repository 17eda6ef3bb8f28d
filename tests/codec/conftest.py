"""Codec tests run single-threaded: on a shared 2-core machine OpenMP threads spin and slow everything down."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_codebooks(codec) -> None:
    """Fill every codebook with random entries: fresh ones are all zero until k-means initialises them in training,
    and tests of encode/decode need codes that differ."""
    for layer in [*codec.quantizer.rvq_first.layers, *codec.quantizer.rvq_rest.layers]:
        layer.embedding_sum.normal_()
