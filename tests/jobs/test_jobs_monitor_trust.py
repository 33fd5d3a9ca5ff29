"""The meta-monitor leaves out the answers of a person the outcomes contradict (at least 5 answers with a known
outcome, most of them wrong), so such a person cannot raise a retraining alert every cooldown; a person only their
peers disagree with still counts, since that is also how a real change first shows."""

from __future__ import annotations

from datetime import UTC, datetime

from jobs_testing import OPS, prediction, surface_and_post

from bot.jobs.monitor import run_monitor
from npo.loop import record_feedback, record_outcome
from npo.monitor import MonitorConfig
from npo.trust import trust_weight
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
CONFIG = MonitorConfig(loss_threshold=0.3, window=20, min_samples=10, cooldown_s=6 * 3600)
MALLORY = "U9"


def _answers(
    store: SQLiteStore, first: int, n: int, *, at: float, by: dict[str, FeedbackKind], fault_type: str = "disk_failure"
) -> None:
    """Surface p<first>… p<first+n-1>; each person in ``by`` answers every one of them with their kind."""
    predictions = [prediction(i, at, fault_type=fault_type) for i in range(first, first + n)]
    surface_and_post(store, predictions, posted_at=at)
    with store.transaction() as tx:
        for i in range(first, first + n):
            for person, kind in by.items():
                event = FeedbackEvent(f"p{i}", person, kind, at + 1 + i, f"r{i}-{person}")
                record_feedback(tx, event, config=store.config)


def _weight(store: SQLiteStore, operator: str) -> float:
    with store.transaction() as tx:
        trust = tx.get_trust(operator)
    assert trust is not None and store.config.trust is not None
    return trust_weight(trust, store.config.trust)


def _distrust_mallory(store: SQLiteStore) -> None:
    """Mallory overrides five recommendations that turn out to be real faults: trust weight 0."""
    _answers(store, 0, 5, at=T0, by={MALLORY: FeedbackKind.OVERRIDE}, fault_type="fan")
    with store.transaction() as tx:
        for i in range(5):
            record_outcome(tx, Outcome(f"p{i}", True, T0 + 600), config=store.config)
    assert _weight(store, MALLORY) == 0.0


def test_the_overrides_of_a_person_the_outcomes_contradict_raise_no_retraining_alert(store: SQLiteStore) -> None:
    _distrust_mallory(store)
    _answers(store, 100, 20, at=T0 + 1000, by={"U1": FeedbackKind.LIKE})
    quiet = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert not quiet.decision.trigger

    # Mallory overrides everything the team likes, for a whole day of runs: never an alert.
    both = {"U1": FeedbackKind.LIKE, MALLORY: FeedbackKind.OVERRIDE}
    for hour in range(2, 26):
        at = T0 + hour * 3600
        _answers(store, 1000 + 10 * hour, 10, at=at - 1800, by=both)
        run = run_monitor(store, CONFIG, now=at, channel=OPS)
        assert not run.decision.trigger, run.decision.reason
        assert run.loss == 0.0 and run.n_in_window == CONFIG.window  # the team's answers alone
        assert not run.drift_alarm
    assert [item for item in store.outbox() if item.channel == OPS] == []


def test_the_same_overrides_from_a_person_the_outcomes_bear_out_do_raise_one(store: SQLiteStore) -> None:
    # U2 has overridden ten false alarms: trusted, so the overrides below stay evidence although they go against the
    # key's consensus (each one a peer disagreement).
    _answers(store, 0, 10, at=T0, by={"U2": FeedbackKind.OVERRIDE}, fault_type="fan")
    with store.transaction() as tx:
        for i in range(10):
            record_outcome(tx, Outcome(f"p{i}", False, T0 + 600), config=store.config)
    _answers(store, 100, 20, at=T0 + 1000, by={"U1": FeedbackKind.LIKE})
    assert not run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS).decision.trigger
    _answers(store, 1000, 10, at=T0 + 5400, by={"U1": FeedbackKind.LIKE, "U2": FeedbackKind.OVERRIDE})
    assert _weight(store, "U2") > 0.0
    run = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert run.decision.trigger and run.loss == 0.5 and run.new_samples == 20


def test_a_person_only_the_peers_disagree_with_still_counts(store: SQLiteStore) -> None:
    # U2 has no outcome yet: overriding what U1 likes takes U2 to weight 0 through the peers alone, and the monitor
    # still reads those overrides — it cannot tell a first sign of change from an abuser, the team can.
    _answers(store, 100, 20, at=T0 + 1000, by={"U1": FeedbackKind.LIKE})
    assert not run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS).decision.trigger
    _answers(store, 1000, 10, at=T0 + 5400, by={"U1": FeedbackKind.LIKE, "U2": FeedbackKind.OVERRIDE})
    assert _weight(store, "U2") == 0.0
    run = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert run.decision.trigger and run.loss == 0.5 and run.new_samples == 20
