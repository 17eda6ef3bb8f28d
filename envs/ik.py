"""Damped least-squares Jacobian inverse kinematics for a site pose "pointing down at a yaw".

Used by the env's end-effector controller (and available to experts): iterate `dq = J^T (J J^T + lambda^2 I)^-1 e`
on a scratch `MjData` (kinematics only, never the simulated state), with the 6-D error `e` = (position error,
weighted orientation error) and joint limits enforced after every iteration.
"""

from __future__ import annotations

import mujoco
import numpy as np


def yaw_matrix(yaw: float) -> np.ndarray:
    """World rotation of the hand pointing down at `yaw` (the hand's zero pose points down)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def orientation_error(current: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Small-angle rotation vector taking `current` (3x3) to `desired` (3x3), in the world frame."""
    c, d = current, desired  # sum_i cross(c[:, i], d[:, i]), written out (np.cross is slow on 3-vectors)
    return 0.5 * np.array([c[1] @ d[2] - c[2] @ d[1], c[2] @ d[0] - c[0] @ d[2], c[0] @ d[1] - c[1] @ d[0]])


def site_yaw(xmat: np.ndarray) -> float:
    r = xmat.reshape(3, 3)
    return float(np.arctan2(r[1, 0], r[0, 0]))


class SiteIK:
    """IK for one site over a set of hinge joints (`qpos` and `dof` addresses given)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        qpos_adr: np.ndarray,
        dof_adr: np.ndarray,
        ranges: np.ndarray,
        damping: float = 0.03,
        rot_weight: float = 0.3,
        iterations: int = 6,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)  # scratch: kinematics only
        self.site = model.site(site).id
        self.qpos_adr, self.dof_adr, self.ranges = qpos_adr, dof_adr, ranges
        self.damping, self.rot_weight, self.iterations = damping, rot_weight, iterations
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position and rotation matrix at arm joint positions `q`."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, q_init: np.ndarray, pos: np.ndarray, yaw: float) -> np.ndarray:
        q = np.array(q_init, dtype=np.float64)
        desired = yaw_matrix(yaw)
        n = len(q)
        for _ in range(self.iterations):
            cur_pos, cur_rot = self.forward(q)
            err = np.concatenate([pos - cur_pos, self.rot_weight * orientation_error(cur_rot, desired)])
            if np.abs(err).max() < 1e-5:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.concatenate([self._jacp[:, self.dof_adr], self.rot_weight * self._jacr[:, self.dof_adr]])
            jjt = jac @ jac.T + self.damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            q = np.clip(q + dq[:n], self.ranges[:, 0], self.ranges[:, 1])
        return q
