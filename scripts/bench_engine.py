"""usage: python scripts/bench_engine.py [--presets tiny small] [--steps 100] [--context-frame 2000]
                                       [--out runs/bench_engine.json]

Times the engine on the current device at batch 1: the median wall (and process CPU) time of one `Generator.step`
(one 80 ms frame of all streams) and its ratio to the frame duration, with fp32, bf16 and (CPU) int8 weights; and
training throughput under bf16 autocast (target codebook tokens per second of forward + backward + optimizer step).
Long conversations: the fp32 step time around frame 10 and around `--context-frame` (past the `small` preset's
500-frame context, so its KV ring is full and wraps), and their ratio, which a flat-cost cache keeps near 1.
Prints a table, writes JSON.
Streams: Moshi's 17 codebooks (text, agent audio x8, user audio x8; acoustic delay 1).
"""

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from multistream.cli import nonneg_int, output_file, positive_int
from multistream.generate import Generator, Sampling
from multistream.lm import RQTransformer
from multistream.loss import lm_loss
from multistream.presets import PRESETS, moshi_streams
from multistream.quantize import quantize_int8

FRAME_RATE = 12.5  # Hz: the Mimi frame clock


def bench_step(model: RQTransformer, steps: int, warmup: int, device) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each Generator.step (CPU time shows what the step costs when the machine is
    shared with other jobs: wall time then includes waiting for a core)."""
    ss = model.streams
    user = ss["audio.user"]
    times, cpu = [], []
    with Generator(model, batch_size=1, sampling=Sampling(temperature=0.8, top_k=250), seed=0) as gen:
        for i in range(warmup + steps):
            frame = {"audio.user": torch.randint(0, user.vocab_size, (1, user.num_codebooks), device=device)}
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            gen.step(frame)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return times, cpu


def bench_context(model: RQTransformer, late: int, n: int, device) -> tuple[float, float]:
    """Median wall ms of steps at frames 10.. and at frames `late`.. of a conversation. Two copies of the model run
    side by side, one advanced to frame `late` first; their timed steps alternate, so a change in the load of a
    shared machine hits both alike and the ratio stays meaningful."""
    ss = model.streams
    user = ss["audio.user"]
    old = copy.deepcopy(model)

    def frame():
        return {"audio.user": torch.randint(0, user.vocab_size, (1, user.num_codebooks), device=device)}

    def timed(gen: Generator) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.step(frame())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    early_t, late_t = [], []
    samp = Sampling(temperature=0.8, top_k=250)
    with Generator(old, batch_size=1, sampling=samp, seed=0) as g_late, \
            Generator(model, batch_size=1, sampling=samp, seed=0) as g_early:
        for _ in range(late):
            g_late.step(frame())
        for _ in range(10):
            g_early.step(frame())
        for _ in range(n):
            early_t.append(timed(g_early))
            late_t.append(timed(g_late))
    return statistics.median(early_t) * 1000, statistics.median(late_t) * 1000


def bench_train(model: RQTransformer, batch: int, frames: int, steps: int, device) -> float:
    ss = model.streams
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    data = {s.name: torch.randint(0, s.vocab_size, (batch, s.num_codebooks, frames), device=device) for s in ss}
    n_tok, elapsed = 0, 0.0
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            lo = lm_loss(model(data), ss)
        lo.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # first step warms up
            elapsed += time.perf_counter() - t0
            n_tok += lo.tokens
    model.eval()
    return n_tok / elapsed


def variant(model: RQTransformer, label: str) -> RQTransformer:
    if label == "fp32":
        return model
    if label == "bf16":  # weights cast once (autocast would re-cast them at every call)
        return copy.deepcopy(model).to(torch.bfloat16)
    return quantize_int8(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    ap.add_argument("--steps", type=positive_int, default=100, help="timed Generator steps")
    ap.add_argument("--warmup", type=nonneg_int, default=10)
    ap.add_argument("--context-frame", type=nonneg_int, default=2000,
                    help="frame at which the long-conversation step time is measured (0 = skip)")
    ap.add_argument("--context-steps", type=positive_int, default=50,
                    help="timed steps around frame 10 and the late frame")
    ap.add_argument("--train-steps", type=positive_int, default=5)
    ap.add_argument("--train-batch", type=positive_int, default=4)
    ap.add_argument("--train-frames", type=positive_int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", type=output_file, default="runs/bench_engine.json")
    args = ap.parse_args()
    for name in ("steps", "train_steps", "train_batch", "train_frames", "context_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.context_frame < 0 or args.threads < 0:
        ap.error("--warmup, --context-frame and --threads must be >= 0")
    if args.context_frame and args.context_frame < 10 + args.context_steps:
        ap.error(f"--context-frame must be 0 or >= {10 + args.context_steps} (after the early window)")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    frame_ms = 1000.0 / FRAME_RATE
    rows = []
    for name in args.presets:
        streams = moshi_streams(text_vocab=8000 if name == "small" else 1000)
        torch.manual_seed(0)
        model = RQTransformer(PRESETS[name](streams)).to(device).eval()
        row = {"preset": name, "params_M": model.num_parameters() / 1e6, "codebooks": streams.num_codebooks}
        row["train_tokens_per_s"] = bench_train(model, args.train_batch, args.train_frames, args.train_steps, device)
        for label in ["fp32", "bf16"] + (["int8"] if device.type == "cpu" else []):
            ts, cpu = bench_step(variant(model, label), args.steps, args.warmup, device)
            med = statistics.median(ts) * 1000
            row[f"step_ms_{label}"] = med
            row[f"step_ratio_{label}"] = med / frame_ms
            row[f"step_cpu_ms_{label}"] = statistics.median(cpu) * 1000
        if args.context_frame:
            early, late = bench_context(model, args.context_frame, args.context_steps, device)
            row.update(context=model.cfg.temporal.context, ctx_ms_frame10=early,
                       ctx_ms_late=late, late_frame=args.context_frame, late_over_early=late / early)
        rows.append(row)
        del model
    print(f"device: {device} ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()});"
          f" frame = {frame_ms:.0f} ms; load average at start {load:.2f} on {os.cpu_count()} CPUs")
    labels = [k[len("step_ms_"):] for k in rows[0] if k.startswith("step_ms_")]
    print(f"{'preset':8} {'params':>8} " + " ".join(f"{'step ' + lb:>10} {'/frame':>7} {'(cpu)':>8}" for lb in labels)
          + f" {'train tok/s':>12}")
    for r in rows:
        cells = " ".join(f"{r['step_ms_' + lb]:8.2f}ms {r['step_ratio_' + lb]:6.1%} {r['step_cpu_ms_' + lb]:6.2f}ms"
                         for lb in labels)
        print(f"{r['preset']:8} {r['params_M']:7.1f}M {cells} {r['train_tokens_per_s']:12.0f}")
    if args.context_frame:
        print(f"\nlong conversation (fp32, median of {args.context_steps} alternating steps of each):")
        late_hdr = f"frame {args.context_frame}"
        print(f"{'preset':8} {'context':>8} {'frame 10':>10} {late_hdr:>11} {'late/early':>11}")
        for r in rows:
            ctx = "none" if r["context"] is None else str(r["context"])
            print(f"{r['preset']:8} {ctx:>8} {r['ctx_ms_frame10']:8.2f}ms {r['ctx_ms_late']:9.2f}ms "
                  f"{r['late_over_early']:10.3f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "device": str(device),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "frame_ms": frame_ms,
                "load_avg_1min": load,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
