"""``scripts/reliability`` installs nothing: run where ``.venv`` lacks the test extra (it was made by
``./scripts/demo`` or ``./scripts/simulate``, the quick start's first command), it asks for ``./scripts/test`` and
runs no step, instead of reporting every step as failed with "No module named pytest"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is a bash script")
def test_reliability_asks_for_the_test_extra_when_venv_lacks_it(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "reliability", tmp_path / "scripts" / "reliability")
    # A virtualenv as ./scripts/demo leaves it: a Python without pytest (nor the project: no step could pass).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "reliability"), "--no-load"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "run ./scripts/test once first" in done.stderr
    assert "FAIL" not in done.stdout and "==" not in done.stdout  # no step was run


@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is a bash script")
def test_reliability_asks_for_the_test_extra_when_there_is_no_venv(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "reliability", tmp_path / "scripts" / "reliability")
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "reliability")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "run ./scripts/test once first" in done.stderr
    assert not (tmp_path / ".venv").exists()
