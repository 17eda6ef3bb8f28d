"""Text dialogues for a voice assistant that also commands a robot, in spoken style, with held-out test content.

A small built-in knowledge base (colors of things, animals, capitals, days, units, words to spell, robot objects)
fills templates of user questions and agent answers: greetings, arithmetic and counting, facts, spelling, yes/no
questions, requests to repeat or stop, and robot commands. Text is written as it is spoken (LLaMA-Omni style):
numbers spelled out, contractions, occasional fillers, only the characters `speech.tts` accepts.

Splits ("train", "valid", "test") hold out content two ways: each intent's *templates* are divided among the
splits, and so are the *entities* (countries, animals, words, number pairs ...). A training dialogue uses only
training templates and training entities; a valid/test question uses a template or an entity of its own split
(each at least one), so no valid/test question appears in training.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from envs.instructions import SHAPE_WORDS, SIDE_WORDS, TARGET_PREPOSITION, TARGET_WORDS, TEMPLATES
from envs.scene import PALETTE

SPLITS = ("train", "valid", "test")
AGENT, USER = "agent", "user"


@dataclass
class Turn:
    speaker: str  # 'agent' | 'user'
    text: str  # spoken-style text, one or more sentences
    act: str  # the intent: 'greeting', 'arithmetic', 'stop', 'repeat', 'robot', ...
    interrupt: bool = False  # a user turn meant to barge in on the agent's previous turn


@dataclass
class Dialogue:
    id: str
    split: str
    turns: list[Turn] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(f"{t.speaker}: {t.text}" for t in self.turns)


# ------------------------------------------------------------------------------------------------ spoken numbers
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Spell a non-negative integer below one million the way it is said ('forty-two', 'one hundred and five')."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words supports 0 <= n < 1000000, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


# -------------------------------------------------------------------------------------------------- knowledge base
CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Sweden", "Stockholm"), ("Greece", "Athens"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"),
            ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Chile", "Santiago"), ("Cuba", "Havana"),
            ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Thailand", "Bangkok"),
            ("Argentina", "Buenos Aires"), ("Belgium", "Brussels"), ("Turkey", "Ankara"), ("Australia", "Canberra")]
# animal, class, legs, sound (verb), a fact sentence
ANIMALS = [("dog", "mammal", 4, "barks", "Dogs have been living with people for thousands of years."),
           ("cat", "mammal", 4, "meows", "Cats sleep for most of the day."),
           ("cow", "mammal", 4, "moos", "Cows eat grass and give milk."),
           ("horse", "mammal", 4, "neighs", "Horses can sleep standing up."),
           ("sheep", "mammal", 4, "baas", "Sheep grow wool that people use for clothes."),
           ("duck", "bird", 2, "quacks", "Ducks have waterproof feathers."),
           ("owl", "bird", 2, "hoots", "Owls hunt at night and can turn their heads very far."),
           ("chicken", "bird", 2, "clucks", "Chickens lay eggs almost every day."),
           ("frog", "amphibian", 4, "croaks", "Frogs start their lives as tadpoles in the water."),
           ("spider", "arachnid", 8, "is silent", "Spiders spin webs to catch insects."),
           ("ant", "insect", 6, "is silent", "Ants live in large colonies with a queen."),
           ("bee", "insect", 6, "buzzes", "Bees make honey from the nectar of flowers."),
           ("lion", "mammal", 4, "roars", "Lions live in groups called prides."),
           ("elephant", "mammal", 4, "trumpets", "Elephants are the largest animals that live on land."),
           ("whale", "mammal", 0, "sings", "Whales breathe air even though they live in the sea."),
           ("snake", "reptile", 0, "hisses", "Snakes smell with their tongues."),
           ("pig", "mammal", 4, "oinks", "Pigs are clever and like to roll in the mud."),
           ("goat", "mammal", 4, "bleats", "Goats are very good at climbing."),
           ("crow", "bird", 2, "caws", "Crows are among the smartest birds."),
           ("wolf", "mammal", 4, "howls", "Wolves hunt together in packs."),
           ("mouse", "mammal", 4, "squeaks", "Mice can squeeze through very small holes."),
           ("turtle", "reptile", 4, "is silent", "Some turtles live for more than a hundred years."),
           ("donkey", "mammal", 4, "brays", "Donkeys are strong and can carry heavy loads."),
           ("parrot", "bird", 2, "squawks", "Some parrots can copy human words.")]
THING_COLORS = [("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("a banana", "yellow"),
                ("a tomato", "red"), ("coal", "black"), ("an orange", "orange"), ("a carrot", "orange"),
                ("the sun", "yellow"), ("milk", "white"), ("a strawberry", "red"), ("a lemon", "yellow"),
                ("chocolate", "brown"), ("a lime", "green"), ("the night sky", "black"), ("a pumpkin", "orange"),
                ("a polar bear", "white"), ("a plum", "purple"), ("a frog", "green"), ("a cherry", "red")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# (big unit, small unit, how many small in one big)
UNITS = [("meter", "centimeters", 100), ("kilometer", "meters", 1000), ("hour", "minutes", 60),
         ("minute", "seconds", 60), ("day", "hours", 24), ("week", "days", 7), ("year", "months", 12),
         ("kilogram", "grams", 1000), ("liter", "milliliters", 1000), ("dozen", "things", 12),
         ("foot", "inches", 12), ("meter", "millimeters", 1000), ("century", "years", 100),
         ("decade", "years", 10), ("yard", "feet", 3), ("gallon", "quarts", 4)]
SPELL_WORDS = ("cat dog sun tree book apple house water green robot cube ball table chair music happy river "
               "orange window garden yellow pencil school friend bread light stone cloud paper milk flower "
               "summer winter purple rabbit planet tiger lemon candle bottle rocket").split()
ROBOT_COLORS = list(PALETTE)  # the robot scenes' colours and objects: one vocabulary with envs.instructions
ROBOT_OBJECTS = list(SHAPE_WORDS)

# --------------------------------------------------------------------------------------------------- splits
_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}


def _bucket(key: str) -> str:
    """The split an entity belongs to, stable across runs: about 70% train, 15% valid, 15% test."""
    h = zlib.crc32(key.encode()) % 20
    return "test" if h < 3 else "valid" if h < 6 else "train"


def _template_split(i: int, n: int) -> str:
    """Templates of an intent: the last goes to test, the one before to valid (when there are >= 4)."""
    if n >= 4 and i == n - 1:
        return "test"
    if n >= 4 and i == n - 2:
        return "valid"
    return "train"


class _Picker:
    """Chooses templates and entities for one question so the split's hold-out rule holds."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.split = rng, split
        # valid/test: hold out the template, the entity, or both; train: neither.
        self.hold = "none" if split == "train" else rng.choice(["template", "entity", "both"])

    def template(self, templates: list[str]) -> str:
        want = self.split if self.hold in ("template", "both") else "train"
        pool = [t for i, t in enumerate(templates) if _template_split(i, len(templates)) == want]
        if not pool:  # intent without held-out templates: hold out the entity instead
            pool = [t for i, t in enumerate(templates) if _template_split(i, len(templates)) == "train"]
            self.hold = "entity"
        return self.rng.choice(pool)

    def entity(self, items: list, key: Callable = str):
        want = self.split if self.hold in ("entity", "both") else "train"
        pool = [x for x in items if _bucket(key(x)) == want]
        return self.rng.choice(pool)


