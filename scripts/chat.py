"""usage: python scripts/chat.py --ckpt CHAT_CKPT (--in question.wav | --say "what is two plus three")
                             [--out reply.wav] [--tail 3.0] [--temperature 0.8] [--seed 0]

Streams a recording through the duplex chat session as if it were live, 80 ms at a time (then --tail seconds of
silence so the agent can answer), and writes:
    OUT.wav      stereo 24 kHz: channel 0 the user, channel 1 the agent
    OUT.json     the agent's monologue text with the time of every piece, and the whole text (and, for a model
                 with the user transcript stream, what it heard the user say)
    OUT.png      both waveforms with the monologue text (and the heard transcript) over time
`--say` synthesizes the question with a held-out user voice first (never heard in training). The input must be
a mono 16-bit wav at 24 kHz.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

FRAME_S = 0.08


from speech.chat_args import add_sampling_args, sampling_from_args  # noqa: E402  (no torch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="chat checkpoint (config.json, model.safetensors, chat.json)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--in", dest="inp", help="mono 24 kHz 16-bit wav of the user")
    src.add_argument("--say", help="text to synthesize with a held-out user voice")
    ap.add_argument("--out", default="reply.wav")
    ap.add_argument("--tail", type=float, default=3.0, help="seconds of silence after the question")
    add_sampling_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if not (0 <= args.tail <= 60):
        ap.error(f"--tail must be in [0, 60] seconds, got {args.tail}")
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"chat.py: error: {e}")


def load_question(args: argparse.Namespace, sample_rate: int) -> np.ndarray:
    if args.say is not None:
        from speech.tts import synthesize
        from speech.voices import user_voices

        voice = user_voices("heldout")[0]
        syn = synthesize(args.say, voice)
        if syn.sample_rate != sample_rate:
            from speech.audio import resample

            return resample(syn.audio, syn.sample_rate, sample_rate)
        return syn.audio
    from speech.audio import read_wav

    path = Path(args.inp)
    if path.suffix.lower() != ".wav":
        raise ValueError(f"{path}: expected a .wav file")
    audio, sr = read_wav(path)
    if sr != sample_rate:
        raise ValueError(f"{path} is sampled at {sr} Hz; the codec takes {sample_rate} Hz (resample it, e.g. "
                         f"`sox {path} -r {sample_rate} out.wav`)")
    if audio.shape[0] != 1:
        raise ValueError(f"{path} has {audio.shape[0]} channels; give the user's voice as mono")
    if audio.shape[1] == 0:
        raise ValueError(f"{path} is empty")
    return audio[0]


def run(args: argparse.Namespace) -> None:
    import torch

    from multistream.atomic import atomic_write_json
    from speech.audio import write_wav
    from speech.chat import chat_options, load_chat, plot_conversation, stream_recordings

    if args.threads:
        torch.set_num_threads(args.threads)
    model, codec, text = load_chat(args.ckpt)
    question = load_question(args, codec.sample_rate)
    st = stream_recordings(model, codec, text, [question], args.tail, sampling_from_args(args), args.seed,
                           options=chat_options(args.ckpt))
    user, agent, ids = st.user[0], st.agent[0], st.ids[0].tolist()
    pieces = [{"t": t, "piece": p} for t, p in st.pieces[0]]
    out = Path(args.out)
    write_wav(out, np.stack([user, agent]), codec.sample_rate)
    whole = text.tok.decode_text(ids)
    first_speech = next((p["t"] for p in pieces), None)
    info = {"ckpt": str(args.ckpt), "question_s": round(len(question) / codec.sample_rate, 3),
            "said" if args.say else "input": args.say or args.inp, "text": whole, "pieces": pieces,
            "first_text_s": first_speech}
    heard = None
    if st.heard is not None:
        heard = [{"t": t, "piece": p} for t, p in st.heard[0]]
        info["heard"], info["heard_pieces"] = "".join(p["piece"] for p in heard).strip(), heard
        print(f"it heard: {info['heard']!r}")
    atomic_write_json(out.with_suffix(".json"), info, indent=2)
    plot_conversation(user, agent, pieces, codec.sample_rate, out.with_suffix(".png"), heard=heard)
    print(f"agent said: {whole!r}")
    print(f"wrote {out} (user | agent), {out.with_suffix('.json')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
