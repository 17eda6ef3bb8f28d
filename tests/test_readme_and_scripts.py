"""Keep the README true: its Python snippet runs, and every script it names answers --help."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SCRIPTS = sorted({m for m in re.findall(r"scripts/(\w+\.py)", README)})


def test_readme_python_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_names_existing_scripts():
    missing = [s for s in SCRIPTS if not (ROOT / "scripts" / s).is_file()]
    assert not missing, missing


HELP_RUNNER = """
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    if "usage" not in buf.getvalue().lower():
        raise SystemExit(f"{path}: --help printed no usage")
    print("ok", path)
"""


def test_every_script_answers_help():
    """One interpreter for all scripts (imports are paid once): each must print a usage and exit 0."""
    paths = sorted(str(p) for p in (ROOT / "scripts").glob("*.py"))
    assert set(SCRIPTS) <= {Path(p).name for p in paths}
    p = subprocess.run([sys.executable, "-c", HELP_RUNNER, *paths], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("ok ") == len(paths)
