"""The one atomic writer, against a process killed in the middle of a write."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from multistream.atomic import atomic_open, atomic_write_dir, atomic_write_json, atomic_write_text, recover_dir

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env).returncode


def test_killed_mid_write_keeps_the_old_file(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"old" * 10)
    rc = _run(f"""
        import os
        from multistream.atomic import atomic_open
        with atomic_open({str(f)!r}, "wb") as fh:
            fh.write(b"new" * 1000)
            fh.flush()
            os._exit(9)  # killed: no cleanup runs
    """)
    assert rc == 9
    assert f.read_bytes() == b"old" * 10
    # a clean write replaces it whole
    with atomic_open(f, "wb") as fh:
        fh.write(b"new")
    assert f.read_bytes() == b"new"


def test_exception_mid_write_leaves_nothing_behind(tmp_path):
    f = tmp_path / "x.npz"
    with pytest.raises(RuntimeError), atomic_open(f, "wb") as fh:
        np.savez(fh, a=np.arange(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_open(f, "wb") as fh:
        np.savez(fh, a=np.arange(3))
    with np.load(f) as z:
        assert z["a"].tolist() == [0, 1, 2]


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinite"):
        atomic_write_json(tmp_path / "s.json", {"mean": float("nan")})
    assert not (tmp_path / "s.json").exists()
    atomic_write_json(tmp_path / "s.json", {"mean": 1.0})
    assert json.loads((tmp_path / "s.json").read_text()) == {"mean": 1.0}
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_directory_swap_killed_at_each_rename_is_recovered(tmp_path, kill_at):
    """Rename 1: tmp -> .new; 2: target -> .old; 3: .new -> target. Killed before each: a whole dir survives."""
    target = tmp_path / "ck"
    atomic_write_dir(target, lambda d: (d / "v").write_text("1"))
    rc = _run(f"""
        import os
        import multistream.atomic as a
        real, n = os.replace, [0]
        def replace(src, dst):
            n[0] += 1
            if n[0] == {kill_at}:
                os._exit(9)
            real(src, dst)
        a.os.replace = replace
        a.atomic_write_dir({str(target)!r}, lambda d: (d / "v").write_text("2"))
    """)
    assert rc == 9
    recover_dir(target)
    # before the new copy is complete (.new) the old one stays; after, the new one wins
    assert (target / "v").read_text() == ("1" if kill_at == 1 else "2")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "ck")
    assert all(".tmp-" in p for p in leftovers), leftovers  # at most an unfinished temp dir
    atomic_write_dir(target, lambda d: (d / "v").write_text("3"))
    assert (target / "v").read_text() == "3"


def test_refuses_a_file_where_the_directory_goes(tmp_path):
    (tmp_path / "ck").write_text("not a dir")
    with pytest.raises(NotADirectoryError, match="a file of that name exists"):
        atomic_write_dir(tmp_path / "ck", lambda d: None)


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from multistream.atomic import atomic_write_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")

        def write(d):
            atomic_write_text(d / "b.txt", "y")
            (d / "c.txt").write_text("z")

        atomic_write_dir(tmp_path / "dir", write)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.txt") == 0o644  # not mkstemp's 0600
    assert mode(tmp_path / "dir") == 0o755  # not mkdtemp's 0700
    assert mode(tmp_path / "dir" / "b.txt") == mode(tmp_path / "dir" / "c.txt") == 0o644
