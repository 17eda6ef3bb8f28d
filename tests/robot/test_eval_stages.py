"""eval_policy.py's per-episode best reward terms and pick_place stages, on real episodes of the pick_place env."""

import json

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.base import EnvConfig
from robot.experts import make_expert

from .test_reply import eval_policy_script


def _episode(env, seed: int, hook, i: int, expert=None) -> bool:
    """One episode: the hook sees the info of every state acted from (as in Policy.rollout); the expert acts, or
    the arm holds still with the gripper open."""
    obs, info = env.reset(seed=seed)
    if expert is not None:
        expert.reset()
    success = False
    while True:
        assert hook(i, obs, info, env) is None  # it never intervenes
        a = expert.act(info)[0] if expert is not None else np.array([0, 0, 0, 0, 1.0], dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(a)
        success = success or bool(info["is_success"])
        if terminated or truncated:
            return success


def test_pick_stages_from_an_expert_and_an_idle_arm():
    ev = eval_policy_script()
    env = gym.make(envs.TASK_IDS["pick_place"], config=EnvConfig(image_size=(32, 32)))
    best: dict[int, dict[str, float]] = {}
    hook = ev.record_best_terms(best)
    expert = make_expert(env.unwrapped)
    per_seed = []
    for i, seed in enumerate(range(3)):
        ok = _episode(env, seed, hook, i, expert)
        per_seed.append({"seed": seed, "success": ok, "best_terms": best[i]})
    idle = _episode(env, 0, hook, 3)
    per_seed.append({"seed": 0, "success": idle, "best_terms": best[3]})
    env.close()

    assert [s["success"] for s in per_seed] == [True, True, True, False]
    for s in per_seed[:3]:  # the expert grasped, lifted and carried before it placed (seen before the last action)
        assert s["best_terms"]["grasp"] > 0 and s["best_terms"]["lift"] > 0.02 and s["best_terms"]["place"] > -0.05
    still = per_seed[3]["best_terms"]
    assert still["grasp"] == 0 and still["lift"] < 0.005 and still["place"] < -0.1
    stages = ev.pick_stages(per_seed)
    assert list(stages) == ["grasped", "lifted 2 cm", "within 5 cm of target", "placed"]
    assert stages == {"grasped": 0.75, "lifted 2 cm": 0.75, "within 5 cm of target": 0.75, "placed": 0.75}
    # a stage below one reached counts; a success counts every stage
    half = [{"success": False, "best_terms": {"grasp": 0.25, "lift": 0.01, "place": -0.2}},
            {"success": True, "best_terms": {}}]
    assert ev.pick_stages(half) == {"grasped": 1.0, "lifted 2 cm": 0.5, "within 5 cm of target": 0.5, "placed": 0.5}


def test_append_merges_conditions_and_refuses_another_run(tmp_path):
    ev = eval_policy_script()
    path = tmp_path / "eval.json"
    assert ev.load_earlier(path, "push", [1000, 1099]) is None  # nothing yet: a fresh file
    old = {"task": "push", "seeds": [1000, 1099], "timing": [{"median_frame_s": 0.01}],
           "conditions": {"text-train": {"success": 0.8}, "speech-train": {"success": 0.5}},
           "listener_rt_median": 0.02}
    path.write_text(json.dumps(old))
    earlier = ev.load_earlier(path, "push", list(range(1000, 1100)))
    assert earlier == old
    results, timing = ev.merge_earlier(earlier, {"speech-train": {"success": 0.7}, "speech-heldout": {"success": 0.6}},
                                       [{"median_frame_s": 0.03}])
    assert list(results) == ["text-train", "speech-train", "speech-heldout"]
    assert results["speech-train"]["success"] == 0.7 and results["text-train"]["success"] == 0.8
    assert [t["median_frame_s"] for t in timing] == [0.01, 0.03]
    for task, seeds in (("touch", [1000, 1099]), ("push", [1000, 1049])):
        with pytest.raises(SystemExit, match="holds task 'push' on seeds"):
            ev.load_earlier(path, task, seeds)
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not an eval_policy.py result"):
        ev.load_earlier(path, "push", [1000, 1099])
