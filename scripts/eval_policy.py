"""usage: python scripts/eval_policy.py --ckpt runs/policy_touch/checkpoint --task touch [--seeds 100]
                                     [--first-seed 1000] [--batch 8] [--out runs/policy_touch/eval]

Runs the policy closed-loop in the gym env on held-out seeds, one episode per seed, batched (one Generator step
per frame for all envs; `--batch 1` measures what one robot costs), under each command condition available:
    text-train     the env's instruction with a training phrasing
    text-heldout   the env's instruction with a held-out phrasing (never in the training data)
and, with `--listener CKPT` (robot/listener.py, slots-layout policies), spoken commands:
    speech-train   the training-phrasing instruction spoken by a training user voice (one per seed)
    speech-heldout the same instruction spoken by a held-out user voice (never in any training data)
and mid-episode corrections (slots-layout policies): before the action of a frame drawn from 2-6 (per seed) the user
names another object of the scene ("no, the blue cube"; training phrasings); success is touching / moving the new
object:
    correction        the correction typed
    correction-speech the correction spoken by a held-out voice, heard by the listener (with --listener)
and, for policies trained with "stop" corrections (a halt slot), at such a frame the user says "stop":
    stop              "stop" typed (held-out phrasings: "freeze", "hold still"); success is coming to rest within
                      3 frames and holding still (end effector within 1 cm) for 6 more (`TabletopEnv.halt`)
    stop-untold       the control: the env halts at the same frames but the policy is not told (its slots stay)
    stop-speech       the "stop" (training phrasings, as for the other spoken conditions) spoken by a held-out voice,
                      heard by a listener built with stops (its halt slot)
    stop-speech-words the same with the held-out phrasings ("freeze", "hold still"): words the listener never heard
The spoken command (clean TTS at 24 kHz) goes through the listener's codec and the listener, whose slots the policy
then acts on; no text is read. Success rate per condition, mean episode length, the listener's command accuracy
(its slots equal the typed command's), and the compute per batched frame (tokenizers + model step) as a fraction of
the 80 ms frame, the listener's compute as a fraction of the command's duration; for a policy with the agent's
own words (`make_robot_data.py --reply`), the share of episodes whose `text` stream says the reply word for word on
the frames the demos say it ("reply right"); for one that also speaks them (`--reply-audio`), the share of its
`audio.agent` tokens equal to those the demos teach on the same frames ("voice right"), and an independent
recognizer's word error rate (pocketsphinx, speech/asr.py) on the decoded voice of the first `--judge-voice`
episodes of each condition against the taught reply's words, beside the same recognizer on the taught tokens decoded
(the codec's own loss) and on the clean TTS of those replies ("voice WER (taught, clean)"). For every episode the
best value each reward term reached (`best_terms` per seed); for pick_place the stages the episodes reached (the
named object grasped by both fingers, lifted 2 cm, brought within 5 cm of its target, placed), so a failure says
where it happened. Prints a table, writes eval.json and eval.png (bar plot).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from multistream.atomic import atomic_write_json
from robot import EVAL_SEEDS

CONDITIONS = {"text-train": "train", "text-heldout": "heldout"}
SPEECH = {"speech-train": "train", "speech-heldout": "heldout"}  # voice split; the phrasing is a training one
CORRECTION = ("correction", "correction-speech", "stop", "stop-untold", "stop-speech", "stop-speech-words")
SPOKEN_STOPS = ("stop-speech", "stop-speech-words")
CORRECT_FRAMES = (2, 6)
FRAME_S = 0.08
# pick_place stages: (name, reward term, threshold on its best value over the episode)
PICK_STAGES = (("grasped", "grasp", 0.0), ("lifted 2 cm", "lift", 0.02), ("within 5 cm of target", "place", -0.05))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint directory (config.json + model.safetensors)")
    ap.add_argument("--files", default=None, help="directory of the policy files (default: ckpt or its parent)")
    ap.add_argument("--task", required=True, help="touch, push or pick_place")
    ap.add_argument("--seeds", type=int, default=100, help="episodes per condition")
    ap.add_argument("--first-seed", type=int, default=EVAL_SEEDS.start,
                    help=f"first seed (held-out: {EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}; demos use 0..)")
    ap.add_argument("--conditions", nargs="+", default=None, choices=[*CONDITIONS, *SPEECH, *CORRECTION],
                    help="default: the text conditions, and the speech ones with --listener")
    ap.add_argument("--listener", default=None, help="listener checkpoint (scripts/train_listener.py): spoken commands")
    ap.add_argument("--batch", type=int, default=8, help="envs stepped together")
    ap.add_argument("--judge-voice", type=int, default=20, metavar="N",
                    help="episodes per condition whose spoken reply the recognizer transcribes (policies with a "
                         "voice; 0: none)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default: <ckpt>/../eval)")
    ap.add_argument("--append", action="store_true",
                    help="add these conditions to the eval.json already in --out (same task and seeds; a condition "
                         "measured again replaces its old figures); the table and plot then show them all")
    args = ap.parse_args()
    if args.seeds < 1 or args.batch < 1 or args.judge_voice < 0:
        ap.error(f"--seeds and --batch must be >= 1 and --judge-voice >= 0, got {args.seeds}, {args.batch}, "
                 f"{args.judge_voice}")
    if args.conditions is None:
        args.conditions = list(CONDITIONS) + (list(SPEECH) if args.listener else [])
    if any(c in SPEECH or c.endswith("-speech") for c in args.conditions) and not args.listener:
        ap.error("the speech conditions need --listener CKPT")

    import torch

    import envs
    from robot.policy import Policy

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task not in envs.TASK_IDS:
        ap.error(f"unknown --task {args.task!r}; known: {sorted(envs.TASK_IDS)}")
    try:
        policy = Policy.load(args.ckpt, args.files)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent / "eval"
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    earlier = load_earlier(out / "eval.json", args.task, seeds) if args.append else None

    listener = None
    if args.listener:
        from robot.listener import Listener

        try:
            listener = Listener.load(args.listener)
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f"error: {e}")
    if (listener is not None or any(c in CORRECTION for c in args.conditions)) and policy.cfg.command != "slots":
        sys.exit("error: spoken commands and corrections need a slots-layout policy")
    if {"stop", "stop-untold", *SPOKEN_STOPS} & set(args.conditions) and "halt" not in policy.tok.slots.slots:
        sys.exit(f"error: the stop condition needs a policy trained with 'stop' corrections (a halt slot); "
                 f"{args.ckpt} has the slots {policy.tok.slots.slots}")
    if set(SPOKEN_STOPS) & set(args.conditions) and (listener is None or "halt" not in listener.slots.slots):
        sys.exit("error: stop-speech(-words) needs a listener built with stops "
                 "(make_listener_data.py --stops; a halt slot)")

    out.mkdir(parents=True, exist_ok=True)  # only once every check has passed: a refused run leaves nothing
    results, timing, listen_rt = {}, [], []
    for cond in args.conditions:
        hear, heard, correct = None, {}, None
        if cond in SPEECH:
            hear = make_hear(listener, policy, args.task, seeds, SPEECH[cond], heard, listen_rt)
        if cond in CORRECTION:
            spoken = cond.endswith("-speech") or cond in SPOKEN_STOPS
            correct = make_correct(listener if spoken else None, policy, seeds, heard, stop=cond.startswith("stop"),
                                   tell=cond != "stop-untold",
                                   stop_phrasing="train" if cond == "stop-speech" else "heldout")
        split = CONDITIONS.get(cond, "train")
        best: dict[int, dict[str, float]] = {}
        res = policy.rollout(args.task, seeds, split=split, batch_size=args.batch, progress=True, hear=hear,
                             correct=correct, intervene=record_best_terms(best))
        timing.append(policy.last_timing)
        results[cond] = {
            "success": float(np.mean([r["success"] for r in res])),
            "episodes": len(res),
            "mean_length": float(np.mean([r["length"] for r in res])),
            "per_seed": [{"seed": r["seed"], "success": r["success"], "length": r["length"],
                          "command": r["command"], **({"corrected_at": r["corrected_at"]} if correct else {}),
                          "best_terms": best.get(i, {}), **heard.get(i, {})} for i, r in enumerate(res)],
        }
        if args.task == "pick_place":
            results[cond]["stages"] = pick_stages(results[cond]["per_seed"])
        if heard:
            results[cond]["command_accuracy"] = float(np.mean([h["understood"] for h in heard.values()]))
        if "reply_ids" in res[0]:  # the agent's own words: said word for word on the frames the demos say them
            results[cond]["reply_accuracy"] = float(np.mean([reply_ok(policy, args.task, r) for r in res]))
        if "reply_codes" in res[0]:  # ... and spoken: its voice tokens against the taught ones, and a recognizer
            results[cond]["voice_accuracy"] = float(np.mean([voice_accuracy(policy, args.task, r) for r in res]))
            if args.judge_voice:
                results[cond].update(judge_voice(policy, args.task, res[: args.judge_voice]))
        if cond in CORRECTION:  # over the episodes that lasted until their correction
            done = [r for r in res if r["corrected_at"] is not None]
            results[cond]["corrected_episodes"] = len(done)
            results[cond]["success"] = float(np.mean([r["success"] for r in done])) if done else 0.0
    # per env: a batched frame serves `batch` envs (a single robot would run at batch 1: see the README figures)
    if earlier is not None:
        results, timing = merge_earlier(earlier, results, timing)
    per_frame = float(np.median([t["median_frame_s"] for t in timing]))
    summary = {"ckpt": str(args.ckpt), "task": args.task, "seeds": [seeds[0], seeds[-1]], "batch": args.batch,
               "frame_s_median": per_frame, "frame_fraction": per_frame / FRAME_S, "timing": timing,
               "threads": torch.get_num_threads(), "conditions": results}
    if listen_rt:
        summary["listener_rt_median"] = float(np.median(listen_rt))
    elif earlier is not None and "listener_rt_median" in earlier:
        summary["listener_rt_median"] = earlier["listener_rt_median"]
    atomic_write_json(out / "eval.json", summary, indent=2)
    says = any("reply_accuracy" in r for r in results.values())
    speaks = any("voice_accuracy" in r for r in results.values())
    judged = any("voice_wer" in r for r in results.values())
    print(f"{'condition':14} {'success':>8} {'episodes':>9} {'mean len':>9} {'understood':>11}"
          + (f" {'reply right':>12}" if says else "") + (f" {'voice right':>12}" if speaks else "")
          + (f" {'voice WER (taught, clean)':>26}" if judged else ""))
    for cond, r in results.items():
        acc = f"{r['command_accuracy']:11.1%}" if "command_accuracy" in r else f"{'':>11}"
        rep = f" {r['reply_accuracy']:12.1%}" if "reply_accuracy" in r else ""
        rep += f" {r['voice_accuracy']:12.1%}" if "voice_accuracy" in r else ""
        rep += (f" {r['voice_wer']:11.2f} ({r['voice_wer_codec']:.2f}, {r['voice_wer_clean']:.2f})"
                if "voice_wer" in r else "")
        print(f"{cond:14} {r['success']:8.1%} {r['episodes']:9d} {r['mean_length']:9.1f} {acc}{rep}")
    for cond, r in results.items():
        if "stages" in r:
            print(f"{cond}: episodes reaching each stage: "
                  + ", ".join(f"{name} {share:.0%}" for name, share in r["stages"].items()))
    print(f"policy frame (tokenizers + model step) for {args.batch} envs at once: {per_frame * 1000:.2f} ms = "
          f"{per_frame / FRAME_S:.1%} of the 80 ms frame ({torch.get_num_threads()} threads)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4 + len(results), 3))
    names = list(results)
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    colors = [palette[i % len(palette)] for i in range(len(names))]
    ax.bar(names, [results[c]["success"] * 100 for c in names], color=colors)
    ax.set_ylim(0, 100)
    ax.set_ylabel("success %")
    ax.set_title(f"{args.task}: {args.seeds} held-out seeds per condition")
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=120)
    if listen_rt:
        print(f"listener (codec encode + model) per spoken command: {np.median(listen_rt):.3f} of its duration "
              f"(median over {len(listen_rt)} commands)")
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")


def load_earlier(path: Path, task: str, seeds: list[int]) -> dict | None:
    """The eval.json that --append adds to (None when there is none yet); refuses one of another task or seeds."""
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        old_task, old_seeds, conditions = old["task"], old["seeds"], old["conditions"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        sys.exit(f"error: --append: {path} is not an eval_policy.py result ({e})")
    if old_task != task or list(old_seeds) != [seeds[0], seeds[-1]] or not isinstance(conditions, dict):
        sys.exit(f"error: --append: {path} holds task {old_task!r} on seeds {old_seeds}; this run is {task!r} on "
                 f"{[seeds[0], seeds[-1]]}")
    return old


def merge_earlier(earlier: dict, results: dict, timing: list) -> tuple[dict, list]:
    """--append: the earlier conditions in their order, then the new ones; one measured again takes its new figures
    (and the new place); the frame timings of both runs."""
    merged = {c: r for c, r in earlier["conditions"].items() if c not in results}
    merged.update(results)
    return merged, [*earlier.get("timing", []), *timing]


def record_best_terms(best: dict[int, dict[str, float]]):
    """A `Policy.rollout` intervene hook that never intervenes: it keeps, per seed index, the best value each reward
    term reached on the frames the policy acted from."""

    def intervene(i: int, obs, info: dict, env) -> None:
        row = best.setdefault(i, {})
        for k, v in info.get("reward_terms", {}).items():
            row[k] = max(row.get(k, -np.inf), float(v))
        return None

    return intervene


def pick_stages(per_seed: list[dict]) -> dict[str, float]:
    """The share of pick_place episodes that reached each stage (PICK_STAGES, then success)."""
    out = {}
    for name, term, threshold in PICK_STAGES:
        out[name] = float(np.mean([s["best_terms"].get(term, -np.inf) > threshold or s["success"] for s in per_seed]))
    out["placed"] = float(np.mean([s["success"] for s in per_seed]))
    return out


def reply_ok(policy, task: str, r: dict) -> bool:
    """Whether the episode's `text` stream is the reply the demos teach, frame for frame: the reply to the slots it
    started from at frame 0, and to the slots after a correction or a stop from that frame, PAD elsewhere
    (`robot.reply.taught_reply`, as the policy store lays it out)."""
    from robot.reply import taught_reply

    tok = policy.tok
    return taught_reply(task, tok.slots, tok.reply, len(r["reply_ids"]), r["first_slots"], r["corrected_at"],
                        r["slots"]) == r["reply_ids"]


def taught_voice(policy, task: str, r: dict) -> tuple[list[tuple[int, str]], np.ndarray]:
    """The replies the demos teach for the episode (as `reply_ok` reads them) and their voice tokens [K, frames]."""
    from robot.reply import taught_replies

    tok = policy.tok
    replies = taught_replies(task, tok.slots, r["first_slots"], r["corrected_at"], r["slots"])
    return replies, tok.voice.frames(r["reply_codes"].shape[1], replies).T


def voice_accuracy(policy, task: str, r: dict) -> float:
    """Share of the episode's `audio.agent` tokens (every frame and codebook) equal to the ones the demos teach."""
    return float((r["reply_codes"] == taught_voice(policy, task, r)[1]).mean())


