"""Observation and action feature keys (LeRobot-style names), defined here once, and their gymnasium spaces.

Observation (a `gymnasium.spaces.Dict`):
    observation.images.front   uint8 [H, W, 3]   RGB from the `front` camera (64x64 by default)
    observation.state          float32 [13]      arm joint positions (5), arm joint velocities (5), ee position (3)
    observation.gripper        float32 [2]       finger opening (m, 0 closed .. 0.08 open), finger opening speed
    observation.force          float32 [6]       wrist force (N, 3) and torque (N m, 3) in the wrist frame
    observation.touch          float32 [2]       left/right fingertip normal force (N)

Action (a `Box(-1, 1)`): in `ee_delta` mode `[dx, dy, dz, dyaw, grip]` (scaled by the env config; grip +1 closes,
-1 opens); in `joint` mode `[q1..q5, grip]`, joint targets normalized to each joint's range.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

IMAGE_FRONT = "observation.images.front"
STATE = "observation.state"
GRIPPER = "observation.gripper"
FORCE = "observation.force"
TOUCH = "observation.touch"
ACTION = "action"

STATE_DIM = 13
GRIPPER_DIM = 2
FORCE_DIM = 6
TOUCH_DIM = 2
EE_DELTA_ACTION_DIM = 5
JOINT_ACTION_DIM = 6
ACTION_MODES = ("ee_delta", "joint")

# names of the entries of the vector features, for plots and docs
STATE_NAMES = tuple([f"q{i}" for i in range(1, 6)] + [f"dq{i}" for i in range(1, 6)] + ["ee_x", "ee_y", "ee_z"])
FORCE_NAMES = ("fx", "fy", "fz", "tx", "ty", "tz")
EE_DELTA_ACTION_NAMES = ("dx", "dy", "dz", "dyaw", "grip")
JOINT_ACTION_NAMES = ("q1", "q2", "q3", "q4", "q5", "grip")


def observation_space(image_size: tuple[int, int] | None) -> spaces.Dict:
    """The Dict observation space; `image_size=None` leaves the camera out."""
    inf = np.inf
    feats: dict[str, spaces.Space] = {}
    if image_size is not None:
        h, w = image_size
        feats[IMAGE_FRONT] = spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
    feats[STATE] = spaces.Box(-inf, inf, shape=(STATE_DIM,), dtype=np.float32)
    feats[GRIPPER] = spaces.Box(-inf, inf, shape=(GRIPPER_DIM,), dtype=np.float32)
    feats[FORCE] = spaces.Box(-inf, inf, shape=(FORCE_DIM,), dtype=np.float32)
    feats[TOUCH] = spaces.Box(0.0, inf, shape=(TOUCH_DIM,), dtype=np.float32)
    return spaces.Dict(feats)


def action_space(mode: str) -> spaces.Box:
    if mode not in ACTION_MODES:
        raise ValueError(f"action mode must be one of {ACTION_MODES}, got {mode!r}")
    dim = EE_DELTA_ACTION_DIM if mode == "ee_delta" else JOINT_ACTION_DIM
    return spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
