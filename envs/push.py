"""Push: push the named object into the named zone ("push the red cube to the left").

The zones are the table strips beyond |y| = ZONE_Y on the viewer's left (world -y) and right (+y). Success: the
target's center is inside the zone (|y| > ZONE_Y on the named side), still on the table. Reward terms: `reach`
(minus the distance from the end effector to the pushing point behind the object), `progress` (minus the
remaining distance of the object to the zone), `success` (+1).
"""

from __future__ import annotations

import numpy as np

from envs import scene
from envs.base import EnvConfig, TabletopEnv
from envs.instructions import make_instruction

MAX_EPISODE_STEPS = 80  # 6.4 s at 12.5 Hz
SIDES = ("left", "right")
SIDE_SIGN = {"left": -1.0, "right": 1.0}  # world y direction of each side (viewer's left is -y)
PUSH_OFFSET = 0.045  # pushing point: this far behind the object center, on the far side from the zone


def default_config() -> EnvConfig:
    return EnvConfig()


class PushEnv(TabletopEnv):
    task_name = "push"

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None) -> None:
        super().__init__(config if config is not None else default_config(), render_mode)
        self.side = "left"

    def _reset_task(self) -> None:
        self.set_fixtures(zones=True)
        self.place_objects()
        rng = self.np_random
        self.target = scene.OBJECT_NAMES[int(rng.integers(len(scene.OBJECT_NAMES)))]
        self.side = SIDES[int(rng.integers(2))]
        obj = f"{self.colors[self.target]} {self.target}"
        self.instruction, self.instruction_split = make_instruction(
            "push", self.config.instruction_split, rng, obj=obj, side=self.side
        )

    def task_info(self) -> dict:
        return {**super().task_info(), "goal": self.side}

    def remaining(self) -> float:
        """How far (m) the target's center still is from entering the zone."""
        y = self.object_pos(self.target)[1]
        return max(0.0, scene.ZONE_Y - SIDE_SIGN[self.side] * y)

    def _evaluate(self) -> tuple[dict[str, float], bool]:
        p = self.object_pos(self.target)
        push_point = p - np.array([0.0, SIDE_SIGN[self.side] * PUSH_OFFSET, 0.0])
        on_table = p[2] > 0.0 and abs(p[0]) < scene.TABLE_HALF[0] and abs(p[1]) < scene.TABLE_HALF[1]
        success = self.remaining() == 0.0 and on_table
        terms = {
            "reach": -float(np.linalg.norm(self.ee_pos - push_point)),
            "progress": -self.remaining(),
            "success": 1.0 if success else 0.0,
        }
        return terms, success
