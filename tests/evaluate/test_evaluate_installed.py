"""`npo-bot evaluate` installed from a wheel: the packages alone in site-packages, no repository around them.

The copy below is what a wheel installs (``bot/``, ``npo/`` and ``storage/``, nothing else), run as a user runs it:
a child process in a folder of its own, with only that copy on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import write_nab

REPO = Path(__file__).resolve().parents[2]


def _installed(lib: Path) -> Path:
    """``lib/site-packages`` holding a copy of the three packages, as ``pip install npo-*.whl`` leaves them."""
    site = lib / "site-packages"
    for package in ("bot", "npo", "storage"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _evaluate(
    site: Path, folder: Path, *argv: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPO_")} | (environ or {})
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "evaluate", "--seeds", "1", "--quiet", *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_installed_copy_has_no_default_data_folder_and_says_to_pass_data(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    site = _installed(lib)
    # A folder where the checkout's default would be, seen from site-packages: never a data set of the user's.
    write_nab(lib / "shared" / "data" / "nab")  # site-packages/../shared/data/nab
    work = tmp_path / "work"
    work.mkdir()
    run = _evaluate(site, work)
    assert run.returncode == 2, run.stdout
    assert run.stdout == ""
    assert "pass --data DIR, or set $NPO_DATA_DIR to the folder holding nab/" in run.stderr
    assert "only in a source checkout" in run.stderr
    assert str(tmp_path) not in run.stderr  # no folder named that the user never chose
    assert "pass --data" in _evaluate(site, work, "--format", "smd").stderr


def test_an_installed_copy_reads_the_data_it_is_given(tmp_path: Path) -> None:
    site = _installed(tmp_path / "lib")
    work = tmp_path / "work"
    nab = write_nab(work / "nab")
    given = _evaluate(site, work, "--data", str(nab), "--json")
    assert given.returncode == 0, given.stderr
    from_env = _evaluate(site, tmp_path, "--json", environ={"NPO_DATA_DIR": str(work)})  # the folder holding nab/
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["npo"] == json.loads(given.stdout)["npo"]
