"""The measures of a live chat conversation (scripts/eval_chat.py): answers, turn-taking latency, barge-in,
mid-sentence pauses, backchannels, and what the agent's audio says.

A conversation is analysed against the recorded dialogue whose user channel was streamed into the model: the
recording's json (speech.dataset) gives the user's turns, the reference answers and the events (interruptions,
pauses); the model gives the agent's audio and its monologue pieces with their times. The same analysis run on
the recording's own agent channel and word alignment gives the figures of the data (`recorded_live`), the
reference each model figure is read against.

Definitions (Full-Duplex-Bench's, on 80 ms frames):
- the agent is *audible* in a frame whose RMS exceeds `threshold_db` dBFS;
- **latency** of a question: from the end of the user's last word (its alignment) to the first audible agent
  frame in its answer window (negative: it started before the user finished);
- an **answer** is correct when every content word of the reference answer is in the monologue of its window
  (the end of the question - 0.5 s to the start of the user's next turn + 1 s); **by ear** when they are all in
  what an independent recognizer hears in the agent's audio of that window (`answers_by_ear`): the only measure
  that also applies to a model without a monologue (Moshi's ablation), and what a listener gets;
- **barge-in**: the user starts talking while the agent is audible; the agent stopped when it falls silent for
  `silent_frames` frames; success when that is within 0.4 s;
- **pause**: a mid-sentence pause of the user (0.5-1 s); the agent took the turn when it became audible for two
  frames inside the pause, having been silent just before it;
- **backchannel**: an agent utterance shorter than 1 s that starts while the user talks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech.asr import words
from speech.dataset import AGENT_LABEL, USER_LABEL

FRAME_S = 0.08
QA_ACTS = ("arithmetic", "counting", "fact", "spelling", "yesno", "robot")
STOPWORDS = frozenset("""a an the is are was were be been am it its it's that's this that these those i i'll i'm you
your we our they their he she his her of to in on at by for with and or but so as from up down into out over
there here what which who how many much do does did can could would will shall should okay ok sure yes no not
please well oh hey hi hello let me us just then than one s""".split())
BARGE_IN_GOAL_S = 0.4


@dataclass
class Live:
    """One streamed conversation: the agent's audio and its monologue pieces [(time_s, piece)]."""
    agent: np.ndarray  # [N] float
    pieces: list[tuple[float, str]]
    sample_rate: int
    heard: list[tuple[float, str]] | None = None  # models with `text.user`: the transcript it wrote of the user


def heard_wer(meta: dict, heard: list[tuple[float, str]], until_s: float | None = None) -> tuple[int, int]:
    """(word errors, reference words) of the model's transcript of the user against the user's words (those that
    end by `until_s`, e.g. the end of the streamed audio)."""
    from speech.asr import edit_distance, words

    ref = " ".join(w for w, (_a, b), who in meta["alignments"]
                   if who == USER_LABEL and (until_s is None or b <= until_s))
    ref_words = words(ref)
    return edit_distance(ref_words, words("".join(p for _t, p in heard))), len(ref_words)


def audible(agent: np.ndarray, sample_rate: int, threshold_db: float = -40.0) -> np.ndarray:
    """[T] bool: frames (80 ms) whose RMS exceeds threshold_db dBFS."""
    s = int(round(FRAME_S * sample_rate))
    n = len(agent) // s
    x = np.asarray(agent[: n * s], dtype=np.float64).reshape(n, s)
    rms = np.sqrt(np.mean(x**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10)) > threshold_db


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def answer_correct(reference: str, said: str) -> bool:
    """Every content word of the reference in what was said (every word, for an answer of stopwords only)."""
    key = content_words(reference) or set(words(reference))
    return bool(key) and key <= set(words(said))


def window_text(pieces: list[tuple[float, str]], a: float, b: float) -> str:
    return "".join(p for t, p in pieces if a <= t < b).strip()


def _frame(t: float) -> int:
    return int(np.floor(t / FRAME_S + 1e-6))