# ------------------------------------------------------------------------------------------------- intents
_NAMES = {w for c, k in CAPITALS for w in (c + " " + k).split()} | set(DAYS)
FILLERS = ["Um,", "Uh,", "So,", "Well,", "Okay so,", "Hmm,"]
OPENERS = ["", "", "", "Hey, ", "Okay, ", "Quick question, ", "Hey robot, "]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _lower_first(text: str) -> str:
    first = text.split()[0]
    if first == "I" or first.startswith("I'") or first[0].isupper() and first[1:].islower() and first in _NAMES:
        return text
    return text[:1].lower() + text[1:]


def _user(rng: random.Random, text: str) -> str:
    """Add spoken-style noise to a user question: an opener or a filler now and then."""
    r = rng.random()
    if r < 0.12:
        return f"{rng.choice(FILLERS)} {_lower_first(text)}"
    if r < 0.3:
        opener = rng.choice(OPENERS)
        return opener + (_lower_first(text) if opener else text)
    return text


def _arithmetic(p: _Picker, rng: random.Random) -> tuple[str, str]:
    op = rng.choice(["plus", "minus", "times", "divided by"])
    a, b = _arith_operands(p, rng, op)
    result = {"plus": a + b, "minus": a - b, "times": a * b, "divided by": a // b if b else 0}[op]
    q = p.template(["What's {a} {op} {b}?", "Can you tell me what {a} {op} {b} is?", "How much is {a} {op} {b}?",
                    "What do you get if you take {a} {op} {b}?", "Quick math, {a} {op} {b}?",
                    "Could you work out {a} {op} {b} for me?"])
    ans = rng.choice(["{a} {op} {b} is {r}.", "That's {r}.", "It's {r}.", "{a} {op} {b} equals {r}."])
    f = dict(a=number_words(a), b=number_words(b), op=op, r=number_words(result))
    return _cap(q.format(**f)), _cap(ans.format(**f))


def _arith_operands(p: _Picker, rng: random.Random, op: str) -> tuple[int, int]:
    want = p.split if p.hold in ("entity", "both") else "train"
    for _ in range(1000):
        if op == "times":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
        elif op == "divided by":
            b = rng.randint(2, 10)
            a = b * rng.randint(1, 10)
        elif op == "minus":
            a = rng.randint(2, 100)
            b = rng.randint(1, a)
        else:
            a, b = rng.randint(1, 100), rng.randint(1, 100)
        if _bucket(f"{a} {op} {b}") == want:
            return a, b
    raise AssertionError("no operand pair found for the split")


def _counting(p: _Picker, rng: random.Random) -> tuple[str, str]:
    kind = rng.random()
    if kind < 0.5:
        n = p.entity(list(range(3, 11)), key=lambda x: f"count {x}")
        seq = [number_words(i) for i in range(1, n + 1)]
        q = p.template(["Can you count to {n}?", "Count to {n}, please.", "Please count from one to {n}.",
                        "Could you count up to {n} for me?", "Let's hear you count to {n}."])
        return _cap(q.format(n=number_words(n))), "Sure. " + _cap(", ".join(seq)) + "."
    if kind < 0.75:
        n = p.entity(list(range(3, 11)), key=lambda x: f"back {x}")
        seq = [number_words(i) for i in range(n, 0, -1)]
        q = p.template(["Count backwards from {n}.", "Can you count down from {n}?", "Do a countdown from {n}.",
                        "Please count down from {n} to one."])
        return _cap(q.format(n=number_words(n))), "Okay. " + _cap(", ".join(seq)) + "."
    a = p.entity(ANIMALS, key=lambda x: x[0])
    name, _, legs, _, _ = a
    q = p.template(["How many legs does a {x} have?", "How many legs has a {x} got?", "Does a {x} have many legs?",
                    "Count the legs of a {x} for me.", "Tell me how many legs a {x} has."])
    ans = f"A {name} has no legs." if legs == 0 else f"A {name} has {number_words(legs)} legs."
    return q.format(x=name), ans


def _fact(p: _Picker, rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(6)
    if kind == 0:
        c, cap = p.entity(CAPITALS, key=lambda x: x[0])
        q = p.template(["What's the capital of {c}?", "What is the capital city of {c}?",
                        "Do you know the capital of {c}?", "Which city is the capital of {c}?",
                        "Tell me the capital of {c}."])
        ans = rng.choice(["The capital of {c} is {k}.", "It's {k}.", "{k} is the capital of {c}."])
        return q.format(c=c), ans.format(c=c, k=cap)
    if kind == 1:
        thing, color = p.entity(THING_COLORS, key=lambda x: x[0])
        q = p.template(["What color is {t}?", "What's the color of {t}?", "Which color is {t}?",
                        "Can you tell me the color of {t}?", "Do you know what color {t} is?"])
        return q.format(t=thing), _cap(f"{thing} is usually {color}.")
    if kind == 2:
        name, cls, _, sound, _ = p.entity(ANIMALS, key=lambda x: x[0])
        q = p.template(["What sound does a {x} make?", "What noise does a {x} make?", "How does a {x} sound?",
                        "What does a {x} say?", "Which sound does a {x} make?"])
        ans = f"A {name} is mostly silent." if sound == "is silent" else f"A {name} {sound}."
        return q.format(x=name), ans
    if kind == 3:
        name, cls, _, _, fact = p.entity(ANIMALS, key=lambda x: x[0])
        q = p.template(["Tell me about the {x}.", "What can you tell me about a {x}?",
                        "Tell me something about {x}s.", "What kind of animal is a {x}?",
                        "Give me a fact about {x}s."])
        art = "an" if cls[0] in "aeiou" else "a"
        more = rng.choice(["", " Would you like to hear more?", " Isn't that interesting?"])
        return q.format(x=name), f"A {name} is {art} {cls}. {fact}{more}"
    if kind == 4:
        i = p.entity(list(range(7)), key=lambda x: f"day {x}")
        after = rng.random() < 0.5
        if after:
            q = p.template(["What day comes after {d}?", "Which day is after {d}?", "What's the day after {d}?",
                            "If today is {d}, what's tomorrow?", "After {d} comes which day?"])
            return q.format(d=DAYS[i]), f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}."
        q = p.template(["What day comes before {d}?", "Which day is before {d}?", "What's the day before {d}?",
                        "If today is {d}, what was yesterday?"])
        return q.format(d=DAYS[i]), f"The day before {DAYS[i]} is {DAYS[(i - 1) % 7]}."
    big, small, k = p.entity(UNITS, key=lambda x: f"{x[0]} {x[1]}")
    q = p.template(["How many {s} are in a {b}?", "How many {s} make a {b}?", "How many {s} in one {b}?",
                    "A {b} has how many {s}?", "Tell me how many {s} are in a {b}."])
    return q.format(s=small, b=big), f"There are {number_words(k)} {small} in a {big}."


def _spelling(p: _Picker, rng: random.Random) -> tuple[str, str]:
    w = p.entity(SPELL_WORDS)
    q = p.template(["How do you spell {w}?", "Can you spell {w} for me?", "Spell the word {w}, please.",
                    "What's the spelling of {w}?", "How is {w} spelled?"])
    letters = ", ".join(c.upper() for c in w)
    return q.format(w=w), f"{_cap(w)} is spelled {letters}."


def _yesno(p: _Picker, rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        name, cls, _, _, _ = p.entity(ANIMALS, key=lambda x: x[0])
        ask = rng.choice(["mammal", "bird", "fish", "insect", "reptile"])
        art, art2 = ("an" if ask[0] in "aeiou" else "a"), ("an" if cls[0] in "aeiou" else "a")
        q = p.template(["Is a {x} {art} {c}?", "Is the {x} {art} {c}?", "Would you call a {x} {art} {c}?",
                        "A {x} is {art} {c}, right?", "Tell me, is a {x} {art} {c}?"])
        ans = f"Yes, a {name} is {art} {ask}." if ask == cls else f"No, a {name} is {art2} {cls}."
        return q.format(x=name, art=art, c=ask), ans
    if kind == 1:
        c, cap = p.entity(CAPITALS, key=lambda x: x[0])
        true = rng.random() < 0.5
        guess = cap if true else rng.choice([k for _, k in CAPITALS if k != cap])
        q = p.template(["Is {g} the capital of {c}?", "Is the capital of {c} {g}?", "{g} is the capital of {c}, right?",
                        "Am I right that {g} is the capital of {c}?"])
        ans = "Yes, it is." if true else f"No, the capital of {c} is {cap}."
        return q.format(g=guess, c=c), ans
    thing, color = p.entity(THING_COLORS, key=lambda x: x[0])
    guess = color if rng.random() < 0.5 else rng.choice(sorted({c for _, c in THING_COLORS} - {color}))
    q = p.template(["Is {t} {g}?", "Would you say {t} is {g}?", "{T} is {g}, isn't it?", "Tell me, is {t} {g}?"])
    ans = f"Yes, {thing} is {color}." if guess == color else f"No, {thing} is usually {color}."
    return _cap(q.format(t=thing, T=_cap(thing), g=guess)), ans


def _robot(p: _Picker, rng: random.Random) -> tuple[str, str]:
    """A robot command in the envs' own vocabulary and phrasings (`envs.instructions`: the scene's colours, shapes,
    sides and targets), so what the chat model hears is what the robot tasks say; held-out templates of the envs
    are held out here too. The answer confirms it the way the robot's reply does (`robot.episode_video`)."""
    obj = p.entity([f"{c} {o}" for c in ROBOT_COLORS for o in ROBOT_OBJECTS])
    color, shape = obj.split(" ")
    task = rng.choice(["touch", "push", "pick_place"])
    split = "heldout" if p.hold in ("template", "both") else "train"
    template = rng.choice(TEMPLATES[task][split])
    words = {"obj": f"{color} {rng.choice(SHAPE_WORDS[shape])}"}
    ans = f"Okay, the {color} {shape}"
    if task == "push":
        side = rng.choice(sorted(SIDE_WORDS))
        words["side"] = rng.choice(SIDE_WORDS[side])
        ans += f" to the {side}"
    elif task == "pick_place":
        target = rng.choice(sorted(TARGET_WORDS))
        words["prep"], words["target"] = TARGET_PREPOSITION[target], rng.choice(TARGET_WORDS[target])
        ans += f" {TARGET_PREPOSITION[target]} the {target}"
    return _cap(template.format(**words)) + rng.choice([".", ", please."]), ans + "."


_QA = {"arithmetic": _arithmetic, "counting": _counting, "fact": _fact, "spelling": _spelling, "yesno": _yesno,
       "robot": _robot}
_QA_WEIGHTS = {"arithmetic": 3, "counting": 2, "fact": 5, "spelling": 2, "yesno": 2, "robot": 4}
GREETINGS = [("Hi there!", "Hi! How can I help you today?"), ("Hello.", "Hello! What can I do for you?"),
             ("Hey, how are you?", "I'm doing well, thanks. What can I do for you?"),
             ("Good morning!", "Good morning! How can I help?"), ("Hi, are you there?", "Yes, I'm here. Go ahead."),
             ("Hello robot.", "Hello! I'm listening.")]
GOODBYES = [("Thanks, bye!", "You're welcome. Goodbye!"), ("That's all, thank you.", "Happy to help. Bye!"),
            ("Okay, thanks a lot.", "Anytime!"), ("Great, thank you.", "You're welcome."),
            ("Bye for now.", "Bye! Talk to you later.")]
STOPS = [("Stop.", "Okay, I'll stop."), ("Wait, stop please.", "Sure, stopping."),
         ("Okay, okay, that's enough.", "Alright."), ("Hold on.", "Okay, I'm listening."),
         ("Sorry, stop for a second.", "Of course.")]
REPEATS = ["Sorry, can you say that again?", "Could you repeat that?", "What was that?", "Say that again, please.",
           "Sorry, I didn't catch that."]
BACKCHANNELS = ["Mm-hm.", "Okay.", "Uh-huh.", "Right.", "Yeah.", "I see."]


def _dialogue(rng: random.Random, split: str, ident: str) -> Dialogue:
    d = Dialogue(ident, split)
    say = lambda speaker, text, act, interrupt=False: d.turns.append(Turn(speaker, text, act, interrupt))
    if rng.random() < 0.6:
        u, a = rng.choice(GREETINGS)
        say(USER, u, "greeting")
        say(AGENT, a, "greeting")
    acts, weights = list(_QA), [_QA_WEIGHTS[k] for k in _QA]
    for _ in range(rng.randint(2, 5)):
        act = rng.choices(acts, weights)[0]
        q, a = _QA[act](_Picker(rng, split), rng)
        say(USER, _user(rng, q), act)
        say(AGENT, a, act)
        r = rng.random()
        if r < 0.12 and len(a.split()) >= 4:  # the user barges in with "stop": the renderer cuts the answer
            u, ack = rng.choice(STOPS)
            say(USER, u, "stop", interrupt=True)
            say(AGENT, ack, "stop")
        elif r < 0.2:
            say(USER, rng.choice(REPEATS), "repeat", interrupt=rng.random() < 0.3)
            say(AGENT, rng.choice(["Sure. ", "Of course. ", ""]) + a, "repeat")
    if rng.random() < 0.5:
        u, a = rng.choice(GOODBYES)
        say(USER, u, "goodbye")
        say(AGENT, a, "goodbye")
    return d


def _rng(split: str, seed: int, index: int) -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return random.Random((seed * 1_000_003 + _SPLIT_INDEX[split]) * 10_000_019 + index)


def dialogue(split: str, seed: int, index: int) -> Dialogue:
    """Dialogue number `index` of a split; depends only on (split, seed, index), so workers can make any subset."""
    if index < 0:
        raise ValueError(f"dialogue index must be >= 0, got {index}")
    return _dialogue(_rng(split, seed, index), split, f"{split}-{seed}-{index:07d}")


def dialogues(split: str, n: int, seed: int = 0) -> list[Dialogue]:
    """The first `n` dialogues of a split."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [dialogue(split, seed, i) for i in range(n)]


def split_sentences(text: str) -> list[str]:
    """Split a turn into sentences (each ends with . ? or !), the unit the TTS engines synthesize."""
    out, cur = [], []
    for tok in text.split():
        cur.append(tok)
        if tok[-1] in ".?!":
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def sentences(split: str, n: int, seed: int = 0) -> list[str]:
    """`n` single sentences of a split (both speakers, deduplicated, in generation order) for single-clip TTS."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seen: dict[str, None] = {}
    index = 0
    while len(seen) < n:
        for t in dialogue(split, seed, index).turns:
            for s in split_sentences(t.text):
                seen.setdefault(s, None)
        index += 1
        if index > 100 * n + 1000:
            raise ValueError(f"split {split!r} has fewer than {n} distinct sentences")
    return list(seen)[:n]


def corpus_text(split: str, n_dialogues: int, seed: int = 0) -> list[str]:
    """All turn texts of the first `n_dialogues` dialogues (the text-tokenizer training corpus)."""
    return [t.text for d in dialogues(split, n_dialogues, seed) for t in d.turns]
