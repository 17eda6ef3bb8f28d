"""Conformance of every registered tabletop env: spaces, reset/step contract, seeding, time limits, rendering,
controller, sensors, bad actions, config validation, instructions."""

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import features as F
from envs.base import EnvConfig
from envs.instructions import TEMPLATES, make_instruction
from envs.touch import TouchEnv

IDS = sorted(envs.TASKS)
SMALL = EnvConfig(image_size=(32, 32), render_size=(48, 64))


def make(tid, **kw):
    kw.setdefault("config", SMALL)
    return gym.make(tid, **kw)


def test_backend_selected():
    assert os.environ.get("MUJOCO_GL") in ("egl", "osmesa")


@pytest.mark.parametrize("tid", IDS)
def test_gymnasium_check_env(tid):
    env = make(tid, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # unbounded force/velocity features are intended; anything else the checker says is a failure
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other
    env.close()


@pytest.mark.parametrize("tid", IDS)
def test_spaces_and_step_contract(tid):
    env = make(tid)
    assert env.spec.max_episode_steps == envs.TASKS[tid][1]
    obs, info = env.reset(seed=3)
    assert set(obs) == {F.IMAGE_FRONT, F.STATE, F.GRIPPER, F.FORCE, F.TOUCH}
    assert obs[F.IMAGE_FRONT].shape == (32, 32, 3) and obs[F.IMAGE_FRONT].dtype == np.uint8
    assert obs in env.observation_space
    assert env.action_space.shape == (F.EE_DELTA_ACTION_DIM,)
    for key in ("instruction", "instruction_split", "reward_terms", "is_success", "privileged", "target"):
        assert key in info
    assert info["target"].split(" ")[0] in info["instruction"]  # the instruction names the target's color
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert "success" in info["reward_terms"]
        env.step(rng.uniform(-1, 1, size=5).astype(np.float32))
    env.close()


@pytest.mark.parametrize("tid", IDS)
def test_seed_determinism(tid):
    a, b = make(tid), make(tid)
    oa, ia = a.reset(seed=11)
    ob, ib = b.reset(seed=11)
    assert ia["instruction"] == ib["instruction"]
    actions = np.random.default_rng(5).uniform(-1, 1, size=(8, 5))
    for act in actions:
        oa, ra, *_ = a.step(act)
        ob, rb, *_ = b.step(act)
        assert ra == rb
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])
    # a different seed gives a different scene
    _, i2 = b.reset(seed=12)
    o1 = ia["privileged"]["objects"]
    o2 = i2["privileged"]["objects"]
    assert any(not np.allclose(o1[n]["pos"], o2[n]["pos"]) for n in o1)
    # resetting the same env with the seed again reproduces the first observation
    oc, _ = a.reset(seed=11)
    od, _ = make(tid).reset(seed=11)
    np.testing.assert_array_equal(oc[F.IMAGE_FRONT], od[F.IMAGE_FRONT])


def test_time_limit_truncates():
    env = gym.make("multistream/Touch-v0", config=EnvConfig(image_size=None))
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.array([0, 0, 1.0, 0, -1]))  # up and away: never succeeds
        steps += 1
        assert not terminated
    assert steps == env.spec.max_episode_steps


@pytest.mark.parametrize("tid", IDS)
def test_render(tid):
    env = make(tid, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    img0 = obs[F.IMAGE_FRONT].copy()
    assert img0.std() > 5
    for _ in range(4):
        obs, *_ = env.step(np.array([1.0, 1.0, -1.0, 1.0, 1.0]))
    assert np.abs(obs[F.IMAGE_FRONT].astype(int) - img0).max() > 30  # the arm moved in the picture
    plain = make(tid)
    plain.reset(seed=0)
    assert plain.render() is None  # no render_mode: nothing rendered
    env.close()


def test_ee_delta_controller_moves_as_commanded():
    env = gym.make("multistream/Push-v0", config=EnvConfig(image_size=None))
    _, info = env.reset(seed=0)
    u = env.unwrapped
    start = u.ee_pos
    for _ in range(3):
        env.step(np.array([1.0, 0, 0, 0, 0]))
    for _ in range(4):
        env.step(np.zeros(5))  # settle
    moved = u.ee_pos - start
    assert moved[0] == pytest.approx(3 * u.config.pos_step, abs=0.01)
    assert abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    yaw0 = u.ee_yaw
    for _ in range(2):
        env.step(np.array([0, 0, 0, 1.0, 0]))
    for _ in range(4):
        env.step(np.zeros(5))
    assert u.ee_yaw - yaw0 == pytest.approx(2 * u.config.yaw_step, abs=0.05)
    # the gripper closes on +1 and opens on -1
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0]))
    assert obs[F.GRIPPER][0] < 0.005
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, -1.0]))
    assert obs[F.GRIPPER][0] > 0.07


