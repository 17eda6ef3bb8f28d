"""PickPlace: pick the named object and put it in/on the named target ("put the blue bar in the bowl").

The bowl (a square tray with low walls) and the plate stand on opposite sides of the table (which side is random);
objects start in the middle band. Success: the target object rests inside the bowl's walls / on the plate (center
within the inner area, low) and the fingers have let go of it. Reward terms: `reach` (minus the distance from the
end effector to the object), `grasp` (+0.25 while both fingers touch it), `lift` (its height above rest, capped),
`place` (minus its horizontal distance to the target), `success` (+1).
"""

from __future__ import annotations

import numpy as np

from envs import scene
from envs.base import EnvConfig, TabletopEnv
from envs.instructions import make_instruction

MAX_EPISODE_STEPS = 100  # 8 s at 12.5 Hz
TARGETS = ("bowl", "plate")
FIXTURE_Y = (0.20, 0.23)  # |y| range of the fixtures' centers
FIXTURE_X = (-0.06, 0.12)
OBJECT_Y = 0.08  # objects start within |y| <= OBJECT_Y


def default_config() -> EnvConfig:
    return EnvConfig()


class PickPlaceEnv(TabletopEnv):
    task_name = "pick_place"

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None) -> None:
        super().__init__(config if config is not None else default_config(), render_mode)
        self.goal = "bowl"
        self.fixture_xy = {"bowl": np.zeros(2), "plate": np.zeros(2)}

    def _reset_task(self) -> None:
        rng = self.np_random
        sign = 1.0 if rng.integers(2) else -1.0
        bowl = np.array([rng.uniform(*FIXTURE_X), sign * rng.uniform(*FIXTURE_Y)])
        plate = np.array([rng.uniform(*FIXTURE_X), -sign * rng.uniform(*FIXTURE_Y)])
        self.fixture_xy = {"bowl": bowl, "plate": plate}
        self.set_fixtures(zones=False, bowl=tuple(bowl), plate=tuple(plate))
        self.place_objects(y_range=(-OBJECT_Y, OBJECT_Y))
        self.target = scene.OBJECT_NAMES[int(rng.integers(len(scene.OBJECT_NAMES)))]
        self.goal = TARGETS[int(rng.integers(2))]
        obj = f"{self.colors[self.target]} {self.target}"
        self.instruction, self.instruction_split = make_instruction(
            "pick_place", self.config.instruction_split, rng, obj=obj, target=self.goal
        )

    def task_info(self) -> dict:
        return {**super().task_info(), "goal": self.goal, "goal_xy": self.fixture_xy[self.goal].tolist()}

    def inside_goal(self, p: np.ndarray) -> bool:
        d = p[:2] - self.fixture_xy[self.goal]
        if self.goal == "bowl":
            return bool(np.abs(d).max() < scene.BOWL_INNER - 0.005 and p[2] < 0.06)
        return bool(np.linalg.norm(d) < scene.PLATE_RADIUS and p[2] < 0.06)

    def _evaluate(self) -> tuple[dict[str, float], bool]:
        spec = next(o for o in scene.OBJECTS if o.name == self.target)
        p = self.object_pos(self.target)
        fingers = self.fingers_touch(self.target)
        success = self.inside_goal(p) and fingers == 0
        terms = {
            "reach": -float(np.linalg.norm(self.ee_pos - p)),
            "grasp": 0.25 if fingers == 2 else 0.0,
            "lift": float(np.clip(p[2] - spec.half_height, 0.0, 0.1)),
            "place": -float(np.linalg.norm(p[:2] - self.fixture_xy[self.goal])),
            "success": 1.0 if success else 0.0,
        }
        return terms, success
