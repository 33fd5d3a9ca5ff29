"""The meta-monitor and Approve at their edges, on a real SQLite file: L_align exactly at the threshold, the cooldown
counted between scheduled runs (not between the instants they happened to start), the counts an alert and a reply
name, and answers that carry no trust weight."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from jobs_testing import OPS, prediction, surface_and_post
from slack_sdk import WebClient

from bot.jobs.build import JobDeps, build_scheduler
from bot.jobs.monitor import MONITOR_JOB, run_monitor
from bot.jobs.skips import sweep_skips
from bot.retraining import fit_candidate, resolve
from bot.service import MessageRef
from npo.loop import record_feedback, record_outcome
from npo.monitor import MonitorConfig
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore
from storage.monitoring import open_proposal

OV, L = FeedbackKind.OVERRIDE, FeedbackKind.LIKE
T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
CONFIG = MonitorConfig(loss_threshold=0.3, window=200, min_samples=10, cooldown_s=6 * 3600)


def posted(store: SQLiteStore, types: list[str], *, at: float) -> None:
    """Recommendations p0… of the given fault types, all surfaced and posted at ``at``."""
    surface_and_post(store, [prediction(i, at, fault_type=t) for i, t in enumerate(types)], posted_at=at)


def answer(
    store: SQLiteStore, types: list[str], ids: range, kind_of: dict[str, FeedbackKind], *, at: float, operator: str
) -> None:
    """``operator`` answers p<i> for i in ``ids``, by its fault type (``types[i]``)."""
    with store.transaction() as tx:
        for n, i in enumerate(ids):
            event = FeedbackEvent(f"p{i}", operator, kind_of[types[i]], at + n, f"{operator}-{i}")
            record_feedback(tx, event, config=store.config)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("n", [30, 60, 79, 200])
def test_a_channel_nobody_answers_sits_at_the_threshold_and_raises_no_alert(store: SQLiteStore, n: int) -> None:
    """Nobody answers: every recommendation is skipped, code λ = 0.3 = θ. L_align is exactly the threshold, which is
    not above it — but the mean of n copies of 0.3 comes out as 0.30000000000000004 for n = 29–79 and others, and
    before, the monitor opened a proposal saying "L_align 0.30 > 0.30 over 60 answers"."""
    posted(store, ["disk", "psu", "fan"] * (n // 3) + ["disk"] * (n % 3), at=T0)
    assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == n
    run = run_monitor(store, MonitorConfig(), now=T0 + 3 * 3600, channel=OPS)  # θ 0.3, λ 0.3 (the defaults)
    assert not run.decision.trigger and run.proposal_id is None
    assert run.decision.reason == f"no trigger: L_align 0.30 ≤ 0.30 over {n} answers; no drift alarm"


def test_the_cooldown_is_counted_between_scheduled_runs(store: SQLiteStore, client: WebClient) -> None:
    """The run that opened the proposal started 0.9 s after its slot (10:00), the one six hours later 0.2 s after its
    slot. Before, the cooldown ran from 10:00:00.9, so the 16:00 run was held back ("cooldown until 16:00:00Z") and
    the next alert came at 17:00: seven hours, or six, depending on how quickly each run got going."""
    types = ["disk", "psu"] * 30
    posted(store, types, at=T0 - 600)
    answer(store, types, range(30), {"disk": OV, "psu": L}, at=T0 - 300, operator="U1")  # L_align 0.5
    clock = Clock(datetime(2025, 3, 24, 10, 0, 0, 900_000, tzinfo=UTC))
    scheduler = build_scheduler(JobDeps(store, client, OPS, now=clock, monitor=CONFIG, monitor_interval_min=60))
    assert scheduler.run_due(MONITOR_JOB)
    with store.read() as conn:
        first = open_proposal(conn)
    assert first is not None
    resolve(store, first.id, approved=False, by="U2", now=T0 + 60, message=None)
    answer(store, types, range(30, 60), {"disk": OV, "psu": L}, at=T0 + 3600, operator="U1")  # new evidence, 0.5

    clock.now = datetime(2025, 3, 24, 15, 0, 0, 100_000, tzinfo=UTC)  # inside the cooldown: held back
    assert scheduler.run_due(MONITOR_JOB)
    with store.read() as conn:
        assert open_proposal(conn) is None
        (reason,) = conn.execute("SELECT reason FROM monitor_runs ORDER BY id DESC LIMIT 1").fetchone()
    assert reason.startswith("suppressed: cooldown until 2025-03-24 16:00:00Z")

    clock.now = datetime(2025, 3, 24, 16, 0, 0, 200_000, tzinfo=UTC)  # six hours, one slot per hour: the next alert
    assert scheduler.run_due(MONITOR_JOB)
    with store.read() as conn:
        second = open_proposal(conn)
        runs = conn.execute("SELECT at, triggered FROM monitor_runs ORDER BY id").fetchall()
    assert second is not None and second.id == first.id + 1
    assert [triggered for _, triggered in runs] == [1, 0, 1]
    assert runs[-1][0] == clock.now.timestamp()  # what happened when is still the wall clock
    assert store.monitor_state().last_trigger_at == datetime(2025, 3, 24, 16, tzinfo=UTC).timestamp()


def test_reasons_count_answers_not_recommendations(store: SQLiteStore) -> None:
    """Two engineers answer the same 20 recommendations: L_align is averaged over 40 answers, and the reason (the
    alert's "Why") said "over 40 recommendations" — twice the recommendations there were."""
    types = ["disk", "psu"] * 10
    posted(store, types, at=T0)
    for operator in ("U1", "U2"):
        answer(store, types, range(20), {"disk": OV, "psu": L}, at=T0 + 60, operator=operator)
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.decision.reason == "L_align 0.50 > 0.30 over 40 answers" and run.n_in_window == 40


def test_the_reply_counts_only_the_answers_the_model_was_fitted_and_compared_on(store: SQLiteStore) -> None:
    """Two engineers answer the same 50 recommendations alike; the 20 most recent answers (U2's on p30…p49) are held
    back, and U1's answers to those same recommendations are left out of the fit. Before, the reply said "trained on
    80" (the 20 left out included) and "vs current none"; it now says 60, and names the base rate it had to beat."""
    types = ["disk", "raid"] * 15 + ["psu"] * 20
    posted(store, types, at=T0)
    for operator, start in (("U1", T0 + 100), ("U2", T0 + 1000)):
        answer(store, types, range(50), {"disk": L, "raid": OV, "psu": OV}, at=start, operator=operator)
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.proposal_id is not None
    done = resolve(store, run.proposal_id, approved=True, by="U9", now=T0 + 3700, message=MessageRef(OPS, "1.000100"))
    assert done.retrain is not None and done.retrain.candidate.n_train == 60
    assert done.retrain.base_rate_loss is not None
    text = done.text
    assert "Holdout log loss on the 20 most recent answers (lower is better; a coin scores 0.693)" in text
    assert (
        "current model none yet" in text
        and f"base rate (every answer predicted at the answers' mean code) {done.retrain.base_rate_loss:.4f}" in text
    )
    assert "trained on 60 older answers" in text and "nan" not in text


def test_answers_of_operators_nobody_trusts_train_no_model(store: SQLiteStore) -> None:
    """U1 overrode 20 recommendations that all proved real faults: NPO gives their answers weight 0, so they move no
    m(k). Before, a training window of only such answers was fitted with every weight set to 1 and the model promoted
    — a way around the trust guard into every young key's score. (A window of 40 answers stands in for 20,000.)"""
    types = ["disk", "psu"] * 30
    posted(store, types, at=T0)
    with store.transaction() as tx:
        for i in range(20):
            record_feedback(tx, FeedbackEvent(f"p{i}", "U1", OV, T0 + 10 + i, f"a{i}"), config=store.config)
        for i in range(20):
            record_outcome(tx, Outcome(f"p{i}", True, T0 + 100 + i), config=store.config)
    answer(store, types, range(20, 60), {"disk": L, "psu": OV}, at=T0 + 200, operator="U1")
    with store.read() as conn:
        assert conn.execute("SELECT DISTINCT weight FROM feedback WHERE at >= ?", (T0 + 200,)).fetchall() == [(0.0,)]
    result = fit_candidate(store, now=T0 + 1000, limit=40)
    assert not result.promoted and result.candidate.n_train == 0
    assert result.reason == "not promoted: no training answer carries weight (NPO trusts none of their operators)"


def test_the_alert_lists_every_misaligned_key_however_long_their_names(store: SQLiteStore) -> None:
    """Fault types may be 500 characters long. Before, two keys' names (escaped: each "&" takes five characters)
    filled the section's 3,000 characters and the other three keys were cut off without a word; names are now
    shortened to 80 characters, as in the weekly summary, and every key keeps its numbers."""
    types = [f"{k}-" + "disk&&&&" * 60 for k in "ABCDE"]  # 482 characters each, 1,442 once escaped
    posted(store, types * 6, at=T0)
    answer(store, types * 6, range(30), dict.fromkeys(types, OV), at=T0 + 60, operator="U1")
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.proposal_id is not None
    (alert,) = [i.payload for i in store.outbox() if i.kind == "message" and i.channel == OPS]
    (section,) = [b for b in alert["blocks"] if b["block_id"] == "npo_retrain_keys"]  # type: ignore[index, union-attr]
    lines = section["text"]["text"].splitlines()[1:]
    assert [line[:3] for line in lines] == ["`A-", "`B-", "`C-", "`D-", "`E-"]
    assert all(re.fullmatch(r"`[^`]{1,80}` — L 1\.00 over 6 answer\(s\), m\(k\) 0\.\d\d", line) for line in lines)


@pytest.mark.parametrize(
    ("theta", "overrides", "reason", "bullet"),
    [
        # 60 overrides, 1 neutral, 139 likes: L_align 0.3025, which two decimals show as the threshold 0.30.
        (0.3, 60, "L_align 0.302 > 0.30 over 200 answers", "*0.302* (threshold θ = 0.30;"),
        # θ = 0.325 was shown as 0.33, and L_align 0.3275 as 0.33 above it, and as 0.328 below "θ = 0.33".
        (0.325, 65, "L_align 0.328 > 0.325 over 200 answers", "*0.328* (threshold θ = 0.325;"),
    ],
)
def test_the_alert_shows_l_align_and_the_threshold_as_the_comparison_reads(
    store: SQLiteStore, theta: float, overrides: int, reason: str, bullet: str
) -> None:
    """A loss just above θ read "L_align 0.30 > 0.30" (and θ = 0.325 read "0.33 > 0.33", the alert's bullet "0.328
    (threshold θ = 0.33)": an alert under its own threshold). The figures now show as many digits as the comparison
    needs, and θ its own."""
    kinds = [OV] * overrides + [FeedbackKind.NEUTRAL] + [L] * (199 - overrides)
    types = [str(i) for i in range(200)]
    posted(store, types, at=T0)
    answer(store, types, range(200), dict(zip(types, kinds, strict=True)), at=T0 + 60, operator="U1")
    run = run_monitor(store, replace(CONFIG, loss_threshold=theta), now=T0 + 3600, channel=OPS)
    assert run.decision.trigger and run.decision.reason == reason
    with store.read() as conn:
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE kind = 'message'").fetchone()
    why = json.loads(payload)["blocks"][1]["text"]["text"]
    assert f"*Why:* {reason.replace('>', '&gt;')}\n• L_align over the last 200 answers: {bullet}" in why


def test_the_alert_names_the_base_rate_approve_must_beat_as_the_reply_does(store: SQLiteStore) -> None:
    """The alert's hint said Approve promotes a model only if it beats "the override rate alone"; what it must beat is
    the base rate, every answer predicted at the answers' mean code (neutral ½ and skips λ included), as the reply in
    the thread says. With neutral answers and skips the two differ."""
    types = ["disk", "psu", "fan"] * 20
    posted(store, types, at=T0)
    kinds = {"disk": OV, "psu": FeedbackKind.NEUTRAL, "fan": L}
    answer(store, types, range(60), kinds, at=T0 + 60, operator="U1")
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.proposal_id is not None
    with store.read() as conn:
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE kind = 'message'").fetchone()
    (hint,) = [b for b in json.loads(payload)["blocks"] if b["block_id"] == "npo_retrain_hint"]
    text = hint["elements"][0]["text"]
    assert "override rate" not in text
    assert "the base rate (every answer predicted at the answers' mean code)" in text
    done = resolve(store, run.proposal_id, approved=True, by="U9", now=T0 + 3700, message=MessageRef(OPS, "1.000100"))
    assert "base rate (every answer predicted at the answers' mean code)" in done.text
