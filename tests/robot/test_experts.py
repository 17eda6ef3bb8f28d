"""Scripted experts: success on a handful of seeds per task, noise injection, grasp visible in the sensors."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import features as F
from envs.base import EnvConfig
from robot.experts import ExpertConfig, make_expert, run_episode

NO_CAMERA = EnvConfig(image_size=None)


@pytest.mark.parametrize("task", sorted(envs.TASK_IDS))
def test_expert_succeeds_on_seeds(task):
    env = gym.make(envs.TASK_IDS[task], config=NO_CAMERA)
    expert = make_expert(env)
    results = [run_episode(env, expert, seed, record=False) for seed in range(500, 506)]
    assert all(r["success"] for r in results), [r["info"]["instruction"] for r in results if not r["success"]]
    # success is reached before the time limit and ends the episode
    assert all(r["length"] < env.spec.max_episode_steps for r in results)


@pytest.mark.parametrize("task", sorted(envs.TASK_IDS))
def test_expert_recovers_from_injected_noise(task):
    env = gym.make(envs.TASK_IDS[task], config=NO_CAMERA)
    results = []
    for seed in range(600, 603):
        expert = make_expert(env, ExpertConfig(noise_std=0.2, perturb_prob=0.05, seed=seed))
        results.append(run_episode(env, expert, seed))
    assert all(r["success"] for r in results)
    steps = [s for r in results for s in r["steps"]]
    clean = np.stack([s["action"] for s in steps])
    executed = np.stack([s["action_executed"] for s in steps])
    assert np.abs(clean - executed)[:, :4].mean() > 0.08  # the noise was really applied
    np.testing.assert_array_equal(clean[:, 4], executed[:, 4])  # never on the gripper


def test_pick_place_grasp_shows_in_touch_and_force():
    env = gym.make(envs.TASK_IDS["pick_place"], config=NO_CAMERA)
    r = run_episode(env, make_expert(env), seed=7)
    assert r["success"]
    touch = np.stack([s["obs"][F.TOUCH] for s in r["steps"]])
    grip = np.stack([s["obs"][F.GRIPPER] for s in r["steps"]])
    force = np.stack([s["obs"][F.FORCE] for s in r["steps"]])
    held = (touch > 0.5).all(axis=1)  # both fingertips press on the object
    assert held.sum() >= 5
    assert 0.02 < grip[held, 0].mean() < 0.05  # fingers stopped by the object, not closed
    assert (touch[:3] == 0).all()  # no contact at the start
    assert np.abs(force[held, 2]).mean() > np.abs(force[:3, 2]).mean() + 0.2  # carrying it loads the wrist


def test_expert_rejects_joint_mode():
    env = gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=None, action_mode="joint"))
    with pytest.raises(ValueError, match="ee_delta"):
        make_expert(env)
    with pytest.raises(ValueError, match="noise_std"):
        ExpertConfig(noise_std=-1)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(envs.TASK_IDS))
def test_expert_success_rate_over_many_seeds(task):
    env = gym.make(envs.TASK_IDS[task], config=NO_CAMERA)
    expert = make_expert(env)
    rate = np.mean([run_episode(env, expert, seed, record=False)["success"] for seed in range(2000, 2100)])
    assert rate >= 0.95
