"""`TabletopEnv`: a thin `gymnasium.Env` over `mujoco` that the tasks (touch, push, pick_place) subclass.

Timing: one `step` is one 80 ms frame of the multistream model (12.5 Hz); it runs `n_substeps` physics steps
(`1 / (frame_rate * physics_timestep)`, 16 x 5 ms by default) with the same joint targets, then one `mj_forward`
so that sensors (wrist force/torque, touch) describe the state that the observation shows, after the step.

Actions (`features.py`): in `ee_delta` mode the env keeps an end-effector target (position of the `ee` site and yaw,
hand pointing down) that each action moves by at most `pos_step` m / `yaw_step` rad; the target stays inside the
workspace box and within `target_lead` of the actual end effector (no wind-up when blocked), and damped
least-squares IK (`ik.py`) turns it into joint position targets. In `joint` mode the action holds joint targets
normalized to the joint ranges. The last entry is the gripper: +1 closes, -1 opens, in between is proportional.
Finite values outside [-1, 1] are clipped; a wrong shape or a NaN/inf raises ValueError before touching physics.

Randomness: everything a reset samples (colors, poses, targets, instruction) comes from `self.np_random`, seeded by
`reset(seed=...)`, and MuJoCo is deterministic, so a seed and an action sequence give the same episode exactly.
The subclass provides `_reset_task()` (place objects, pick target and goal, make the instruction) and
`_evaluate()` (named reward terms and the success predicate).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs import features as F
from envs import scene
from envs.ik import SiteIK, site_yaw
from envs.instructions import SPLITS
from envs.rendering import make_renderer

HOME_EE = np.array([-0.05, 0.0, 0.22])  # end-effector position after reset (yaw 0)
OBJECT_REGION = ((-0.10, 0.12), (-0.13, 0.13))  # x and y ranges where objects are placed
MIN_SEPARATION = 0.085  # between object centers (and from goal fixtures)


@dataclasses.dataclass
class EnvConfig:
    image_size: tuple[int, int] | None = (64, 64)  # (H, W) of observation.images.front; None: no camera
    camera: str = "front"  # camera of the image observation
    render_size: tuple[int, int] = (240, 320)  # (H, W) of render() (the `overview` camera)
    action_mode: str = "ee_delta"  # "ee_delta" or "joint"
    frame_rate: float = 12.5  # control steps per second: one per model frame
    physics_timestep: float = 0.005  # seconds per MuJoCo step
    pos_step: float = 0.03  # metres of end-effector motion per unit of action per step
    yaw_step: float = 0.3  # radians of yaw per unit of action per step
    target_lead: float = 0.05  # how far (m) the ee target may run ahead of the actual ee
    instruction_split: str = "train"  # "train", "heldout" or "all" phrasings
    terminate_on_success: bool = True  # end the episode (terminated=True) at the first successful step

    def __post_init__(self) -> None:
        if self.image_size is not None:
            if len(self.image_size) != 2 or min(self.image_size) < 8 or max(self.image_size) > 1024:
                raise ValueError(f"image_size must be (H, W) with 8 <= H, W <= 1024, got {self.image_size!r}")
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if len(self.render_size) != 2 or min(self.render_size) < 8:
            raise ValueError(f"render_size must be (H, W) with H, W >= 8, got {self.render_size!r}")
        if self.camera not in ("front", "overview"):
            raise ValueError(f"camera must be 'front' or 'overview', got {self.camera!r}")
        if self.action_mode not in F.ACTION_MODES:
            raise ValueError(f"action_mode must be one of {F.ACTION_MODES}, got {self.action_mode!r}")
        if self.instruction_split not in SPLITS:
            raise ValueError(f"instruction_split must be one of {SPLITS}, got {self.instruction_split!r}")
        if not (self.frame_rate > 0 and self.physics_timestep > 0):
            raise ValueError(
                f"frame_rate and physics_timestep must be > 0, got {self.frame_rate}, {self.physics_timestep}"
            )
        sub = 1.0 / (self.frame_rate * self.physics_timestep)
        if abs(sub - round(sub)) > 1e-6 or round(sub) < 1:
            raise ValueError(
                f"1 / (frame_rate * physics_timestep) must be a whole number of substeps, got {sub:.4f} "
                f"(frame_rate={self.frame_rate}, physics_timestep={self.physics_timestep})"
            )
        for name in ("pos_step", "yaw_step", "target_lead"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def n_substeps(self) -> int:
        return round(1.0 / (self.frame_rate * self.physics_timestep))


class TabletopEnv(gym.Env):
    """Shared scene, controller, observations and rendering of the tabletop tasks."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 12.5}
    task_name = "base"
    HALT_SETTLE = 3  # frames the arm has to come to rest after "stop" (`halt`)
    HALT_HOLD = 6  # frames it must then hold still
    HALT_TOL = 0.01  # metres of end-effector motion allowed while holding

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None) -> None:
        self.config = config if config is not None else EnvConfig()
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.frame_rate}
        sizes = [self.config.render_size] + ([self.config.image_size] if self.config.image_size else [])
        offwidth, offheight = max(640, *(w for _, w in sizes)), max(480, *(h for h, _ in sizes))
        self.model = mujoco.MjModel.from_xml_string(scene.scene_xml(self.config.physics_timestep, offwidth, offheight))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos = np.array([m.joint(j).qposadr[0] for j in scene.ARM_JOINTS])
        self._arm_dof = np.array([m.joint(j).dofadr[0] for j in scene.ARM_JOINTS])
        self._arm_range = np.array([m.joint(j).range for j in scene.ARM_JOINTS])
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in scene.FINGER_JOINTS])
        self._finger_dof = np.array([m.joint(j).dofadr[0] for j in scene.FINGER_JOINTS])
        self._arm_act = np.array([m.actuator(f"a_{j}").id for j in scene.ARM_JOINTS])
        self._finger_act = np.array([m.actuator(f"a_{j}").id for j in scene.FINGER_JOINTS])
        self._ee_site = m.site("ee").id
        self._obj_body = {o.name: m.body(o.name).id for o in scene.OBJECTS}
        self._obj_geom = {o.name: m.geom(f"{o.name}_geom").id for o in scene.OBJECTS}
        self._obj_qpos = {o.name: m.joint(f"{o.name}_free").qposadr[0] for o in scene.OBJECTS}
        self._obj_dof = {o.name: m.joint(f"{o.name}_free").dofadr[0] for o in scene.OBJECTS}
        self._hand_geoms = np.array([m.geom(g).id for g in scene.HAND_GEOMS])
        self._finger_geoms = np.array([m.geom(g).id for g in scene.HAND_GEOMS[1:]])
        self._sensor = {
            name: slice(m.sensor(name).adr[0], m.sensor(name).adr[0] + m.sensor(name).dim[0])
            for name in ("wrist_force", "wrist_torque", "touch_l", "touch_r")
        }
        self.ik = SiteIK(m, "ee", self._arm_qpos, self._arm_dof, self._arm_range)
        self._q_home = self.ik.solve(np.array([0.0, 0.3, 1.2, -1.5, 0.0]), HOME_EE, 0.0)
        self.observation_space = F.observation_space(self.config.image_size)
        self.action_space = F.action_space(self.config.action_mode)
        self._renderer = None
        self._view_renderer = None
        self.colors: dict[str, str] = {}
        self.instruction = ""
        self.instruction_split = ""
        self.target = ""  # canonical shape name of the target object
        self._q_des = self._q_home.copy()
        self._grip_cmd = -1.0
        self._ee_target = HOME_EE.copy()
        self._yaw_target = 0.0
        self._steps = 0
        self._halt_at: int | None = None  # frame of a "stop" correction (`halt`)
        self._halt_ref: np.ndarray | None = None  # where the end effector came to rest

    # ---- task hooks -----------------------------------------------------------------------------------------
    def _reset_task(self) -> None:
        raise NotImplementedError

    def _evaluate(self) -> tuple[dict[str, float], bool]:
        """Named reward terms (summed into the reward) and success."""
        raise NotImplementedError

    def task_info(self) -> dict[str, Any]:
        """Canonical task parameters (target, goal) for metadata; subclasses add theirs."""
        return {"target": f"{self.colors.get(self.target, '')} {self.target}".strip()}

    def retarget(self, target: str) -> None:
        """A mid-episode correction: the task goes on with another object (`target`, a canonical shape name; its
        side or goal stays). The experts and the success check read the target every step."""
        if target not in self.colors:
            raise ValueError(f"unknown object {target!r}; the scene has {sorted(self.colors)}")
        if target == self.target:
            raise ValueError(f"{target!r} is already the target")
        self.target = target

    def halt(self) -> None:
        """A "stop" correction: from now on the task is to hold still. The arm has `HALT_SETTLE` frames to come to
        rest; its end effector must then stay within `HALT_TOL` m of where it was for `HALT_HOLD` frames, which ends
        the episode as a success. Moving further first ends it at once as a failure (the task's own success no
        longer counts: touching the object after "stop" is what the user asked it not to do)."""
        if self._halt_at is not None:
            raise ValueError(f"already halted at frame {self._halt_at}")
        self._halt_at = self._steps
        self._halt_ref = None

    @property
    def halted(self) -> bool:
        return self._halt_at is not None

    def _evaluate_halt(self) -> tuple[dict[str, float], bool, bool]:
        """(terms, success, done) of a halted episode after a step."""
        assert self._halt_at is not None
        since = self._steps - self._halt_at
        if since < self.HALT_SETTLE:
            return {"halt": 0.0}, False, False
        if self._halt_ref is None:
            self._halt_ref = self.ee_pos
        moved = float(np.linalg.norm(self.ee_pos - self._halt_ref))
        if moved > self.HALT_TOL:
            return {"halt": -moved}, False, True
        held = since >= self.HALT_SETTLE + self.HALT_HOLD  # still, and long enough: success, and the end
        return {"halt": -moved}, held, held

    # ---- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if options:  # the tasks take no reset options: refuse rather than silently ignore one
            raise ValueError(f"reset options are not supported, got {sorted(options)}; configure the task with "
                             "EnvConfig instead")
        if seed is not None and not (isinstance(seed, int | np.integer) and seed >= 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos] = self._q_home
        self.data.qpos[self._finger_qpos] = scene.FINGER_OPEN
        self._q_des = self._q_home.copy()
        self._grip_cmd = -1.0
        rng = self.np_random
        names = list(scene.PALETTE)
        picks = rng.choice(len(names), size=len(scene.OBJECTS), replace=False)
        self.colors = {o.name: names[int(i)] for o, i in zip(scene.OBJECTS, picks, strict=True)}
        for o in scene.OBJECTS:
            self.model.geom_rgba[self._obj_geom[o.name]] = scene.PALETTE[self.colors[o.name]]
        self._reset_task()
        self._apply_ctrl()
        mujoco.mj_forward(self.model, self.data)
        self._ee_target = self.ee_pos.copy()
        self._yaw_target = self.ee_yaw
        self._steps = 0
        self._halt_at, self._halt_ref = None, None
        terms, success = self._evaluate()
        return self._observation(), self._info(terms, success)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        a = self._check_action(action)
        if self.config.action_mode == "ee_delta":
            self._ee_delta_control(a)
        else:
            lo, hi = self._arm_range[:, 0], self._arm_range[:, 1]
            self._q_des = lo + (a[:5] + 1.0) * 0.5 * (hi - lo)
        self._grip_cmd = float(a[-1])
        self._apply_ctrl()
        mujoco.mj_step(self.model, self.data, nstep=self.config.n_substeps)
        mujoco.mj_forward(self.model, self.data)  # sensors of the post-step state
        if not np.isfinite(self.data.qpos).all():
            raise RuntimeError(f"physics diverged at step {self._steps} of {self.task_name} (non-finite qpos)")
        self._steps += 1
        if self._halt_at is None:
            terms, success = self._evaluate()
            terminated = bool(success and self.config.terminate_on_success)
        else:  # after "stop": holding still is the task (ends the episode either way)
            terms, success, terminated = self._evaluate_halt()
        reward = float(sum(terms.values()))
        return self._observation(), reward, terminated, False, self._info(terms, success)

    def render(self) -> np.ndarray | None:
        """The larger `overview` view (`render_size`), for videos; None unless render_mode='rgb_array'."""
        if self.render_mode != "rgb_array":
            return None
        if self._view_renderer is None:
            self._view_renderer = make_renderer(self.model, *self.config.render_size)
        self._view_renderer.update_scene(self.data, camera="overview")
        return self._view_renderer.render()

    def render_camera(self, camera: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """One frame of a named camera at the observation size (or `size`)."""
        size = size or self.config.image_size or (64, 64)
        if self._renderer is None or (self._renderer.height, self._renderer.width) != tuple(size):
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = make_renderer(self.model, *size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        for r in (self._renderer, self._view_renderer):
            if r is not None:
                r.close()
        self._renderer = self._view_renderer = None

    # ---- control ------------------------------------------------------------------------------------------
    def _check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"action must be a numeric array of shape {self.action_space.shape}: {e}") from e
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {a.shape}, expected {self.action_space.shape} ({self.config.action_mode} mode)"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"action has non-finite entries: {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def _ee_delta_control(self, a: np.ndarray) -> None:
        c = self.config
        ee = self.ee_pos
        target = self._ee_target + a[:3] * c.pos_step
        target = np.clip(target, ee - c.target_lead, ee + c.target_lead)
        self._ee_target = np.clip(target, scene.WORKSPACE_LOW, scene.WORKSPACE_HIGH)
        self._yaw_target = float(np.clip(self._yaw_target + a[3] * c.yaw_step, -1.65, 1.65))
        self._q_des = self.ik.solve(self._q_des, self._ee_target, self._yaw_target)

    def _apply_ctrl(self) -> None:
        self.data.ctrl[self._arm_act] = self._q_des
        # +1 closes (finger position 0), -1 opens fully (FINGER_OPEN)
        self.data.ctrl[self._finger_act] = (1.0 - self._grip_cmd) * 0.5 * scene.FINGER_OPEN

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._ee_site].copy()

    @property
    def ee_yaw(self) -> float:
        return site_yaw(self.data.site_xmat[self._ee_site])

    @property
    def gripper_opening(self) -> float:
        return float(self.data.qpos[self._finger_qpos].sum())

    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self._obj_body[name]].copy()

    def object_yaw(self, name: str) -> float:
        return site_yaw(self.data.xmat[self._obj_body[name]])

    def set_object_pose(self, name: str, x: float, y: float, yaw: float) -> None:
        spec = next(o for o in scene.OBJECTS if o.name == name)
        adr = self._obj_qpos[name]
        self.data.qpos[adr : adr + 7] = [x, y, spec.half_height + 0.001, math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
        self.data.qvel[self._obj_dof[name] : self._obj_dof[name] + 6] = 0.0

    def place_objects(self, y_range: tuple[float, float] | None = None) -> None:
        """Random non-overlapping poses for all objects in OBJECT_REGION (optionally a narrower y range)."""
        rng = self.np_random
        placed: list[np.ndarray] = []
        ys = y_range or OBJECT_REGION[1]
        for o in scene.OBJECTS:
            for _ in range(1000):
                p = np.array([rng.uniform(*OBJECT_REGION[0]), rng.uniform(*ys)])
                if all(np.linalg.norm(p - q) >= MIN_SEPARATION for q in placed):
                    break
            else:
                raise RuntimeError("could not place objects without overlap")
            placed.append(p)
            self.set_object_pose(o.name, p[0], p[1], float(rng.uniform(-np.pi, np.pi)))

    def set_fixtures(
        self, zones: bool, bowl: tuple[float, float] | None = None, plate: tuple[float, float] | None = None
    ) -> None:
        """Show or hide the push zones; put the bowl and plate at (x, y), or under the table when None."""
        for name in ("zone_left", "zone_right"):
            self.model.geom_rgba[self.model.geom(name).id, 3] = 1.0 if zones else 0.0
        for name, xy in (("bowl", bowl), ("plate", plate)):
            self.model.body_pos[self.model.body(name).id] = (xy[0], xy[1], 0.0) if xy is not None else (0, 0, -1)

    def contacts_with(self, geom: int) -> set[int]:
        """Geoms touching `geom` now."""
        n = self.data.ncon
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        return set(g2[g1 == geom].tolist()) | set(g1[g2 == geom].tolist())

    def hand_touches(self, name: str) -> bool:
        return bool(self.contacts_with(self._obj_geom[name]) & set(self._hand_geoms.tolist()))

    def fingers_touch(self, name: str) -> int:
        """How many fingers touch object `name`."""
        return len(self.contacts_with(self._obj_geom[name]) & set(self._finger_geoms.tolist()))

    # ---- observation and info ---------------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        d = self.data
        obs: dict[str, np.ndarray] = {}
        if self.config.image_size is not None:
            obs[F.IMAGE_FRONT] = self.render_camera(self.config.camera)
        obs[F.STATE] = np.concatenate([d.qpos[self._arm_qpos], d.qvel[self._arm_dof], self.ee_pos]).astype(np.float32)
        obs[F.GRIPPER] = np.array([d.qpos[self._finger_qpos].sum(), d.qvel[self._finger_dof].sum()], dtype=np.float32)
        s = d.sensordata
        obs[F.FORCE] = np.concatenate([s[self._sensor["wrist_force"]], s[self._sensor["wrist_torque"]]]).astype(
            np.float32
        )
        obs[F.TOUCH] = np.concatenate([s[self._sensor["touch_l"]], s[self._sensor["touch_r"]]]).astype(np.float32)
        return obs

    def privileged_state(self) -> dict[str, Any]:
        """Simulator state for experts and metrics only (never an observation)."""
        return {
            "ee_pos": self.ee_pos,
            "ee_yaw": self.ee_yaw,
            "ee_target_pos": self._ee_target.copy(),
            "ee_target_yaw": self._yaw_target,
            "gripper_opening": self.gripper_opening,
            "objects": {
                o.name: {"pos": self.object_pos(o.name), "yaw": self.object_yaw(o.name), "color": self.colors[o.name]}
                for o in scene.OBJECTS
            },
            "target": self.target,
            "halted": self._halt_at is not None,
        }

    def _info(self, terms: dict[str, float], success: bool) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "instruction_split": self.instruction_split,
            "task": self.task_name,
            "reward_terms": terms,
            "is_success": bool(success),
            "privileged": self.privileged_state(),
            **self.task_info(),
        }
