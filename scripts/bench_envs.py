"""Benchmark the tabletop envs: env steps/s with and without the camera, physics-only steps/s, render share.

usage: python scripts/bench_envs.py [--tasks touch push pick_place] [--steps 500] [--image-size 64]
           [--out runs/bench/envs.json]

"with camera": full `env.step` (IK control, 16 physics substeps, sensors, observation with one RGB image) under
random actions, resetting at episode ends (resets excluded from the timing). "no camera": the same with
`image_size=None`. "physics-only": bare `mj_step` calls on the same model, reported per physics step and per env
frame (n_substeps physics steps). "render share": time spent producing the image / time of the step with camera.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

import envs
from envs.base import EnvConfig
from multistream.cli import positive_int

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--tasks", nargs="+", default=sorted(envs.TASK_IDS), choices=sorted(envs.TASK_IDS))
p.add_argument("--steps", type=positive_int, default=500)
p.add_argument("--image-size", type=positive_int, default=64)
p.add_argument("--out", default="runs/bench/envs.json")
args = p.parse_args()


def run_env(task, image_size, steps):
    cfg = EnvConfig(image_size=None if image_size is None else (image_size, image_size))
    env = gym.make(envs.TASK_IDS[task], config=cfg)
    u = env.unwrapped
    render_time = [0.0]
    if image_size is not None:
        orig = u.render_camera

        def timed(*a, **k):
            t = time.perf_counter()
            out = orig(*a, **k)
            render_time[0] += time.perf_counter() - t
            return out

        u.render_camera = timed
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape))  # warm up (renderer creation)
    render_time[0] = 0.0
    total = 0.0
    for i in range(steps):
        a = rng.uniform(-1, 1, size=env.action_space.shape)
        t = time.perf_counter()
        _, _, term, trunc, _ = env.step(a)
        total += time.perf_counter() - t
        if term or trunc:
            before = render_time[0]
            env.reset(seed=i + 1)
            render_time[0] = before  # the reset's frame is outside the timed steps
    env.close()
    return steps / total, render_time[0] / total


def run_physics(task, steps):
    cfg = EnvConfig(image_size=None)
    env = gym.make(envs.TASK_IDS[task], config=cfg)
    env.reset(seed=0)
    u = env.unwrapped
    n = steps * cfg.n_substeps
    t = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(u.model, u.data)
    dt = time.perf_counter() - t
    env.close()
    return n / dt, cfg.n_substeps


rows = []
for task in args.tasks:
    cam_sps, render_share = run_env(task, args.image_size, args.steps)
    nocam_sps, _ = run_env(task, None, args.steps)
    phys_sps, nsub = run_physics(task, args.steps)
    rows.append(
        {
            "task": task,
            "env_steps_per_s_camera": round(cam_sps, 1),
            "env_steps_per_s_no_camera": round(nocam_sps, 1),
            "physics_steps_per_s": round(phys_sps, 1),
            "physics_only_frames_per_s": round(phys_sps / nsub, 1),
            "render_share": round(render_share, 3),
            "render_ms_per_frame": round(1000 * render_share / cam_sps, 3),
        }
    )

result = {
    "image_size": args.image_size,
    "steps": args.steps,
    "substeps_per_env_step": EnvConfig().n_substeps,
    "physics_timestep_s": EnvConfig().physics_timestep,
    "mujoco_gl": os.environ.get("MUJOCO_GL"),
    "mujoco": mujoco.__version__,
    "cpu": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "load_avg_1min_at_end": round(os.getloadavg()[0], 2),  # the machine is shared: context for the figures
    "rows": rows,
}
cols = list(rows[0])
widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
print(
    f"MUJOCO_GL={result['mujoco_gl']}  image {args.image_size}x{args.image_size}  {args.steps} steps per run  "
    f"load avg {result['load_avg_1min_at_end']} on {result['cpu_count']} cores"
)
print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
for r in rows:
    print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=2))
print(f"wrote {out}")
