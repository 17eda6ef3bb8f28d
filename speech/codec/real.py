"""Real recorded human speech for the codec: Debian's Asterisk voice prompts (non-English only).

Seven speakers from Debian packages that `scripts/setup.sh` installs (nothing here installs anything): the 16 kHz
G.722 core sounds in Mexican Spanish, Canadian French, Italian and Russian (one speaker each) and the 8 kHz
community prompts in Colombian Spanish, French (Armelle Desjardins) and Italian (Menardi). They carry no phone
labels: the codec's phone-distillation loss ignores their frames. `HELDOUT_REAL_SPEAKER` (es_MX Allison) is
never trained on; it is the real-speaker evaluation set. The English Asterisk prompt packages are kept
out of the project (an independent check uses them): `speaker_files` refuses any path inside an English folder,
and holding out es_MX Allison also keeps a voice that may be shared with those English prompts out of training.

Decoding uses the ffmpeg command line (Debian `ffmpeg`; its `g722` and `gsm` demuxers read the raw Asterisk
files, sox has no G.722 reader), straight to 24 kHz mono float32.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDS = Path("/usr/share/asterisk/sounds")
FORMATS = {"g722": ["-f", "g722"], "gsm": ["-f", "gsm"], "wav": []}  # ffmpeg input options per file suffix


@dataclass(frozen=True)
class RealSpeaker:
    """One recorded speaker: the Debian package, the folders (relative to `root`) holding its prompts, the file
    format and its native sample rate."""

    name: str
    package: str
    folders: tuple[str, ...]
    fmt: str  # file suffix: g722 (16 kHz), gsm (8 kHz), wav (8 kHz here)
    native_rate: int

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"speaker {self.name!r}: format must be one of {sorted(FORMATS)}, got {self.fmt!r}")


REAL_SPEAKERS = (
    RealSpeaker("es-mx-allison", "asterisk-core-sounds-es-g722", ("es_MX_f_Allison",), "g722", 16000),
    RealSpeaker("fr-ca-june", "asterisk-core-sounds-fr-g722", ("fr_CA_f_June",), "g722", 16000),
    RealSpeaker("it-it-carlo", "asterisk-core-sounds-it-g722", ("it_IT_m_Carlo",), "g722", 16000),
    RealSpeaker("ru-ru-ivrvoice", "asterisk-core-sounds-ru-g722", ("ru_RU_f_IvrvoiceRU",), "g722", 16000),
    RealSpeaker("es-co", "asterisk-prompt-es-co", ("es", "digits/es"), "gsm", 8000),
    RealSpeaker("fr-armelle", "asterisk-prompt-fr-armelle",
                ("fr", "digits/fr", "dictate/fr", "letters/fr", "phonetic/fr"), "gsm", 8000),
    RealSpeaker("it-menardi", "asterisk-prompt-it-menardi-wav", ("it_IT_f_Menardi",), "wav", 8000),
)
HELDOUT_REAL_SPEAKER = "es-mx-allison"  # 16 kHz, never trained on


def real_speakers(split: str) -> list[RealSpeaker]:
    """'train': every speaker but the held-out one; 'heldout': the held-out speaker only."""
    if split not in ("train", "heldout"):
        raise ValueError(f"real-speaker split must be 'train' or 'heldout', got {split!r}")
    return [s for s in REAL_SPEAKERS if (s.name == HELDOUT_REAL_SPEAKER) == (split == "heldout")]


def _is_english(path: Path) -> bool:
    return any(part == "en" or part.lower().startswith(("en_", "en-")) for part in path.parts)


def speaker_files(speaker: RealSpeaker, root: Path = SOUNDS) -> list[Path]:
    """The speaker's prompt files, sorted; FileNotFoundError naming the package when none is installed."""
    files = []
    for folder in speaker.folders:
        d = Path(root) / folder
        if _is_english(d.relative_to(root)):
            raise ValueError(f"speaker {speaker.name!r}: {d} is an English folder; English prompts are kept out")
        if d.is_dir():
            # resolved, so a folder linked from two places (digits/es -> es/digits) counts once
            files += [f.resolve() for f in d.rglob(f"*.{speaker.fmt}") if not _is_english(f.relative_to(root))]
    if not files:
        raise FileNotFoundError(f"no {speaker.fmt} prompts of {speaker.name!r} under {root} {speaker.folders}; "
                                f"install Debian {speaker.package} (scripts/setup.sh does, as root)")
    return sorted(set(files))


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode one prompt file (g722 / gsm / wav by suffix) to float32 mono [N] at `sample_rate` with ffmpeg.
    ValueError naming the file when it cannot be read or holds no audio."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown prompt format {fmt!r}; expected one of {sorted(FORMATS)}")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", *FORMATS[fmt], "-i", str(path), "-f", "s16le", "-ac", "1",
           "-ar", str(sample_rate), "-"]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=60)
    except FileNotFoundError as e:
        raise FileNotFoundError("ffmpeg is not installed; scripts/setup.sh installs Debian ffmpeg") from e
    if res.returncode != 0:
        msg = res.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"{path}: ffmpeg cannot decode it ({msg[-1] if msg else f'exit {res.returncode}'})")
    audio = np.frombuffer(res.stdout, dtype="<i2").astype(np.float32) / 32768.0
    if len(audio) < sample_rate // 100 or float(np.abs(audio).max()) < 1e-4:
        raise ValueError(f"{path}: no audio after decoding ({len(audio)} samples)")
    return audio
