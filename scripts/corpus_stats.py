"""Statistics of a duplex dialogue dataset made by scripts/make_dialogues.py; prints them and writes JSON.

usage: python scripts/corpus_stats.py DIR [--json DIR/stats.json]

Per split and overall: dialogues, hours, words per speaker, the share of time both speakers talk (overlap, from
the word alignments on a 10 ms grid), interruptions (share of agent turns cut by the user, per dialogue),
backchannels, turn-boundary overlaps, the PAD / EPAD / text share of the agent's inner-monologue token stream
(DIR/tokenizer.model, 12.5 Hz), the user-voice backend mix and the share of degraded user channels.
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from speech.dataset import AGENT_LABEL, USER_LABEL, read_manifest, speaker_words, write_json  # noqa: E402
from speech.monologue import num_frames  # noqa: E402
from speech.text import TextTokenizer  # noqa: E402

GRID = 0.01  # seconds per activity cell


def _activity(words, n: int) -> np.ndarray:
    act = np.zeros(n, bool)
    for _, s, e in words:
        act[int(s / GRID) : int(np.ceil(e / GRID))] = True
    return act


def split_stats(rows: list[dict], tok: TextTokenizer) -> dict:
    c = Counter()
    backends = Counter()
    for row in rows:
        wav, js = Path(row["path"]), Path(row["path"]).with_suffix(".json")
        for f in (wav, js):
            if not f.is_file():
                raise ValueError(f"{f} is listed in the manifest but missing; remake the dataset "
                                 "(scripts/make_dialogues.py with the same settings resumes and fills it in)")
        try:
            meta = json.loads(js.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{js} is not valid JSON ({e}); delete it and its wav, then rerun make_dialogues") from e
        dur = meta["duration"]
        agent, user = speaker_words(meta, AGENT_LABEL), speaker_words(meta, USER_LABEL)
        n = int(np.ceil(dur / GRID))
        a, u = _activity(agent, n), _activity(user, n)
        c["dialogues"] += 1
        c["seconds"] += dur
        c["agent_words"] += len(agent)
        c["user_words"] += len(user)
        c["both_cells"] += int((a & u).sum())
        c["any_cells"] += int((a | u).sum())
        c["cells"] += n
        turns = meta["turns"]
        c["agent_turns"] += sum(t["speaker"] == "agent" for t in turns)
        c["user_turns"] += sum(t["speaker"] == "user" and not t["backchannel"] for t in turns)
        c["interrupted_agent_turns"] += sum(t["interrupted"] for t in turns)
        c["backchannels"] += sum(t["backchannel"] for t in turns)
        c["boundary_overlaps"] += sum(e["type"] == "overlap" for e in meta["events"])
        c["dialogues_with_interruption"] += any(t["interrupted"] for t in turns)
        c["augmented"] += bool(meta["augment"])
        reactions = [e["reaction_s"] for e in meta["events"] if e["type"] == "interruption"]
        c["reaction_s_sum"] += sum(reactions)
        backends[meta["user_voice"]["backend"]] += 1
        frames, _ = tok.frames(agent, num_frames(dur, tok.frame_rate))
        c["frames"] += len(frames)
        c["pad_frames"] += int((frames == tok.pad_id).sum())
        c["epad_frames"] += int((frames == tok.epad_id).sum())
    d = max(1, c["dialogues"])
    return {
        "dialogues": c["dialogues"],
        "hours": round(c["seconds"] / 3600, 4),
        "mean_dialogue_s": round(c["seconds"] / d, 2),
        "words": c["agent_words"] + c["user_words"],
        "agent_words": c["agent_words"],
        "user_words": c["user_words"],
        "overlap_share_of_time": round(c["both_cells"] / max(1, c["cells"]), 4),
        "overlap_share_of_speech": round(c["both_cells"] / max(1, c["any_cells"]), 4),
        "speech_share_of_time": round(c["any_cells"] / max(1, c["cells"]), 4),
        "agent_turns": c["agent_turns"],
        "user_turns": c["user_turns"],
        "interruptions": c["interrupted_agent_turns"],
        "interruption_share_of_agent_turns": round(c["interrupted_agent_turns"] / max(1, c["agent_turns"]), 4),
        "dialogues_with_interruption_share": round(c["dialogues_with_interruption"] / d, 4),
        "mean_reaction_s": round(c["reaction_s_sum"] / max(1, c["interrupted_agent_turns"]), 3),
        "backchannels": c["backchannels"],
        "boundary_overlaps": c["boundary_overlaps"],
        "monologue_frames": c["frames"],
        "pad_share": round(c["pad_frames"] / max(1, c["frames"]), 4),
        "epad_share": round(c["epad_frames"] / max(1, c["frames"]), 4),
        "text_token_share": round((c["frames"] - c["pad_frames"] - c["epad_frames"]) / max(1, c["frames"]), 4),
        "augmented_user_share": round(c["augmented"] / d, 4),
        "user_backends": dict(sorted(backends.items())),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", type=Path, help="dataset folder (with <split>.jsonl and tokenizer.model)")
    p.add_argument("--json", type=Path, default=None, help="output JSON (default DIR/stats.json)")
    args = p.parse_args()
    if not (args.dir / "tokenizer.model").is_file():
        p.error(f"no tokenizer.model in {args.dir}")
    tok = TextTokenizer(args.dir / "tokenizer.model")
    stats, all_rows = {}, []
    try:
        for manifest in sorted(args.dir.glob("*.jsonl")):
            rows = read_manifest(manifest)
            all_rows += rows
            stats[manifest.stem] = split_stats(rows, tok)
        if not all_rows:
            p.error(f"no manifests (*.jsonl) in {args.dir}")
        stats["all"] = split_stats(all_rows, tok)
    except (ValueError, KeyError) as e:
        sys.exit(f"corpus_stats.py: error: {e}")
    meta_path = args.dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        stats["production"] = {
            k: meta.get(k) for k in ("command", "workers", "wall_s", "cpu_s", "hours_made", "speech_hours_per_cpu_hour")
        }
    out = args.json or args.dir / "stats.json"
    write_json(out, stats)
    for name, s in stats.items():
        print(f"[{name}]")
        for k, v in s.items():
            print(f"  {k}: {v}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
