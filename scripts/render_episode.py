"""Render one episode as an animated GIF (front camera + larger overview camera) and a PNG of force, touch,
gripper and action traces over time.

The episode is either rolled out live by the scripted expert from a seed, or replayed from a demo store (its seed
and executed actions; the replay is exact, and the max difference to the stored camera frames is printed).

usage: python scripts/render_episode.py --task pick_place --seed 3 --out runs/render/pick_place_3
       python scripts/render_episode.py --store data/demos/push.zarr --episode 0 --out runs/render/push_ep0
           [--noise-std 0.1] [--fps 12.5] [--view-size 240 320]
writes OUT.gif and OUT_traces.png

       python scripts/render_episode.py --policy checkpoints/policy_push --task push --seed 1000
           --listener checkpoints/listener --out runs/render/push_1000 [--voice NAME] [--correct-frame 3]
writes OUT.mp4: a voice-commanded episode of a trained policy (robot/episode_video.py): the command spoken by a
held-out voice (or --voice), heard by the listener (without --listener: typed, and --codec for the reply), the
robot acting, the agent's spoken reply through the codec as the audio track, camera, overview, force and action
traces; --correct-frame K adds a spoken correction ("no, the blue cube") before the action of frame K, --stop makes
it a "stop" (the agent answers "okay, stopping" and must hold still).
"""

import argparse
import json
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

import envs  # noqa: E402
from envs import features as F  # noqa: E402
from envs.base import EnvConfig  # noqa: E402
from multistream.cli import nonneg_float, nonneg_int, positive_float, positive_int, probability  # noqa: E402
from robot.experts import ExpertConfig, make_expert  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--task", choices=sorted(envs.TASK_IDS), help="live expert rollout of this task")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--store", help="replay an episode of this demo store instead")
p.add_argument("--episode", type=nonneg_int, default=0)
p.add_argument("--noise-std", type=nonneg_float, default=0.0)
p.add_argument("--perturb-prob", type=probability, default=0.0)
p.add_argument("--out", required=True, help="output path prefix")
p.add_argument("--fps", type=positive_float, default=12.5)
p.add_argument("--view-size", type=positive_int, nargs=2, default=[240, 320])
p.add_argument("--policy", help="a trained policy checkpoint: render its voice-commanded episode as OUT.mp4")
p.add_argument("--listener", help="with --policy: the listener checkpoint that hears the spoken command")
p.add_argument("--codec", default="checkpoints/codec_spectral", help="with --policy and no --listener: reply codec")
p.add_argument("--voice", help="with --policy: the user voice (default: a held-out voice)")
p.add_argument("--correct-frame", type=positive_int, help="with --policy: a spoken correction before this frame")
p.add_argument("--stop", action="store_true",
               help="with --correct-frame: the user says 'stop' instead (a policy trained with stops)")
args = p.parse_args()
if args.policy:
    if args.task is None or args.store is not None:
        p.error("--policy needs --task (and --seed), not --store")
    import sys

    from robot.episode_video import render_policy_episode
    from robot.listener import Listener
    from robot.policy import Policy

    try:
        pol = Policy.load(args.policy)
        lis = Listener.load(args.listener) if args.listener else None
        summary = render_policy_episode(pol, args.task, args.seed, args.out, lis, args.voice, args.correct_frame,
                                        tuple(args.view_size), codec_path=None if lis else args.codec,
                                        stop=args.stop)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"render_episode.py: error: {e}")
    print(json.dumps(summary))
    raise SystemExit(0)
if (args.task is None) == (args.store is None):
    p.error("give exactly one of --task or --store")

replay = None
if args.store:
    from multistream.store import EpisodeStore

    try:
        store = EpisodeStore.open(args.store)
        if "task" not in store.attrs:
            raise ValueError(f"{args.store} is not a demo store (no 'task' attr); make one with collect_demos.py")
        meta = store.episode_meta(args.episode)
        task, seed = store.attrs["task"], meta["seed"]
        replay = store.episode(args.episode)
    except (ValueError, FileNotFoundError, IndexError, KeyError) as e:
        p.error(str(e))
    size = replay[F.IMAGE_FRONT].shape[1:3] if F.IMAGE_FRONT in replay else (64, 64)
