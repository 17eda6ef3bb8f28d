"""Offscreen rendering backend: pick `MUJOCO_GL` before mujoco is imported, and wrap `mujoco.Renderer`.

MuJoCo reads `MUJOCO_GL` once, when `mujoco` is first imported, so `envs/__init__.py` calls `select_backend()`
before anything imports mujoco. If the user set `MUJOCO_GL`, that choice is kept. Otherwise EGL is used when
`libEGL` is found (headless GPU, or Mesa's software EGL on a CPU machine), else OSMesa when `libOSMesa` is found.
When neither works, `make_renderer` raises a RuntimeError that says what to install or set.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

BACKENDS = ("egl", "osmesa")
_LIBS = {"egl": "EGL", "osmesa": "OSMesa"}


def select_backend() -> str | None:
    """Set `MUJOCO_GL` (if unset) to the first available backend; returns the backend in effect."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen.lower()
    if "mujoco" in sys.modules:  # too late to choose: mujoco already read the (unset) variable
        return None
    for backend in BACKENDS:
        if ctypes.util.find_library(_LIBS[backend]):
            os.environ["MUJOCO_GL"] = backend
            if backend == "osmesa":
                os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            return backend
    return None


def make_renderer(model, height: int, width: int):
    """A `mujoco.Renderer`, or a RuntimeError naming the backend and the fix."""
    import mujoco

    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as e:  # the GL stack raises many types; report them all the same way
        backend = os.environ.get("MUJOCO_GL", "<unset>")
        raise RuntimeError(
            f"offscreen rendering failed with MUJOCO_GL={backend}: {e}. Install libegl1 + libegl-mesa0 + "
            "libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa), and set MUJOCO_GL=egl or MUJOCO_GL=osmesa before "
            "importing mujoco (or envs), or pass render_camera=None to run without a camera."
        ) from e
