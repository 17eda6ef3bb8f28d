"""Touch: touch the named object with the hand (the easy sanity task).

Success: a hand geom (palm or finger) is in contact with the target object. Reward terms: `reach` (minus the
distance from the end effector to the top of the target), `touch_distractor` (-0.5 while touching another object),
`success` (+1).
"""

from __future__ import annotations

import numpy as np

from envs import scene
from envs.base import EnvConfig, TabletopEnv
from envs.instructions import make_instruction

MAX_EPISODE_STEPS = 40  # 3.2 s at 12.5 Hz


def default_config() -> EnvConfig:
    return EnvConfig()


class TouchEnv(TabletopEnv):
    task_name = "touch"

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None) -> None:
        super().__init__(config if config is not None else default_config(), render_mode)

    def _reset_task(self) -> None:
        self.set_fixtures(zones=False)
        self.place_objects()
        self.target = scene.OBJECT_NAMES[int(self.np_random.integers(len(scene.OBJECT_NAMES)))]
        obj = f"{self.colors[self.target]} {self.target}"
        self.instruction, self.instruction_split = make_instruction(
            "touch", self.config.instruction_split, self.np_random, obj=obj
        )

    def _evaluate(self) -> tuple[dict[str, float], bool]:
        spec = next(o for o in scene.OBJECTS if o.name == self.target)
        top = self.object_pos(self.target) + np.array([0.0, 0.0, spec.half_height])
        success = self.hand_touches(self.target)
        others = any(self.hand_touches(o) for o in scene.OBJECT_NAMES if o != self.target)
        terms = {
            "reach": -float(np.linalg.norm(self.ee_pos - top)),
            "touch_distractor": -0.5 if others else 0.0,
            "success": 1.0 if success else 0.0,
        }
        return terms, success