else:
    task, seed, size = args.task, args.seed, (64, 64)

cfg = EnvConfig(image_size=tuple(size), render_size=tuple(args.view_size))
env = gym.make(envs.TASK_IDS[task], config=cfg, render_mode="rgb_array")
expert = make_expert(env, ExpertConfig(noise_std=args.noise_std, perturb_prob=args.perturb_prob, seed=seed))
obs, info = env.reset(seed=seed)
instruction = info["instruction"]
fronts, views, traces = [obs[F.IMAGE_FRONT]], [env.render()], []
img_diff = 0
t = 0
while True:
    if replay is not None:
        if t >= len(replay[F.ACTION]):
            break
        img_diff = max(img_diff, int(np.abs(replay[F.IMAGE_FRONT][t].astype(int) - obs[F.IMAGE_FRONT]).max()))
        action = replay["action.executed"][t]
    else:
        _, action = expert.act(info)
    traces.append({"force": obs[F.FORCE], "touch": obs[F.TOUCH], "gripper": obs[F.GRIPPER], "action": action})
    obs, reward, terminated, truncated, info = env.step(action)
    fronts.append(obs[F.IMAGE_FRONT])
    views.append(env.render())
    t += 1
    if replay is None and (terminated or truncated):
        break
success = bool(info["is_success"])
env.close()

out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [1, 1.33]})
im0 = ax0.imshow(fronts[0], interpolation="nearest")
im1 = ax1.imshow(views[0])
ax0.set_title(f"front camera {size[0]}x{size[1]}", fontsize=9)
ax1.set_title("overview", fontsize=9)
for ax in (ax0, ax1):
    ax.axis("off")
title = fig.suptitle("", fontsize=10)


def update(i):
    im0.set_data(fronts[i])
    im1.set_data(views[i])
    title.set_text(
        f'"{instruction}"   t={i / cfg.frame_rate:4.2f}s' + ("   success" if success and i == len(views) - 1 else "")
    )
    return im0, im1, title


anim = animation.FuncAnimation(fig, update, frames=len(views), blit=False)
gif = out.with_suffix(".gif")
anim.save(gif, writer=animation.PillowWriter(fps=args.fps))
plt.close(fig)

tt = np.arange(len(traces)) / cfg.frame_rate
force = np.stack([x["force"] for x in traces])
touch = np.stack([x["touch"] for x in traces])
grip = np.stack([x["gripper"] for x in traces])
act = np.stack([x["action"] for x in traces])
fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
for j, name in enumerate(F.FORCE_NAMES[:3]):
    axes[0].plot(tt, force[:, j], label=name)
axes[0].set_ylabel("wrist force (N)")
for j, name in enumerate(F.FORCE_NAMES[3:]):
    axes[1].plot(tt, force[:, 3 + j], label=name)
axes[1].set_ylabel("wrist torque (N m)")
axes[2].plot(tt, touch[:, 0], label="touch left (N)")
axes[2].plot(tt, touch[:, 1], label="touch right (N)")
ax2b = axes[2].twinx()
ax2b.plot(tt, grip[:, 0] * 1000, "k--", label="opening (mm)")
ax2b.set_ylabel("finger opening (mm)")
axes[2].set_ylabel("touch (N)")
for j, name in enumerate(F.EE_DELTA_ACTION_NAMES):
    axes[3].plot(tt, act[:, j], label=name)
axes[3].set_ylabel("action")
axes[3].set_xlabel("time (s)")
for ax in axes:
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    ax.grid(alpha=0.3)
fig.suptitle(f'{task} seed {seed}: "{instruction}" ({"success" if success else "failure"})', fontsize=10)
fig.tight_layout()
png = out.parent / f"{out.name}_traces.png"
fig.savefig(png, dpi=90)
summary = {"gif": str(gif), "traces": str(png), "frames": len(views), "success": success, "instruction": instruction}
if replay is not None:
    summary["max_image_diff_vs_store"] = img_diff
print(json.dumps(summary))
