"""A commanded robot policy on the multistream engine: streams, episode layout, and closed-loop rollouts.

Streams (all on the 12.5 Hz env clock; one env step per frame):

    action                    predicted   5 codebooks (dx, dy, dz, dyaw, grip), uniform bins over [-1, 1]
    command                   input       1 codebook, instruction words (robot.command), one per listening frame
    command.slots             input       4 codebooks (colour, shape, side, target), on every frame (the other layout)
    observation.images.front  input       continuous [64, 64, 3] uint8 -> [0, 1] (or standardised per channel:
                                          camera_norm), a CNN trained with the model; or, with `camera_tokens`,
                                          the tokens of a pretrained camera VQ (robot/camera_vq.py), one input
                                          codebook per grid cell
    observation.state         input       continuous [13], normalised by the demos' mean/std
    observation.gripper       input       continuous [2], mean/std
    observation.force         input       6 codebooks, quantile bins fitted on the demos
    observation.touch         input       2 codebooks, quantile bins
    text                      predicted   1 codebook, the agent's reply words (PolicyConfig.reply; robot/reply.py)
    audio.agent               predicted   K codebooks of the codec, the agent's spoken reply (PolicyConfig.reply_audio)

Every observation stream is `same_frame`: the action of frame t is predicted from the observation of frame t
(observe, then act), and the action has no delay, so `Generator.step` returns it in the frame it is asked for.

Episode layout (store rows = frames): a *listening* prefix of one frame per command word, during which the robot
holds still (the observation repeats the first one, the action is ZERO_ID: no target, zero embedding), then the
*acting* frames of the demonstration (command ZERO_ID, action = the expert's). In a rollout the listening rows
force the action to ZERO_ID and the acting rows leave it to the model (FREE_ID), so one batched step serves envs in
different phases; a finished env is reset and its batch row restarted (`Generator.reset(rows)`).

The other layout, `PolicyConfig(command="slots")`: no listening prefix and no word stream; the instruction's parsed
slots (`robot.command.CommandSlots`) are an input on every frame (`same_frame`), acting from the first frame, so the
target's colour and shape are in view at each decision instead of having to be recalled through attention over the
listening frames (RT-1 and ACT-style policies condition every step on the instruction this way).

Dimension legend: B batch (envs), T frames, K codebooks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from envs import features as F
from envs.base import EnvConfig
from multistream.atomic import atomic_write_text
from multistream.checkpoint import load_lm
from multistream.data import TOKENIZED_ATTR, StoreBinding, StreamBinding, spec_from_tokenizer, tokenizer_record
from multistream.generate import Generator, Sampling
from multistream.lm import LMConfig, LMOutput, RQTransformer
from multistream.loss import LossOutput
from multistream.store import EpisodeStore
from multistream.streams import FREE_ID, ZERO_ID, StreamSet, StreamSpec
from multistream.transformer import TransformerConfig
from robot.camera_vq import CameraTokens
from robot.command import CommandSlots, CommandWords, slot_values
from robot.reply import AGENT_AUDIO, TEXT, ReplyVoice, ReplyWords, reply_frames, taught_replies
from robot.tokenizers import QuantileBins, UniformBins

# (seed index, observation, env info, env) -> None (the policy acts) or an action [5] executed instead
Intervene = Callable[[int, dict[str, np.ndarray], dict[str, Any], gym.Env], "np.ndarray | None"]

COMMAND = "command"
COMMAND_SLOTS = "command.slots"
COMMAND_LAYOUTS = ("listen", "slots")  # words one per frame before acting | parsed slots on every frame
RGB = 3  # camera channels in the store
ACTION = F.ACTION
VECTOR_OBS = (F.STATE, F.GRIPPER)  # continuous, mean/std
BINNED_OBS = (F.FORCE, F.TOUCH)  # quantile bins
TOKENIZERS_FILE = "policy_tokenizers.json"
NORM_FILE = "policy_norm.json"
CAMERA_NORMS = ("unit", "meanstd")
POLICY_FILE = "policy.json"


@dataclasses.dataclass
class PolicyConfig:
    action_bins: int = 21  # per action dimension, uniform over [-1, 1] (0.1 resolution)
    sensor_bins: int = 16  # quantile bins per force/touch dimension
    camera: bool = True  # the 64x64 camera through a CNN trained with the model
    image_size: int = 64
    d_model: int = 128  # temporal transformer
    num_layers: int = 4
    num_heads: int = 4
    context: int = 250  # frames (20 s): longer than any episode plus its command
    depth_d_model: int = 64  # depth transformer over the 5 action codebooks
    depth_layers: int = 2
    command: str = "listen"  # COMMAND_LAYOUTS: "listen" (word stream, listening prefix) or "slots" (every frame)
    fuse_command: bool = False  # "slots" only: the slots also as constant one-hot planes beside the camera's RGB
    camera_norm: str = "unit"  # CAMERA_NORMS: "unit" (uint8 / 255) or "meanstd" (per-channel mean/std of the demos)
    reply: bool = False  # "slots" only: the agent's own words as a predicted `text` stream (robot/reply.py)
    reply_audio: int = 0  # with reply: codebooks of a predicted `audio.agent` stream saying them (0: none)
    reply_tail: int = 0  # with reply: frames after the episode's end in which the robot only talks
    camera_tokens: str = ""  # a camera VQ checkpoint (robot/camera_vq.py): the camera as its tokens, not the CNN

    def __post_init__(self) -> None:
        if self.command not in COMMAND_LAYOUTS:
            raise ValueError(f"command layout must be one of {COMMAND_LAYOUTS}, got {self.command!r}")
        if self.camera_norm not in CAMERA_NORMS:
            raise ValueError(f"camera_norm must be one of {CAMERA_NORMS}, got {self.camera_norm!r}")
        if self.fuse_command and (self.command != "slots" or not self.camera):
            raise ValueError(f"fuse_command needs the slots layout and the camera, got command={self.command!r}, "
                             f"camera={self.camera}")
        if self.camera_tokens and (not self.camera or self.fuse_command):
            raise ValueError(f"camera_tokens needs the camera and no fuse_command (the planes enter the CNN, which "
                             f"a tokenized camera does not have), got camera={self.camera}, "
                             f"fuse_command={self.fuse_command}")
        if self.reply and self.command != "slots":
            raise ValueError(f"reply needs the slots layout, got command={self.command!r}")
        if (self.reply_audio or self.reply_tail) and not self.reply:
            raise ValueError(f"reply_audio and reply_tail need reply=True, got reply_audio={self.reply_audio}, "
                             f"reply_tail={self.reply_tail}")
        if self.reply_audio < 0 or self.reply_tail < 0:
            raise ValueError(f"reply_audio and reply_tail must be >= 0, got {self.reply_audio}, {self.reply_tail}")
        if self.action_bins < 2 or self.sensor_bins < 2:
            raise ValueError(f"action_bins and sensor_bins must be >= 2, got {self.action_bins}, {self.sensor_bins}")
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512], got {self.image_size}")


@dataclasses.dataclass
class PolicyTokenizers:
    action: UniformBins
    force: QuantileBins
    touch: QuantileBins
    words: CommandWords
    slots: CommandSlots = dataclasses.field(default_factory=CommandSlots)
    reply: ReplyWords = dataclasses.field(default_factory=ReplyWords)
    voice: ReplyVoice | None = None  # the agent's voice (PolicyConfig.reply_audio)
    camera: CameraTokens | None = None  # the camera VQ (PolicyConfig.camera_tokens)

    @classmethod
    def fit(cls, demos: EpisodeStore, cfg: PolicyConfig, voice: ReplyVoice | None = None) -> PolicyTokenizers:
        """Quantile bins of force and touch fitted on every step of the demo store; the command slots gain the halt
        slot when a demo holds a "stop" correction. `voice`: the agent's voice, needed by `cfg.reply_audio`."""
        if bool(cfg.reply_audio) != (voice is not None) or (voice is not None and
                                                              voice.num_codebooks != cfg.reply_audio):
            raise ValueError(f"reply_audio={cfg.reply_audio} needs a ReplyVoice with that many codebooks "
                             f"(got {None if voice is None else voice.num_codebooks})")
        force = np.concatenate([demos.episode(i, [F.FORCE])[F.FORCE] for i in range(demos.num_episodes)])
        touch = np.concatenate([demos.episode(i, [F.TOUCH])[F.TOUCH] for i in range(demos.num_episodes)])
        return cls(action=UniformBins(F.EE_DELTA_ACTION_DIM, cfg.action_bins, name="action bins"),
                   force=QuantileBins.fit(force, cfg.sensor_bins, name="force bins"),
                   touch=QuantileBins.fit(touch, cfg.sensor_bins, name="touch bins"),
                   words=CommandWords(),
                   slots=CommandSlots(slot_values(halt=any((m.get("correction") or {}).get("stop")
                                                           for m in demos.episode_metas()))),
                   voice=voice, camera=CameraTokens.load(cfg.camera_tokens) if cfg.camera_tokens else None)

    def with_camera(self, path: str) -> PolicyTokenizers:
        """These tokenizers with the camera VQ at `path` (a store's tokenizers are the camera's pixels)."""
        return dataclasses.replace(self, camera=CameraTokens.load(path))

    def to_json(self) -> dict[str, Any]:
        return {"action": {"channels": self.action.channels, "bins": self.action.bins},
                "force": self.force.to_json(), "touch": self.touch.to_json(), "words": self.words.words,
                "slots": self.slots.values, "reply": self.reply.words,
                **({"voice": self.voice.to_json()} if self.voice is not None else {}),
                **({"camera": self.camera.to_json()} if self.camera is not None else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PolicyTokenizers:
        try:
            return cls(action=UniformBins(d["action"]["channels"], d["action"]["bins"], name="action bins"),
                       force=QuantileBins.from_json(d["force"]), touch=QuantileBins.from_json(d["touch"]),
                       words=CommandWords(d["words"]),
                       slots=CommandSlots(d["slots"]) if "slots" in d else CommandSlots(),  # older files: none
                       reply=ReplyWords(d["reply"]) if "reply" in d else ReplyWords(),
                       voice=ReplyVoice.from_json(d["voice"]) if "voice" in d else None,
                       camera=CameraTokens.from_json(d["camera"]) if "camera" in d else None)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed policy tokenizers JSON: missing or bad {e}") from e

    def for_key(self, key: str):
        return {F.FORCE: self.force, F.TOUCH: self.touch}[key]


def policy_streams(cfg: PolicyConfig, tok: PolicyTokenizers) -> StreamSet:
    specs = [spec_from_tokenizer(ACTION, tok.action, predicted=True)]
    if cfg.reply:  # the agent's words, predicted after the action in each frame (PAD-heavy: PAD weighs half)
        specs.append(spec_from_tokenizer(TEXT, tok.reply, predicted=True, pad_id=tok.reply.pad_id, pad_weight=0.5))
    if cfg.reply_audio:  # ... and its voice, after the words it says (no acoustic delay: one frame, one step)
        if tok.voice is None or tok.voice.num_codebooks != cfg.reply_audio:
            raise ValueError(f"reply_audio={cfg.reply_audio}: the policy tokenizers have no agent voice with that "
                             "many codebooks")
        specs.append(spec_from_tokenizer(AGENT_AUDIO, tok.voice, predicted=True))
    if cfg.command == "slots":  # in view on every frame, read with the frame's observation
        specs.append(spec_from_tokenizer(COMMAND_SLOTS, tok.slots, same_frame=True))
    else:
        specs.append(spec_from_tokenizer(COMMAND, tok.words))
    if cfg.camera and cfg.camera_tokens:  # the camera VQ's tokens, one input codebook per grid cell
        if tok.camera is None:
            raise ValueError(f"camera_tokens={cfg.camera_tokens!r}: the policy tokenizers have no camera VQ")
        specs.append(spec_from_tokenizer(F.IMAGE_FRONT, tok.camera, same_frame=True))
    elif cfg.camera:
        channels = RGB + (command_planes_count(tok) if cfg.fuse_command else 0)
        specs.append(StreamSpec(F.IMAGE_FRONT, continuous=True,
                                feature_shape=(cfg.image_size, cfg.image_size, channels), encoder="conv2d",
                                same_frame=True))
    specs += [StreamSpec(F.STATE, continuous=True, feature_dim=F.STATE_DIM, same_frame=True),
              StreamSpec(F.GRIPPER, continuous=True, feature_dim=F.GRIPPER_DIM, same_frame=True)]
    specs += [spec_from_tokenizer(k, tok.for_key(k), same_frame=True) for k in BINNED_OBS]
    return StreamSet(tuple(specs))


def model_config(cfg: PolicyConfig, streams: StreamSet, dropout: float = 0.0) -> LMConfig:
    """`dropout`: a training setting (both transformers; inactive in eval mode), not part of the policy files."""
    return LMConfig(
        streams=streams,
        temporal=TransformerConfig(d_model=cfg.d_model, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                                   context=cfg.context, dropout=dropout),
        depth=TransformerConfig(d_model=cfg.depth_d_model, num_layers=cfg.depth_layers, num_heads=4,
                                dropout=dropout),
    )


def drop_action_input(model: RQTransformer) -> None:
    """Zero and freeze the temporal transformer's input embeddings of the action stream, so that the policy no
    longer sees its own past actions (a training option, like dropout; the zero rows travel in the weights, so a
    loaded policy needs nothing else). Why: with its past actions as input, an imitation policy can read the
    expert's intent from the previous action (teacher-forced, the history already points at the target) instead
    of from the camera and the command: the copycat shortcut (Wen et al. 2020; de Haan et al. 2019, causal
    confusion). The depth transformer still conditions each action codebook on the ones before it in the same
    frame."""
    rows = _action_embedding_rows(model)
    if not rows:
        raise ValueError(f"the model has no {ACTION!r} token stream")
    with torch.no_grad():
        for r in rows:
            model.embs[r].weight.zero_()
            model.embs[r].weight.requires_grad_(False)


def sees_action_input(model: RQTransformer) -> bool:
    """False when `drop_action_input` was applied (every action input embedding is zero)."""
    return any(bool(model.embs[r].weight.abs().sum() > 0) for r in _action_embedding_rows(model))


def _action_embedding_rows(model: RQTransformer) -> list[int]:
    """Indices in `model.embs` of the action stream's codebooks (embeddings follow the token streams' order)."""
    i = 0
    for s in model.streams.token_streams:
        if s.name == ACTION:
            return list(range(i, i + s.num_codebooks))
        i += s.num_codebooks
    return []


def first_frames_loss(out: LMOutput, streams: StreamSet, frames: int = 3, weight: float = 1.0) -> LossOutput:
    """The policy's action loss with the first `frames` acting frames of each row weighted by `weight` (a row's
    acting frames are those with an action target: after the listening prefix, or from frame 0 in the "slots"
    layout; windows start at an episode's first frame). Why: the first decision (which object to go to) is one
    frame in ~35; once the expert moves, the next action is predictable from the history, so an unweighted loss
    barely asks for the decision (docs/robot.md, the diagnosis). `metrics["acc_first_xy"]`: dx/dy accuracy on
    the first acting frame, the decision itself. weight 1 is `lm_loss` (plus that metric). The other predicted
    streams (the agent's `text` with `PolicyConfig.reply`) add their `lm_loss` unweighted."""
    if frames < 1 or not weight > 0:
        raise ValueError(f"first_frames_loss needs frames >= 1 and weight > 0, got {frames}, {weight}")
    if not streams.predicted or streams.predicted[0].name != ACTION:
        raise ValueError(f"first_frames_loss is for policies predicting {ACTION!r} first")
    logits = out.logits[ACTION].float()  # [B, K, T, V]
    tgt, mask = out.targets[ACTION], out.mask[ACTION]  # [B, K, T]
    acting = mask.any(1)  # [B, T]
    rank = acting.long().cumsum(-1)  # [B, T]: 1 on a row's first acting frame
    first = acting & (rank <= frames)  # [B, T]
    w = mask.float() * (1.0 + (weight - 1.0) * first[:, None, :].float())  # [B, K, T]
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 2), torch.where(mask, tgt, 0).flatten(),
                                           reduction="none").view_as(tgt)  # [B, K, T]
    loss = (ce * w).sum() / w.sum().clamp_min(1e-8)
    with torch.no_grad():
        hit = (logits.argmax(-1) == tgt) & mask  # [B, K, T]
        n = int(mask.sum())
        at1 = (acting & (rank == 1))[:, None, :] & mask  # [B, K, T]: the first acting frame
        xy = at1[:, :2]
        metrics = {"acc_first_xy": float(hit[:, :2][xy].float().mean()) if bool(xy.any()) else float("nan")}
    result = LossOutput(total=loss, per_stream={ACTION: float(loss.detach())},
                        accuracy={ACTION: float(hit.sum()) / max(n, 1)}, tokens=n, metrics=metrics)
    others = [sp for sp in streams.predicted if sp.name != ACTION]
    if others:
        from multistream.loss import lm_loss

        rest = lm_loss(out, StreamSet(tuple(others)))
        result = LossOutput(total=result.total + rest.total, per_stream={**result.per_stream, **rest.per_stream},
                            accuracy={**result.accuracy, **rest.accuracy}, tokens=result.tokens + rest.tokens,
                            metrics=metrics)
    return result


