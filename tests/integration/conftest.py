"""Fixtures for storage tests: real SQLite files under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_testing import RELAXED_POLICY_TEXT

from npo.loop import LoopConfig
from npo.policy import DEFAULT_POLICY_TEXT, Policy, parse_policy
from storage import SQLiteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "npo.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(db_path, LoopConfig()) as s:
        yield s


@pytest.fixture
def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY_TEXT)


@pytest.fixture
def relaxed_policy() -> Policy:
    return parse_policy(RELAXED_POLICY_TEXT)
