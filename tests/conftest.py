"""Shared pytest set-up.

- gpu-marked tests skip without CUDA.
- One torch thread: the tests use small models, where a second OpenMP thread buys little, and when the 2-core
  machine is busy with anything else the spinning OpenMP workers slow a test down by 10x or more (seen: the toy
  learning test took 15 s with one thread and 600 s with two next to a training job).
"""

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
