"""MuJoCo tabletop tasks behind the gymnasium API (numpy, mujoco and gymnasium only; never torch).

Importing `envs` chooses the offscreen GL backend (before mujoco is imported; see `rendering.py`) and registers
the tasks, each with its time limit:

    gymnasium.make("multistream/Touch-v0")      touch the named object                      (40 steps, 3.2 s)
    gymnasium.make("multistream/Push-v0")       push the named object to the left/right     (80 steps, 6.4 s)
    gymnasium.make("multistream/PickPlace-v0")  put the named object in the bowl/on plate  (100 steps, 8 s)

One step is one 80 ms frame (12.5 Hz); keyword arguments of `make` go to the env (`config=EnvConfig(...)`,
`render_mode="rgb_array"`).
"""

from envs.rendering import select_backend

select_backend()

from gymnasium.envs.registration import register, registry  # noqa: E402

from envs import pick_place, push, touch  # noqa: E402

TASKS = {
    "multistream/Touch-v0": ("envs.touch:TouchEnv", touch.MAX_EPISODE_STEPS),
    "multistream/Push-v0": ("envs.push:PushEnv", push.MAX_EPISODE_STEPS),
    "multistream/PickPlace-v0": ("envs.pick_place:PickPlaceEnv", pick_place.MAX_EPISODE_STEPS),
}
TASK_IDS = {"touch": "multistream/Touch-v0", "push": "multistream/Push-v0", "pick_place": "multistream/PickPlace-v0"}

for _id, (_entry, _steps) in TASKS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=_steps)
