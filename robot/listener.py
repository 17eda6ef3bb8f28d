"""The spoken-command listener: a spoken instruction, heard through the project's codec, -> the command's slots.

A small RQ-Transformer on the same engine as the chat model and the policy, with two streams on the 12.5 Hz clock:

    audio.user      input       K codebooks: the codec's tokens of the spoken instruction (`speech.streams.CodecFrames`)
    command.slots   predicted   4 codebooks (colour, shape, side, target; `robot.command.CommandSlots`), 5 with
                                the halt slot in a listener built with stops (`listener_slots`)

It hears the instruction one 80 ms frame at a time (causal, `same_frame`: the slots of frame t are read from the
audio up to frame t). The store holds the slots on the `tail` silent frames after the utterance (ZERO_ID, no
target, everywhere else; a slot the instruction does not fill stays ZERO_ID too); training keeps the last of them
only (`last_target_only`), so the listener commits once the speaker is done; at inference the slots are read
greedily on the last tail frame, and only the slots the task
uses are kept (`TASK_SLOTS`: touch names an object; push adds a side; pick_place a target). The policy then runs with
these slots exactly as with a typed command (`Policy.rollout(..., slots=...)`): the spoken command enters as audio,
and no text recognizer sits in between.

Training data (`build_listener_store`): random commands of all three tasks and mid-episode corrections
(`envs.instructions`, training phrasings by default) spoken by the training user voices (`speech.voices`), with a
random lead silence and the user-channel degradations of the dialogue data (`speech.augment`: room, telephone, band
limit, noise, gain); held-out voices are for evaluation only.

Dimension legend: B batch, T frames, K codebooks, N samples.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.instructions import SIDE_WORDS, TARGET_WORDS, make_correction, make_instruction, make_stop
from envs.scene import OBJECT_NAMES, PALETTE
from multistream.atomic import atomic_write_text
from multistream.checkpoint import load_lm
from multistream.data import TOKENIZED_ATTR, StoreBinding, StreamBinding, spec_from_tokenizer, tokenizer_record
from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, RQTransformer
from multistream.store import EpisodeStore
from multistream.streams import FREE_ID, ZERO_ID, StreamSet, keep_codebooks
from multistream.transformer import TransformerConfig
from robot.command import CommandSlots

AUDIO = "audio.user"
SLOTS = "command.slots"
LISTENER_FILE = "listener.json"
TASKS = ("touch", "push", "pick_place", "correction")  # "correction": "no, the blue cube" (mid-episode)
# what a listener reads for each kind of utterance; a mid-episode utterance may be a correction or a "stop", so
# "correction" reads the halt slot too (listeners built with stops only: the others have no such slot)
TASK_SLOTS: dict[str, tuple[str, ...]] = {"touch": ("color", "shape"), "push": ("color", "shape", "side"),
                                          "pick_place": ("color", "shape", "target"),
                                          "correction": ("color", "shape", "halt"), "stop": ("halt",)}
HALT_VALUES = ["go", "stop"]  # a stops-listener's halt slot: every utterance says one or the other


def listener_slots(stops: bool = False) -> CommandSlots:
    """The listener's slots: the policy's four, and with `stops` a halt slot whose target is "stop" for a stop and
    "go" for every other utterance (a slot that only ever saw "stop" would learn to say it always). A policy's halt
    slot has "stop" alone; `CommandSlots.convert` maps "go" to its ZERO_ID."""
    from robot.command import slot_values

    values = slot_values()
    return CommandSlots({**values, "halt": HALT_VALUES} if stops else values)


def command_target(slots: CommandSlots, text: str) -> list[int]:
    """The slot ids a listener is trained to read for `text`: its parse, and "go" in a halt slot it leaves empty."""
    ids = slots.ids(text)
    if "halt" in slots.slots:
        k = slots.slots.index("halt")
        if ids[k] == ZERO_ID:
            ids[k] = slots.values["halt"].index("go")
    return ids


@dataclasses.dataclass
class ListenerConfig:
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    context: int = 100  # frames (8 s): longer than any spoken command plus its lead and tail
    depth_d_model: int = 64
    depth_layers: int = 1
    tail: int = 3  # silent frames after the utterance on which the slots are the target (and read)
    lead_s: float = 0.4  # at most this much silence before the utterance (uniform)
    # hear only the first N codebooks of the speech (the semantic one first), the rest ZERO_ID; 0: all of them
    audio_codebooks: int = 0

    def __post_init__(self) -> None:
        if self.audio_codebooks < 0:
            raise ValueError(f"audio_codebooks must be >= 0 (0: all), got {self.audio_codebooks}")
        if self.tail < 1:
            raise ValueError(f"tail must be >= 1 frame, got {self.tail}")
        if not 0.0 <= self.lead_s <= 2.0:
            raise ValueError(f"lead_s must be in [0, 2] s, got {self.lead_s}")


def listener_streams(codec, slots: CommandSlots) -> StreamSet:
    """The listener's streams, with codebooks and vocabularies read from the tokenizers."""
    return StreamSet((spec_from_tokenizer(AUDIO, codec, same_frame=True),
                      spec_from_tokenizer(SLOTS, slots, predicted=True)))


