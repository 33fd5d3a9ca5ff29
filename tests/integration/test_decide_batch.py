"""``decide_batch`` makes the decisions ``decide`` makes one by one (InMemoryStore and SQLiteStore), and a failure
anywhere in a batch keeps nothing of it.

The bandit has a single arm here, so τ is the same whatever the random stream: ``decide_batch`` draws for the whole
batch at once and its stream differs from sequential ``decide`` by design.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from storage_testing import dump as dump_all

from npo.bandit import BanditConfig
from npo.loop import (
    DecideResult,
    InMemoryStore,
    LoopConfig,
    LoopStore,
    decide,
    decide_batch,
    record_feedback,
)
from npo.policy import DEFAULT_POLICY_TEXT, Policy, parse_policy
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord, Prediction, Verdict
from storage import SQLiteStore, StorageError


def dump(path: Path) -> list[str]:
    """The database as SQL text, without the migration bookkeeping (it holds the time each file was created)."""
    return [line for line in dump_all(path) if "_sqlite_migrations" not in line]


CONFIG = LoopConfig(bandit=BanditConfig(thresholds=(0.6,)), dedupe_window_s=100.0)
# Tight world rules so that a batch runs into them: 2 open disruptive per cluster, 3 surfaced per channel and hour.
POLICY_TEXT = DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 3")
NOW = 1000.0


def _p(pid: str, **kw: object) -> Prediction:
    fields: dict[str, object] = {
        "id": pid,
        "fault_type": "disk_failure",
        "target": f"r1-{pid}",
        "action": "investigate",
        "confidence": 0.95,
        "channel": "ops",
        "received_at": NOW,
    }
    fields.update(kw)
    return Prediction(**fields)  # type: ignore[arg-type]


def _history() -> list[Prediction]:
    """Decided before the batch: one to duplicate by id, one by fingerprint, a disruptive one in cluster r2, one
    surfaced in channel "ops" (and one overridden below, to start a cooldown)."""
    return [
        _p("old-1", received_at=NOW - 50),
        _p("old-2", target="r9-x", action="reboot", received_at=NOW - 40),
        _p("old-3", target="r2-a", action="drain", received_at=NOW - 30),
        _p("old-4", target="r5-z", fault_type="psu", received_at=NOW - 20),
    ]


def _batch() -> list[Prediction]:
    return [
        _p("b1"),
        _p("old-1"),  # duplicate of a stored prediction, by id
        _p("b2", target="r9-x", action="reboot"),  # duplicate of old-2 by fingerprint (within the window)
        _p("b3", target="r2-b", action="drain"),  # r2 has one open disruptive: allowed (the second)
        _p("b4", target="r2-c", action="drain"),  # r2 now has two (one from this batch): blocked
        _p("b5", target="r3-a", action="drain", confidence=0.3),  # suppressed: no recommendation, r3 stays at 0
        _p("b6", target="r3-b", action="drain"),
        _p("b7", target="r3-c", action="reboot"),
        _p("b8", target="r3-d", action="reboot"),  # r3 has two from this batch: blocked
        _p("b1", target="other"),  # duplicate by id of this batch's b1
        _p("b9", target="r3-b", action="drain", received_at=NOW + 10),  # same fingerprint as b6: duplicate of it
        _p("b10", target="r3-b", action="drain", received_at=NOW + 200),  # same fingerprint, outside the window
        _p("b11", channel="ops", target="r7-a"),  # "ops" is over its cap of 3 by now: digest
        _p("b12", channel=None, target="r7-b"),  # the default channel
        _p("b13", target="r5-z", fault_type="psu", action="migrate_vms"),  # cooldown: r5-z was overridden 10 s ago
        _p("b14", fault_type="memory_ecc", action="reimage", target="r8-a", confidence=0.99),
    ]


def _prepare(store: LoopStore, policy: Policy) -> None:
    with store.transaction() as tx:
        for p in _history():
            decide(tx, p, config=CONFIG, policy=policy, rng=np.random.default_rng(0), now=p.received_at)
        record_feedback(tx, FeedbackEvent("old-4", "alice", FeedbackKind.OVERRIDE, NOW - 10, "r-old-4"), config=CONFIG)


def _sequential(store: LoopStore, policy: Policy) -> list[DecideResult]:
    rng = np.random.default_rng(1)
    with store.transaction() as tx:
        return [decide(tx, p, config=CONFIG, policy=policy, rng=rng, now=NOW) for p in _batch()]


def _batched(store: LoopStore, policy: Policy) -> list[DecideResult]:
    with store.transaction() as tx:
        return decide_batch(tx, _batch(), config=CONFIG, policy=policy, rng=np.random.default_rng(2), now=NOW)


def _summary(results: list[DecideResult]) -> list[tuple[object, ...]]:
    return [
        (
            r.duplicate,
            r.decision.prediction_id,
            r.decision.verdict,
            r.decision.rule,
            r.decision.reason,
            r.decision.key,
            r.decision.score,
            r.decision.misalignment,
            r.decision.threshold,
            r.decision.arm,
        )
        for r in results
    ]


def test_sqlite_batch_equals_sequential_decide(tmp_path: Path) -> None:
    policy = parse_policy(POLICY_TEXT)
    runs = {}
    for name, run in (("sequential", _sequential), ("batch", _batched)):
        path = tmp_path / f"{name}.db"
        with SQLiteStore(path, CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
            _prepare(store, policy)
            runs[name] = (run(store, policy), dump(path))
    (seq, seq_dump), (batch, batch_dump) = runs["sequential"], runs["batch"]
    assert _summary(batch) == _summary(seq)
    assert [r.decision for r in batch] == [r.decision for r in seq]
    # Every row, in the same order: predictions, decisions, recommendations, outbox, audit lines.
    assert batch_dump == seq_dump
    # The batch exercises what it claims to.
    rules = [(r.duplicate, r.decision.verdict, r.decision.rule) for r in seq]
    assert [d for d, _, _ in rules].count(True) == 4
    assert (False, Verdict.BLOCK, "blast_radius") in rules
    assert (False, Verdict.BLOCK, "override_cooldown") in rules
    assert (False, Verdict.DIGEST, "channel_hourly_cap") in rules
    assert (False, Verdict.SUPPRESS, "threshold") in rules
    assert (False, Verdict.SURFACE, "all_rules_passed") in rules


def _counted_by_the_batch() -> list[Prediction]:
    """A channel and a cluster nothing was decided in before: only the batch's own decisions fill them."""
    return [
        _p("c1", channel="fresh", target="r4-a", action="drain"),  # surfaced: "fresh" 1, r4 one open disruptive
        _p("c2", channel="fresh", target="r4-b", action="drain"),  # surfaced: "fresh" 2, r4 two
        _p("c3", channel="fresh", target="r4-c", action="drain"),  # r4 is full (two open): blocked
        _p("c4", channel="fresh", target="r6-a"),  # surfaced: "fresh" 3
        _p("c5", channel="fresh", target="r6-b"),  # "fresh" is at its cap of 3: digest
        _p("c6", channel="fresh", target="r6-c", action="reboot"),  # digest, and r6 one open disruptive
        _p("c7", channel="fresh", target="r6-d", action="reboot"),  # digest, r6 two
        _p("c8", channel="fresh", target="r6-e", action="reboot"),  # r6 is full: blocked
    ]


