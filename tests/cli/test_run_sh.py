"""./run.sh set-up says what it does, step by step, and lets pip show its progress."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON3 = """#!/usr/bin/env bash
# stands in for python3 -m venv VENV: a venv whose python fails the import check and whose pip logs its arguments
venv="$3"
mkdir -p "$venv/bin"
printf '#!/usr/bin/env bash\\nif [ "$1" = -c ]; then exit 1; fi\\necho "python $*"\\n' > "$venv/bin/python"
printf '#!/usr/bin/env bash\\necho "pip $*" >> "%s/pip.log"\\n' "$venv" > "$venv/bin/pip"
chmod +x "$venv/bin/python" "$venv/bin/pip"
"""


def test_setup_prints_its_steps_and_pip_progress(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "run.sh", project / "run.sh")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(FAKE_PYTHON3)
    (fake_bin / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", ONNXPRUNE_VENV=str(tmp_path / "venv"))
    res = subprocess.run(["bash", str(project / "run.sh"), "test", "-k", "x"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    steps = [l for l in res.stderr.splitlines() if l.startswith("[run.sh]")]
    assert len(steps) >= 5 and any("1/3" in l for l in steps) and any("3/3" in l for l in steps), steps
    pip = (tmp_path / "venv" / "pip.log").read_text().splitlines()
    assert len(pip) == 2 and all(" -q" not in l and "--progress-bar on" in l for l in pip), pip
    assert res.stdout.strip() == "python -m pytest -q -m not slow -k x"   # the fast set by default
    every = subprocess.run(["bash", str(project / "run.sh"), "test", "--all", "-k", "x"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert every.returncode == 0 and every.stdout.strip() == "python -m pytest -q -k x"
