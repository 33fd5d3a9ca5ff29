"""InMemoryStore and SQLiteStore give the Safety Policy the same view of the world, so the same labelled stream
replayed through either makes the same decisions: the last override per key and per target (only a person's
*effective* override with a trust weight above zero, never a replaced one), the open disruptive recommendations per
cluster (surfaced or digest, action compared without case, resolved by an outcome) and the recommendations
surfaced per channel in the last hour — one decision at a time (``decide``) and in batches (``decide_batch``).

(Before this test the in-memory store answered every policy context with an empty world: `npo-bot evaluate` on NAB,
seed 0, surfaced 37 predictions in memory and 34 with ``--db``, where an override of a target 3,000 s earlier
blocked the next prediction on it by the hour's ``override_cooldown``.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from npo.loop import (
    SYSTEM_OPERATOR,
    InMemoryStore,
    LoopConfig,
    LoopError,
    LoopStore,
    decide,
    decide_batch,
    record_feedback,
    record_outcome,
)
from npo.policy import DEFAULT_POLICY_TEXT, PolicyContext, parse_policy
from npo.policy_base import turns_down
from npo.scoring import scenario_key
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction
from storage import SQLiteStore

CONFIG = LoopConfig()
# The default policy (cooldown of an hour on key and target, at most 2 open disruptive recommendations per
# cluster) with a channel cap low enough that the stream below reaches it.
POLICY = parse_policy(DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 3"))
STEP_S = 300.0  # a prediction every five minutes: the one-hour windows of the cooldown and the cap matter
TARGETS = ("r1-n1", "r1-n2", "R1-N1", "r2-n1", "r2-n2", "db-7")  # "R1-N1" is another target than "r1-n1"
ACTIONS = ("investigate", "investigate", "drain", "Reboot", "failover")  # "Reboot" is the disruptive reboot
CHANNELS = (None, None, "ops", "db-oncall")
OPERATORS = ("op0", "op1", "op2", "mallory")
# An Override's reason, as the Slack modal stores it ("<label>[: details]") and near misses a store could read as
# one that turns a recommendation down (other case, a leading space, a glob character).
REASONS = (
    *("", "False positive", "False positive: the disk is fine", "Wrong action (instead: reboot)", "Maintenance"),
    *("Already handled", "Other: flapping", "false positive", " Wrong action", "False positive*", "Wrong actio"),
)
# mallory's answers were contradicted by the outcomes: agreement 5 %, trust weight 0 (her overrides start no cooldown)
DISTRUSTED = OperatorTrust("mallory", agree=1.0, disagree=20.0, n_outcome=19)


def _context(ctx: PolicyContext) -> tuple[dict[str, int], dict[str, float], dict[str, int]]:
    """What the rules can read from a context (a count of 0 is the same as a missing entry)."""
    return (
        {k: v for k, v in ctx.active_disruptive_by_cluster.items() if v},
        dict(ctx.last_override_at),
        {k: v for k, v in ctx.surfaced_last_hour_by_channel.items() if v},
    )


def _decided(d: Decision) -> tuple[Any, ...]:
    return (d.prediction_id, d.key, d.verdict.value, d.rule, d.reason, d.score, d.threshold, d.arm)


def _stream(seed: int) -> Iterator[tuple[str, Any]]:
    """A reproducible labelled stream, independent of what any store decides: ("predict", [predictions]) in time
    order (batches of 1–4 when ``seed`` is odd), each followed by clicks on earlier predictions — overrides most
    of all (with a reason, some of them turning the recommendation down), answers changed by the same person, the
    system's skips taken over by a click, mallory's overrides — and outcomes (a real fault or not) that resolve
    recommendations."""
    script = np.random.default_rng(seed)
    reasons = np.random.default_rng(seed + 200)  # apart, so the reasons leave the rest of the stream as it was
    clicked: list[tuple[str, str]] = []  # (prediction, operator) of the people's clicks so far
    i = 0
    while i < 240:
        size = int(script.integers(1, 5)) if seed % 2 else 1
        batch = []
        for _ in range(size):
            batch.append(
                Prediction(
                    id=f"p{i}",
                    fault_type=("disk_failure", "memory_ecc", "psu")[int(script.integers(3))],
                    target=TARGETS[int(script.integers(len(TARGETS)))],
                    action=ACTIONS[int(script.integers(len(ACTIONS)))],
                    confidence=float(script.uniform(0.55, 1.0)),
                    received_at=i * STEP_S + float(script.uniform(0, 60)),
                    channel=CHANNELS[int(script.integers(len(CHANNELS)))],
                )
            )
            i += 1
        yield "predict", batch
        at = batch[-1].received_at
        for j in range(int(script.integers(4))):
            earlier = f"p{max(0, i - 1 - int(script.integers(min(i, 15))))}"  # mostly the last hour's
            draw = script.random()
            if draw < 0.15:
                operator, kind = SYSTEM_OPERATOR, FeedbackKind.SKIPPED
            else:
                operator = OPERATORS[int(script.integers(len(OPERATORS)))]
                kind = FeedbackKind.OVERRIDE if draw < 0.6 else list(FeedbackKind)[int(script.integers(3))]
                if clicked and script.random() < 0.3:  # someone changes an answer given a little earlier
                    earlier, operator = clicked[-1 - int(script.integers(min(len(clicked), 5)))]
                clicked.append((earlier, operator))
            reason = REASONS[int(reasons.integers(len(REASONS)))] if kind is FeedbackKind.OVERRIDE else ""
            yield "feedback", FeedbackEvent(earlier, operator, kind, at + 1 + j, f"r{i}-{j}", reason)
        if script.random() < 0.35:
            yield "outcome", Outcome(f"p{int(script.integers(i))}", bool(script.random() < 0.5), at + 10)


def _replay(store: LoopStore, seed: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[object]]:
    """Replay the stream of ``seed``: each prediction's policy context (as the store gives it before the decision)
    and decision, and what every click and outcome did."""
    rng = np.random.default_rng(seed + 100)
    contexts: list[tuple[Any, ...]] = []
    decisions: list[tuple[Any, ...]] = []
    other: list[object] = []
    with store.transaction() as tx:
        tx.put_trust(DISTRUSTED)
    for kind, item in _stream(seed):
        with store.transaction() as tx:
            try:
                if kind == "predict":
                    now = item[-1].received_at  # a batch is decided when its last prediction came in
                    for p in item:
                        key = scenario_key(p, CONFIG.key_spec)
                        channel = p.channel or CONFIG.default_channel
                        contexts.append((p.id, _context(tx.policy_context(p, key, channel, now))))
                    if seed % 2:
                        results = decide_batch(tx, item, config=CONFIG, policy=POLICY, rng=rng, now=now)
                    else:
                        results = [decide(tx, item[0], config=CONFIG, policy=POLICY, rng=rng, now=now)]
                    decisions += [_decided(r.decision) for r in results]
                elif kind == "feedback":
                    result = record_feedback(tx, item, config=CONFIG)
                    other.append(
                        (item.request_id, result.status, None if result.applied is None else result.applied.weight)
                    )
                else:
                    other.append((item.prediction_id, record_outcome(tx, item, config=CONFIG)))
            except LoopError as exc:  # a click on a prediction that was not surfaced
                other.append(type(exc).__name__)
    return contexts, decisions, other


def _memory(_: Path, **kw: Any) -> AbstractContextManager[LoopStore]:
    return nullcontext(InMemoryStore(CONFIG, **kw))


def _sqlite(path: Path, **kw: Any) -> AbstractContextManager[LoopStore]:
    return SQLiteStore(path, CONFIG, **kw)


def _first_difference(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"in memory {x}\n     SQLite {y}"
    return f"lengths {len(a)} and {len(b)}"


@pytest.mark.parametrize("seed", [0, 1, 2, 3], ids=["decide-0", "batch-1", "decide-2", "batch-3"])
def test_both_stores_decide_a_labelled_stream_alike(tmp_path: Path, seed: int) -> None:
    with _memory(tmp_path) as memory, _sqlite(tmp_path / "npo.db") as sqlite:
        mem = _replay(memory, seed)
        sql = _replay(sqlite, seed)
        assert isinstance(sqlite, SQLiteStore)
        log = sqlite.feedback_log()
    assert mem[1] == sql[1], "first decision that differs:\n" + _first_difference(mem[1], sql[1])
    assert mem[0] == sql[0], "first policy context that differs:\n" + _first_difference(mem[0], sql[0])
    assert mem[2] == sql[2]
    # The stream reaches every rule that reads the store, and the cases the cooldown must leave out.
    rules = {d[3] for d in sql[1]}
    assert {"override_cooldown", "blast_radius", "channel_hourly_cap", "threshold", "all_rules_passed"} <= rules
    assert any(a.event.operator == "mallory" and a.event.kind is FeedbackKind.OVERRIDE and a.weight == 0 for a in log)
    overrides = {a.event.request_id for a in log if a.event.kind is FeedbackKind.OVERRIDE}
    assert any(a.replaces in overrides for a in log)  # an override changed by its author
    assert any(a.replaces is not None and a.event.kind is FeedbackKind.OVERRIDE for a in log)
    assert any(a.weight > 0 and turns_down(a.event.reason) for a in log)  # recommendations turned down


# -- the cases, one by one -----------------------------------------------------------------------------------
def _p(pid: str, at: float, target: str, fault_type: str = "disk_failure") -> Prediction:
    return Prediction(
        id=pid, fault_type=fault_type, target=target, action="investigate", confidence=0.99, received_at=at
    )


Clicks = list[tuple[str, FeedbackKind, str | None]]  # (operator, kind, replaces the answer with this request id)

CASES: dict[str, tuple[Clicks, str]] = {
    # NAB seed 0's p19: an override of the target 3,000 s before another prediction on it (another scenario key)
    "override": ([("op1", FeedbackKind.OVERRIDE, None)], "override_cooldown"),
    "override changed to like": (
        [("op1", FeedbackKind.OVERRIDE, None), ("op1", FeedbackKind.LIKE, "c0")],
        "all_rules_passed",
    ),
    "like changed to override": (
        [("op1", FeedbackKind.LIKE, None), ("op1", FeedbackKind.OVERRIDE, "c0")],
        "override_cooldown",
    ),
    "skip taken over by an override": (
        [(SYSTEM_OPERATOR, FeedbackKind.SKIPPED, None), ("op1", FeedbackKind.OVERRIDE, "c0")],
        "override_cooldown",
    ),
    "override at trust weight 0": ([("mallory", FeedbackKind.OVERRIDE, None)], "all_rules_passed"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("make", [_memory, _sqlite], ids=["memory", "sqlite"])
def test_the_cooldown_after_an_override_of_the_target(
    tmp_path: Path, make: Callable[[Path], AbstractContextManager[LoopStore]], case: str
) -> None:
    clicks, expected = CASES[case]
    with make(tmp_path / "npo.db") as store:
        with store.transaction() as tx:
            tx.put_trust(DISTRUSTED)
            decide(tx, _p("a", 0.0, "rds-1"), config=CONFIG, policy=POLICY, rng=np.random.default_rng(0), now=0.0)
        for n, (operator, kind, replaces) in enumerate(clicks):
            with store.transaction() as tx:
                result = record_feedback(tx, FeedbackEvent("a", operator, kind, 600.0 + n, f"c{n}"), config=CONFIG)
            assert (result.applied.replaces if result.applied else None) == replaces
        later = _p("b", 3600.0, "rds-1", fault_type="psu")  # 3,000 s after the clicks: inside the hour
        with store.transaction() as tx:
            context = tx.policy_context(later, scenario_key(later, CONFIG.key_spec), "incident", 3600.0)
            result = decide(tx, later, config=CONFIG, policy=POLICY, rng=np.random.default_rng(1), now=3600.0)
    assert result.decision.rule == expected, result.decision.reason
    assert context.last_override_at.get("target:rds-1") == (
        600.0 + len(clicks) - 1 if expected == "override_cooldown" else None
    )


@pytest.mark.parametrize("make", [_memory, _sqlite], ids=["memory", "sqlite"])
def test_the_blast_radius_counts_the_stores_disruptive_actions_until_an_outcome(
    tmp_path: Path, make: Callable[..., AbstractContextManager[LoopStore]]
) -> None:
    """``disruptive_actions`` of either store, compared without case; an outcome resolves a recommendation."""
    policy = parse_policy(
        DEFAULT_POLICY_TEXT.replace("max_concurrent = 2", "max_concurrent = 1").replace(
            'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]',
            'disruptive_actions = ["investigate"]',
        )
    )
    rules = []
    with make(tmp_path / "npo.db", disruptive_actions=("INVESTIGATE",)) as store:
        for n, target in enumerate(("web-1", "web-2", "db-1", "web-3")):
            if n == 3:
                with store.transaction() as tx:
                    record_outcome(tx, Outcome("p0", True, 100.0), config=CONFIG)
            p = _p(f"p{n}", 10.0 * n, target, fault_type=("disk_failure", "psu", "memory_ecc", "nic_flap")[n])
            with store.transaction() as tx:
                rules.append(
                    decide(tx, p, config=CONFIG, policy=policy, rng=np.random.default_rng(n), now=200.0).decision.rule
                )
    # web-2 waits for web-1's recommendation to be resolved; db-1 is another cluster
    assert rules == ["all_rules_passed", "blast_radius", "all_rules_passed", "all_rules_passed"]


def _drain(pid: str, target: str, time_to_fault_s: float | None = None) -> Prediction:
    return Prediction(
        id=pid,
        fault_type="disk_failure",
        target=target,
        action="drain",
        confidence=0.99,
        time_to_fault_s=time_to_fault_s,
        labels={"cluster": "rack7"},
    )


@pytest.mark.parametrize("batch", [False, True], ids=["decide", "batch"])
@pytest.mark.parametrize("make", [_memory, _sqlite], ids=["memory", "sqlite"])
def test_an_open_recommendation_nobody_closes_stops_counting_once_stale(
    tmp_path: Path, make: Callable[..., AbstractContextManager[LoopStore]], batch: bool
) -> None:
    """No outcome and no resolved alert ever comes (a team that reports none): with the default policy a
    recommendation counts toward its cluster's blast radius until a day (``stale_after_seconds``) after its
    predicted fault — when it was surfaced plus its ``time_to_fault_s``, or when it was surfaced — and then no
    longer, in both stores, one at a time and in batches. (Before, the cluster stayed blocked for good.)"""
    day = 86400.0
    rng = np.random.default_rng(0)

    def run(store: LoopStore, now: float, *predictions: Prediction) -> list[str]:
        with store.transaction() as tx:
            if batch:
                results = decide_batch(tx, list(predictions), config=CONFIG, policy=POLICY, rng=rng, now=now)
            else:
                results = [decide(tx, p, config=CONFIG, policy=POLICY, rng=rng, now=now) for p in predictions]
        return [r.decision.rule for r in results]

    def open_at(store: LoopStore, now: float) -> int:
        probe = _drain("probe", "rack7-n99")
        with store.transaction() as tx:
            return tx.policy_context(probe, "k", "incident", now).active_disruptive_by_cluster.get("rack7", 0)

    with make(tmp_path / "npo.db") as store:
        # two drains at 0: one without a time to fault (stale after a day), one due in two days (stale after three)
        assert run(store, 0.0, _drain("a", "n1"), _drain("b", "n2", 2 * day)) == ["all_rules_passed"] * 2
        assert run(store, 60.0, _drain("c", "n3")) == ["blast_radius"]
        assert [open_at(store, t) for t in (day - 1, day, 3 * day - 1, 3 * day)] == [2, 1, 1, 0]
        # a day on, "a" is stale: one more drain fits; the one after it does not
        assert run(store, day + 60, _drain("d", "n4"), _drain("e", "n5")) == ["all_rules_passed", "blast_radius"]
        assert open_at(store, day + 60) == 2
        # an outcome still closes a recommendation at once
        with store.transaction() as tx:
            record_outcome(tx, Outcome("d", False, day + 120), config=CONFIG)
        assert open_at(store, day + 120) == 1
        # three days on, "b" is stale too: nothing counts
        assert open_at(store, 3 * day) == 0


@pytest.mark.parametrize("make", [_memory, _sqlite], ids=["memory", "sqlite"])
def test_the_stores_count_with_their_stale_after(
    tmp_path: Path, make: Callable[..., AbstractContextManager[LoopStore]]
) -> None:
    """``stale_after_s`` of either store (the bot passes the policy's ``blast_radius.stale_after_seconds``)."""
    policy = parse_policy(DEFAULT_POLICY_TEXT.replace("stale_after_seconds = 86400", "stale_after_seconds = 600"))
    assert policy.blast_radius.stale_after_seconds == 600.0
    with make(tmp_path / "npo.db", stale_after_s=policy.blast_radius.stale_after_seconds) as store:
        rng = np.random.default_rng(0)
        with store.transaction() as tx:
            for p in (_drain("a", "n1"), _drain("b", "n2", 300.0)):
                decide(tx, p, config=CONFIG, policy=policy, rng=rng, now=0.0)
        probe = _drain("probe", "rack7-n99")
        with store.transaction() as tx:
            counts = [
                tx.policy_context(probe, "k", "incident", t).active_disruptive_by_cluster.get("rack7", 0)
                for t in (599.0, 600.0, 899.0, 900.0)
            ]
    assert counts == [2, 1, 1, 0]


@pytest.mark.parametrize("batch", [False, True], ids=["decide", "batch"])
@pytest.mark.parametrize("make", [_memory, _sqlite], ids=["memory", "sqlite"])
def test_a_recommendation_turned_down_stops_counting_toward_the_blast_radius(
    tmp_path: Path, make: Callable[..., AbstractContextManager[LoopStore]], batch: bool
) -> None:
    """A drain overridden as wrong is not work under way: once someone's override counts (the one that starts a
    cooldown) with a reason that says so ("False positive", "Wrong action") and nobody has liked it, it no longer
    holds its cluster's blast radius, so another disruptive recommendation in the cluster can be shown. An override
    for maintenance, as already handled or without a reason leaves it counted; a Like from anyone counts it again.
    (Before, two drains overridden as false positives blocked every disruptive recommendation of the rack until an
    outcome came or a day passed.)"""
    rng = np.random.default_rng(0)

    def run(store: LoopStore, now: float, p: Prediction) -> str:
        with store.transaction() as tx:
            if batch:
                (result,) = decide_batch(tx, [p], config=CONFIG, policy=POLICY, rng=rng, now=now)
            else:
                result = decide(tx, p, config=CONFIG, policy=POLICY, rng=rng, now=now)
        return result.decision.rule

    def click(store: LoopStore, pid: str, operator: str, kind: FeedbackKind, at: float, reason: str = "") -> None:
        with store.transaction() as tx:
            event = FeedbackEvent(pid, operator, kind, at, f"{pid}-{operator}-{at:g}", reason)
            assert record_feedback(tx, event, config=CONFIG).status in ("recorded", "replaced")

    def open_at(store: LoopStore, now: float) -> int:
        with store.transaction() as tx:
            ctx = tx.policy_context(_drain("probe", "rack7-n99"), "k", "incident", now)
        return ctx.active_disruptive_by_cluster.get("rack7", 0)

    def psu(pid: str, target: str) -> Prediction:  # another key than the drains: no cooldown from their overrides
        return Prediction(id=pid, fault_type="psu", target=target, action="drain", confidence=0.99,
                          labels={"cluster": "rack7"})  # fmt: skip

    with make(tmp_path / "npo.db") as store:
        assert [run(store, 0.0, _drain(pid, t)) for pid, t in (("a", "n1"), ("b", "n2"))] == ["all_rules_passed"] * 2
        assert run(store, 60.0, psu("c", "n3")) == "blast_radius"
        click(store, "a", "op1", FeedbackKind.NEUTRAL, 90.0)
        assert open_at(store, 95.0) == 2  # "not sure" is not turning it down
        click(store, "a", "op1", FeedbackKind.OVERRIDE, 97.0, "Maintenance")  # the node may well be out of service
        click(store, "b", "op1", FeedbackKind.OVERRIDE, 98.0, "Already handled")  # ... and here too
        click(store, "b", "op2", FeedbackKind.OVERRIDE, 99.0)  # no reason given: nothing says no one acts
        assert open_at(store, 99.5) == 2
        click(store, "a", "op1", FeedbackKind.OVERRIDE, 100.0, "False positive: the disk is fine")
        assert open_at(store, 110.0) == 1
        assert run(store, 120.0, psu("d", "n4")) == "all_rules_passed"
        assert open_at(store, 130.0) == 2
        click(store, "a", "op2", FeedbackKind.LIKE, 200.0)  # someone agrees to drain after all
        assert open_at(store, 210.0) == 3
        assert run(store, 220.0, psu("e", "n5")) == "blast_radius"
        click(store, "a", "op2", FeedbackKind.OVERRIDE, 300.0, "Wrong action")  # ... and changes their mind
        assert open_at(store, 310.0) == 2