def test_joint_action_mode():
    env = gym.make("multistream/Touch-v0", config=EnvConfig(image_size=None, action_mode="joint"))
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (F.JOINT_ACTION_DIM,)
    target = np.array([0.2, 0.1, 0.3, -0.1, 0.0, -1.0])
    for _ in range(15):
        obs, *_ = env.step(target)
    u = env.unwrapped
    lo, hi = u._arm_range[:, 0], u._arm_range[:, 1]
    np.testing.assert_allclose(obs[F.STATE][:5], lo + (target[:5] + 1) / 2 * (hi - lo), atol=0.03)


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros(4), "shape"),
        (np.zeros((1, 5)), "shape"),
        (np.array([0, 0, np.nan, 0, 0]), "non-finite"),
        (np.array([np.inf, 0, 0, 0, 0]), "non-finite"),
        (["a", "b", "c", "d", "e"], "numeric"),
    ],
)
def test_bad_actions_raise_before_physics(action, match):
    env = gym.make("multistream/PickPlace-v0", config=EnvConfig(image_size=None), disable_env_checker=True)
    env.reset(seed=0)
    u = env.unwrapped
    qpos, t = u.data.qpos.copy(), u.data.time
    with pytest.raises(ValueError, match=match):
        u.step(action)
    np.testing.assert_array_equal(u.data.qpos, qpos)
    assert u.data.time == t
    # huge finite actions are clipped, and the physics stays sane
    for _ in range(10):
        obs, *_ = u.step(np.array([1e6, -1e6, 1e6, 1e6, 1e6]))
    assert np.isfinite(obs[F.STATE]).all() and np.abs(obs[F.STATE][10:]).max() < 1.0


def test_sensors_respond_to_contact():
    env = gym.make("multistream/Touch-v0", config=EnvConfig(image_size=None))
    obs, _ = env.reset(seed=0)
    f0 = obs[F.FORCE].copy()
    assert np.all(obs[F.TOUCH] == 0)
    for _ in range(5):  # close the gripper and press it down onto the table
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0]))
    for _ in range(12):
        obs, *_ = env.step(np.array([0, 0, -1.0, 0, 1.0]))
    assert env.unwrapped.ee_pos[2] < 0.03
    assert np.linalg.norm(obs[F.FORCE][:3] - f0[:3]) > 1.0  # the table pushes back through the wrist


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        EnvConfig(image_size=(4, 4))
    with pytest.raises(ValueError, match="substeps"):
        EnvConfig(frame_rate=12.5, physics_timestep=0.003)
    with pytest.raises(ValueError, match="action_mode"):
        EnvConfig(action_mode="torque")
    with pytest.raises(ValueError, match="instruction_split"):
        EnvConfig(instruction_split="test")
    with pytest.raises(ValueError, match="render_mode"):
        TouchEnv(render_mode="depth")
    assert EnvConfig().n_substeps == 16


def test_instruction_splits():
    for task, split in TEMPLATES.items():
        assert not set(split["train"]) & set(split["heldout"]), task
    rng = np.random.default_rng(0)
    heldout_texts = {make_instruction("push", "heldout", rng, obj="red cube", side="left")[0] for _ in range(30)}
    train_texts = {make_instruction("push", "train", rng, obj="red cube", side="left")[0] for _ in range(30)}
    assert not heldout_texts & train_texts
    env = gym.make("multistream/PickPlace-v0", config=EnvConfig(image_size=None, instruction_split="heldout"))
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert info["instruction_split"] == "heldout"
        verbs = {t.split(" ")[0] for t in TEMPLATES["pick_place"]["heldout"]}
        assert info["instruction"].split(" ")[0] in verbs
    with pytest.raises(ValueError, match="split"):
        make_instruction("push", "valid", rng, obj="red cube", side="left")


def test_reset_refuses_bad_seed_and_unknown_options():
    import gymnasium as gym

    import envs
    from envs.base import EnvConfig

    env = gym.make(envs.TASK_IDS["touch"], config=EnvConfig(image_size=None))
    with pytest.raises(ValueError, match=r"reset options are not supported, got \['bogus'\]"):
        env.reset(seed=0, options={"bogus": 1})
    with pytest.raises(ValueError, match="seed must be a non-negative int or None, got -1"):
        env.reset(seed=-1)
    env.reset(seed=0, options={})
    env.close()
