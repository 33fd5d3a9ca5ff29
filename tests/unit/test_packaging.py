"""What an installed copy relies on, read from ``pyproject.toml``: one version everywhere, and a declared
dependency for every third-party module the shipped code imports (a module that arrives only through another
package's dependencies breaks the day that package drops it)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from npo import __version__

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("bot", "npo", "storage")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``uvicorn[standard]>=0.30`` → ``uvicorn``)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _top_level_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def test_the_version_is_the_same_in_pyproject_and_the_package() -> None:
    assert PYPROJECT["project"]["version"] == __version__


def test_every_third_party_module_the_shipped_code_imports_is_a_declared_dependency() -> None:
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    providers = packages_distributions()
    imported = set().union(*(_top_level_imports(REPO / package) for package in SHIPPED))
    third_party = sorted(imported - set(sys.stdlib_module_names) - set(SHIPPED) - {"__future__"})
    assert third_party, "no third-party import found: the scan is broken"
    undeclared = {
        module: providers.get(module, [module])
        for module in third_party
        if not {_name(d) for d in providers.get(module, [module])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_time_zone_data_is_declared() -> None:
    """``zoneinfo`` reads the system's zone database, and a slim container has none: ``NPO_TIMEZONE`` and the weekly
    summary's days then need the ``tzdata`` package."""
    assert "tzdata" in {_name(r) for r in PYPROJECT["project"]["dependencies"]}


def test_the_source_distribution_carries_every_file_of_the_repository() -> None:
    """Without ``MANIFEST.in`` the sdist held the packages only: no tests, no ``.env.example``, no Slack manifest,
    none of the files the README links to. Every tracked file but ``.gitignore`` must be in it: the package files
    by ``[tool.setuptools]``, the rest by ``MANIFEST.in`` (read with setuptools' own template rules)."""
    filelist = pytest.importorskip("setuptools.command.egg_info", reason="setuptools reads MANIFEST.in").FileList
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files to compare with")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode("utf-8")
        .split("\0")
    )
    manifest = filelist()
    cwd = os.getcwd()
    os.chdir(REPO)  # the template's paths are relative to the project
    try:
        manifest.findall()
        for line in (REPO / "MANIFEST.in").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                manifest.process_template_line(line)
    finally:
        os.chdir(cwd)
    packaged = {p for p in tracked if p.partition("/")[0] in SHIPPED and p.endswith((".py", "py.typed", ".toml"))}
    always = {"pyproject.toml", "MANIFEST.in"}  # setuptools puts both in every sdist
    missing = sorted(set(tracked) - set(manifest.files) - packaged - always - {"", ".gitignore"})
    assert not missing, f"tracked files the sdist would leave out (add them to MANIFEST.in): {missing}"