def command_planes_count(tok: PolicyTokenizers) -> int:
    """Channels that `fuse_command` adds to the camera image: one per value of every slot."""
    return sum(len(v) for v in tok.slots.values.values())


def command_planes(slots: torch.Tensor, tok: PolicyTokenizers) -> torch.Tensor:
    """Slot ids [B, K, T] (ZERO_ID where unfilled) -> one-hot over every slot's values [B, T, P]."""
    parts = []
    for k, values in enumerate(tok.slots.values.values()):
        ids = slots[:, k]  # [B, T]
        hot = torch.nn.functional.one_hot(ids.clamp_min(0).long(), len(values)).float()  # [B, T, V_k]
        parts.append(hot * (ids >= 0)[..., None].float())
    return torch.cat(parts, dim=-1)  # [B, T, P]


def fuse_command(batch: dict[str, torch.Tensor], streams: StreamSet, tok: PolicyTokenizers) -> dict[str, torch.Tensor]:
    """Early fusion (`PolicyConfig.fuse_command`): the command's slots as constant planes beside the camera's RGB
    channels, so that the CNN's first layer can pick out the pixels of the named colour and shape (a per-channel
    bias set by the command: FiLM's shift, without an engine change). Identity for a policy without it.
    batch: IMAGE [B, T, H, W, 3], COMMAND_SLOTS [B, K, T] -> IMAGE [B, T, H, W, 3 + P]."""
    if F.IMAGE_FRONT not in streams or not _fused(streams[F.IMAGE_FRONT]):
        return batch
    img = batch[F.IMAGE_FRONT]  # [B, T, H, W, 3]
    planes = command_planes(batch[COMMAND_SLOTS], tok).to(img.dtype)  # [B, T, P]
    planes = planes[:, :, None, None, :].expand(*img.shape[:4], planes.shape[-1])  # [B, T, H, W, P]
    return {**batch, F.IMAGE_FRONT: torch.cat([img, planes], dim=-1)}


