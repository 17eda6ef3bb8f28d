"""Instruction text: templated phrasings with synonyms, split into train and held-out phrasings.

Each task has templates with slots (`{obj}`, `{side}`, `{target}`); objects are named "<color> <shape word>". The
held-out templates never appear in training data, so that a policy's (or the speech pipeline's) generalization to
new wordings can be measured. Synonyms of shapes and targets are shared by both splits; the split is about
sentence structure and verbs.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "heldout", "all")

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "cube": ("cube", "block"),
    "cylinder": ("cylinder", "can"),
    "bar": ("bar", "brick"),
}
TARGET_WORDS: dict[str, tuple[str, ...]] = {
    "bowl": ("bowl", "tray", "basket"),
    "plate": ("plate", "white plate", "dish"),
}
TARGET_PREPOSITION = {"bowl": "in", "plate": "on"}
SIDE_WORDS: dict[str, tuple[str, ...]] = {"left": ("left", "left side"), "right": ("right", "right side")}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "touch": {
        "train": ("touch the {obj}", "tap the {obj}", "reach out and touch the {obj}", "go touch the {obj}"),
        "heldout": ("put your fingers on the {obj}", "can you poke the {obj}"),
    },
    "push": {
        "train": ("push the {obj} to the {side}", "slide the {obj} to the {side}", "move the {obj} over to the {side}"),
        "heldout": ("shove the {obj} toward the {side}", "nudge the {obj} all the way to the {side}"),
    },
    "pick_place": {
        "train": (
            "put the {obj} {prep} the {target}",
            "pick up the {obj} and place it {prep} the {target}",
            "take the {obj} and set it {prep} the {target}",
        ),
        "heldout": ("grab the {obj} and drop it into the {target}", "move the {obj} onto the {target}"),
    },
}

# Mid-episode corrections ("no, the blue cube"): the user names another object; the task (and its side or target)
# stays. Train and held-out phrasings as for the instructions.
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("no, the {obj}", "sorry, I meant the {obj}", "wait, the {obj} instead"),
    "heldout": ("not that one, the {obj}",),
}


# A "stop" correction: the robot must halt where it is and hold still (`TabletopEnv.halt`). Its words map to the
# slot parser's halt slot (`robot.command`); the held-out phrasings use words no training episode says.
STOPS: dict[str, tuple[str, ...]] = {
    "train": ("stop", "stop now", "wait, stop"),
    "heldout": ("freeze", "hold still"),
}
STOP_WORDS = ("stop", "freeze", "hold")  # a word of each phrasing: what says "halt"


def make_stop(split: str, rng: np.random.Generator) -> str:
    """A "stop" from `split`'s phrasings."""
    if split not in ("train", "heldout"):
        raise ValueError(f"stop split must be 'train' or 'heldout', got {split!r}")
    return STOPS[split][int(rng.integers(len(STOPS[split])))]


def make_correction(split: str, rng: np.random.Generator, obj: str) -> str:
    """A correction naming `obj` ("<color> <shape>", canonical) from `split`'s phrasings, with a random shape
    synonym."""
    if split not in ("train", "heldout"):
        raise ValueError(f"correction split must be 'train' or 'heldout', got {split!r}")
    color, shape = obj.split(" ")
    syn = SHAPE_WORDS[shape]
    phrasings = CORRECTIONS[split]
    return phrasings[int(rng.integers(len(phrasings)))].format(obj=f"{color} {syn[int(rng.integers(len(syn)))]}")


def make_instruction(task: str, split: str, rng: np.random.Generator, **slots: str) -> tuple[str, str]:
    """A phrasing for `task` from `split`; slot values are canonical names (`obj` as "<color> <shape>",
    `side`, `target`) turned into random synonyms. Returns (text, split the template came from)."""
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TEMPLATES)}")
    if split not in SPLITS:
        raise ValueError(f"instruction split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        split = ("train", "heldout")[int(rng.integers(2))]
    template = TEMPLATES[task][split][int(rng.integers(len(TEMPLATES[task][split])))]
    words = {}
    if "obj" in slots:
        color, shape = slots["obj"].split(" ")
        syn = SHAPE_WORDS[shape]
        words["obj"] = f"{color} {syn[int(rng.integers(len(syn)))]}"
    if "side" in slots:
        syn = SIDE_WORDS[slots["side"]]
        words["side"] = syn[int(rng.integers(len(syn)))]
    if "target" in slots:
        words["prep"] = TARGET_PREPOSITION[slots["target"]]
        syn = TARGET_WORDS[slots["target"]]
        words["target"] = syn[int(rng.integers(len(syn)))]
    return template.format(**words), split
