"""Expert demonstrations: roll out the scripted experts (in parallel worker processes) and append whole episodes to
a `multistream.store.EpisodeStore`.

Per step t of an episode the store holds the observation before the action (every key of `envs.features`), the
clean expert action `action` (the label; DART-style when noise is injected) and the executed one
`action.executed`, the reward `next.reward` and success flag `next.success` after the action. Per episode, the
metadata holds the seed, the instruction text and its split, the canonical target/goal and the length.

Resuming: episode i is rolled out from seed `seed + k` for increasing k; the store's episode metadata records the
seeds done, so a rerun after a crash or kill continues after the largest recorded seed until `episodes` are stored.
By default only successful episodes are kept (a seed whose expert fails is skipped deterministically); an episode
with a NaN or infinite value (a simulation that blew up) is never stored (the store refuses it), it is skipped and
counted in the summary.

Workers are *spawned*, not forked: a forked child inherits the parent's GL context (if it rendered) and hangs.
Scripts that call `collect` with workers > 1 therefore need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from envs import features as F
from envs.base import EnvConfig
from robot.experts import ExpertConfig, make_expert, run_episode

OBS_KEYS = (F.IMAGE_FRONT, F.STATE, F.GRIPPER, F.FORCE, F.TOUCH)
ACTION_EXECUTED = "action.executed"
REWARD = "next.reward"
SUCCESS = "next.success"


@dataclasses.dataclass
class CollectConfig:
    task: str = "push"  # key of envs.TASK_IDS
    episodes: int = 10  # number of episodes the store should hold when done
    seed: int = 0  # first seed
    workers: int = 1  # worker processes
    image_size: int = 64  # square camera images
    instruction_split: str = "train"
    noise_std: float = 0.0  # expert noise injection (see robot.experts.ExpertConfig)
    perturb_prob: float = 0.0
    keep_failures: bool = False
    correct_prob: float = 0.0  # share of episodes with a mid-episode correction to another object
    correct_frames: tuple[int, int] = (2, 6)  # the correction comes before the action of a frame in this range
    stop_prob: float = 0.0  # share of the episodes without a correction that get a "stop" (in correct_frames)

    def __post_init__(self) -> None:
        for name in ("correct_prob", "stop_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo, hi = self.correct_frames
        if not 1 <= lo <= hi:
            raise ValueError(f"correct_frames must be (first, last) with 1 <= first <= last, got {self.correct_frames}")
        if self.task not in envs.TASK_IDS:
            raise ValueError(f"unknown task {self.task!r}; known: {sorted(envs.TASK_IDS)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512], got {self.image_size}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}")
        if not 0 <= self.perturb_prob <= 1:  # also false for NaN
            raise ValueError(f"perturb_prob must be in [0, 1], got {self.perturb_prob}")


# CollectConfig fields that decide the stored episodes; a resume must match the store's on every one of them
SAME_ON_RESUME = ("task", "seed", "image_size", "instruction_split", "noise_std", "perturb_prob", "keep_failures",
                  "correct_prob", "correct_frames", "stop_prob")
# stores from before these fields existed
RESUME_DEFAULTS = {"correct_prob": 0.0, "correct_frames": [2, 6], "stop_prob": 0.0}


def episode_arrays(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """Stack the recorded steps of `run_episode` into `[T, ...]` arrays keyed for the store."""
    steps = result["steps"]
    out = {k: np.stack([s["obs"][k] for s in steps]) for k in OBS_KEYS if k in steps[0]["obs"]}
    out[F.ACTION] = np.stack([s["action"] for s in steps]).astype(np.float32)
    out[ACTION_EXECUTED] = np.stack([s["action_executed"] for s in steps]).astype(np.float32)
    out[REWARD] = np.array([s["reward"] for s in steps], dtype=np.float32)
    out[SUCCESS] = np.array([s["success"] for s in steps], dtype=bool)
    return out


def episode_meta(result: dict[str, Any], seed: int) -> dict[str, Any]:
    info = result["info"]
    meta = {
        "seed": int(seed),
        "task": info["task"],
        "instruction": info["instruction"],
        "instruction_split": info["instruction_split"],
        "target": info["target"],
        "success": result["success"],
        "length": result["length"],
    }
    if "goal" in info:
        meta["goal"] = info["goal"]
    if result.get("correction"):
        meta["correction"] = result["correction"]  # {frame, text, target[, stop]}: the target (or halt) from then on
    return meta


# ---- worker processes: one env + expert each -------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: CollectConfig) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env_cfg = EnvConfig(image_size=(cfg.image_size, cfg.image_size), instruction_split=cfg.instruction_split)
    env = gym.make(envs.TASK_IDS[cfg.task], config=env_cfg)
    _WORKER.update(env=env, cfg=cfg)


def _rollout(seed: int) -> tuple[int, dict[str, np.ndarray] | None, dict[str, Any]]:
    cfg: CollectConfig = _WORKER["cfg"]
    env = _WORKER["env"]
    expert = make_expert(
        env, ExpertConfig(noise_std=cfg.noise_std, perturb_prob=cfg.perturb_prob, seed=seed + 1_000_003)
    )
    correction = None
    rng = np.random.default_rng([seed, 7331])
    if cfg.correct_prob > 0 and rng.random() < cfg.correct_prob:
        split = "heldout" if cfg.instruction_split == "heldout" else "train"
        correction = {"frame": int(rng.integers(cfg.correct_frames[0], cfg.correct_frames[1] + 1)), "rng": rng,
                      "split": split}
    elif cfg.stop_prob > 0 and rng.random() < cfg.stop_prob:  # drawn after the correction: older stores unchanged
        split = "heldout" if cfg.instruction_split == "heldout" else "train"
        correction = {"frame": int(rng.integers(cfg.correct_frames[0], cfg.correct_frames[1] + 1)), "rng": rng,
                      "split": split, "stop": True}
    result = run_episode(env, expert, seed, correction=correction)
    meta = {**episode_meta(result, seed), "noise_std": cfg.noise_std, "perturb_prob": cfg.perturb_prob}
    keep = result["success"] or cfg.keep_failures
    arrays = episode_arrays(result) if keep else None
    if arrays is not None and not all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f"):
        arrays, meta["nonfinite"] = None, True  # a blown-up simulation: skipped like a failure, never stored
    return seed, arrays, meta


def _seed_batches(start: int, batch: int) -> Iterator[list[int]]:
    while True:
        yield list(range(start, start + batch))
        start += batch


def collect(cfg: CollectConfig, out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Fill (or resume filling) the store at `out` with `cfg.episodes` expert episodes; returns a summary."""
    from tqdm import tqdm

    from multistream.store import EpisodeStore  # here, so that worker processes never import torch

    out = Path(out)
    attrs = {"task": cfg.task, "env_id": envs.TASK_IDS[cfg.task], "collect": dataclasses.asdict(cfg)}
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory for the zarr store")
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty directory (e.g. made by the caller): the store is created in its place
    if out.exists():
        store = EpisodeStore.open(out, mode="a")
        if store.attrs.get("task") != cfg.task:
            raise ValueError(f"{out} holds task {store.attrs.get('task')!r}, not {cfg.task!r}; use another --out")
        saved = store.attrs.get("collect", {})
        now = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as the store holds them (lists)
        saved = {**RESUME_DEFAULTS, **saved}
        diffs = [f"{k}: store {saved.get(k)!r}, now {now[k]!r}" for k in SAME_ON_RESUME if saved.get(k) != now[k]]
        if diffs:
            raise ValueError(f"{out} was collected with other settings ({'; '.join(diffs)}); rerun with the store's "
                             "settings to resume it, or use another --out")
        done = [m["seed"] for m in store.episode_metas()]
        next_seed = max(done) + 1 if done else cfg.seed
    else:
        store = EpisodeStore.create(out, fps=EnvConfig().frame_rate, attrs=attrs)
        next_seed = cfg.seed
    attempted = failed = nonfinite = 0
    need = cfg.episodes - store.num_episodes
    if need <= 0:  # already complete: a rerun changes nothing
        return {"out": str(out), "episodes": store.num_episodes, "steps": store.num_steps,
                "attempted_this_run": 0, "failed_this_run": 0}
    bar = tqdm(total=cfg.episodes, initial=store.num_episodes, desc=f"collect {cfg.task}", disable=not progress)
    pool = (
        mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
        if cfg.workers > 1
        else None
    )
    if pool is None:
        _init_worker(cfg)
    try:
        for seeds in _seed_batches(next_seed, max(need + cfg.workers, 2 * cfg.workers)):
            results = pool.imap(_rollout, seeds) if pool is not None else map(_rollout, seeds)
            for _seed, arrays, meta in results:
                attempted += 1
                failed += not meta["success"]
                nonfinite += bool(meta.get("nonfinite"))
                if arrays is not None:
                    store.append_episode(arrays, meta)
                    bar.update(1)
                if store.num_episodes >= cfg.episodes:
                    break
            if store.num_episodes >= cfg.episodes:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        if "env" in _WORKER and pool is None:
            _WORKER.pop("env").close()
    return {
        "out": str(out),
        "episodes": store.num_episodes,
        "steps": store.num_steps,
        "attempted_this_run": attempted,
        "failed_this_run": failed,
        "nonfinite_this_run": nonfinite,
    }