def analyse(meta: dict, live: Live, threshold_db: float = -40.0, silent_frames: int = 3) -> dict:
    """The measures of one conversation (lists per question / barge-in / pause, and counts)."""
    act = audible(live.agent, live.sample_rate, threshold_db)
    n = len(act)
    end_s = n * FRAME_S
    turns = meta["turns"]
    user_turns = [t for t in turns if t["speaker"] == "user" and not t["backchannel"]]
    user_words = [(float(a), float(b)) for _w, (a, b), who in meta["alignments"] if who == USER_LABEL]
    questions = []
    for k, t in enumerate(turns):
        if t["speaker"] != "user" or t["backchannel"] or t["act"] not in QA_ACTS:
            continue
        answer = next((u for u in turns[k + 1:] if u["speaker"] == "agent" and not u["backchannel"]), None)
        if answer is None or answer["interrupted"]:
            continue  # an answer the user cut short counts as a barge-in, not as an answer
        # the end of the question: its last word (the turn's audio runs ~0.1 s past it)
        q_end = max((b for a, b in user_words if t["start"] - 1e-3 <= a <= t["end"]), default=t["end"])
        nxt = next((u["start"] for u in user_turns if u["start"] > t["end"]), None)
        a, b = q_end - 0.5, min(end_s, (nxt + 1.0) if nxt is not None else end_s)
        said = window_text(live.pieces, a, b)
        fa, fb = _frame(a), min(n, _frame(b))
        on = next((f for f in range(max(fa, 0), fb) if act[f]), None)
        last = next((f for f in range(fb - 1, max(fa, 0) - 1, -1) if act[f]), None)
        questions.append({"act": t["act"], "question": t["text"], "reference": answer["text"], "said": said,
                          "correct": answer_correct(answer["text"], said), "window": [round(a, 2), round(b, 2)],
                          "latency_s": None if on is None else round(on * FRAME_S - q_end, 3),
                          "speech": None if on is None else [round(on * FRAME_S, 2), round((last + 1) * FRAME_S, 2)]})
    barge = []
    for e in meta["events"]:
        if e["type"] != "interruption":
            continue
        f0 = _frame(e["time"])
        if f0 >= n or not act[max(0, f0 - 2): f0 + 1].any():
            continue  # the agent was not talking when the user barged in: not a barge-in of this conversation
        stop = next((f for f in range(f0, n - silent_frames + 1) if not act[f: f + silent_frames].any()), None)
        barge.append({"time": e["time"], "stop_s": None if stop is None else round(stop * FRAME_S - e["time"], 3)})
    pauses = []
    for e in meta["events"]:
        if e["type"] != "pause":
            continue
        f0, f1 = _frame(e["time"]), min(n, _frame(e["time"] + e["pause_s"]))
        if f1 <= f0 or (f0 > 0 and act[f0 - 1]):
            continue  # the agent was already talking: not a turn it took in the pause
        took = any(act[f] and act[f + 1] for f in range(f0, min(f1, n - 1)))
        pauses.append({"time": e["time"], "took_turn": bool(took)})
    user_on = np.zeros(n, bool)
    for t in turns:
        if t["speaker"] == "user":
            user_on[_frame(t["start"]): _frame(t["end"]) + 1] = True
    backchannels = 0
    f = 0
    while f < n:
        if act[f] and (f == 0 or not act[f - 1]):
            g = f
            while g < n and act[g]:
                g += 1
            if user_on[f] and (g - f) * FRAME_S < 1.0:
                backchannels += 1
            f = g
        else:
            f += 1
    return {"dialogue": meta.get("dialogue_id"), "questions": questions, "barge_ins": barge, "pauses": pauses,
            "backchannels": backchannels, "minutes": end_s / 60, "audible_share": float(act.mean()) if n else 0.0}


def answers_by_ear(live: Live, analysis: dict, asr) -> None:
    """Judge each question of `analysis` (from `analyse`) by what the recognizer `asr(audio, sample_rate) -> text`
    hears in the agent's audio of the answer window: sets q["heard"] and q["correct_by_ear"] in place."""
    sr = live.sample_rate
    for q in analysis["questions"]:
        a, b = q["window"]
        seg = live.agent[int(max(0.0, a) * sr): int(b * sr)]
        q["heard"] = asr(seg, sr) if len(seg) else ""
        q["correct_by_ear"] = answer_correct(q["reference"], q["heard"])


def recorded_live(audio: np.ndarray, meta: dict, sample_rate: int) -> Live:
    """The recording's own agent as a `Live`: channel 0 and its aligned words as monologue pieces."""
    pieces = [(float(s), " " + w) for w, (s, _e), who in meta["alignments"] if who == AGENT_LABEL]
    return Live(np.asarray(audio[0], np.float32), pieces, sample_rate)


def summarize(analyses: list[dict]) -> dict:
    """Figures over many conversations."""
    qs = [q for a in analyses for q in a["questions"]]
    per_act = {}
    for act in QA_ACTS:
        sel = [q for q in qs if q["act"] == act]
        if sel:
            per_act[act] = {"n": len(sel), "correct": float(np.mean([q["correct"] for q in sel]))}
            if all("correct_by_ear" in q for q in sel):
                per_act[act]["correct_by_ear"] = float(np.mean([q["correct_by_ear"] for q in sel]))
    lat = [q["latency_s"] for q in qs if q["latency_s"] is not None]
    barge = [b for a in analyses for b in a["barge_ins"]]
    stopped = [b["stop_s"] is not None and b["stop_s"] <= BARGE_IN_GOAL_S for b in barge]
    pauses = [p["took_turn"] for a in analyses for p in a["pauses"]]
    minutes = sum(a["minutes"] for a in analyses)
    return {
        "conversations": len(analyses), "minutes": round(minutes, 2), "questions": len(qs),
        "answer_correct": float(np.mean([q["correct"] for q in qs])) if qs else None, "per_intent": per_act,
        "answer_correct_by_ear": (float(np.mean([q["correct_by_ear"] for q in qs]))
                                  if qs and all("correct_by_ear" in q for q in qs) else None),
        "answered_share": len(lat) / len(qs) if qs else None,
        "latency_median_s": float(np.median(lat)) if lat else None,
        "latency_p90_s": float(np.percentile(lat, 90)) if lat else None,
        "barge_ins": len(barge), "barge_in_stop_rate": float(np.mean(stopped)) if barge else None,
        "pauses": len(pauses), "pause_takeover_rate": float(np.mean(pauses)) if pauses else None,
        "backchannels": sum(a["backchannels"] for a in analyses),
        "backchannels_per_min": sum(a["backchannels"] for a in analyses) / minutes if minutes else None,
        "audible_share": float(np.mean([a["audible_share"] for a in analyses])) if analyses else None,
    }
