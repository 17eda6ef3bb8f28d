"""usage: python scripts/demo.py [--out runs/demo] [--chat checkpoints/chat] [--questions 4] [--episodes 4]
                           [--tasks touch push pick_place] [--listener checkpoints/listener] [--threads 1]

The project's two jobs on its committed checkpoints, in about two minutes on two CPU cores:

  1. chat: held-out spoken questions (test-split questions, each synthesized by a held-out user voice the model
     never heard) are streamed live into the duplex chat model, 80 ms at a time, followed by silence. For each:
     the question, the agent's inner monologue, what an independent recognizer (pocketsphinx) hears in the
     agent's audio, and the latency from the end of the question to the agent's first audible frame.
     OUT/chat_<k>.wav (stereo: user | agent) and OUT/chat_<k>.png.
  2. robot: per task, the committed policy (checkpoints/policy_<task>) runs episodes on held-out seeds in MuJoCo,
     closed loop at 12.5 Hz, with the env's typed command (training phrasings; eval_policy.py measures held-out
     ones): success and length per episode. Then one voice-commanded episode per task: the command spoken by a
     held-out voice, heard through the codec by the listener (checkpoints/listener), the policy acting on what it
     heard, the agent's spoken confirmation (for touch in the policy's own voice: its audio.agent tokens decoded by
     the codec); OUT/robot_<task>_<seed>.mp4 (render_episode.py --policy); for touch
     also one with a spoken correction ("no, the blue cube") at frame 3, and one where the user says "stop" at frame 3
     (spoken and heard by the listener when it has the halt slot, else typed) and the robot must hold still.

Numbers printed here are a few samples; the measured figures are in checkpoints/*/README.md
(scripts/eval_chat.py, scripts/eval_policy.py). The toy engine demo is scripts/demo_toy.py.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--chat", default=str(ROOT / "checkpoints" / "chat"), help="chat checkpoint")
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=4, help="typed-command episodes per task (0: no robot part)")
    ap.add_argument("--tasks", nargs="+", default=None, choices=["touch", "push", "pick_place"],
                    help="tasks whose committed policy (checkpoints/policy_<task>) runs (default: every task that "
                         "has one)")
    ap.add_argument("--listener", default=str(ROOT / "checkpoints" / "listener"),
                    help="listener checkpoint for the voice-commanded episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); one is fastest for these small models")
    args = ap.parse_args()
    if args.questions < 0 or args.episodes < 0:
        ap.error("--questions and --episodes must be >= 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        t0 = time.time()
        if args.questions:
            chat_demo(Path(args.chat), out, args.questions, args.seed)
        if args.episodes:
            tasks = args.tasks
            if tasks is None:
                tasks = [t for t in ("touch", "push", "pick_place") if (ROOT / "checkpoints" / f"policy_{t}").is_dir()]
                missing = [t for t in ("touch", "push", "pick_place") if t not in tasks]
                if missing:
                    print(f"\n(no committed policy for {', '.join(missing)} yet: docs/robot.md)")
            for task in tasks:
                robot_demo(ROOT / "checkpoints" / f"policy_{task}", out, args.episodes, task, Path(args.listener))
        print(f"\ndemo done in {time.time() - t0:.0f} s; files in {out}/")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"demo.py: error: {e}")


def held_out_questions(n: int) -> list[tuple[str, str, str]]:
    """(intent, question, reference answer): the first test-split question of each intent, then more."""
    from speech.chat_eval import QA_ACTS
    from speech.corpus import dialogue

    seen, rest = [], []
    for i in range(200):
        d = dialogue("test", 0, i)
        for q, a in zip(d.turns, d.turns[1:], strict=False):
            if q.speaker == "user" and q.act in QA_ACTS and a.speaker == "agent" and not q.interrupt:
                item = (q.act, q.text, a.text)
                (seen if q.act not in {s[0] for s in seen} else rest).append(item)
        if len(seen) >= n:
            break
    return (seen + rest)[:n]


def chat_demo(ckpt: Path, out: Path, n: int, seed: int) -> None:

    from speech.asr import Recognizer
    from speech.audio import resample, write_wav
    from speech.chat import chat_options, load_chat, plot_conversation, stream_recordings
    from speech.chat_args import chat_sampling
    from speech.chat_eval import answer_correct, audible
    from speech.tts import synthesize
    from speech.voices import user_voices

    ckpt = ckpt / "checkpoint" if (ckpt / "checkpoint").is_dir() else ckpt
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"no chat checkpoint at {ckpt} (train one: docs/chat.md)")
    print(f"== chat: {ckpt}")
    model, codec, text = load_chat(ckpt)
    sr = codec.sample_rate
    voices = user_voices("heldout")
    qs = held_out_questions(n)
    users, ends = [], []
    for k, (_act, q, _a) in enumerate(qs):
        syn = synthesize(q, voices[k % len(voices)])
        audio = syn.audio if syn.sample_rate == sr else resample(syn.audio, syn.sample_rate, sr)
        lead = np.zeros(int(0.5 * sr), np.float32)
        users.append(np.concatenate([lead, audio.astype(np.float32)]))
        ends.append(0.5 + syn.words[-1][2])
    st = stream_recordings(model, codec, text, users, 4.0, chat_sampling(), seed, options=chat_options(ckpt))
    user, agent, pieces, cost = st.user, st.agent, st.pieces, st.step_s
    asr = Recognizer()
    for k, (act, q, ref) in enumerate(qs):
        said = "".join(p for _, p in pieces[k]).strip()
        act_frames = audible(agent[k], sr)
        first = next((f for f in range(int(ends[k] / 0.08), len(act_frames)) if act_frames[f]), None)
        latency = "no audible answer" if first is None else f"{first * 0.08 - ends[k]:+.2f} s"
        heard = asr(agent[k, int(ends[k] * sr):], sr)
        print(f"\n[{k + 1}] {act} question ({voices[k % len(voices)].name}): {q}")
        print(f"    agent monologue: {said!r}")
        print(f"    recognizer hears the agent say: {heard!r}")
        print(f"    reference answer: {ref!r} -> {'correct' if answer_correct(ref, said) else 'not correct'}; "
              f"latency {latency}")
        write_wav(out / f"chat_{k + 1}.wav", np.stack([user[k], agent[k]]), sr)
        plot_conversation(user[k], agent[k], [{"t": t, "piece": p} for t, p in pieces[k]], sr,
                          out / f"chat_{k + 1}.png", title=f"{q}  ->  {said}")
    c = np.array(cost[10:]) / 0.08
    print(f"\nloop cost (encode + step + decode, {len(qs)} conversations in one batch): median "
          f"{np.median(c):.2f} x the 80 ms frame")


def robot_demo(ckpt: Path, out: Path, n: int, task: str, listener_ckpt: Path) -> None:
    from robot.episode_video import render_policy_episode
    from robot.listener import Listener
    from robot.policy import Policy

    ckpt = ckpt / "checkpoint" if (ckpt / "checkpoint").is_dir() else ckpt
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"no policy checkpoint at {ckpt} (train one: docs/robot.md)")
    print(f"\n== robot, {task}: {ckpt}")
    policy = Policy.load(ckpt)
    seeds = [1000 + i for i in range(n)]
    results = policy.rollout(task, seeds, split="train", batch_size=n)  # held-out phrasings: eval_policy.py
    for r in results:
        print(f"  typed, seed {r['seed']}: {r['command']!r:50s} -> {'success' if r['success'] else 'failure'} "
              f"after {r['length']} frames ({r['length'] * 0.08:.1f} s)")
    ok = sum(r["success"] for r in results)
    t = policy.last_timing
    print(f"  {ok}/{len(results)} succeeded; a batched frame of {t['batch']} envs costs "
          f"{1000 * t['median_frame_s']:.1f} ms = {t['median_frame_s'] / 0.08:.0%} of the 80 ms frame")
    if policy.cfg.command != "slots":
        return
    listener = Listener.load(listener_ckpt)
    seed = 1000 + n  # a held-out seed the typed episodes did not use
    s = render_policy_episode(policy, task, seed, out / f"robot_{task}_{seed}", listener)
    says = "agent (its own text stream)" if s["reply_by"] == "model" else "agent (composed from the heard slots)"
    says += ", in its own voice (audio.agent tokens)" if s["voice_by"] == "model" else ", TTS through the codec"
    print(f"  spoken, seed {seed} ({s['voice']}): {s['command']!r} -> heard {s['heard']}; {says}: {s['reply']!r}; "
          f"{'success' if s['success'] else 'failure'} after {s['frames']} frames -> {s['path']}")
    if task == "touch":  # and a spoken correction halfway to the first object
        seed += 1
        s = render_policy_episode(policy, task, seed, out / f"robot_{task}_{seed}_corrected", listener,
                                  correct_frame=3)
        print(f"  spoken with a correction at frame 3, seed {seed}: {s['command']!r}, then {s['correction']!r} -> "
              f"{'success' if s['success'] else 'failure'} (the new object) after {s['frames']} frames -> "
              f"{s['path']}")
    if "halt" in policy.tok.slots.slots:  # a policy trained with stops: "stop" halfway
        seed += 1
        s = render_policy_episode(policy, task, seed, out / f"robot_{task}_{seed}_stop", listener, correct_frame=3,
                                  stop=True)
        how = "spoken, heard by the listener" if "halt" in listener.slots.slots else "typed: the listener has no halt"
        print(f"  spoken, then {s['correction']!r} at frame 3 ({how}), seed {seed} -> "
              f"{'held still' if s['success'] else 'did not hold still'} after {s['frames']} frames -> {s['path']}")


if __name__ == "__main__":
    main()
