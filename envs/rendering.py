"""Offscreen rendering backend: pick `MUJOCO_GL` before mujoco is imported, and wrap `mujoco.Renderer`.

MuJoCo reads `MUJOCO_GL` once, when `mujoco` is first imported, so `envs/__init__.py` calls `select_backend()`
before anything imports mujoco. If the user set `MUJOCO_GL`, that choice is kept. Otherwise EGL is used when
`libEGL` is found (headless GPU, or Mesa's software EGL on a CPU machine), else OSMesa when `libOSMesa` is found.
If mujoco was imported before `envs` with `MUJOCO_GL` unset (so it bound GLFW, which needs a display),
`make_renderer` points mujoco's classic renderer at the EGL/OSMesa context class once, before the first renderer
is made. When nothing works, `make_renderer` raises a RuntimeError that says what to install or set.
"""

from __future__ import annotations

import ctypes.util
import importlib
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


def _late_backend() -> None:
    """mujoco was imported with MUJOCO_GL unset: switch its classic renderer to a headless context class."""
    if os.environ.get("MUJOCO_GL") or sys.platform != "linux" or os.environ.get("DISPLAY"):
        return
    from mujoco.rendering.classic import gl_context

    for backend in BACKENDS:
        if ctypes.util.find_library(_LIBS[backend]):
            if backend == "osmesa":
                os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            try:
                gl_context.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext
            except Exception:  # this backend's Python side is unusable; try the next one
                continue
            os.environ["MUJOCO_GL"] = backend
            return


def make_renderer(model, height: int, width: int):
    """A `mujoco.Renderer`, or a RuntimeError naming the backend and the fix."""
    import mujoco

    _late_backend()
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as e:  # the GL stack raises many types; report them all the same way
        backend = os.environ.get("MUJOCO_GL", "<unset>")
        raise RuntimeError(
            f"offscreen rendering failed with MUJOCO_GL={backend}: {e}. Install libegl1 + libegl-mesa0 + "
            "libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa), and set MUJOCO_GL=egl or MUJOCO_GL=osmesa before "
            "importing mujoco (or envs), or use EnvConfig(image_size=None) to run without a camera."
        ) from e
