"""DAgger for the commanded policy: roll the policy out, let the scripted expert label every state it visits, and
append those episodes to a policy store (the layout of `robot.policy.build_policy_store`).

Why: a policy trained on the expert's own trajectories only ever saw the states the expert visits; once it errs,
it is somewhere the data never showed, and errors compound (Ross, Gordon & Bagnell 2011). DAgger rolls out the
current policy, records the states *it* reaches, labels each with the action the expert
(`robot.experts`, privileged state) would take there, aggregates them with the demos and retrains.

Mixture: at each acting frame the expert's action is executed instead of the policy's with probability `beta`
(DAgger's beta_i; the rounds of `scripts/dagger_policy.py` decay it). Whoever acts, the stored label is the expert's
clean action for the state observed. The executed action is forced into the policy's Generator, so the policy's
history holds what was executed. Per frame the store holds the observation the action was chosen from and the
expert's label; the command is laid out as in the demo episodes (listening prefix or slots on every frame).

Seeds: `EVAL_SEEDS` (1000-1099, `scripts/eval_policy.py`'s held-out episodes) are refused, so no evaluation
episode ever enters the training data. The mixture's coin flips come from a generator seeded by (seed, round), so
a rerun collects the same episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import features as F
from multistream.store import EpisodeStore
from robot import EVAL_SEEDS  # scripts/eval_policy.py's held-out seeds: never in training data
from robot.experts import Expert, make_expert
from robot.policy import ACTION, Policy, PolicyTokenizers, command_episode, obs_keys

SOURCE = "dagger"  # episode meta "source" of the episodes appended here


def check_seeds(seeds: list[int]) -> None:
    """Refuse seeds that are evaluation seeds or not non-negative ints."""
    bad = [s for s in seeds if not isinstance(s, int | np.integer) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative ints, got {bad[:5]}")
    held = sorted(set(seeds) & set(EVAL_SEEDS))
    if held:
        raise ValueError(f"seeds {held[:5]}{'...' if len(held) > 5 else ''} are held-out evaluation seeds "
                         f"({EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}); pick seeds outside that range")


def collected_seeds(store: EpisodeStore, round_: int) -> set[int]:
    """Seeds already appended to `store` by round `round_` (a resumed round skips them)."""
    return {m["seed"] for m in store.episode_metas() if m.get("source") == SOURCE and m.get("dagger_round") == round_}


def collect_on_policy(policy: Policy, store: EpisodeStore, task: str, seeds: list[int], beta: float,
                      round_: int = 0, split: str = "train", batch_size: int = 8,
                      progress: bool = False) -> dict[str, Any]:
    """Roll out `policy` from `seeds` (with expert mixture `beta`), append one expert-labelled episode per seed to
    `store` (opened with mode 'a'; its tokenizers must be the policy's). Seeds this round already stored are skipped.
    Returns {"episodes", "frames", "policy_success" (fraction over the episodes run now), "expert_frames",
    "results" (Policy.rollout's per-seed dicts, "actions" = the executed actions)}."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    check_seeds(seeds)
    if "policy_tokenizers" not in store.attrs:
        raise ValueError(f"{store.path} is not a policy store (no policy_tokenizers attr)")
    if PolicyTokenizers.from_json(store.attrs["policy_tokenizers"]).to_json() != policy.tok.to_json():
        raise ValueError(f"{store.path} was tokenized with other policy tokenizers than the policy's; DAgger episodes "
                         "must share the store's tokenizers (fine-tune a policy trained on this store)")
    layout = store.attrs.get("policy_config", {}).get("command", "listen")
    if layout != policy.cfg.command:
        raise ValueError(f"{store.path} holds command layout {layout!r}, the policy reads {policy.cfg.command!r}")
    done = collected_seeds(store, round_)
    todo = [s for s in seeds if s not in done]
    summary: dict[str, Any] = {"episodes": 0, "frames": 0, "policy_success": None, "expert_frames": 0,
                               "skipped": len(seeds) - len(todo), "results": []}
    if not todo:
        return summary
    keys = obs_keys(policy.streams)
    experts: dict[int, Expert] = {}
    records: dict[int, dict[str, list]] = {i: {"obs": [], "label": [], "expert_acted": []} for i in range(len(todo))}
    coins = {i: np.random.default_rng([todo[i], round_, 0xDA6]) for i in range(len(todo))}

    def intervene(i: int, obs: dict[str, np.ndarray], info: dict[str, Any], env) -> np.ndarray | None:
        if i not in experts:
            experts[i] = make_expert(env)
            experts[i].reset()
        clean, _ = experts[i].act(info)  # the label: the expert's clean action for this state
        rec = records[i]
        rec["obs"].append({k: np.array(obs[k], copy=True) for k in keys})
        rec["label"].append(clean)
        acts = bool(coins[i].random() < beta)
        rec["expert_acted"].append(acts)
        return clean if acts else None

    results = policy.rollout(task, todo, split=split, batch_size=batch_size, progress=progress, intervene=intervene)
    for i, (seed, res) in enumerate(zip(todo, results, strict=True)):
        rec = records[i]
        if len(rec["label"]) != res["length"]:
            raise RuntimeError(f"seed {seed}: {len(rec['label'])} labelled frames for {res['length']} actions")
        demo = {k: np.stack([o[k] for o in rec["obs"]]) for k in keys}
        demo[ACTION] = np.stack(rec["label"]).astype(np.float32)  # [T, 5]
        arrays, listen = command_episode(demo, res["command"], policy.tok, policy.cfg, keys)
        meta = {"seed": int(seed), "task": task, "instruction": res["command"], "instruction_split": split,
                "command": res["command"], "listen_frames": listen, "length": res["length"],
                "success": bool(res["success"]), "source": SOURCE, "dagger_round": int(round_), "beta": float(beta),
                "expert_frames": int(sum(rec["expert_acted"]))}
        store.append_episode(arrays, meta)  # atomic per episode
        summary["episodes"] += 1
        summary["frames"] += len(arrays[ACTION])
        summary["expert_frames"] += meta["expert_frames"]
    summary["policy_success"] = float(np.mean([r["success"] for r in results]))
    summary["results"] = results
    return summary


def expert_labels(task: str, seed: int, executed: np.ndarray, image_size: int, split: str = "train") -> np.ndarray:
    """Replay `executed` actions [T, 5] from `seed` and return the expert's clean action [T, 5] at each state (a
    check of stored labels, independent of the rollout that made them)."""
    import gymnasium as gym

    import envs
    from envs.base import EnvConfig

    env = gym.make(envs.TASK_IDS[task], config=EnvConfig(image_size=(image_size, image_size),
                                                         instruction_split=split))
    try:
        _, info = env.reset(seed=seed)
        expert = make_expert(env)
        out = []
        for a in executed:
            out.append(expert.act(info)[0])
            _, _, _, _, info = env.step(np.asarray(a, dtype=np.float32))
        return np.stack(out) if out else np.zeros((0, F.EE_DELTA_ACTION_DIM), np.float32)
    finally:
        env.close()
