"""`npo/` is the method, pure: it imports only numpy and a short list of standard-library modules, and does no I/O."""

from __future__ import annotations

import ast
import builtins
import socket
from pathlib import Path

import numpy as np
import pytest

NPO = Path(__file__).resolve().parents[2] / "npo"

ALLOWED_MODULES = {
    "__future__",
    "collections",
    "collections.abc",
    "contextlib",
    "dataclasses",
    "datetime",
    "difflib",
    "enum",
    "fnmatch",
    "functools",
    "hashlib",
    "itertools",
    "math",
    "numbers",
    "numpy",
    "numpy.typing",
    "operator",
    "re",
    "statistics",
    "threading",
    "tomllib",
    "types",
    "typing",
    "zlib",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}
FORBIDDEN_ATTRIBUTE_CALLS = {"now", "utcnow", "today", "time", "perf_counter", "monotonic", "getenv", "system"}


def _sources() -> list[Path]:
    files = sorted(NPO.rglob("*.py"))
    assert len(files) >= 10, "npo/ looks empty: the scan would prove nothing"
    return files


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.append("npo")  # relative import stays inside the package
            elif node.module:
                names.append(node.module)
    return names


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(NPO.parent)))
def test_imports_only_numpy_npo_and_allowed_stdlib(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [
        name for name in _imports(tree) if name != "npo" and not name.startswith("npo.") and name not in ALLOWED_MODULES
    ]
    assert not bad, f"{path.name} imports {bad}: npo/ may use numpy and pure standard-library modules only"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(NPO.parent)))
def test_no_io_or_clock_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    offenders: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            offenders.append(f"{func.id}() at line {node.lineno}")
        if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRIBUTE_CALLS:
            offenders.append(f".{func.attr}() at line {node.lineno}")
    assert not offenders, f"{path.name} does I/O or reads the clock: {offenders}"


def test_the_scan_catches_a_violation() -> None:
    """The checks above are only worth something if they flag an obvious offender."""
    tree = ast.parse("import os\nimport time\nx = open('f')\nt = time.time()\n")
    assert {"os", "time"} <= set(_imports(tree))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert any(isinstance(c.func, ast.Name) and c.func.id == "open" for c in calls)


def test_simulation_and_loop_run_with_files_and_sockets_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    from npo.loop import InMemoryStore, decide, record_feedback  # noqa: PLC0415 - imported under test conditions
    from npo.policy import DEFAULT_POLICY_TEXT, parse_policy  # noqa: PLC0415
    from npo.sim.experiments import run_experiments  # noqa: PLC0415
    from npo.types import FeedbackEvent, FeedbackKind, Prediction  # noqa: PLC0415

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("npo/ tried to do I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)

    result = run_experiments(60, 2)
    assert "full" in result.conditions
    store = InMemoryStore()
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    prediction = Prediction(id="p1", fault_type="disk_failure", target="r12-n04", action="drain", confidence=0.99)
    with store.transaction() as tx:
        decision = decide(tx, prediction, config=store.config, policy=policy, rng=np.random.default_rng(0), now=1.0)
    assert decision.decision.surfaced
    with store.transaction() as tx:
        event = FeedbackEvent("p1", "U1", FeedbackKind.LIKE, at=2.0, request_id="r1")
        assert record_feedback(tx, event, config=store.config).status == "recorded"
