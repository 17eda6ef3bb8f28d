"""Streaming speed of the codec: time to encode / decode one 80 ms frame, as a fraction of real time.

usage: python scripts/bench_codec.py [--presets tiny mimi] [--ckpt-tiny checkpoints/codec_tiny] [--frames 40]
           [--ckpts DIR ...] [--threads 1] [--out checkpoints/codec_tiny/bench]

Inside `with codec.streaming(1):` each step encodes 1920 new samples into one frame of codes, or decodes one
frame of codes into 1920 samples (state carried between steps, as in the live chat loop). Ratio = seconds per
frame / 0.08 s: below 1 is faster than real time. Weights are the trained checkpoint for tiny when given, random
for the other presets (speed does not depend on the values); --ckpts adds trained checkpoints of any preset, each
named by its directory. Writes OUT.json and OUT.md.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from multistream.cli import positive_int, user_errors_exit
from speech.codec.config import preset
from speech.codec.model import MimiCodec, load_codec

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--presets", nargs="+", default=["tiny", "mimi"])
p.add_argument("--ckpt-tiny", default="checkpoints/codec_tiny")
p.add_argument("--frames", type=positive_int, default=40, help="timed frames per direction (after 5 warm-up frames)")
p.add_argument("--ckpts", nargs="*", default=[], help="more trained codec checkpoints to time (any preset)")
p.add_argument("--threads", type=positive_int, default=1)
p.add_argument("--device", default="cpu")
p.add_argument("--out", default="checkpoints/codec_tiny/bench")
args = p.parse_args()
user_errors_exit("bench_codec.py")  # a bad --ckpts path ends in a one-line error, not a traceback

torch.set_num_threads(args.threads)
dev = torch.device(args.device)
rows = {}
jobs = [(name, None) for name in args.presets] + [(Path(c).name if Path(c).name != "checkpoint" else
                                                     Path(c).parent.name, c) for c in args.ckpts]
for name, ckpt in jobs:
    if ckpt is not None:
        codec, source = load_codec(ckpt), f"checkpoint {ckpt}"
    elif name == "tiny" and args.ckpt_tiny and Path(args.ckpt_tiny, "config.json").is_file():
        codec, source = load_codec(args.ckpt_tiny), f"checkpoint {args.ckpt_tiny}"
    else:
        torch.manual_seed(0)
        codec, source = MimiCodec(preset(name)).eval(), "random weights"
    codec = codec.to(dev)
    fs, warm = codec.frame_size, 5
    n = warm + args.frames
    audio = (torch.randn(1, 1, n * fs, device=dev) * 0.1)
    enc_t, dec_t = [], []
    with torch.inference_mode(), codec.streaming(1):
        codes = []
        for i in range(n):
            t = time.perf_counter()
            codes.append(codec.encode(audio[..., i * fs:(i + 1) * fs]))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            enc_t.append(time.perf_counter() - t)
        for c in codes:
            t = time.perf_counter()
            codec.decode(c)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dec_t.append(time.perf_counter() - t)
    frame_s = 1 / codec.frame_rate
    enc, dec = np.array(enc_t[warm:]), np.array(dec_t[warm:])
    rows[name] = {
        "weights": source, "params_M": sum(q.numel() for q in codec.parameters()) / 1e6,
        "encode_ms_per_frame": 1000 * enc.mean(), "decode_ms_per_frame": 1000 * dec.mean(),
        "encode_rt_ratio": enc.mean() / frame_s, "decode_rt_ratio": dec.mean() / frame_s,
        "encode_rt_ratio_p95": float(np.percentile(enc, 95) / frame_s),
        "decode_rt_ratio_p95": float(np.percentile(dec, 95) / frame_s),
    }
    print(name, json.dumps(rows[name]))

load = os.getloadavg()
device_desc = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
               else f"CPU {platform.processor() or platform.machine()}, {args.threads} thread(s), "
                    f"{os.cpu_count()} cores, load average {load[0]:.1f} (shared machine)")
result = {"device": device_desc, "frames": args.frames, "frame_ms": 80, "presets": rows}
out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
Path(f"{out}.json").write_text(json.dumps(result, indent=2))
lines = [f"# Codec streaming speed ({device_desc})", "",
         f"One 80 ms frame per call inside `streaming(1)`, mean over {args.frames} frames after 5 warm-up frames; "
         "ratio = compute time / 80 ms (< 1 is faster than real time).", "",
         "| preset | params (M) | weights | encode ms/frame | decode ms/frame | encode RT ratio | decode RT ratio |"
         " enc p95 | dec p95 |", "|---|---|---|---|---|---|---|---|---|"]
for name, r in rows.items():
    lines.append(f"| {name} | {r['params_M']:.1f} | {r['weights']} | {r['encode_ms_per_frame']:.1f} | "
                 f"{r['decode_ms_per_frame']:.1f} | {r['encode_rt_ratio']:.3f} | {r['decode_rt_ratio']:.3f} | "
                 f"{r['encode_rt_ratio_p95']:.3f} | {r['decode_rt_ratio_p95']:.3f} |")
Path(f"{out}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