def _fused(camera: StreamSpec) -> bool:
    """Whether the camera stream takes the command planes beside its RGB (`fuse_command`)."""
    return camera.continuous and camera.feature_shape[-1] != RGB


def policy_binding(streams: StreamSet, tok: PolicyTokenizers, camera_norm: str = "unit") -> StoreBinding:
    """The store-to-token binding of the policy (training batches and live observations alike). With
    `fuse_command` the store holds RGB only: the binding reads the camera as RGB and `fuse_command` adds the
    planes to its batches. `camera_norm` (`PolicyConfig.camera_norm`): "unit" maps uint8 to [0, 1]; "meanstd"
    standardises each colour channel with the store's statistics (saved in the policy's norm file), which is what
    lets the CNN see a few-pixel object on a table that fills most of the frame (docs/robot.md)."""
    if camera_norm not in CAMERA_NORMS:
        raise ValueError(f"camera_norm must be one of {CAMERA_NORMS}, got {camera_norm!r}")
    if F.IMAGE_FRONT in streams and _fused(streams[F.IMAGE_FRONT]):
        img = streams[F.IMAGE_FRONT]
        streams = StreamSet(tuple(dataclasses.replace(img, feature_shape=(*img.feature_shape[:2], RGB))
                                  if s.name == F.IMAGE_FRONT else s for s in streams))
    b = [StreamBinding(streams[ACTION], tokenizer=tok.action)]
    if TEXT in streams:
        b.append(StreamBinding(streams[TEXT], tokenizer=tok.reply))
    if AGENT_AUDIO in streams:
        b.append(StreamBinding(streams[AGENT_AUDIO], tokenizer=tok.voice))
    b += [StreamBinding(streams[k], tokenizer=t) for k, t in ((COMMAND, tok.words), (COMMAND_SLOTS, tok.slots))
          if k in streams]
    if F.IMAGE_FRONT in streams and not streams[F.IMAGE_FRONT].continuous:  # the camera VQ's tokens
        b.append(StreamBinding(streams[F.IMAGE_FRONT], tokenizer=tok.camera))
    elif F.IMAGE_FRONT in streams:
        b.append(StreamBinding(streams[F.IMAGE_FRONT], normalize=camera_norm))
    b += [StreamBinding(streams[k], normalize="meanstd") for k in VECTOR_OBS]
    b += [StreamBinding(streams[k], tokenizer=tok.for_key(k)) for k in BINNED_OBS]
    return StoreBinding(streams, tok.action.frame_rate, b)


