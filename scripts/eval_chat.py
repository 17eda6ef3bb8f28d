"""usage: python scripts/eval_chat.py --ckpt runs/chat [--dialogues data/dialogues] [--split test] [--n 32]
                                 [--batch 8] [--out DIR] [--rt-frames 150] [--no-asr]

Evaluates a chat checkpoint the way a user meets it: the user channel of test-split dialogues (held-out templates
and entities, spoken by held-out user voices) is streamed live into the chat session, 80 ms at a time, and the
agent answers as it likes. Measured (speech/chat_eval.py has the definitions), next to the same measures on the
recorded dialogues themselves (the data the model imitates):
    answers   the monologue says every content word of the reference answer; per intent; and "by ear": the
              recognizer hears them all in the agent's audio (the measure for a model without a monologue)
    speech    word error rate of an independent recognizer (pocketsphinx) on the agent's audio against its own
              monologue, next to the same recognizer on clean agent-voice TTS of the same text (goal <= 1.5x)
    duplex    latency from the end of a question to audible agent speech (goal median <= 0.3 s); barge-ins the
              agent stops within 0.4 s (goal >= 90%); mid-sentence user pauses in which it takes the turn (goal
              <= 20%); backchannels
    listening --store: teacher-forced losses per split, and how much the text losses rise when the model is given
              another dialogue's user audio (near 0: it does not use what it hears)
    real time per-frame cost of the whole loop (codec encode + model step + codec decode), one conversation,
              median and p99 as a fraction of the 80 ms frame, fp32 and int8 (goal <= 0.5)
    hearing   models with the user transcript stream (text.user): word error rate of what it wrote the user said
Writes OUT/eval.json, OUT/table.md, and OUT/<dialogue>.wav/.png for the first conversations (user | agent).
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from speech.chat_args import add_sampling_args, sampling_from_args  # noqa: E402  (no torch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="chat checkpoint (scripts/train_chat.py --out)")
    ap.add_argument("--dialogues", default="data/dialogues", help="dialogue directory (scripts/make_dialogues.py)")
    ap.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--n", type=int, default=32, help="dialogues to stream")
    ap.add_argument("--batch", type=int, default=8, help="conversations stepped together")
    ap.add_argument("--tail", type=float, default=3.0, help="seconds of silence after each dialogue")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="stream only the first seconds of each dialogue (turns and events after it are dropped)")
    add_sampling_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold-db", type=float, default=-40.0, help="audible agent frame: RMS above this (dBFS)")
    ap.add_argument("--rt-frames", type=int, default=150, help="frames timed for the real-time figure (0: skip)")
    ap.add_argument("--no-asr", action="store_true", help="skip the recognizer (speech figures)")
    ap.add_argument("--asr-max", type=int, default=200, help="answers judged by the recognizer at most")
    ap.add_argument("--examples", type=int, default=3, help="conversations written as wav + png")
    ap.add_argument("--store", default=None,
                    help="the tokenized dialogues (tokenize_dialogues.py): adds the teacher-forced loss per split "
                         "(train vs held-out: how much the model memorized)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default CKPT/eval)")
    args = ap.parse_args()
    for name in ("n", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.rt_frames < 0 or args.examples < 0 or args.asr_max < 0 or args.max_seconds < 0:
        ap.error("--rt-frames, --examples, --asr-max and --max-seconds must be >= 0")
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"eval_chat.py: error: {e}")


def stream(chat_model, codec, text, users: list[np.ndarray], args) -> list:
    """Stream the user channels live through one batched chat session; -> [Live]."""
    from speech.chat import stream_recordings
    from speech.chat_eval import Live

    st = stream_recordings(chat_model, codec, text, users, args.tail, sampling_from_args(args), args.seed,
                           progress=True, options=args.options)
    return [Live(st.agent[i, : len(u) + round(args.tail * codec.sample_rate)], st.pieces[i], codec.sample_rate,
                 None if st.heard is None else st.heard[i]) for i, u in enumerate(users)]


def realtime(model, codec, text, user: np.ndarray, frames: int, options=None) -> dict:
    """Per-frame cost of encode + step + decode for one conversation: {median, p99} / 80 ms."""
    from speech.chat import stream_recordings

    x = np.zeros(frames * codec.frame_size, np.float32)
    x[: min(len(user), len(x))] = user[: len(x)]
    cost = stream_recordings(model, codec, text, [x], 0.0, seed=0, options=options).step_s
    c = np.array(cost[min(10, frames // 2):]) / 0.08  # the first frames warm up the allocator and the caches
    return {"median": float(np.median(c)), "p99": float(np.percentile(c, 99)), "frames": len(c)}


def speech_wer(lives, analyses, asr, sample_rate: int, limit: int) -> dict:
    """Recognizer on the agent's audio of each answer vs its monologue; and on clean TTS of the same text."""
    from speech.asr import wer
    from speech.tts import synthesize
    from speech.voices import AGENT_VOICE

    tot = {"agent": [0, 0], "clean": [0, 0]}
    examples = []
    for live, an in zip(lives, analyses, strict=True):
        for q in an["questions"]:
            said = q["said"]
            if q["speech"] is None or len(said.split()) < 2 or len(examples) >= limit:
                continue
            try:
                clean = synthesize(said, AGENT_VOICE)
            except (RuntimeError, ValueError):
                continue  # text the TTS refuses (e.g. a lone symbol): no clean reference
            a, b = q["speech"]
            seg = live.agent[int(max(0.0, a - 0.1) * sample_rate): int((b + 0.2) * sample_rate)]
            heard, heard_clean = asr(seg, sample_rate), asr(clean.audio, clean.sample_rate)
            for k, h in (("agent", heard), ("clean", heard_clean)):
                e, n = wer(said, h)
                tot[k][0] += e
                tot[k][1] += n
            examples.append({"monologue": said, "agent_audio_heard": heard, "clean_tts_heard": heard_clean})
    out = {k: (v[0] / v[1] if v[1] else None) for k, v in tot.items()}
    out["words"] = tot["agent"][1]
    out["ratio"] = out["agent"] / out["clean"] if out["agent"] is not None and out["clean"] else None
    out["answers"] = len(examples)
    out["examples"] = examples[:10]
    return out


