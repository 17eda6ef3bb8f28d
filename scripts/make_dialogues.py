"""Make a synthetic duplex dialogue dataset (moshi-finetune layout) with a trained text tokenizer.

usage: python scripts/make_dialogues.py --hours 1 --workers 2 --out data/dialogues [--seed 0]
           [--valid-share 0.05] [--test-share 0.05] [--vocab-size 1024] [--absolute-paths]

Each split gets its share of the hours (train = the rest); dialogues are made in index order until the split's
duration reaches its target, so the result depends only on --hours, --seed and the shares (not on --workers).
Finished files are skipped on a rerun (resumable; a truncated or unreadable wav is made again). Writes
DIR/<split>.jsonl manifests, DIR/tokenizer.model, DIR/request.json (the settings of the dataset) and DIR/meta.json
(counts, durations, CPU time, speech-hours per CPU-hour). A rerun with another --seed or other shares is refused,
and so is a smaller --hours (it would delete finished dialogues) unless --overwrite says to delete them.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from speech.corpus import corpus_text  # noqa: E402
from speech.dataset import DatasetConfig, item_path, make_item, write_json, write_manifest  # noqa: E402
from speech.text import TextTokenizer  # noqa: E402

_OUT: Path | None = None
_CONFIG: DatasetConfig | None = None


def _init_worker(out: Path, config: DatasetConfig) -> None:
    global _OUT, _CONFIG
    import torch

    torch.set_num_threads(1)
    _OUT, _CONFIG = out, config


def _make(job: tuple[str, int]) -> dict:
    split, index = job
    return make_item(_OUT, split, index, _CONFIG)


def check_request(args: argparse.Namespace) -> None:
    """Refuse an --out that is a file, another dataset's settings, or a smaller --hours without --overwrite;
    then record this run's settings in OUT/request.json (before any dialogue is made, so a killed run counts)."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory")
    want = {"seed": args.seed, "valid_share": args.valid_share, "test_share": args.test_share, "hours": args.hours}
    have = None
    for name in ("request.json", "meta.json"):  # meta.json: a dataset made before request.json existed
        f = out / name
        if f.is_file():
            try:
                raw = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{f} is not valid JSON ({e}); fix or delete it") from e
            have = raw if name == "request.json" else {"seed": raw.get("seed"), "hours": raw.get("hours_requested")}
            break
    if have is not None:
        diffs = [f"{k}: dataset {have[k]!r}, now {want[k]!r}" for k in ("seed", "valid_share", "test_share")
                 if k in have and have[k] != want[k]]
        if diffs:
            raise ValueError(f"{out} holds a dataset made with other settings ({'; '.join(diffs)}); use another --out")
        if isinstance(have.get("hours"), int | float) and have["hours"] > args.hours and not args.overwrite:
            raise ValueError(f"{out} holds up to {have['hours']} h of dialogues; --hours {args.hours} would delete the "
                             f"finished ones beyond it. Pass --hours {have['hours']} to resume, or --overwrite to "
                             "delete them")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "request.json", want)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, required=True, help="total hours of dialogue to make (all splits)")
    p.add_argument("--out", type=Path, required=True, help="dataset folder")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="processes (0: in-process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-share", type=float, default=0.05)
    p.add_argument("--test-share", type=float, default=0.05)
    p.add_argument("--vocab-size", type=int, default=1024, help="sentencepiece vocabulary (upper bound)")
    p.add_argument("--tokenizer-dialogues", type=int, default=20000, help="train-split dialogues of tokenizer text")
    p.add_argument("--absolute-paths", action="store_true", help="absolute wav paths in the manifests")
    p.add_argument("--overwrite", action="store_true", help="allow a smaller --hours to delete finished dialogues")
    args = p.parse_args()
    if not (math.isfinite(args.hours) and args.hours > 0):
        p.error(f"--hours must be a finite number > 0, got {args.hours}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    shares_ok = all(math.isfinite(s) and s >= 0 for s in (args.valid_share, args.test_share))
    if not shares_ok or args.valid_share + args.test_share >= 1:
        p.error(f"bad split shares: valid {args.valid_share}, test {args.test_share}")
    if args.vocab_size < 8 or args.tokenizer_dialogues < 1:
        p.error(f"--vocab-size must be >= 8 and --tokenizer-dialogues >= 1, got {args.vocab_size}, "
                f"{args.tokenizer_dialogues}")
    try:
        check_request(args)
    except ValueError as e:
        sys.exit(f"make_dialogues.py: error: {e}")

    config = DatasetConfig(seed=args.seed)
    out: Path = args.out
    t0 = time.time()

    tok = TextTokenizer.train(
        corpus_text("train", args.tokenizer_dialogues, args.seed), args.vocab_size, out / "tokenizer.model"
    )
    print(f"text tokenizer: {tok.cardinality} pieces, pad {tok.pad_id}, epad {tok.epad_id} -> {out}/tokenizer.model")

    targets = {"train": 1.0 - args.valid_share - args.test_share, "valid": args.valid_share, "test": args.test_share}
    pool = mp.get_context("spawn").Pool(args.workers, _init_worker, (out, config)) if args.workers else None
    _init_worker(out, config)
    summary = {}
    for split, share in targets.items():
        target_s = args.hours * 3600.0 * share
        if target_s <= 0:
            continue
        rows, total, index, mean = [], 0.0, 0, 25.0
        bar = tqdm(total=round(target_s), unit="s", desc=f"{split} (audio seconds)", dynamic_ncols=True)
        while total < target_s:
            # a batch sized to the remaining time; results are consumed in index order, so the kept prefix is fixed
            n = max(1, args.workers) * 2
            n = int(min(max(n, 1), max(1, (target_s - total) / mean * 1.1 + 1), 8 * max(1, args.workers)))
            jobs = [(split, i) for i in range(index, index + n)]
            results = pool.map(_make, jobs, chunksize=1) if pool else [_make(j) for j in jobs]
            index += n
            for row in results:
                if total >= target_s:  # past the target: made only because of batching, not part of the dataset
                    for suffix in (".wav", ".json"):
                        (out / row["path"]).with_suffix(suffix).unlink(missing_ok=True)
                    continue
                rows.append(row)
                total += row["duration"]
                bar.update(round(row["duration"]))
            mean = total / max(1, len(rows))
        bar.close()
        # items beyond the prefix left by an earlier, larger run are not part of this dataset either
        k = len(rows)
        while (out / item_path(split, args.seed, k)).with_suffix(".json").exists():
            for suffix in (".wav", ".json"):
                (out / item_path(split, args.seed, k)).with_suffix(suffix).unlink(missing_ok=True)
            k += 1
        write_manifest(out / f"{split}.jsonl", rows, absolute=args.absolute_paths)
        summary[split] = {"dialogues": len(rows), "seconds": round(total, 2)}
        print(f"{split}: {len(rows)} dialogues, {total / 3600:.3f} h -> {out / f'{split}.jsonl'}")
    if pool:
        pool.close()
        pool.join()

    wall = time.time() - t0
    ru_self, ru_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime
    hours = sum(s["seconds"] for s in summary.values()) / 3600
    meta = {
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "hours_requested": args.hours,
        "hours_made": round(hours, 4),
        "splits": summary,
        "workers": args.workers,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "speech_hours_per_cpu_hour": round(hours / (cpu / 3600), 3) if cpu else None,
        "tokenizer": {
            "path": "tokenizer.model",
            "pieces": tok.cardinality,
            "pad_id": tok.pad_id,
            "epad_id": tok.epad_id,
        },
    }
    write_json(out / "meta.json", meta)
    print(
        f"made {hours:.3f} h in {wall:.0f} s wall, {cpu:.0f} s CPU (all processes): "
        f"{meta['speech_hours_per_cpu_hour']} speech-hours per CPU-hour (counts only work done in this run)"
    )


if __name__ == "__main__":
    main()
