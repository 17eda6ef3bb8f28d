"""Scripted experts for the tabletop tasks: state machines over privileged state (`info["privileged"]`).

Each expert plans end-effector waypoints (position + yaw + gripper) from the simulator state and turns them into
`ee_delta` actions relative to the env's current end-effector target; the env's damped least-squares Jacobian IK
(`envs/ik.py`) tracks them. The plans re-read the state every step, so they recover from slips, drifts and
injected noise (e.g. a pushed object that turned, a grasp that missed is retried).

Noise injection (`ExpertConfig.noise_std`, `perturb_prob`): the *executed* action gets Gaussian noise and, now and
then, a few steps of a random push away from the plan, so demonstrations show recoveries; `act` returns both the
clean action (the label to imitate, as in DART) and the executed one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from envs import scene
from envs.base import TabletopEnv
from envs.pick_place import PickPlaceEnv
from envs.push import SIDE_SIGN, PushEnv
from envs.touch import TouchEnv

SAFE_Z = 0.11  # travel height of the end effector (fingertips clear the objects)
CARRY_Z = 0.14


@dataclasses.dataclass
class ExpertConfig:
    noise_std: float = 0.0  # std of Gaussian noise added to executed position/yaw actions (action units)
    perturb_prob: float = 0.0  # probability per step of starting a random push away from the plan
    perturb_steps: int = 3  # length of such a push, in steps
    seed: int = 0  # of the noise generator (separate from the env's seed)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}")
        if not 0 <= self.perturb_prob <= 1:  # also false for NaN
            raise ValueError(f"perturb_prob must be in [0, 1], got {self.perturb_prob}")
        if self.perturb_steps < 1:
            raise ValueError(f"perturb_steps must be >= 1, got {self.perturb_steps}")


def wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


FINGER_REACH = 0.055  # open fingertips' distance from the grasp center, along the hand's y


def grasp_yaw(
    obj_pos: np.ndarray, obj_yaw: float, spec: scene.ObjectSpec, current: float, obstacles: np.ndarray | None = None
) -> float:
    """Hand yaw that closes the fingers (along the hand's y) across the object's narrow side, within the
    controller's yaw range: among the symmetric choices, the one whose open fingertips keep clear of `obstacles`
    (points `[N, 2]`), then the one nearest `current`."""
    if spec.symmetry == 0.0:  # round: any yaw
        cands = list(np.linspace(-1.5, 1.5, 13)) + [float(np.clip(current, -1.5, 1.5))]
    else:
        base = obj_yaw + (math.pi / 2 if spec.name == "bar" else 0.0)  # bar: narrow along its local x
        cands = [base + k * spec.symmetry for k in range(-8, 9)]
        cands = [c for c in cands if -1.6 <= c <= 1.6]

    def cost(yaw: float) -> float:
        clearance = 0.05
        if obstacles is not None and len(obstacles):
            hand_y = np.array([-math.sin(yaw), math.cos(yaw)])
            tips = np.stack([obj_pos[:2] + FINGER_REACH * hand_y, obj_pos[:2] - FINGER_REACH * hand_y])
            clearance = min(clearance, float(np.linalg.norm(tips[:, None] - obstacles[None], axis=-1).min()))
        return -clearance + 0.01 * abs(yaw - current)

    return float(min(cands, key=cost))


class Expert:
    """Base: waypoint-to-action conversion, noise injection. Subclasses implement `plan`."""

    def __init__(self, env: TabletopEnv, config: ExpertConfig | None = None) -> None:
        self.env = env
        self.config = config or ExpertConfig()
        self.rng = np.random.default_rng(self.config.seed)
        self._perturb_left = 0
        self._perturb_dir = np.zeros(4)
        self.phase = "start"
        self.counter = 0

    def reset(self) -> None:
        self.phase = "start"
        self.counter = 0
        self._perturb_left = 0

    def plan(self, priv: dict[str, Any]) -> tuple[np.ndarray, float, float]:
        """(ee position waypoint, yaw, grip) for this step."""
        raise NotImplementedError

    def act(self, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(clean action, executed action) for the state described by `info` (from reset/step)."""
        priv = info["privileged"]
        pos, yaw, grip = self.plan(priv)
        c = self.env.config
        a = np.zeros(5)
        a[:3] = (pos - priv["ee_target_pos"]) / c.pos_step
        a[3] = wrap(yaw - priv["ee_target_yaw"]) / c.yaw_step
        a[:4] = np.clip(a[:4], -1.0, 1.0)
        a[4] = grip
        clean = a.astype(np.float32)
        executed = a.copy()
        cfg = self.config
        if cfg.noise_std > 0:
            executed[:4] += self.rng.normal(0.0, cfg.noise_std, size=4)
        if self._perturb_left == 0 and cfg.perturb_prob > 0 and self.rng.random() < cfg.perturb_prob:
            self._perturb_left = cfg.perturb_steps
            d = self.rng.normal(size=4)
            d[2] = abs(d[2])  # push up or sideways, never into the table
            self._perturb_dir = d / np.linalg.norm(d)
        if self._perturb_left > 0:
            executed[:4] = self._perturb_dir
            self._perturb_left -= 1
        executed[:4] = np.clip(executed[:4], -1.0, 1.0)
        return clean, executed.astype(np.float32)


class TouchExpert(Expert):
    def plan(self, priv):
        obj = priv["objects"][priv["target"]]
        spec = next(o for o in scene.OBJECTS if o.name == priv["target"])
        p, ee = obj["pos"], priv["ee_pos"]
        top = p[2] + spec.half_height
        if np.linalg.norm(ee[:2] - p[:2]) > 0.012:
            z = max(ee[2], top + 0.05) if np.linalg.norm(ee[:2] - p[:2]) > 0.03 else top + 0.05
            return np.array([p[0], p[1], z]), 0.0, 1.0
        return np.array([p[0], p[1], top + 0.0]), 0.0, 1.0


class PushExpert(Expert):
    def plan(self, priv):
        env: PushEnv = self.env
        s = SIDE_SIGN[env.side]
        p, ee = priv["objects"][priv["target"]]["pos"], priv["ee_pos"]
        behind = p - np.array([0.0, s * 0.05, 0.0])
        push_z = 0.022
        rel = s * (p[1] - ee[1])  # > 0: the hand is behind the object (on the side away from the zone)
        if self.phase == "push" and not (abs(ee[0] - p[0]) < 0.03 and 0.01 < rel < 0.09 and ee[2] < 0.06):
            self.phase = "approach"
        if self.phase != "push":
            self.phase = "approach"
            dist = np.linalg.norm(ee[:2] - behind[:2])
            if dist > 0.015:
                if rel > 0.05 and ee[2] < 0.06:  # already behind: slide over low
                    return np.array([behind[0], behind[1], push_z]), 0.0, 1.0
                if ee[2] < SAFE_Z - 0.02 and dist > 0.03:
                    return np.array([ee[0], ee[1], SAFE_Z]), 0.0, 1.0  # lift before travelling over objects
                return np.array([behind[0], behind[1], SAFE_Z if dist > 0.03 else ee[2]]), 0.0, 1.0
            if ee[2] > push_z + 0.012:
                return np.array([behind[0], behind[1], push_z]), 0.0, 1.0
            self.phase = "push"
        # push: a carrot beyond the object, steering the contact point back under the object's center
        return np.array([p[0] + 0.5 * (p[0] - ee[0]), p[1] + s * 0.03, push_z]), 0.0, 1.0


class PickPlaceExpert(Expert):
    def _obstacles(self, priv, name: str) -> np.ndarray:
        """Points the open fingers should avoid: the other objects' centers and points along the bowl walls."""
        pts = []
        for other, o in priv["objects"].items():
            if other != name:
                pts.append(o["pos"][:2])
        bowl = self.env.fixture_xy["bowl"]
        r = scene.BOWL_INNER + 0.005
        for t in np.linspace(-r, r, 9):
            pts += [bowl + (t, -r), bowl + (t, r), bowl + (-r, t), bowl + (r, t)]
        return np.array(pts)

    def plan(self, priv):
        env: PickPlaceEnv = self.env
        name = priv["target"]
        spec = next(o for o in scene.OBJECTS if o.name == name)
        obj = priv["objects"][name]
        p, ee = obj["pos"], priv["ee_pos"]
        goal = env.fixture_xy[env.goal]
        yaw = grasp_yaw(p, obj["yaw"], spec, priv["ee_target_yaw"], self._obstacles(priv, name))
        grasp_z = spec.half_height + 0.002
        held = env.fingers_touch(name) == 2
        ph = self.phase
        if ph == "start":
            ph = "above"
        if ph == "above":
            target = np.array([p[0], p[1], SAFE_Z])
            if np.linalg.norm(ee[:2] - p[:2]) < 0.008 and abs(wrap(self.env.ee_yaw - yaw)) < 0.08:
                ph = "descend"
            elif ee[2] < SAFE_Z - 0.03 and np.linalg.norm(ee[:2] - p[:2]) > 0.02:
                target = np.array([ee[0], ee[1], SAFE_Z])
            out = (target, yaw, -1.0)
        if ph == "descend":
            if np.linalg.norm(ee[:2] - p[:2]) > 0.02:
                ph = "above"
                out = (np.array([p[0], p[1], SAFE_Z]), yaw, -1.0)
            elif ee[2] < grasp_z + 0.006:
                ph, self.counter = "close", 0
            else:
                out = (np.array([p[0], p[1], grasp_z]), yaw, -1.0)
        if ph == "close":
            self.counter += 1
            out = (np.array([ee[0], ee[1], grasp_z]), priv["ee_target_yaw"], 1.0)
            if self.counter > 4:
                ph = "lift"
        if ph == "lift":
            out = (np.array([p[0], p[1], CARRY_Z]), priv["ee_target_yaw"], 1.0)
            if not held and ee[2] > grasp_z + 0.03:
                ph = "above"  # missed or dropped: open and retry
                out = (np.array([ee[0], ee[1], SAFE_Z]), yaw, -1.0)
            elif ee[2] > CARRY_Z - 0.02:
                ph = "carry"
        if ph == "carry":
            if not held:
                ph = "above"
                out = (np.array([ee[0], ee[1], SAFE_Z]), yaw, -1.0)
            else:
                out = (np.array([goal[0], goal[1], CARRY_Z]), priv["ee_target_yaw"], 1.0)
                if np.linalg.norm(p[:2] - goal) < 0.012:
                    ph = "lower"
        if ph == "lower":
            place_z = spec.half_height + 0.03
            out = (np.array([goal[0], goal[1], place_z]), priv["ee_target_yaw"], 1.0)
            if ee[2] < place_z + 0.008:
                ph, self.counter = "release", 0
        if ph == "release":
            self.counter += 1
            out = (np.array([ee[0], ee[1], ee[2]]), priv["ee_target_yaw"], -1.0)
            if self.counter > 3:
                ph = "retreat"
        if ph == "retreat":
            out = (np.array([ee[0], ee[1], CARRY_Z]), priv["ee_target_yaw"], -1.0)
            if env.object_pos(name)[2] > 0.08 or not env.inside_goal(env.object_pos(name)):
                ph = "above"  # it did not land inside: pick it up again
        self.phase = ph
        return out


EXPERTS = {"touch": TouchExpert, "push": PushExpert, "pick_place": PickPlaceExpert}


def make_expert(env, config: ExpertConfig | None = None) -> Expert:
    """The scripted expert for `env` (a gymnasium env or its unwrapped TabletopEnv)."""
    base = env.unwrapped
    for cls, expert in ((TouchEnv, TouchExpert), (PushEnv, PushExpert), (PickPlaceEnv, PickPlaceExpert)):
        if isinstance(base, cls):
            if base.config.action_mode != "ee_delta":
                raise ValueError(f"experts act in ee_delta mode, env has action_mode={base.config.action_mode!r}")
            return expert(base, config)
    raise ValueError(f"no expert for env {type(base).__name__}")


def run_episode(env, expert: Expert, seed: int, record: bool = True,
                correction: dict[str, Any] | None = None) -> dict[str, Any]:
    """Roll out one episode of `expert` in `env` (a TimeLimit-wrapped gymnasium env) from `seed`.

    `correction` ({"frame": k, "rng": numpy Generator, "split": phrasing split, "stop": bool}): before the action of
    frame k the user names another object of the scene (drawn with rng; `envs.instructions.make_correction`), the
    env is retargeted and the expert follows; success is then judged on the new object. With "stop": True the user
    says "stop" instead (`apply_stop`): the env halts and the expert holds still (`hold_action`) until the env ends
    the episode. Skipped if the episode ends first.

    Returns {"success", "length", "info" (of the reset), "steps": list of per-step dicts (observation before the
    action, clean and executed action, reward, reward terms), "correction": {frame, text, target} or None} (steps
    empty unless `record`)."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    first_info = info
    steps = []
    success = False
    applied = None
    while True:
        if correction is not None and applied is None and env.unwrapped._steps == correction["frame"]:
            apply = apply_stop if correction.get("stop") else apply_correction
            applied = apply(env, correction["rng"], correction.get("split", "train"))
            info = {**info, "privileged": env.unwrapped.privileged_state()}
        if env.unwrapped.halted:
            clean = executed = hold_action(env)
        else:
            clean, executed = expert.act(info)
        next_obs, reward, terminated, truncated, info = env.step(executed)
        if record:
            steps.append(
                {
                    "obs": obs,
                    "action": clean,
                    "action_executed": executed,
                    "reward": reward,
                    "reward_terms": info["reward_terms"],
                    "success": info["is_success"],
                }
            )
        success = success or info["is_success"]
        obs = next_obs
        if terminated or truncated:
            break
    return {"success": bool(success), "length": env.unwrapped._steps, "info": first_info, "steps": steps,
            "correction": applied}


def apply_correction(env, rng: np.random.Generator, split: str = "train") -> dict[str, Any]:
    """Retarget `env` to another object of its scene, drawn with `rng`; returns {frame, text, target} where text is
    what the user says ("no, the blue cube") and target the new object ("blue cube")."""
    from envs.instructions import make_correction

    u = env.unwrapped
    others = [o for o in scene.OBJECT_NAMES if o != u.target and o in u.colors]
    new = others[int(rng.integers(len(others)))]
    obj = f"{u.colors[new]} {new}"
    text = make_correction(split, rng, obj)
    u.retarget(new)
    return {"frame": int(u._steps), "text": text, "target": obj}


def apply_stop(env, rng: np.random.Generator, split: str = "train") -> dict[str, Any]:
    """The user says "stop" (a phrasing of `split`, drawn with `rng`): the env halts (`TabletopEnv.halt`); returns
    {frame, text, target: None, stop: True}."""
    from envs.instructions import make_stop

    text = make_stop(split, rng)
    env.unwrapped.halt()
    return {"frame": int(env.unwrapped._steps), "text": text, "target": None, "stop": True}


def hold_action(env) -> np.ndarray:
    """Hold still: no end-effector motion, the gripper as it is commanded now (an object in hand stays there)."""
    a = np.zeros(env.action_space.shape, dtype=np.float32)
    a[-1] = env.unwrapped._grip_cmd
    return a