def obs_keys(streams: StreamSet) -> list[str]:
    return [s.name for s in streams if s.name not in (ACTION, COMMAND, COMMAND_SLOTS, TEXT, AGENT_AUDIO)]


def listening_episode(demo: dict[str, np.ndarray], command: list[int], tok: PolicyTokenizers,
                      keys: list[str]) -> dict[str, np.ndarray]:
    """One demo episode (`robot.demos` layout) -> the policy store's rows: listening prefix + acting frames."""
    n = len(command)
    if n < 1:
        raise ValueError("a command needs at least one word")
    out = {}
    for k in keys:
        x = demo[k]
        out[k] = np.concatenate([np.repeat(x[:1], n, axis=0), x], axis=0)  # the robot holds still while listening
    act = tok.action.encode(torch.from_numpy(demo[ACTION].astype(np.float32))[None])[0].T.numpy()  # [T, 5]
    out[ACTION] = np.concatenate([np.full((n, act.shape[1]), ZERO_ID), act]).astype(np.int16)
    t = len(demo[ACTION])
    out[COMMAND] = np.concatenate([np.asarray(command), np.full(t, ZERO_ID)]).astype(np.int16)
    return out


def slots_episode(demo: dict[str, np.ndarray], slots: list[int], tok: PolicyTokenizers,
                  keys: list[str]) -> dict[str, np.ndarray]:
    """One demo episode -> the store rows of the "slots" layout: the demo's frames as they are (acting from the first
    frame), the command's slot ids [K] repeated on every frame."""
    if len(slots) != tok.slots.num_codebooks:
        raise ValueError(f"{len(slots)} slot ids for {tok.slots.num_codebooks} slots")
    out = {k: demo[k] for k in keys}
    out[ACTION] = tok.action.encode(torch.from_numpy(demo[ACTION].astype(np.float32))[None])[0].T.numpy()
    out[ACTION] = out[ACTION].astype(np.int16)  # [T, 5]
    out[COMMAND_SLOTS] = np.tile(np.asarray(slots, dtype=np.int16), (len(demo[ACTION]), 1))  # [T, K]
    return out


