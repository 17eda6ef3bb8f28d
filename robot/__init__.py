"""Voice-commanded robot policies on the multistream engine (docs/robot.md).

`EVAL_SEEDS`: the held-out episode seeds `scripts/eval_policy.py` evaluates on by default; DAgger
(robot.dagger) refuses them, and demo collection starts at seed 0 (keep --episodes below 1000, or start at
--seed 10000 as the committed policies do). Kept here, with no imports, so the scripts can read it without loading
torch.
"""

EVAL_SEEDS = range(1000, 1100)