def judge_voice(policy, task: str, res: list[dict]) -> dict:
    """pocketsphinx on the policy's decoded voice, on the taught voice tokens decoded (the codec's own loss: what
    the policy would say with every token right) and on the clean TTS of the taught replies: word error rates
    against the taught replies' words (the episode's whole talk: the command's reply, then a correction's)."""
    import torch

    from speech.asr import Recognizer, wer

    asr = Recognizer()
    voice = policy.tok.voice
    e = ec = et = n = 0
    for r in res:
        replies, taught = taught_voice(policy, task, r)
        ref = " ".join(text for _, text in replies)
        clean = np.concatenate([voice.speech(text) for _, text in replies])
        codec = voice.decode(torch.from_numpy(taught.astype(np.int64))[None])[0, 0].numpy()
        d, m = wer(ref, asr(r["reply_audio"], voice.sample_rate))
        dc, _ = wer(ref, asr(clean, voice.sample_rate))
        dt, _ = wer(ref, asr(codec, voice.sample_rate))
        e, ec, et, n = e + d, ec + dc, et + dt, n + m
    return {"voice_wer": e / max(n, 1), "voice_wer_clean": ec / max(n, 1), "voice_wer_codec": et / max(n, 1),
            "voice_judged": len(res)}


def make_correct(listener, policy, seeds: list[int], heard: dict, stop: bool = False, tell: bool = True,
                 stop_phrasing: str = "heldout"):
    """`Policy.rollout`'s `correct`: at a frame drawn from the seed, retarget the env to another object and return
    the corrected slots: parsed from the typed correction, or (with `listener`) heard from it spoken by a held-out
    voice. With `stop`, the user says "stop" (`stop_phrasing`: held-out phrasings unless "train") instead and the
    env halts; `tell=False` (the control) leaves the policy's slots as they were."""
    from robot.experts import apply_correction, apply_stop
    from robot.listener import speak_command
    from robot.policy import corrected_slots, merge_slots
    from speech.voices import user_voices

    voices = user_voices("heldout")
    slots = policy.tok.slots

    def correct(i: int, frame: int, env, before: list[int]) -> list[int] | None:
        rng = np.random.default_rng([seeds[i], 23])
        if frame != int(rng.integers(CORRECT_FRAMES[0], CORRECT_FRAMES[1] + 1)):
            return None
        c = apply_stop(env, rng, stop_phrasing) if stop else apply_correction(env, rng, "train")
        if not tell:
            return list(before)
        want = corrected_slots(slots, before, c["text"])
        if listener is None:
            return want
        voice = voices[int(rng.integers(len(voices)))]
        ids = listener.listen([speak_command(c["text"], voice, sample_rate=listener.codec.sample_rate)],
                              "correction", to=slots)[0]
        got = merge_slots(ids, before)
        heard[i] = {"correction": c["text"], "voice": voice.name, "heard": slots.text(ids), "understood": got == want}
        return got

    return correct


def make_hear(listener, policy, task: str, seeds: list[int], voice_split: str, heard: dict, rt: list):
    """`Policy.rollout`'s `hear`: seed index i's command spoken by a voice of `voice_split` (drawn from the seed),
    heard by the listener; records what was understood in `heard[i]` and the compute / duration in `rt`."""
    import time

    from robot.listener import Listener, speak_command
    from speech.voices import user_voices

    voices = user_voices(voice_split)

    def hear(i: int, text: str) -> list[int]:
        voice = voices[int(np.random.default_rng([seeds[i], 17]).integers(len(voices)))]
        audio = speak_command(text, voice, sample_rate=listener.codec.sample_rate)
        t0 = time.perf_counter()
        ids = listener.listen([audio], task, to=policy.tok.slots)[0]
        rt.append((time.perf_counter() - t0) / (len(audio) / listener.codec.sample_rate))
        want = Listener.keep_task_slots(policy.tok.slots.ids(text), task, policy.tok.slots)
        heard[i] = {"voice": voice.name, "heard": policy.tok.slots.text(ids), "understood": ids == want}
        return ids

    return hear


if __name__ == "__main__":
    main()