def merge_slots(new: list[int], before: list[int]) -> list[int]:
    """The slots after a correction: the slots it names (`new`, e.g. colour and shape) replace the command's
    (`before`), the others (push's side, pick_place's target: ZERO_ID in `new`) stay."""
    return [n if n != ZERO_ID else b for n, b in zip(new, before, strict=True)]


def corrected_slots(slots: CommandSlots, before: list[int], text: str) -> list[int]:
    """The slots after the typed correction `text` ("no, the blue cube")."""
    return merge_slots(slots.ids(text), before)


def command_episode(demo: dict[str, np.ndarray], text: str, tok: PolicyTokenizers, cfg: PolicyConfig,
                    keys: list[str], correction: dict[str, Any] | None = None,
                    task: str = "") -> tuple[dict[str, np.ndarray], int]:
    """One demo episode commanded by `text` -> (store rows in the config's command layout, listening frames).
    `correction` ({frame, text}, from the demo's metadata): from that frame on the slots are the corrected ones.
    With `cfg.reply`, the `text` stream holds the agent's reply to the command from frame 0 and to the correction
    from its frame (`task` names the task the reply is about); with `cfg.reply_audio` the `audio.agent` stream says
    it (`tok.voice`); `cfg.reply_tail` frames follow the demo's end, in which the robot holds still (no action
    target, the last observation repeated) and only talks."""
    if cfg.command == "slots":
        before = tok.slots.ids(text)
        rows = slots_episode(demo, before, tok, keys)
        k, after = None, None
        if correction is not None:
            k = int(correction["frame"])
            if not 0 < k < len(rows[ACTION]):
                raise ValueError(f"correction at frame {k} outside the episode's {len(rows[ACTION])} frames")
            after = corrected_slots(tok.slots, before, correction["text"])
            rows[COMMAND_SLOTS][k:] = np.asarray(after, dtype=np.int16)
        if cfg.reply:
            if not task:
                raise ValueError("a reply needs the episode's task")
            if cfg.reply_tail:
                rows = talking_tail(rows, cfg.reply_tail)
            replies = taught_replies(task, tok.slots, before, k, after)
            rows[TEXT] = np.asarray(reply_frames(len(rows[ACTION]), replies, tok.reply), dtype=np.int16)
            if cfg.reply_audio:
                rows[AGENT_AUDIO] = tok.voice.frames(len(rows[ACTION]), replies)
        return rows, 0
    if correction is not None:
        raise ValueError("mid-episode corrections need the slots layout (make_robot_data.py --command-every-frame)")
    words = tok.words.ids(text)
    return listening_episode(demo, words, tok, keys), len(words)


