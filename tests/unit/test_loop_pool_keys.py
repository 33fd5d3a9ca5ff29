"""Partial pooling of m(k) (``LoopConfig.pool_keys``): every update of a key also updates its parent's row with
the same rule, a key scores with (w·m(k) + c·m(parent)) / (w + c), c = min(n₀, w_parent), and with the option off
nothing of it happens (no parent rows, no extra key reads or writes)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from npo.bandit import BanditConfig
from npo.loop import InMemoryStore, InMemoryTransaction, LoopConfig, decide, record_feedback, record_outcome
from npo.misalignment import EtaSchedule, KeyAlignment, pooled, pooled_array, update_key
from npo.policy import parse_policy
from npo.scoring import PARENT_PREFIX, KeySpec
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord, Outcome, Prediction, Verdict

POLICY = parse_policy("")
ETA = EtaSchedule()


def _config(pool: bool, tau: float = 0.5) -> LoopConfig:
    return LoopConfig(bandit=BanditConfig(thresholds=(tau,)), trust=None, dedupe_window_s=0.0, pool_keys=pool)


def _p(pid: str, band_conf: float = 0.95, target: str = "r1-a", fault: str = "disk_full") -> Prediction:
    return Prediction(
        id=pid, fault_type=fault, target=target, action="investigate", confidence=band_conf, received_at=1.0
    )


def _decide(store: InMemoryStore, prediction: Prediction) -> Any:
    with store.transaction() as tx:
        return decide(tx, prediction, config=store.config, policy=POLICY, rng=np.random.default_rng(0), now=1.0)


def _answer(store: InMemoryStore, pid: str, kind: FeedbackKind, operator: str = "alice", at: float = 2.0) -> None:
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent(pid, operator, kind, at, f"{pid}:{operator}:{at}"), config=store.config)


def test_pooled_backs_off_to_the_parent_only_as_far_as_the_evidence_says() -> None:
    assert pooled(0.0, 0.0, 0.6, 3.0, 2.0) == pytest.approx(0.6)  # no evidence: the parent's m
    assert pooled(0.3, 2.0, 0.9, 0.0, 2.0) == pytest.approx(0.3)  # a parent that has seen nothing: unchanged
    assert pooled(0.3, 2.0, 0.9, 10.0, 2.0) == pytest.approx(0.6)  # equal weights: halfway
    assert pooled(0.3, 2.0, 0.9, 1.0, 2.0) == pytest.approx((0.6 + 0.9) / 3)  # the parent counts as its evidence
    assert pooled(0.3, 1000.0, 0.9, 2000.0, 2.0) == pytest.approx(0.3, abs=2e-3)  # much evidence: its own m
    assert pooled(0.0, 0.0, 0.0, 0.0, 2.0) == 0.0
    m = np.array([0.0, 0.3, 0.3, 0.3, 0.0])
    w = np.array([0.0, 2.0, 2.0, 2.0, 0.0])
    pm = np.array([0.6, 0.9, 0.9, 0.9, 0.0])
    pw = np.array([3.0, 0.0, 10.0, 1.0, 0.0])
    expected = [pooled(*args, 2.0) for args in zip(m, w, pm, pw, strict=True)]
    np.testing.assert_array_equal(pooled_array(m, w, pm, pw, 2.0), expected)


def test_parent_key_is_the_first_field_under_a_reserved_prefix() -> None:
    spec = KeySpec()
    assert spec.parent("disk_full|investigate|r#-a|p>=0.9") == f"{PARENT_PREFIX}disk_full"
    assert KeySpec(fields=("fault_type",)).parent("disk_full") == f"{PARENT_PREFIX}disk_full"
    with pytest.raises(InvalidRecord, match="pool_strength"):
        LoopConfig(pool_strength=0.0)


def test_an_answer_updates_the_parent_with_the_same_rule_and_a_new_sibling_scores_with_it() -> None:
    store = InMemoryStore(_config(pool=True))
    first = _decide(store, _p("p1")).decision
    assert first.misalignment == 0.0  # nothing known yet, parent included
    _answer(store, "p1", FeedbackKind.OVERRIDE)
    keys = store.keys
    parent = keys[f"{PARENT_PREFIX}disk_full"]
    expected = update_key(KeyAlignment(parent.key), 1.0, ETA, at=2.0)
    assert parent == expected
    assert keys[first.key].m == expected.m  # the key learned the same step
    # A sibling key (other confidence band) has no evidence of its own: it scores with its parent's m.
    sibling = _decide(store, _p("p2", band_conf=0.6)).decision
    assert sibling.key != first.key
    assert sibling.misalignment == pytest.approx(parent.m)
    # The first key has one answer of its own and the parent counts as at most n₀ = 2 (it has seen 1).
    again = _decide(store, _p("p3", target="r2-a")).decision
    assert again.key == first.key
    assert again.misalignment == pytest.approx((1.0 * expected.m + 1.0 * parent.m) / 2.0)
    # Another fault type has its own parent: nothing borrowed across families.
    other = _decide(store, _p("p4", fault="psu")).decision
    assert other.misalignment == 0.0


def test_without_pooling_nothing_is_borrowed_and_no_parent_row_is_touched() -> None:
    store = InMemoryStore(_config(pool=False))
    first = _decide(store, _p("p1")).decision
    _answer(store, "p1", FeedbackKind.OVERRIDE)
    assert list(store.keys) == [first.key]
    assert _decide(store, _p("p2", band_conf=0.6)).decision.misalignment == 0.0


class _Counting(InMemoryStore):
    """An InMemoryStore that counts the key reads and writes of its transactions."""

    def __init__(self, config: LoopConfig) -> None:
        super().__init__(config)
        self.calls: Counter[str] = Counter()

    @contextmanager
    def transaction(self) -> Iterator[InMemoryTransaction]:
        with super().transaction() as tx:
            calls = self.calls
            get_key, put_key = tx.get_key, tx.put_key

            def counted_get(key: str) -> KeyAlignment:
                calls["get_key"] += 1
                return get_key(key)

            def counted_put(state: KeyAlignment) -> None:
                calls["put_key"] += 1
                put_key(state)

            tx.get_key = counted_get  # type: ignore[method-assign]
            tx.put_key = counted_put  # type: ignore[method-assign]
            yield tx


@pytest.mark.parametrize("pool", [False, True])
def test_key_reads_and_writes_per_step(pool: bool) -> None:
    """Off: one key read per decision and one read and write per answer (the cost before the option existed).
    On: one more key row read per decision and one more read and write per answer."""
    store = _Counting(_config(pool=pool))
    _decide(store, _p("p1"))
    assert store.calls == Counter(get_key=1 + pool)
    store.calls.clear()
    _answer(store, "p1", FeedbackKind.LIKE)
    assert store.calls == Counter(get_key=1 + pool, put_key=1 + pool)


def test_a_suppressed_predictions_outcome_updates_the_parent_too() -> None:
    store = InMemoryStore(_config(pool=True, tau=0.99))
    decision = _decide(store, _p("p1", band_conf=0.9)).decision
    assert decision.verdict is Verdict.SUPPRESS
    with store.transaction() as tx:
        record_outcome(tx, Outcome("p1", real_fault=False, at=5.0), config=store.config)
    expected = update_key(KeyAlignment("x"), 1.0, ETA, weight=store.config.suppressed_outcome_weight, at=5.0)
    keys = store.keys
    assert keys[decision.key].m == pytest.approx(expected.m)
    assert keys[f"{PARENT_PREFIX}disk_full"].m == pytest.approx(expected.m)
    assert keys[f"{PARENT_PREFIX}disk_full"].weight_sum == store.config.suppressed_outcome_weight


def test_a_changed_answer_is_replaced_in_the_parent_too() -> None:
    """A person changing their answer swaps it in the key and in the parent: both end as if the second answer had
    been the only one (no other answer of the family in between)."""
    store = InMemoryStore(_config(pool=True))
    decision = _decide(store, _p("p1")).decision
    _answer(store, "p1", FeedbackKind.OVERRIDE, at=2.0)
    _answer(store, "p1", FeedbackKind.LIKE, at=3.0)
    keys = store.keys
    parent = keys[f"{PARENT_PREFIX}disk_full"]
    assert keys[decision.key].m == pytest.approx(0.0)
    assert parent.m == pytest.approx(0.0)
    assert (parent.n, parent.weight_sum) == (1, 1.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pool_strength", math.inf),
        ("suppressed_outcome_weight", math.nan),
        ("suppressed_outcome_weight", -0.5),
        ("suppressed_outcome_weight", math.inf),
        ("dedupe_window_s", math.nan),
        ("dedupe_window_s", -1.0),
        ("model_prior_strength", math.nan),
        ("model_prior_strength", "5"),
        ("peer_min_updates", -1),
        ("peer_min_updates", 2.5),
        ("peer_min_updates", True),
    ],
)
def test_a_loop_setting_that_is_not_a_usable_number_is_refused_by_name(name: str, value: object) -> None:
    """A NaN weight of suppressed outcomes compared false with 0 and turned their learning off without a word; each
    numeric setting is now checked where the configuration is made."""
    with pytest.raises(InvalidRecord, match=name):
        LoopConfig(**{name: value})  # type: ignore[arg-type]


def test_the_edges_of_the_loop_settings_are_accepted() -> None:
    config = LoopConfig(suppressed_outcome_weight=0.0, dedupe_window_s=0.0, model_prior_strength=0, peer_min_updates=0)
    assert config.suppressed_outcome_weight == 0.0 and config.peer_min_updates == 0
