"""Mutes are Safety Policy rules with an expiry: blocked until exactly the expiry (fixed clock), named in the
verdict, stored, audited, seen by a second process, and lifted on request."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from jobs_testing import RELAXED_POLICY, prediction

from bot import service as service_module
from bot.service import MUTE_REFRESH_S, NpoService
from npo.policy import RULE_MUTE, Mute, PolicyContext, evaluate
from npo.scoring import scenario_key
from npo.types import InvalidRecord
from storage import SQLiteStore

T0 = 1_742_990_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_the_rule_holds_until_exactly_the_expiry() -> None:
    p = prediction(1, T0)
    key = scenario_key(p)
    policy = dataclasses.replace(RELAXED_POLICY, mutes=(Mute(key, T0, T0 + 60, "U1", "rack work"),))
    held = evaluate(policy, p, key, "C1", PolicyContext(now=T0 + 59.999))
    assert (
        (held.outcome, held.rule) == ("block", RULE_MUTE)
        and "muted by U1" in held.reason
        and "rack work" in held.reason
    )
    assert evaluate(policy, p, key, "C1", PolicyContext(now=T0 + 60)).allowed
    assert evaluate(policy, p, "another|key", "C1", PolicyContext(now=T0)).allowed
    with pytest.raises(InvalidRecord, match=r"mute\.until"):
        Mute(key, T0, T0)


def test_service_mutes_expire_and_other_processes_see_them(store: SQLiteStore, tmp_path: Path) -> None:
    clock = Clock()
    service = NpoService(store, RELAXED_POLICY, rng=np.random.default_rng(0), clock=clock)
    key = scenario_key(prediction(0, T0))
    with SQLiteStore(tmp_path / "npo.db") as other_store:
        other = NpoService(other_store, RELAXED_POLICY, rng=np.random.default_rng(1), clock=clock)
        assert other.policy.mutes == ()  # read now; re-read after MUTE_REFRESH_S
        service.mute(key, 3600, by="U1", reason="maintenance")
        (first,) = service.decide([prediction(1, T0)])
        assert (first.decision.verdict.value, first.decision.rule) == ("block", RULE_MUTE)
        clock.now = T0 + MUTE_REFRESH_S
        assert [m.key for m in other.policy.mutes] == [key]
        clock.now = T0 + 3599
        assert service.decide([prediction(2, clock.now)])[0].decision.rule == RULE_MUTE
        clock.now = T0 + 3600
        assert service.decide([prediction(3, clock.now)])[0].decision.verdict.value == "surface"
    (entry,) = store.audit_entries(kind="policy_mute")
    assert entry[3] == key and entry[4]["until"] == T0 + 3600 and entry[4]["reason"] == "maintenance"


def test_unmute_lifts_at_once(store: SQLiteStore) -> None:
    clock = Clock()
    service = NpoService(store, RELAXED_POLICY, rng=np.random.default_rng(0), clock=clock)
    key = scenario_key(prediction(0, T0))
    service.mute(key, 86_400, by="U1")
    assert service.unmute(key, by="U2") == 1 and service.unmute(key, by="U2") == 0
    assert service.decide([prediction(1, T0)])[0].decision.verdict.value == "surface"
    assert store.audit_entries(kind="policy_unmute")[0][4] == {"lifted": 1, "by": "U2"}


def test_a_refresh_begun_before_a_mute_cannot_hide_it(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decide on another thread reads the (still empty) mutes, then stalls; meanwhile ``/npo mute`` commits and
    refreshes. When the stale read finally lands it must not replace the mute's own refresh."""
    clock = Clock()
    service = NpoService(store, RELAXED_POLICY, rng=np.random.default_rng(0), clock=clock)
    read, resume = threading.Event(), threading.Event()
    real = service_module.active_mutes

    def stalling(conn: sqlite3.Connection, at: float) -> list[Mute]:
        rows = real(conn, at)
        if threading.current_thread().name == "decider":
            read.set()
            resume.wait(10)
        return rows

    monkeypatch.setattr(service_module, "active_mutes", stalling)
    decider = threading.Thread(target=lambda: service.policy, name="decider")
    decider.start()
    assert read.wait(10)
    key = scenario_key(prediction(1, T0))
    assert service.mute(key, 3600, by="U1") is not None
    resume.set()
    decider.join(10)
    clock.now = T0 + 1  # within MUTE_REFRESH_S: the policy in memory decides
    (result,) = service.decide([prediction(1, T0 + 1)])
    assert (result.decision.verdict.value, result.decision.rule) == ("block", RULE_MUTE)
