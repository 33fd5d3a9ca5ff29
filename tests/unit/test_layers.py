"""The layers keep to their jobs: SQL only in `storage/` (the bot and the method ask the store, they do not write
queries), Slack only in `bot/` (neither the method nor the store imports a Slack library)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SQL_STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|PRAGMA|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|"
    r"WITH|VACUUM|ATTACH|DETACH)\s"
)
SLACK_MODULES = ("slack_sdk", "slack_bolt")


def _sources(*packages: str) -> list[Path]:
    files = sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))
    assert len(files) >= 20, f"{packages} look empty: the scan would prove nothing"
    return files


def _sql_literals(tree: ast.AST) -> list[str]:
    """String constants that start like an SQL statement (f-strings by their literal parts), with their line."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_STATEMENT.match(node.value):
            found.append(f"line {node.lineno}: {node.value.strip()[:60]!r}")
    return found


def _database_opens(tree: ast.AST) -> list[str]:
    """Calls of ``sqlite3.connect`` (a connection opened around the store)."""
    return [
        f"line {node.lineno}: sqlite3.connect"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "connect"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "sqlite3"
    ]


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _sources("bot", "npo"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_outside_storage(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    offenders = _sql_literals(tree) + _database_opens(tree)
    assert not offenders, f"{path.relative_to(ROOT)} has SQL of its own (move it to storage/): {offenders}"


@pytest.mark.parametrize("path", _sources("npo", "storage"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_slack_outside_bot(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [name for name in _imports(tree) if name.split(".")[0] in SLACK_MODULES]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: Slack belongs to bot/"


def test_the_scans_catch_a_violation() -> None:
    """Worth something only if they flag obvious offenders, and leave prose alone."""
    tree = ast.parse(
        'import sqlite3\nfrom slack_sdk import WebClient\nc = sqlite3.connect("x")\n'
        'c.execute("SELECT 1 FROM t")\nc.execute(f"UPDATE t SET a = {1}")\n'
        'doc = "Select the best arm; update the state."\n'
    )
    assert [s.split(":")[0] for s in _sql_literals(tree)] == ["line 4", "line 5"]
    assert _database_opens(tree) == ["line 3: sqlite3.connect"]
    assert "slack_sdk" in _imports(tree)