def talking_tail(rows: dict[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """`frames` rows after an episode's last: every stream repeats its last row, except the action (ZERO_ID: no
    target, nothing asked of the model)."""
    out = {k: np.concatenate([v, np.repeat(v[-1:], frames, axis=0)]) for k, v in rows.items()}
    out[ACTION][-frames:] = ZERO_ID
    return out


def same_config(stored: dict[str, Any] | None, cfg: PolicyConfig) -> bool:
    """Whether a stored policy config (from before a field existed: that field at its default) is `cfg`."""
    try:
        return stored is not None and PolicyConfig(**stored) == cfg
    except (TypeError, ValueError):
        return False


def build_policy_store(demos: EpisodeStore, out: str | Path, cfg: PolicyConfig, progress: bool = True,
                       voice: ReplyVoice | None = None) -> EpisodeStore:
    """Demo store (`scripts/collect_demos.py`) -> policy store (listening prefix + acting frames per episode).
    Resumable: an existing `out` keeps its tokenizers and receives the demo episodes it does not have yet.
    `voice`: the agent's voice (`cfg.reply_audio`; a resumed store reloads its own)."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists():
        store = EpisodeStore.open(out, mode="a")
        if "policy_tokenizers" not in store.attrs:
            raise ValueError(f"{out} exists and is not a policy store; choose another --out")
        if not same_config(store.attrs.get("policy_config"), cfg):
            raise ValueError(f"{out} was made with policy config {store.attrs.get('policy_config')}, not "
                             f"{dataclasses.asdict(cfg)}; use the same options or another --out")
        tok = PolicyTokenizers.from_json(store.attrs["policy_tokenizers"])
    else:
        tok = PolicyTokenizers.fit(demos, cfg, voice)
        store = EpisodeStore.create(out, fps=demos.fps, attrs={**store_attrs(tok, cfg), "demos": str(demos.path)})
    keys = obs_keys(policy_streams(cfg, tok))
    metas = demos.episode_metas()
    for i in tqdm(range(store.num_episodes, demos.num_episodes), desc="policy store", disable=not progress):
        meta = metas[i]
        arrays, listen = command_episode(demos.episode(i, keys + [ACTION]), meta["instruction"], tok, cfg, keys,
                                         meta.get("correction"), task=meta["task"])
        store.append_episode(arrays, {**meta, "command": meta["instruction"], "listen_frames": listen,
                                      "demo_episode": i})
    return store


def store_attrs(tok: PolicyTokenizers, cfg: PolicyConfig) -> dict[str, Any]:
    """Attrs of a policy store: which tokenizers made its stored codes, and the fitted tokenizers themselves."""
    command = {COMMAND_SLOTS: tokenizer_record(tok.slots)} if cfg.command == "slots" else \
        {COMMAND: tokenizer_record(tok.words)}
    if cfg.reply:
        command[TEXT] = tokenizer_record(tok.reply)
    if cfg.reply_audio:
        command[AGENT_AUDIO] = tokenizer_record(tok.voice)
    return {TOKENIZED_ATTR: {ACTION: tokenizer_record(tok.action), **command},
            "policy_tokenizers": tok.to_json(), "policy_config": dataclasses.asdict(cfg)}


def save_policy_files(out: str | Path, cfg: PolicyConfig, tok: PolicyTokenizers, binding: StoreBinding) -> None:
    """Tokenizers, normalisation and config beside a checkpoint: what `Policy.load` needs besides the weights."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TOKENIZERS_FILE, json.dumps(tok.to_json()))
    atomic_write_text(out / NORM_FILE, json.dumps(binding.norm_state()))
    atomic_write_text(out / POLICY_FILE, json.dumps(dataclasses.asdict(cfg), indent=2))


class Policy:
    """A trained policy: model + tokenizers + normalisation; runs episodes closed-loop in the gym envs."""

    def __init__(self, model: RQTransformer, cfg: PolicyConfig, tok: PolicyTokenizers, binding: StoreBinding):
        self.model, self.cfg, self.tok, self.binding = model.eval(), cfg, tok, binding
        self.streams = model.streams
        self._obs = obs_keys(self.streams)
        self.last_timing: dict[str, float] = {}  # of the last rollout: batched frame time (tokenizers + model step)

    @classmethod
    def load(cls, ckpt: str | Path, files: str | Path | None = None) -> Policy:
        """`ckpt`: a checkpoint directory (config.json + model.safetensors); `files`: where the policy files are
        (default: `ckpt`, then its parent, i.e. a training run directory)."""
        ckpt = Path(ckpt)
        where = [Path(files)] if files is not None else [ckpt, ckpt.parent]
        base = next((d for d in where if (d / TOKENIZERS_FILE).is_file()), None)
        if base is None:
            raise FileNotFoundError(f"no {TOKENIZERS_FILE} in {', '.join(map(str, where))}: not a policy checkpoint")
        cfg = PolicyConfig(**json.loads((base / POLICY_FILE).read_text()))
        tok = PolicyTokenizers.from_json(json.loads((base / TOKENIZERS_FILE).read_text()))
        streams = policy_streams(cfg, tok)
        model = load_lm(ckpt, streams, base)
        norm = json.loads((base / NORM_FILE).read_text())
        binding = policy_binding(streams, tok, cfg.camera_norm).load_norm_state(norm)
        return cls(model, cfg, tok, binding)

    def _action_codes(self, action: np.ndarray) -> torch.Tensor:
        """An executed action [5] (e.g. an expert's) -> its tokens [5]; refused if not a finite [5] vector."""
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (F.EE_DELTA_ACTION_DIM,) or not np.isfinite(a).all():
            raise ValueError(f"an intervening action must be a finite [{F.EE_DELTA_ACTION_DIM}] vector, got "
                             f"{a.tolist()}")
        return self.tok.action.encode(torch.from_numpy(a)[None, None])[0, :, 0]  # [5]

    def _obs_inputs(self, obs: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        items = {k: torch.from_numpy(np.stack([o[k] for o in obs]))[:, None] for k in self._obs}  # [B, 1, ...]
        batch = self.binding.raw_to_batch(items, self._obs)
        return {k: (v[:, 0] if self.streams[k].continuous else v[:, :, 0]) for k, v in batch.items()}

    def _check_slots(self, ids: list[int], text: str) -> None:
        if len(ids) != self.tok.slots.num_codebooks or any(
                v != ZERO_ID and not 0 <= v < self.tok.slots.cardinality for v in ids):
            raise ValueError(f"slot ids {ids} for {text!r}: need {self.tok.slots.num_codebooks} ids in "
                             f"[0, {self.tok.slots.cardinality}) or ZERO_ID")

    @torch.no_grad()
    def rollout(self, task: str, seeds: list[int], split: str = "train", commands: list[str] | None = None,
                batch_size: int = 8, sampling: Sampling | None = None, progress: bool = False,
                intervene: Intervene | None = None,
                hear: Callable[[int, str], list[int]] | None = None,
                correct: Callable[[int, int, gym.Env, list[int]], list[int] | None] | None = None) -> list[dict]:
        """Run one episode per seed, `batch_size` envs at a time in one batched Generator; returns per seed
        {seed, success, length, command, actions [T, 5]} in seed order. `commands` overrides the env's own
        instruction (one per seed).

        `hear(i, text)` (slots layout only): the slot ids the robot understood when seed index `i`'s command `text`
        was spoken to it (e.g. `robot.listener.Listener` on the spoken command's codec tokens), used instead of the
        typed command's parse; they are returned as `slots`.

        `correct(i, frame, env, slots)` (slots layout only): called before every acting frame; it may retarget the
        env (a mid-episode correction, `robot.experts.apply_correction`) and return the new slot ids, which are the
        command input from this frame on (None: no change). The frame of the correction is returned as
        `corrected_at` (None if there was none).

        A policy with the agent's `text` stream (`PolicyConfig.reply`) says its words while it acts: `reply` is
        what it said (PAD skipped), `reply_ids` its token on every acting frame and on the `reply_tail` frames after
        the episode's end (the env is done; the robot only talks); `first_slots` are the slots it started from
        (`slots` those it ended with). With `reply_audio` it also speaks: `reply_codes` [K, frames] are its
        `audio.agent` tokens on those frames and `reply_audio` [frames * frame_size] their decoded audio (float32
        at `tok.voice.sample_rate`).

        `intervene(i, obs, info, env)`: called before every acting frame of seed index `i` with the observation
        the action will be chosen from, the env's info of that state (privileged state included) and the env;
        it returns None (the policy acts) or an action [5] that is executed instead. The action is forced into
        the Generator as its tokens, so the policy's own history holds what was executed (DAgger's mixture)."""
        if task not in envs.TASK_IDS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(envs.TASK_IDS)}")
        if not seeds:
            raise ValueError("rollout needs at least one seed")
        if commands is not None and len(commands) != len(seeds):
            raise ValueError(f"{len(commands)} commands for {len(seeds)} seeds")
        if (hear is not None or correct is not None) and self.cfg.command != "slots":
            raise ValueError("hear and correct (commands as slots) need a slots-layout policy")
        sampling = sampling or Sampling(temperature=0.0)
        nb = min(batch_size, len(seeds))
        env_cfg = EnvConfig(image_size=(self.cfg.image_size, self.cfg.image_size), instruction_split=split)
        pool = [gym.make(envs.TASK_IDS[task], config=env_cfg) for _ in range(nb)]
        queue = list(range(len(seeds)))
        results: dict[int, dict] = {}
        rows: list[dict | None] = [None] * nb

        def start(r: int) -> dict | None:
            if not queue:
                return None
            i = queue.pop(0)
            obs, info = pool[r].reset(seed=seeds[i])
            text = commands[i] if commands is not None else info["instruction"]
            slots = self.cfg.command == "slots"  # no listening: the slots are an input on every frame
            ids = None
            if slots:
                ids = list(hear(i, text)) if hear is not None else self.tok.slots.ids(text)
                self._check_slots(ids, text)
            return {"i": i, "obs": obs, "info": info, "words": [] if slots else self.tok.words.ids(text), "heard": 0,
                    "slots": ids, "command": text, "actions": [], "success": False, "corrected_at": None,
                    "reply_ids": [], "reply_codes": [], "first_slots": ids, "tail": None}

        talks = TEXT in self.streams
        voice = AGENT_AUDIO in self.streams

        def finish(row: dict) -> None:
            res = {"seed": seeds[row["i"]], "success": row["success"], "length": len(row["actions"]),
                   "command": row["command"], "slots": row["slots"], "corrected_at": row["corrected_at"],
                   "actions": np.stack(row["actions"]), "first_slots": row["first_slots"]}
            if talks:
                res.update(reply=self.tok.reply.text(row["reply_ids"]), reply_ids=row["reply_ids"])
            if voice:
                codes = torch.stack(row["reply_codes"], dim=-1)  # [K, frames]
                res.update(reply_codes=codes.numpy(), reply_audio=self.tok.voice.decode(codes[None])[0, 0].numpy())
            results[row["i"]] = res

        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc=f"rollout {task}", disable=not progress)
        step_s: list[float] = []  # wall time of each batched frame: tokenizers + Generator.step
        try:
            with Generator(self.model, batch_size=nb, sampling=sampling) as gen:
                rows = [start(r) for r in range(nb)]
                last_obs = [row["obs"] for row in rows if row is not None][0]
                while any(row is not None for row in rows):
                    cmd = torch.full((nb, 1), ZERO_ID, dtype=torch.long)
                    slots = torch.full((nb, self.tok.slots.num_codebooks), ZERO_ID, dtype=torch.long)
                    act = torch.full((nb, F.EE_DELTA_ACTION_DIM), ZERO_ID, dtype=torch.long)
                    obs = []
                    for r, row in enumerate(rows):
                        obs.append(row["obs"] if row is not None else last_obs)
                        if row is None:
                            continue
                        if row["tail"] is not None:  # a done episode's tail: it only talks (slots as they were)
                            slots[r] = torch.tensor(row["slots"])
                            continue
                        if correct is not None and row["corrected_at"] is None:
                            new = correct(row["i"], len(row["actions"]), pool[r], list(row["slots"]))
                            if new is not None:
                                self._check_slots(new, row["command"])
                                row["slots"], row["corrected_at"] = list(new), len(row["actions"])
                                row["info"] = {**row["info"], "privileged": pool[r].unwrapped.privileged_state()}
                        if row["slots"] is not None:
                            slots[r] = torch.tensor(row["slots"])
                        if row["heard"] < len(row["words"]):  # listening: one word per frame, holding still
                            cmd[r, 0] = row["words"][row["heard"]]
                            continue
                        forced = None if intervene is None else intervene(row["i"], row["obs"], row["info"], pool[r])
                        if forced is None:
                            act[r] = FREE_ID  # acting: the model chooses
                        else:
                            act[r] = self._action_codes(forced)
                    t0 = time.perf_counter()
                    command = {COMMAND_SLOTS: slots} if COMMAND_SLOTS in self.streams else {COMMAND: cmd}
                    inputs = {**self._obs_inputs(obs), **command, ACTION: act}
                    if talks:  # the agent's words (and voice): the model chooses them every frame
                        inputs[TEXT] = torch.full((nb, 1), FREE_ID, dtype=torch.long)
                    if voice:
                        inputs[AGENT_AUDIO] = torch.full((nb, self.tok.voice.num_codebooks), FREE_ID, dtype=torch.long)
                    if self.cfg.fuse_command:  # one frame: images [B, H, W, 3], slots [B, K]
                        fused = fuse_command({F.IMAGE_FRONT: inputs[F.IMAGE_FRONT][:, None], COMMAND_SLOTS:
                                              slots[:, :, None]}, self.streams, self.tok)
                        inputs[F.IMAGE_FRONT] = fused[F.IMAGE_FRONT][:, 0]
                    out = gen.step(inputs)
                    step_s.append(time.perf_counter() - t0)
                    codes = out.tokens[ACTION]  # [B, 5], this frame's action (no delay)
                    for r, row in enumerate(rows):
                        if row is None:
                            continue
                        if row["heard"] < len(row["words"]):
                            row["heard"] += 1
                            continue
                        if talks:
                            row["reply_ids"].append(int(out.tokens[TEXT][r, 0]))
                        if voice:
                            row["reply_codes"].append(out.tokens[AGENT_AUDIO][r].clone())
                        if row["tail"] is None:  # acting: execute the action
                            c = codes[r : r + 1, :, None]  # [1, 5, 1]
                            if int(c.min()) < 0 or int(c.max()) >= self.tok.action.bins:
                                raise RuntimeError(f"policy produced an invalid action code {c.flatten().tolist()}")
                            a = self.tok.action.decode(c)[0, 0].numpy().astype(np.float32)  # [5] in [-1, 1]
                            seen = row["obs"]
                            row["obs"], _, terminated, truncated, info = pool[r].step(a)
                            row["info"] = info
                            row["actions"].append(a)
                            row["success"] = row["success"] or bool(info["is_success"])
                            if not (terminated or truncated):
                                continue
                            row["tail"] = self.cfg.reply_tail if talks else 0  # the env is done
                            if row["tail"]:  # the tail repeats the last observation acted on, as the store does
                                row["obs"] = seen
                        else:
                            row["tail"] -= 1
                        if row["tail"] > 0:  # still talking
                            continue
                        finish(row)
                        bar.update(1)
                        last_obs = row["obs"]
                        rows[r] = start(r)
                        gen.reset([r])
        finally:
            bar.close()
            for env in pool:
                env.close()
        self.last_timing = {"batch": nb, "frames": len(step_s), "median_frame_s": float(np.median(step_s)),
                            "p99_frame_s": float(np.quantile(step_s, 0.99))}
        return [results[i] for i in range(len(seeds))]
