"""Hypothesis: every npo state type goes through SQLite and comes back equal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from npo.bandit import BanditConfig, ThresholdBandit
from npo.loop import AppliedFeedback, LoopConfig
from npo.misalignment import KeyAlignment
from npo.monitor import MonitorState, PageHinkleyState
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction, Severity, Verdict
from storage import SQLiteStore, SQLiteTransaction

SETTINGS = settings(max_examples=60, deadline=None)
# No NUL in ids: SQLite's length() stops at the first NUL, so the schema's length CHECKs would refuse such an id;
# the records refuse a NUL in every id and name first (InvalidRecord), and any other control character in a
# prediction's names. Free text (reason, labels) may hold them.
id_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
text = st.text(id_chars, min_size=1, max_size=40).filter(lambda s: s.strip() != "")
unit = st.floats(0.0, 1.0)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(0.0, 1e12)
big_int = st.integers(0, 2**62)


class _Rollback(Exception):
    """Raised to roll the example's transaction back, so every example starts from an empty database."""


predictions = st.builds(
    Prediction,
    id=text,
    fault_type=text,
    target=text,
    action=text,
    confidence=unit,
    severity=st.sampled_from(list(Severity)),
    time_to_fault_s=st.none() | non_negative,
    labels=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    channel=st.none() | text,
    received_at=finite,
)


@st.composite
def decisions_for(draw: st.DrawFn, prediction: Prediction) -> Decision:
    return Decision(
        prediction_id=prediction.id,
        key=draw(text),
        verdict=draw(st.sampled_from([v for v in Verdict if v is not Verdict.DUPLICATE])),
        rule=draw(text),
        reason=draw(st.text(max_size=80)),
        confidence=draw(unit),
        misalignment=draw(unit),
        score=draw(unit),
        threshold=draw(st.none() | unit),
        arm=draw(st.none() | big_int),
        decided_at=draw(finite),
    )


def _rolled_back(store: SQLiteStore, body: Callable[[SQLiteTransaction], None]) -> None:
    """Run ``body`` in a transaction that is then rolled back, so every example starts from an empty database."""
    try:
        with store.transaction() as tx:
            body(tx)
            raise _Rollback
    except _Rollback:
        pass


def _fresh(tx: SQLiteTransaction, config: LoopConfig | None = None) -> SQLiteTransaction:
    """A second view of the same transaction with empty caches: its reads come from SQLite."""
    return SQLiteTransaction(tx.connection, config or LoopConfig(), ())


def test_prediction_decision_feedback_outcome_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rt.db")

    @SETTINGS
    @given(data=st.data(), prediction=predictions, channel=text)
    def example(data: st.DataObject, prediction: Prediction, channel: str) -> None:
        decision = data.draw(decisions_for(prediction))
        event = FeedbackEvent(
            prediction_id=prediction.id,
            operator=data.draw(text),
            kind=data.draw(st.sampled_from(list(FeedbackKind))),
            at=data.draw(finite),
            request_id=data.draw(text),
            reason=data.draw(st.text(max_size=100)),
        )
        applied = AppliedFeedback(
            event=event,
            key=decision.key,
            y=data.draw(unit),
            weight=data.draw(unit),
            key_n_before=data.draw(non_negative),
            arm=data.draw(st.none() | big_int),
            reward=data.draw(unit),
            replaces=data.draw(st.none() | text.filter(lambda r: r != event.request_id)),
            peer_credited=data.draw(st.none() | st.booleans()),
        )
        # An answer that replaces another needs that one stored first: the person's current answer there.
        replaced = (
            None
            if applied.replaces is None
            else AppliedFeedback(
                FeedbackEvent(prediction.id, event.operator, FeedbackKind.LIKE, 0.0, applied.replaces),
                decision.key,
                0.0,
                1.0,
                0.0,
                None,
                1.0,
            )
        )
        arrived = data.draw(st.none() | finite)
        outcome = Outcome(prediction.id, data.draw(st.booleans()), data.draw(finite), data.draw(text), arrived)

        def body(tx: SQLiteTransaction) -> None:
            tx.add_decision(prediction, decision, channel)
            if replaced is not None:
                tx.add_feedback(replaced)
            tx.add_feedback(applied)
            assert tx.add_outcome(outcome)
            back = _fresh(tx)
            assert back.get_prediction(prediction.id) == prediction
            assert back.get_decision(prediction.id) == decision
            assert back.effective_feedback(prediction.id, event.operator) == applied
            assert back.feedback_for(prediction.id) == [applied]
            assert back.get_outcome(prediction.id) == outcome

        _rolled_back(store, body)

    example()
    store.close()