def listener_model_config(cfg: ListenerConfig, streams: StreamSet, dropout: float = 0.0) -> LMConfig:
    return LMConfig(streams=streams,
                    temporal=TransformerConfig(d_model=cfg.d_model, num_layers=cfg.num_layers,
                                               num_heads=cfg.num_heads, context=cfg.context, dropout=dropout),
                    depth=TransformerConfig(d_model=cfg.depth_d_model, num_layers=cfg.depth_layers, num_heads=4,
                                            dropout=dropout))


def listener_binding(streams: StreamSet, codec, slots: CommandSlots) -> StoreBinding:
    """Store rows (codes of both streams) -> batches; a store tokenized by another codec is refused."""
    return StoreBinding(streams, codec.frame_rate, [StreamBinding(streams[AUDIO], tokenizer=codec),
                                                     StreamBinding(streams[SLOTS], tokenizer=slots)])


def last_target_only(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the slot targets of each row's last target frame only (the others become ZERO_ID). Why: the slots of frame
    t are an input of frame t + 1 (the engine feeds predicted tokens back), so with targets on every tail frame the
    later ones could copy the earlier answer in training while at inference every earlier frame holds ZERO_ID; with
    one target frame the inputs are ZERO_ID in training and inference alike, and the listener has heard the whole
    tail of silence when it answers."""
    s = batch[SLOTS]  # [B, K, T]
    has = (s != ZERO_ID).any(dim=1)  # [B, T]
    t = s.shape[2]
    last = torch.where(has, torch.arange(t), -1).max(dim=1).values  # [B]
    keep = torch.arange(t)[None, :] == last[:, None]  # [B, T]
    return {**batch, SLOTS: s.masked_fill(~keep[:, None, :], ZERO_ID)}


def random_command(task: str, rng: np.random.Generator, split: str = "train") -> str:
    """A command of `task` about a random object (and side / target), phrased from `split`; task "correction" gives
    a mid-episode correction ("no, the blue cube"), task "stop" a "stop"."""
    if task not in TASK_SLOTS:
        raise ValueError(f"unknown task {task!r}; known: {list(TASK_SLOTS)}")
    colors = list(PALETTE)
    slots: dict[str, str] = {"obj": f"{colors[int(rng.integers(len(colors)))]} "
                                    f"{OBJECT_NAMES[int(rng.integers(len(OBJECT_NAMES)))]}"}
    if task in ("correction", "stop"):
        if split == "all":
            split = ("train", "heldout")[int(rng.integers(2))]
        return make_stop(split, rng) if task == "stop" else make_correction(split, rng, slots["obj"])
    if task == "push":
        slots["side"] = list(SIDE_WORDS)[int(rng.integers(len(SIDE_WORDS)))]
    if task == "pick_place":
        slots["target"] = list(TARGET_WORDS)[int(rng.integers(len(TARGET_WORDS)))]
    return make_instruction(task, split, rng, **slots)[0]


def command_audio(audio: np.ndarray, frame_size: int, tail: int, lead: int = 0) -> np.ndarray:
    """A mono utterance [N] -> [lead zeros, utterance, silence to a whole frame, `tail` silent frames] (float32)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"a spoken command must be non-empty mono audio [N], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the spoken command has non-finite samples")
    n = lead + x.size
    total = (-(-n // frame_size) + tail) * frame_size
    out = np.zeros(total, dtype=np.float32)
    out[lead:n] = x
    return out


def speak_command(text: str, voice, rng: np.random.Generator | None = None, augment: bool = False,
                  sample_rate: int | None = None) -> np.ndarray:
    """`text` spoken by `voice` (TTS at the codec's rate), degraded like a user channel when `augment`."""
    from speech.audio import SAMPLE_RATE
    from speech.augment import augment as degrade
    from speech.tts import synthesize

    if sample_rate is not None and sample_rate != SAMPLE_RATE:
        raise ValueError(f"the TTS layer speaks at {SAMPLE_RATE} Hz, the codec wants {sample_rate} Hz")
    x = synthesize(text, voice).audio
    if augment:
        if rng is None:
            raise ValueError("augment needs an rng")
        x, _ = degrade(x, rng)
    return x


def store_attrs(codec, slots: CommandSlots, cfg: ListenerConfig, **extra: Any) -> dict[str, Any]:
    return {TOKENIZED_ATTR: {AUDIO: tokenizer_record(codec), SLOTS: tokenizer_record(slots)},
            "listener_config": dataclasses.asdict(cfg), "slots": slots.values, **extra}


def build_listener_store(out: str | Path, codec, items: int, voice_split: str = "train", phrasing: str = "train",
                         seed: int = 0, augment: bool = True, cfg: ListenerConfig | None = None,
                         progress: bool = True, stops: bool = False) -> EpisodeStore:
    """`items` spoken commands (all tasks, random objects) -> an episode store of codec tokens and slot targets.
    Resumable: item i is drawn from rng(seed, i), and a rerun appends the items the store does not have yet (a store
    made with other settings or another codec is refused). A clip the TTS cannot speak is skipped and counted in
    the store's `skipped` list. `stops`: "stop" utterances join the tasks and the slots gain the halt slot
    (`listener_slots`)."""
    from tqdm import tqdm

    from speech.voices import user_voices

    cfg = cfg or ListenerConfig()
    slots = listener_slots(stops)
    tasks = TASKS + ("stop",) if stops else TASKS
    settings = {"voice_split": voice_split, "phrasing": phrasing, "seed": seed, "augment": augment,
                **({"stops": True} if stops else {})}  # older stores have no "stops" key
    voices = user_voices(voice_split)
    out = Path(out)
    attrs = store_attrs(codec, slots, cfg, settings=settings)
    if out.exists():
        store = EpisodeStore.open(out, mode="a")
        mine = {k: store.attrs.get(k) for k in (TOKENIZED_ATTR, "listener_config", "settings")}
        want = {k: json.loads(json.dumps(attrs[k])) for k in mine}
        if mine != want:
            raise ValueError(f"{out} was made with other settings or another codec ({mine}); use the same options "
                             "or another --out")
    else:
        store = EpisodeStore.create(out, fps=codec.frame_rate, attrs=attrs)
    done = {int(m["item"]) for m in store.episode_metas()}
    skipped = list(store.attrs.get("skipped", []))
    todo = [i for i in range(items) if i not in done and i not in skipped]
    bar = tqdm(todo, desc="listener data", disable=not progress)
    for i in bar:
        k = i % len(tasks)
        task, rng = tasks[k], np.random.default_rng([seed, 1 + k, i])
        text = random_command(task, rng, phrasing)
        voice = voices[int(rng.integers(len(voices)))]
        try:
            x = speak_command(text, voice, rng, augment, codec.sample_rate)
        except (ValueError, RuntimeError, OSError) as e:  # one unreadable clip must not stop the rest
            skipped.append(i)
            store.update_attrs(skipped=skipped)
            bar.write(f"item {i}: skipped ({e})")
            continue
        lead = int(rng.uniform(0.0, cfg.lead_s) * codec.sample_rate)
        arrays = encode_command(codec, slots, x, text, cfg.tail, lead)
        store.append_episode(arrays, meta={"item": i, "task": task, "text": text, "voice": voice.name})
    bar.close()
    return store


def encode_command(codec, slots: CommandSlots, audio: np.ndarray, text: str | None, tail: int,
                   lead: int = 0) -> dict[str, np.ndarray]:
    """One spoken command -> store rows: codes [T, K] and slot targets [T, 4] (ZERO_ID but on the tail frames)."""
    x = command_audio(audio, codec.frame_size, tail, lead)
    with torch.no_grad():
        codes = codec.encode(torch.from_numpy(x)[None, None])[0].T.numpy()  # [T, K]
    target = np.full((codes.shape[0], slots.num_codebooks), ZERO_ID, dtype=np.int16)
    if text is not None:
        target[-tail:] = np.asarray(command_target(slots, text), dtype=np.int16)
    return {AUDIO: codes.astype(np.int16), SLOTS: target}


class Listener:
    """A trained listener: codec + model; spoken commands -> slot ids (ZERO_ID for the slots a task does not use)."""

    def __init__(self, model: RQTransformer, cfg: ListenerConfig, codec, slots: CommandSlots) -> None:
        self.model, self.cfg, self.codec, self.slots = model.eval(), cfg, codec, slots
        self.streams = model.streams

    @classmethod
    def load(cls, ckpt: str | Path, codec=None, files: str | Path | None = None) -> Listener:
        """`ckpt`: checkpoint directory; `files` (default: ckpt, then its parent) holds listener.json, which names
        the codec (loaded from there unless given) and is checked against it."""
        from speech.streams import CodecFrames

        ckpt = Path(ckpt)
        where = [Path(files)] if files is not None else [ckpt, ckpt.parent]
        base = next((d for d in where if (d / LISTENER_FILE).is_file()), None)
        if base is None:
            raise FileNotFoundError(f"no {LISTENER_FILE} in {' or '.join(map(str, where))}: not a listener run "
                                    "(scripts/train_listener.py)")
        info = json.loads((base / LISTENER_FILE).read_text())
        if codec is None:  # a relative path is tried from here, then from the repository root
            cp = Path(info["codec_path"])
            root = Path(__file__).resolve().parents[1]
            if not cp.is_absolute() and not (cp / "model.safetensors").is_file() and (root / cp).is_dir():
                cp = root / cp
            if not (cp / "model.safetensors").is_file():
                raise FileNotFoundError(f"listener {ckpt}: its codec {info['codec_path']} is missing; pass codec=")
            codec = CodecFrames.load(cp)
        if tokenizer_record(codec) != info["codec"]:
            raise ValueError(f"listener {ckpt} was trained on codes of {info['codec']}, not {tokenizer_record(codec)}")
        slots = CommandSlots(info["slots"])
        cfg = ListenerConfig(**info["config"])
        streams = listener_streams(codec, slots)
        return cls(load_lm(ckpt, streams, base), cfg, codec, slots)

    @staticmethod
    def keep_task_slots(ids: list[int], task: str, slots: CommandSlots) -> list[int]:
        """The slots `task` uses; the others, and an id beyond its slot's values (the codebooks share the largest
        slot's vocabulary), become ZERO_ID. A heard "stop" (the halt slot) keeps the halt slot alone: the listener's
        colour and shape are untrained there (a stop's target names no object), so the object stays as it was."""
        if task not in TASK_SLOTS:
            raise ValueError(f"unknown task {task!r}; known: {list(TASK_SLOTS)}")
        kept = [int(i) if name in TASK_SLOTS[task] and 0 <= int(i) < len(slots.values[name]) else ZERO_ID
                for name, i in zip(slots.slots, ids, strict=True)]
        if "halt" in slots.slots and "stop" in slots.values["halt"]:
            h = slots.slots.index("halt")
            if kept[h] == slots.values["halt"].index("stop"):  # a "stop" names no object: it keeps the one it stops
                kept = [k if j == h else ZERO_ID for j, k in enumerate(kept)]
        return kept

    @torch.no_grad()
    def codes(self, audio: np.ndarray) -> torch.Tensor:
        """A spoken command (mono float at the codec's rate) -> codes [K, T] with the tail frames appended."""
        x = command_audio(audio, self.codec.frame_size, self.cfg.tail)
        return self.codec.encode(torch.from_numpy(x)[None, None])[0]

    @torch.no_grad()
    def listen(self, audios: list[np.ndarray], task: str, to: CommandSlots | None = None) -> list[list[int]]:
        """Spoken commands -> slot ids per command (the full-sequence forward; `listen_streaming` is the same,
        frame by frame); with `to` (e.g. a policy's slots) in that layout (`CommandSlots.convert`)."""
        heard = [self.listen_codes(self.codes(a), task) for a in audios]
        return heard if to is None else [self.slots.convert(ids, to) for ids in heard]

    @torch.no_grad()
    def listen_codes(self, codes: torch.Tensor, task: str) -> list[int]:
        """Codes [K, T] of a spoken command whose last `tail` frames are silence -> slot ids for `task`."""
        if codes.dim() != 2 or codes.shape[0] != self.streams[AUDIO].num_codebooks:
            raise ValueError(f"codes must be [{self.streams[AUDIO].num_codebooks}, T], got {tuple(codes.shape)}")
        t = codes.shape[1]
        batch = {AUDIO: keep_codebooks(codes[None].long(), self.cfg.audio_codebooks),  # what it was trained to hear
                 SLOTS: torch.full((1, self.slots.num_codebooks, t), ZERO_ID, dtype=torch.long)}
        return self.keep_task_slots(self._greedy_last(batch), task, self.slots)

    def _greedy_last(self, batch: dict[str, torch.Tensor]) -> list[int]:
        k = self.slots.num_codebooks
        ids: list[int] = []
        for j in range(k):  # teacher-force the codebooks chosen so far in the last frame, read codebook j
            b = dict(batch)
            s = b[SLOTS].clone()
            s[0, :j, -1] = torch.tensor(ids, dtype=torch.long) if j else s[0, :0, -1]
            b[SLOTS] = s
            logits = self.model(b).logits[SLOTS]  # [1, K, T, V]
            ids.append(int(logits[0, j, -1].argmax()))
        return ids

    @torch.no_grad()
    def listen_streaming(self, audio: np.ndarray, task: str) -> list[int]:
        """The same as `listen`, the way a live robot hears it: codec tokens frame by frame into `Generator.step`,
        slots forced to ZERO_ID until the last frame, where the depth transformer chooses them greedily."""
        c = keep_codebooks(self.codes(audio)[None], self.cfg.audio_codebooks)[0]  # [K, T]
        t = c.shape[1]
        with Generator(self.model, batch_size=1, sampling=Sampling(temperature=0.0)) as gen:
            for f in range(t):
                fill = FREE_ID if f == t - 1 else ZERO_ID
                out = gen.step({AUDIO: c[None, :, f], SLOTS: torch.full((1, self.slots.num_codebooks), fill,
                                                                        dtype=torch.long)})
        ids = out.tokens[SLOTS][0].tolist()
        return self.keep_task_slots(ids, task, self.slots)


def save_listener_files(out: str | Path, cfg: ListenerConfig, codec, slots: CommandSlots, codec_path: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"config": dataclasses.asdict(cfg), "codec": tokenizer_record(codec), "codec_path": str(codec_path),
            "slots": slots.values}
    atomic_write_text(out / LISTENER_FILE, json.dumps(info, indent=2))
