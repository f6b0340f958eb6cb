"""bin/pm: the README's commands work as written, outside any activated virtualenv."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a new user's shell has: no virtualenv on PATH, so a bare `python` has no Django.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def bare_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=BARE_PATH, **extra)
    return env


@pytest.mark.process
def test_it_runs_manage_py_with_the_project_venv_from_any_directory(tmp_path):
    out = subprocess.run(
        [str(ROOT / "bin" / "pm"), "check"],
        cwd=tmp_path,
        env=bare_env(PORTMON_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "System check identified no issues" in out.stdout


@pytest.mark.process
def test_it_passes_a_command_error_and_its_exit_status_through(tmp_path):
    out = subprocess.run(
        [str(ROOT / "bin" / "pm"), "no_such_command"],
        cwd=tmp_path,
        env=bare_env(PORTMON_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Unknown command: 'no_such_command'" in out.stderr


def fake_clone(tmp_path: Path) -> Path:
    """A checkout without .venv: bin/pm, a bin/setup that records its runs and makes the
    venv as the real one would (a python in .venv/bin), and a manage.py that echoes."""
    clone = tmp_path / "clone"
    (clone / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "bin" / "pm", clone / "bin" / "pm")
    (clone / "bin" / "setup").write_text(
        '#!/usr/bin/env bash\nset -e\ncd "$(dirname "$0")/.."\n'
        'echo "$1" >> setup-runs\nmkdir -p .venv/bin\n'
        f'ln -sf "{sys.executable}" .venv/bin/python\n'
    )
    (clone / "bin" / "setup").chmod(0o755)
    (clone / "manage.py").write_text(
        "import os, sys\nprint(repr(sys.argv[1:]))\nprint(os.getcwd())\n"
    )
    return clone


@pytest.mark.process
def test_it_creates_the_venv_once_when_a_fresh_clone_has_none(tmp_path):
    clone = fake_clone(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Arguments with spaces, quotes and globs reach manage.py unchanged.
    args = ["scope", "add", "198.18.0.0/24", "--description", "lab 'A' *"]
    said = []
    for _ in range(2):
        out = subprocess.run(
            [str(clone / "bin" / "pm"), *args],
            cwd=elsewhere,
            env=bare_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [repr(args), str(elsewhere)]
        said.append("running bin/setup" in out.stderr)
    assert said == [True, False]
    assert (clone / "setup-runs").read_text() == "requirements.txt\n"  # only the first time


def test_it_is_what_the_readme_tells_a_newcomer_to_run():
    readme = (ROOT / "README.md").read_text()
    assert "python manage.py" not in readme  # fails outside the venv
    assert "bin/pm scope add" in readme and "bin/pm scan" in readme
    assert "## First 10 minutes" in readme