def test_learning_state_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rt.db")
    keys = st.builds(KeyAlignment, key=text, m=unit, n=big_int, weight_sum=non_negative, updated_at=finite)
    trusts = st.builds(
        OperatorTrust,
        operator=text,
        agree=st.floats(0.001, 1e9),
        disagree=non_negative,
        n_outcome=big_int,
        n_peer=big_int,
    )

    @SETTINGS
    @given(key=keys, trust=trusts)
    def example(key: KeyAlignment, trust: OperatorTrust) -> None:
        def body(tx: SQLiteTransaction) -> None:
            tx.put_key(key)
            tx.put_trust(trust)
            back = _fresh(tx)
            assert back.get_key(key.key) == key
            assert back.get_trust(trust.operator) == trust

        _rolled_back(store, body)

    example()
    store.close()


@st.composite
def bandits(draw: st.DrawFn) -> ThresholdBandit:
    thresholds = tuple(sorted(draw(st.sets(unit, min_size=1, max_size=7))))
    config = BanditConfig(
        thresholds=thresholds,
        prior_alpha=draw(st.floats(0.01, 100)),
        prior_beta=draw(st.floats(0.01, 100)),
        gamma=draw(st.floats(0.01, 1.0)),
        miss_weight=draw(st.floats(0, 10)),
        quiet_weight=draw(st.floats(0, 10)),
    )
    k = len(thresholds)
    positive = st.floats(1e-6, 1e9)
    return ThresholdBandit(
        config,
        alpha=tuple(draw(st.lists(positive, min_size=k, max_size=k))),
        beta=tuple(draw(st.lists(positive, min_size=k, max_size=k))),
        pulls=tuple(draw(st.lists(big_int, min_size=k, max_size=k))),
    )


def test_bandit_monitor_and_model_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rt.db")
    monitors = st.builds(
        # min(): decisions * 1.0 rounds up past 2**53 (9,208,081,978,490,879 → …880), so matches could exceed decisions
        lambda last, open_, decisions, frac, ph: MonitorState(
            last, open_, min(decisions, int(decisions * frac)), decisions, ph
        ),
        st.none() | finite,
        st.booleans(),
        big_int,
        unit,
        st.builds(PageHinkleyState, n=big_int, mean=finite, cumulative=finite, minimum=finite),
    )
    models = st.builds(
        LogisticModel,
        version=st.integers(1, 2**62),
        weights=st.lists(finite, max_size=30).map(tuple),
        bias=finite,
        trained_at=finite,
        n_train=big_int,
        metrics=st.dictionaries(st.text(max_size=20), finite, max_size=5),
    )

    @SETTINGS
    @given(bandit=bandits(), monitor=monitors, model=models, promoted=st.booleans())
    def example(bandit: ThresholdBandit, monitor: MonitorState, model: LogisticModel, promoted: bool) -> None:
        config = LoopConfig(bandit=bandit.config)

        def body(tx: SQLiteTransaction) -> None:
            writer = SQLiteTransaction(tx.connection, config, ())
            writer.put_bandit(bandit)
            writer.put_monitor_state(monitor)
            writer.save_model(model, promoted=promoted, recorded_at=0.0)
            back = _fresh(tx, config)
            assert back.get_bandit() == bandit
            assert back.get_monitor_state() == monitor
            assert back.get_model_version(model.version) == model
            assert back.get_model() == (model if promoted else None)

        _rolled_back(store, body)

    example()
    store.close()