def teacher_forced(model, codec, text, store_path: str, batches: int = 4, batch: int = 8,
                   options=None) -> dict:
    """Mean teacher-forced loss and accuracy per predicted stream on random windows of each split."""
    import torch

    from multistream.loss import lm_loss
    from multistream.store import EpisodeStore
    from speech.chat_data import dialogue_batch_fn
    from speech.streams import TEXT, USER, USER_TEXT

    store = EpisodeStore.open(store_path)
    # without the monologue the windows hold no text targets: its loss would read 0, so it is left out
    absent = {TEXT} if options is not None and not options.monologue else set()
    res = {}
    for split in ("train", "valid", "test"):
        try:
            fn = dialogue_batch_fn(store, model.streams, codec, text, 125, batch, split=split, seed=1234,
                                   options=options)
        except ValueError:
            continue  # the store has no dialogues of this split
        tot: dict[str, float] = {}
        with torch.no_grad():
            for i in range(batches):
                b = fn(i, 0, 0, 1)
                out = lm_loss(model(b), model.streams)
                for k, v in out.per_stream.items():
                    if k not in absent:
                        tot[f"loss {k}"] = tot.get(f"loss {k}", 0.0) + v / batches
                for k, v in out.accuracy.items():
                    if k not in absent:
                        tot[f"acc {k}"] = tot.get(f"acc {k}", 0.0) + v / batches
                # does it listen? the same windows with another window's user audio: the text losses' rise
                other = lm_loss(model({**b, USER: b[USER].roll(1, dims=0)}), model.streams)
                for k in (TEXT, USER_TEXT):
                    if k not in absent and k in other.per_stream and k in out.per_stream:
                        rise = other.per_stream[k] - out.per_stream[k]
                        tot[f"listen {k}"] = tot.get(f"listen {k}", 0.0) + rise / batches
        res[split] = tot
    return res


def fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.3f}"