def test_the_batch_counts_its_own_decisions_like_sequential_decide(tmp_path: Path) -> None:
    policy = parse_policy(POLICY_TEXT)
    results = {}
    for name in ("sequential", "batch"):
        path = tmp_path / f"{name}.db"
        with SQLiteStore(path, CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
            if name == "batch":
                got = store.decide_many(_counted_by_the_batch(), policy=policy, rng=np.random.default_rng(0), now=NOW)
            else:
                with store.transaction() as tx:
                    rng = np.random.default_rng(0)
                    got = [
                        decide(tx, p, config=CONFIG, policy=policy, rng=rng, now=NOW) for p in _counted_by_the_batch()
                    ]
            results[name] = (_summary(got), dump(path))
    assert results["batch"] == results["sequential"]
    verdicts = [(row[2], row[3]) for row in results["batch"][0]]
    assert verdicts == [
        (Verdict.SURFACE, "all_rules_passed"),
        (Verdict.SURFACE, "all_rules_passed"),
        (Verdict.BLOCK, "blast_radius"),
        (Verdict.SURFACE, "all_rules_passed"),
        (Verdict.DIGEST, "channel_hourly_cap"),
        (Verdict.DIGEST, "channel_hourly_cap"),
        (Verdict.DIGEST, "channel_hourly_cap"),
        (Verdict.BLOCK, "blast_radius"),
    ]


def test_in_memory_batch_equals_sequential_decide() -> None:
    policy = parse_policy(POLICY_TEXT)
    stores = {name: InMemoryStore(CONFIG) for name in ("sequential", "batch")}
    for store in stores.values():
        _prepare(store, policy)
    seq = _sequential(stores["sequential"], policy)
    batch = _batched(stores["batch"], policy)
    assert _summary(batch) == _summary(seq)
    assert stores["batch"].audit_log == stores["sequential"].audit_log
    assert [d for d, *_ in _summary(seq)].count(True) == 4


def test_decide_many_uses_the_batch_path(tmp_path: Path) -> None:
    policy = parse_policy(POLICY_TEXT)
    with SQLiteStore(tmp_path / "npo.db", CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
        _prepare(store, policy)
        many = store.decide_many(_batch(), policy=policy, rng=np.random.default_rng(3), now=NOW)
    with SQLiteStore(tmp_path / "seq.db", CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
        _prepare(store, policy)
        seq = _sequential(store, policy)
    assert _summary(many) == _summary(seq)


def _broken() -> Prediction:
    """A prediction changed after its checks (as a bug elsewhere could): its confidence is text, so scoring it
    raises mid-batch. (Every checked prediction has a valid key: one that would be too long is shortened.)"""
    bad = _p("bad")
    object.__setattr__(bad, "confidence", "high")
    return bad


def _unchecked_id(pid: str) -> Prediction:
    """A prediction whose id was changed after its checks, to one they refuse."""
    bad = _p("bad")
    object.__setattr__(bad, "id", pid)
    return bad


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (_broken(), TypeError, "not supported between instances of 'str' and 'float'"),
        # SQLite's length() stops at the NUL: the schema's CHECK refuses the id (which Prediction refuses first)
        (_unchecked_id("\x00bad"), StorageError, "predictions '\\x00bad': CHECK constraint failed"),
    ],
)
def test_a_failure_mid_batch_keeps_nothing_of_the_batch(
    tmp_path: Path, bad: Prediction, error: type[Exception], match: str
) -> None:
    policy = parse_policy(POLICY_TEXT)
    path = tmp_path / "npo.db"
    with SQLiteStore(path, CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
        _prepare(store, policy)
        before = dump(path)
        batch = _batch()
        batch.insert(len(batch) // 2, bad)
        with pytest.raises(error, match=re.escape(match)):
            store.decide_many(batch, policy=policy, rng=np.random.default_rng(4), now=NOW)
        assert dump(path) == before
        assert store.decide_many(_batch(), policy=policy, rng=np.random.default_rng(4), now=NOW)  # still usable


def test_a_failure_mid_batch_keeps_nothing_in_memory() -> None:
    policy = parse_policy(POLICY_TEXT)
    store = InMemoryStore(CONFIG)
    _prepare(store, policy)
    audit, keys = store.audit_log, store.keys
    batch = _batch()
    batch.insert(5, _broken())
    with pytest.raises(TypeError), store.transaction() as tx:
        decide_batch(tx, batch, config=CONFIG, policy=policy, rng=np.random.default_rng(5), now=NOW)
    assert store.audit_log == audit
    assert store.keys == keys
    with store.transaction() as tx:
        assert tx.get_decision("b1") is None


def test_an_empty_batch_and_a_bad_now() -> None:
    store = InMemoryStore(CONFIG)
    policy = parse_policy(POLICY_TEXT)
    with store.transaction() as tx:
        assert decide_batch(tx, [], config=CONFIG, policy=policy, rng=np.random.default_rng(0), now=NOW) == []
        with pytest.raises(InvalidRecord, match="decided_at"):
            decide_batch(tx, [_p("x")], config=CONFIG, policy=policy, rng=np.random.default_rng(0), now=float("nan"))


@pytest.mark.parametrize("batched", [True, False], ids=["decide_many", "decide"])
def test_the_channel_cap_counts_decisions_stamped_after_now(tmp_path: Path, batched: bool) -> None:
    """Three surfaced at 1000.5 by another process (its clock read after ours, its lock taken first), or before
    this host's clock stepped back: deciding at 1000.0 must still see the cap of 3 reached."""
    policy = parse_policy(POLICY_TEXT)
    path = tmp_path / "npo.db"
    with SQLiteStore(path, CONFIG) as other, SQLiteStore(path, CONFIG) as ours:
        first = other.decide_many(
            [_p(f"b{i}") for i in range(3)], policy=policy, rng=np.random.default_rng(0), now=NOW + 0.5
        )
        assert [r.decision.verdict for r in first] == [Verdict.SURFACE] * 3
        late = [_p(f"a{i}", received_at=NOW - 1) for i in range(3)]
        if batched:
            results = ours.decide_many(late, policy=policy, rng=np.random.default_rng(1), now=NOW)
        else:
            with ours.transaction() as tx:
                results = [
                    decide(tx, p, config=CONFIG, policy=policy, rng=np.random.default_rng(1), now=NOW) for p in late
                ]
        assert [(r.decision.verdict, r.decision.rule) for r in results] == [(Verdict.DIGEST, "channel_hourly_cap")] * 3


@pytest.mark.parametrize("path_taken", ["one_by_one", "batch"])
def test_open_disruptive_recommendations_are_counted_without_case(tmp_path: Path, path_taken: str) -> None:
    """The policy lists ``Reboot``; the predictor spells it ``reboot``, ``REBOOT``, ``Reboot``. The store's count of
    open disruptive recommendations (read from the file, and the batch's own) agrees with the rule, so the
    blast radius binds whatever the spelling."""
    text = POLICY_TEXT.replace('disruptive_actions = ["drain", "reboot"', 'disruptive_actions = ["Reboot"')
    policy = parse_policy(text)
    assert policy.blast_radius.disruptive_actions[0] == "Reboot"
    earlier = [_p("e1", target="r7-a", action="reboot"), _p("e2", target="r7-b", action="REBOOT", channel="ops2")]
    later = [_p("l1", target="r7-c", action="Reboot", channel="ops3"), _p("l2", target="r8-a", action="rEbOoT")]
    with SQLiteStore(tmp_path / "npo.db", CONFIG, disruptive_actions=policy.blast_radius.disruptive_actions) as store:
        first = store.decide_many(earlier, policy=policy, rng=np.random.default_rng(0), now=NOW)
        assert [r.decision.verdict for r in first] == [Verdict.SURFACE, Verdict.SURFACE]
        if path_taken == "batch":
            got = store.decide_many(later, policy=policy, rng=np.random.default_rng(0), now=NOW)
        else:
            got = []
            for p in later:
                with store.transaction() as tx:
                    got.append(decide(tx, p, config=CONFIG, policy=policy, rng=np.random.default_rng(0), now=NOW))
    assert [(r.decision.verdict, r.decision.rule) for r in got] == [
        (Verdict.BLOCK, "blast_radius"),  # r7 has two open, spelt two other ways
        (Verdict.SURFACE, "all_rules_passed"),  # r8 has none
    ]
