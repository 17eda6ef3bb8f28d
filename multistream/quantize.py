"""Int8 inference on CPU: dynamic quantization of every `nn.Linear` (int8 weights per output channel, activations
quantized on the fly by fbgemm).

Batch-1 decoding is bound by reading the weights once per frame (the temporal transformer once, the depth
transformer once per predicted codebook), so int8 weights cut the bytes per step 4x against fp32; on this 2-core
CPU the `small` preset's `Generator.step` drops from ~39 ms to ~22 ms with one thread (~38 -> ~21 ms with two;
`scripts/bench_engine.py`). bf16 weights help little here: the CPU's bf16 GEMV path is barely faster than fp32.

`torch.ao.quantization.quantize_dynamic` is deprecated upstream in favour of torchao but is what torch 2.11 ships;
it is wrapped here so that the backend can change without touching callers.
"""

from __future__ import annotations

import copy
import warnings

from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A quantized copy of `model` for CPU inference (the original is untouched). Call `.eval()` first."""
    if model.training:
        raise ValueError("quantize_int8 is for inference: call model.eval() first")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear: per_channel_dynamic_qconfig})