def run(args: argparse.Namespace) -> None:
    import torch

    from multistream.quantize import quantize_int8
    from speech.audio import write_wav
    from speech.chat import chat_options, load_chat, plot_conversation
    from speech.chat_eval import QA_ACTS, analyse, answers_by_ear, heard_wer, recorded_live, summarize
    from speech.dataset import read_item, read_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    model, codec, text = load_chat(args.ckpt)
    args.options = chat_options(args.ckpt)
    args.monologue = args.options.monologue
    manifest = Path(args.dialogues) / f"{args.split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"no {manifest} (make the dialogues with scripts/make_dialogues.py)")
    rows = read_manifest(manifest)[: args.n]
    if not rows:
        raise ValueError(f"{manifest} lists no dialogues")
    out = Path(args.out) if args.out else Path(args.ckpt) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for r in rows:
        audio, sr, meta = read_item(r["path"])
        if sr != codec.sample_rate:
            raise ValueError(f"{r['path']} is at {sr} Hz; the codec takes {codec.sample_rate} Hz")
        if args.max_seconds:
            cut = args.max_seconds
            audio = audio[:, : int(cut * sr)]
            meta = dict(meta, turns=[t for t in meta["turns"] if t["end"] <= cut],
                        events=[e for e in meta["events"] if e["time"] <= cut])
        items.append((audio, meta))
    t0 = time.time()
    lives = []
    for i in range(0, len(items), args.batch):
        chunk = items[i: i + args.batch]
        lives += stream(model, codec, text, [a[1] for a, _ in chunk], args)
        print(f"streamed {len(lives)}/{len(items)} conversations ({time.time() - t0:.0f} s)", flush=True)
    analyses = [analyse(m, live, args.threshold_db) for (_, m), live in zip(items, lives, strict=True)]
    recorded_lives = [recorded_live(a, m, codec.sample_rate) for a, m in items]
    recorded = [analyse(m, live, args.threshold_db) for (_, m), live in zip(items, recorded_lives, strict=True)]
    asr = None
    if not args.no_asr:
        from speech.asr import Recognizer

        asr = Recognizer()
        for live, an in zip(lives + recorded_lives, analyses + recorded, strict=True):
            answers_by_ear(live, an, asr)
    model_sum, data_sum = summarize(analyses), summarize(recorded)
    if not args.monologue:  # the ablation says nothing in its text stream: only the by-ear answers apply
        model_sum["answer_correct"] = None
    if lives and lives[0].heard is not None:  # the model writes a transcript of the user: how well does it hear?
        errs = [heard_wer(m, live.heard, a.shape[1] / codec.sample_rate)
                for (a, m), live in zip(items, lives, strict=True)]
        model_sum["heard_wer"] = sum(e for e, _ in errs) / max(1, sum(n for _, n in errs))
        model_sum["heard_words"] = sum(n for _, n in errs)
    speech = None
    if asr is not None and args.monologue:
        speech = speech_wer(lives, analyses, asr, codec.sample_rate, args.asr_max)
    rt = {}
    if args.rt_frames:
        user0 = items[0][0][1]
        rt["fp32"] = realtime(model, codec, text, user0, args.rt_frames, args.options)
        rt["int8"] = realtime(quantize_int8(model), codec, text, user0, args.rt_frames, args.options)
    tf = teacher_forced(model, codec, text, args.store, options=args.options) if args.store else None
    for (a, m), live in list(zip(items, lives, strict=True))[: args.examples]:
        n = min(a.shape[1], len(live.agent))
        name = m["dialogue_id"]
        write_wav(out / f"{name}.wav", np.stack([a[1, :n], live.agent[:n]]), codec.sample_rate)
        plot_conversation(a[1, :n], live.agent[:n], [{"t": t, "piece": p} for t, p in live.pieces],
                          codec.sample_rate, out / f"{name}.png", title=f"{name}: user (held-out voice) | agent")
    lines = [f"# Chat evaluation: {args.ckpt}", "",
             f"{len(items)} {args.split} dialogues ({model_sum['minutes']:.1f} min), streamed live; "
             f"sampling: text {args.text_temperature}/top-{args.text_top_k}, "
             f"audio {args.temperature}/top-{args.top_k}; "
             f"audible above {args.threshold_db} dBFS"
             + ("" if args.monologue else "; a model trained without the monologue (its answers: by ear only)"), "",
             "| measure | model | recorded data | goal |", "|---|---|---|---|",
             f"| answers correct ({model_sum['questions']} questions) | {fmt(model_sum['answer_correct'], True)} | "
             f"{fmt(data_sum['answer_correct'], True)} | >= 90% |"]
    for act in QA_ACTS:
        if act in model_sum["per_intent"]:
            mi, di = model_sum["per_intent"][act], data_sum["per_intent"].get(act, {})
            lines.append(f"| - {act} ({mi['n']}) | {fmt(mi['correct'] if args.monologue else None, True)} | "
                         f"{fmt(di.get('correct'), True)} | >= 90% |")
    if model_sum["answer_correct_by_ear"] is not None:
        lines.append(f"| answers correct by ear (the recognizer on the agent's audio) | "
                     f"{fmt(model_sum['answer_correct_by_ear'], True)} | "
                     f"{fmt(data_sum['answer_correct_by_ear'], True)} | |")
        for act in QA_ACTS:
            if act in model_sum["per_intent"]:
                mi, di = model_sum["per_intent"][act], data_sum["per_intent"].get(act, {})
                lines.append(f"| - {act} by ear | {fmt(mi.get('correct_by_ear'), True)} | "
                             f"{fmt(di.get('correct_by_ear'), True)} | |")
    lines += [
        f"| questions answered with audible speech | {fmt(model_sum['answered_share'], True)} | "
        f"{fmt(data_sum['answered_share'], True)} | |",
        f"| latency median (s) | {fmt(model_sum['latency_median_s'])} | {fmt(data_sum['latency_median_s'])} | "
        f"<= 0.3 |",
        f"| latency p90 (s) | {fmt(model_sum['latency_p90_s'])} | {fmt(data_sum['latency_p90_s'])} | |",
        f"| barge-ins stopped within 0.4 s | {fmt(model_sum['barge_in_stop_rate'], True)} "
        f"(of {model_sum['barge_ins']}) | {fmt(data_sum['barge_in_stop_rate'], True)} (of {data_sum['barge_ins']}) "
        f"| >= 90% |",
        f"| turn taken in a mid-sentence pause | {fmt(model_sum['pause_takeover_rate'], True)} "
        f"(of {model_sum['pauses']}) | {fmt(data_sum['pause_takeover_rate'], True)} (of {data_sum['pauses']}) "
        f"| <= 20% |",
        f"| backchannels per minute | {fmt(model_sum['backchannels_per_min'])} | "
        f"{fmt(data_sum['backchannels_per_min'])} | |",
        f"| agent audible share | {fmt(model_sum['audible_share'], True)} | {fmt(data_sum['audible_share'], True)} "
        f"| |"]
    if "heard_wer" in model_sum:
        lines.append(f"| its transcript of the user (text.user), WER ({model_sum['heard_words']} words) | "
                     f"{fmt(model_sum['heard_wer'])} | 0.000 | |")
    if speech is not None:
        lines += [f"| recognizer WER, agent audio vs its monologue ({speech['words']} words) | "
                  f"{fmt(speech['agent'])} | | <= 1.5x clean |",
                  f"| recognizer WER, clean TTS of the same text | {fmt(speech['clean'])} | | |",
                  f"| ratio | {fmt(speech['ratio'])} | | <= 1.5 |"]
    for k, v in rt.items():
        lines.append(f"| loop cost / 80 ms, {k}, 1 conversation (median / p99) | {v['median']:.3f} / "
                     f"{v['p99']:.3f} | | <= 0.5 |")
    if tf:
        lines += ["", "Teacher-forced on random 10 s windows of each split (loss / accuracy per predicted stream; "
                  "listen: how much the loss rises when the windows get another dialogue's user audio):", "",
                  "| split | " + " | ".join(next(iter(tf.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(tf.values())))]
        lines += [f"| {sp} | " + " | ".join(f"{v:.3f}" for v in d.values()) + " |" for sp, d in tf.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    examples = [{"dialogue": an["dialogue"], **q} for an in analyses for q in an["questions"]][:20]
    report = {"ckpt": str(args.ckpt), "split": args.split, "dialogues": len(items),
              "options": dataclasses.asdict(args.options), "model": model_sum,
              "recorded": data_sum, "speech": speech, "realtime": rt, "teacher_forced": tf,
              "threads": torch.get_num_threads(),
              "sampling": {"text": [args.text_temperature, args.text_top_k], "audio": [args.temperature, args.top_k]},
              "questions": examples}
    from multistream.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "eval.json", report, indent=2)
    atomic_write_text(out / "table.md", table)
    print(f"wrote {out / 'eval.json'}, {out / 'table.md'} and {min(args.examples, len(items))} example conversations")


if __name__ == "__main__":
    main()
