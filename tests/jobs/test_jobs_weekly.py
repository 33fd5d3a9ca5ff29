"""The weekly summary: Monday 09:00 local, one post per slot across schedulers, one catch-up after a restart,
the chart through the 3-step files upload v2 flow; and ``npo-bot report``."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from jobs_testing import OPS, RELAXED_POLICY, Clock, fire_scheduled, prediction, surface_and_post, wait_for_start
from slack_sdk import WebClient

from bot.config import Settings
from bot.jobs.build import SKIP_JOB, JobDeps, build_jobs, build_scheduler
from bot.jobs.cli import add_report_parser, run_report
from bot.jobs.monitor import MONITOR_JOB
from bot.jobs.report import PNG_SIGNATURE, build_report, chart_alt_text, render_png, report_text
from bot.jobs.runner import Scheduler
from bot.jobs.weekly import WEEK, WEEKLY_JOB, run_weekly_summary, weekly_trigger
from bot.retraining import resolve
from bot.standin import StandIn
from npo.loop import decide, record_feedback, record_outcome
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore
from storage.jobs import claim_count, claim_of, finish_claim

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_SLOT = datetime(2025, 3, 24, 9, 0, tzinfo=BERLIN)


@pytest.fixture
def stores(db_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    with SQLiteStore(db_path) as a, SQLiteStore(db_path) as b:
        yield a, b


def deps(store: SQLiteStore, client: WebClient, clock: Clock) -> JobDeps:
    return JobDeps(store, client, OPS, timezone="Europe/Berlin", now=clock)


def summaries(standin: StandIn) -> list[str]:
    return [m.text for m in standin.messages(OPS) if m.text.startswith("NPO weekly summary")]


def _restart_catches_up_once(
    stores: tuple[SQLiteStore, SQLiteStore], client: WebClient, clock: Clock, standin: StandIn
) -> list[str]:
    """A second process starts (on the other store object) at ``clock``: its catch-up runs the weekly job once, and
    a second catch-up nothing. Returns every summary posted so far."""
    restarted = build_scheduler(deps(stores[1], client, clock))
    assert restarted.catch_up() == [WEEKLY_JOB]
    assert restarted.catch_up() == []
    return summaries(standin)


def test_next_fire_after_a_wednesday_is_monday_nine_berlin() -> None:
    trigger = weekly_trigger("Europe/Berlin")
    wednesday = datetime(2025, 3, 26, 12, 0, tzinfo=BERLIN)
    first = trigger.get_next_fire_time(None, wednesday)
    assert first is not None
    assert first.strftime("%A") == "Monday"
    assert first.isoformat() == "2025-03-31T09:00:00+02:00"  # after the switch to summer time
    second = trigger.get_next_fire_time(first, first)
    assert second is not None and second.isoformat() == "2025-04-07T09:00:00+02:00"
    assert second.strftime("%A") == "Monday"


def test_two_schedulers_on_one_file_post_one_summary(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    clock = Clock(datetime(2025, 3, 24, 9, 0, 1, tzinfo=BERLIN))
    assert stores[0].claim_job(WEEKLY_JOB, "2025-03-17T08:00:00+00:00", now=0.0)  # the bot ran the week before
    schedulers = [build_scheduler(deps(s, client, clock)) for s in stores]
    try:
        for s in schedulers:
            s.start()
        _wait_for_catch_up(schedulers)
    finally:
        for s in schedulers:
            s.shutdown()
    assert len(summaries(standin)) == 1
    assert len(standin.calls("files.completeUploadExternal")) == 1
    with stores[0].read() as conn:
        assert claim_count(conn, WEEKLY_JOB, "2025-03-24T08:00:00+00:00") == 1
        assert claim_count(conn, WEEKLY_JOB) == 2


def test_restart_after_two_missed_slots_posts_one(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    clock = Clock(datetime(2025, 3, 10, 9, 0, 30, tzinfo=BERLIN))
    before = build_scheduler(deps(stores[0], client, clock))
    assert before.run_due(WEEKLY_JOB)
    assert len(summaries(standin)) == 1
    clock.now = datetime(2025, 3, 26, 12, 0, tzinfo=BERLIN)  # down over the slots of 17 and 24 March
    texts = _restart_catches_up_once(stores, client, clock, standin)
    assert len(texts) == 2 and "2025-03-17 09:00 – 2025-03-24 09:00" in texts[1]
    # The τ posteriors are read when the summary is made, two days after its week: the summary says when.
    assert "Threshold τ posteriors now, as of 2025-03-26 12:00 CET (" in texts[1]
    with stores[0].read() as conn:
        assert claim_count(conn, WEEKLY_JOB) == 2


def test_chart_goes_through_the_three_step_upload(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    store = stores[0]
    _some_activity(store)
    scheduler = build_scheduler(deps(store, client, Clock(datetime(2025, 3, 24, 9, 0, 2, tzinfo=BERLIN))))
    assert scheduler.run_due(WEEKLY_JOB)
    methods = [c.method for c in standin.calls()]
    assert methods == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    (upload,) = standin.calls("upload")
    png = upload.raw
    assert png.startswith(PNG_SIGNATURE)
    assert standin.calls("files.getUploadURLExternal")[0].body["length"] == str(len(png))
    complete = standin.calls("files.completeUploadExternal")[0].body
    assert complete["channel_id"] == OPS
    file_id = json.loads(complete["files"])[0]["id"]
    alt = standin.calls("files.getUploadURLExternal")[0].body["alt_txt"]  # the chart in words, for screen readers
    assert alt.startswith("Line chart of NPO's alignment loss L_align by day, 2025-03-17 to 2025-03-24")
    assert "over the period's 2 answers" in alt
    assert standin.file(file_id).data == png
    (text,) = summaries(standin)
    assert "override 50% (1)" in text and "like 50% (1)" in text


def test_the_chart_goes_to_an_address_outside_the_api_url_and_the_docs_say_so(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    """The chart's bytes go to the ``upload_url`` Slack answers with (files.slack.com on Slack), not through
    ``SLACK_API_URL``: an operator who allows only the API URL out would lose every weekly summary, so the settings
    file and SECURITY.md, which list what NPO contacts, name it."""
    store = stores[0]
    _some_activity(store)
    scheduler = build_scheduler(deps(store, client, Clock(datetime(2025, 3, 24, 9, 0, 2, tzinfo=BERLIN))))
    assert scheduler.run_due(WEEKLY_JOB)
    (upload,) = standin.calls("upload")
    assert not upload.path.startswith(urlsplit(client.base_url).path)  # not a Web API method under the API URL
    root = Path(__file__).resolve().parents[2]
    for name in (".env.example", "SECURITY.md"):
        text = " ".join((root / name).read_text(encoding="utf-8").split())
        assert "files.getUploadURLExternal" in text and "files.slack.com" in text, name
        assert "apps.connections.open" in text, name  # Socket Mode's WebSocket URL, likewise from Slack's answer


def test_report_numbers(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        _some_activity(store)
        report = build_report(
            store, since=datetime(2025, 3, 17, 9, tzinfo=BERLIN), until=MONDAY_SLOT, timezone="Europe/Berlin"
        )
        assert report.counts == {"override": 1, "like": 1}
        assert report.rates["override"] == 0.5 and report.loss == 0.5
        assert report.days[0].day.isoformat() == "2025-03-17" and len(report.days) == 7  # Mon 09:00 to Mon 09:00
        assert report.precision == 0.5 and report.recall == 1.0 and report.outcomes_known == 2
        assert report.overridden == (("psu|investigate|r#-n#|p>=0.9", 1),)
        assert len(report.arms) == 5
        for arm in report.arms:
            assert 0 <= arm.low <= arm.mean <= arm.high <= 1
        assert "all time): n/a over 0 answered alerts · this period: 0 raised, 0 approved" in report_text(report)
        assert render_png(report).startswith(PNG_SIGNATURE)


def test_the_summary_says_whose_f_monitor_it_shows(db_path: Path) -> None:
    """F_monitor is kept as one running count (every Approve / Dismiss so far). Before, the summary of a week in which
    nobody answered any retraining alert printed "F_monitor: 0.00" — last month's Dismiss — under the week's heading,
    with nothing to tell it from a week of dismissed alerts, nor how many answers it rests on."""
    since = datetime(2025, 3, 24, 9, tzinfo=BERLIN)
    earlier = datetime(2025, 3, 3, 9, tzinfo=BERLIN).timestamp()
    with SQLiteStore(db_path) as store:
        with store.transaction() as tx:
            old = tx.open_proposal(earlier, "L_align 0.40 > 0.30 over 60 answers", expires_at=earlier + 7 * 86_400)
            tx.put_monitor_state(replace(tx.get_monitor_state(), open_proposal=True, last_trigger_at=earlier))
        assert resolve(store, old, approved=False, by="U0BOB", now=earlier + 3600, message=None).status == "dismissed"
        with store.transaction() as tx:  # raised this week, expired this week
            tx.open_proposal(since.timestamp() + 60, "Page-Hinkley drift alarm", expires_at=since.timestamp() + 7200)
            assert tx.expire_proposal(2, at=since.timestamp() + 7200)
        text = report_text(build_report(store, since=since, until=MONDAY_SLOT + WEEK, timezone="Europe/Berlin"))
    line = next(x for x in text.splitlines() if x.startswith("F_monitor"))
    assert line == (
        "F_monitor (share of answered retraining alerts approved, all time): 0.00 over 1 answered alert · "
        "this period: 1 raised, 0 approved, 0 dismissed, 1 expired"
    )


def test_report_command(db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SQLiteStore(db_path) as store:
        _some_activity(store)
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    png = tmp_path / "weekly.png"
    args = parser.parse_args(
        [
            "report",
            "--db",
            str(db_path),
            "--since",
            "2025-03-17T09:00",
            "--png",
            str(png),
            "--timezone",
            "Europe/Berlin",
        ]
    )
    assert run_report(args, now=MONDAY_SLOT) == 0
    out = capsys.readouterr().out
    assert out.startswith("NPO weekly summary · 2025-03-17 09:00 – 2025-03-24 09:00 CET")
    assert "override 50% (1)" in out and png.read_bytes().startswith(PNG_SIGNATURE)
    bad = parser.parse_args(["report", "--db", str(db_path), "--since", "last week"])
    assert run_report(bad, now=MONDAY_SLOT) == 2
    missing = parser.parse_args(["report", "--db", str(tmp_path / "nope.db")])
    assert run_report(missing, now=MONDAY_SLOT) == 1  # a database problem, as for `npo-bot db`
    assert "no such database" in capsys.readouterr().err


def test_the_report_of_a_past_period_says_its_tau_posteriors_are_the_current_ones(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bandit keeps one state (no history per period): the τ posteriors the report shows are the state when it is
    made, learned from every answer since the bandit's last reset. Before, the τ line had no such word, so under
    the header of a week with one Like it read as that week's, though 40 earlier Overrides made it."""
    earlier = datetime(2025, 3, 4, 10, tzinfo=UTC).timestamp()
    with SQLiteStore(db_path) as store:
        surface_and_post(
            store, [prediction(i, earlier, fault_type="fan") for i in range(100, 140)], posted_at=earlier + 1
        )
        with store.transaction() as tx:
            for i in range(100, 140):
                event = FeedbackEvent(f"p{i}", "U1", FeedbackKind.OVERRIDE, earlier + 60, f"r{i}")
                record_feedback(tx, event, config=store.config)
        _some_activity(store)  # the week asked for: one Like, one Override
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = ["report", "--db", str(db_path), "--since", "2025-03-17T09:00", "--timezone", "Europe/Berlin"]
    assert run_report(parser.parse_args(args), now=MONDAY_SLOT) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Answers: override 50% (1), like 50% (1), neutral 0% (0), skipped 0% (0)" in lines
    (tau,) = [line for line in lines if line.startswith("Threshold τ posteriors")]
    assert tau.startswith(
        "Threshold τ posteriors now, as of 2025-03-24 09:00 CET (learned since the bandit's last reset, not in this "
        "period alone)"
    )
    assert any(line.startswith("F_monitor (share of answered retraining alerts approved, all time)") for line in lines)


def test_the_tau_lines_say_what_their_count_is(db_path: Path) -> None:
    """The number beside each τ is the bandit's count of the answers to the recommendations surfaced at that τ (a
    changed answer is not counted again) and the outcomes of the predictions it suppressed, since the start: not how
    often the τ was drawn, since a draw nobody answered adds nothing. Before, the report called it "pulls" and the
    README "how often each τ was drawn": here 11 draws, and a count of 4."""
    t = datetime(2025, 3, 18, 10, tzinfo=UTC).timestamp()
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(i, t) for i in range(1, 11)], posted_at=t + 1)  # 10 draws, 8 unanswered
        config = store.config
        with store.transaction() as tx:
            for person, kind, request in (("U1", "like", "r1"), ("U2", "like", "r2")):  # two people answer p1
                record_feedback(tx, FeedbackEvent("p1", person, FeedbackKind(kind), t + 60, request), config=config)
            record_feedback(tx, FeedbackEvent("p2", "U1", FeedbackKind.LIKE, t + 60, "r3"), config=config)
            changed = FeedbackEvent("p2", "U1", FeedbackKind.OVERRIDE, t + 90, "r4")  # U1 changes their answer
            record_feedback(tx, changed, config=config)
            low = prediction(11, t, confidence=0.05)  # suppressed at whichever τ is drawn; its outcome arrives
            decided = decide(tx, low, config=config, policy=RELAXED_POLICY, rng=np.random.default_rng(0), now=t)
            assert decided.decision.verdict.value == "suppress"
            record_outcome(tx, Outcome("p11", False, t + 120, "test"), config=config)
        report = build_report(
            store, since=datetime(2025, 3, 17, 9, tzinfo=BERLIN), until=MONDAY_SLOT, timezone="Europe/Berlin"
        )
        with store.read() as conn:
            draws = conn.execute("SELECT COUNT(*) FROM decisions WHERE arm IS NOT NULL").fetchone()[0]
            answers = dict(conn.execute("SELECT arm, COUNT(*) FROM feedback WHERE replaces IS NULL GROUP BY arm"))
            outcomes = dict(
                conn.execute(
                    "SELECT d.arm, COUNT(*) FROM outcomes o JOIN decisions d ON d.prediction_id = o.prediction_id "
                    "WHERE d.verdict = 'suppress' GROUP BY d.arm"
                )
            )
    for text in (report_text(report), report_text(report, slack=False)):
        lines = text.splitlines()
        (header,) = [line for line in lines if line.startswith("Threshold τ posteriors")]
        assert header.endswith(
            "— mean [95 % interval], then, all time, the answers to the recommendations surfaced at that τ plus the "
            "outcomes of the predictions it suppressed:"
        )
        assert "pulls" not in text
        counts = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("  τ=")]
        assert counts == [answers.get(arm, 0) + outcomes.get(arm, 0) for arm in range(len(report.arms))]
    assert (sum(counts), draws) == (4, 11)


def _some_activity(store: SQLiteStore) -> None:
    """Two recommendations on Tue 18 March: one liked (a real fault), one overridden (a false alarm)."""
    t = datetime(2025, 3, 18, 10, tzinfo=UTC).timestamp()
    surface_and_post(store, [prediction(1, t), prediction(2, t, fault_type="psu")], posted_at=t + 1)
    with store.transaction() as tx:
        config = store.config
        record_feedback(tx, FeedbackEvent("p1", "U1", FeedbackKind.LIKE, t + 60, "r1"), config=config)
        record_feedback(tx, FeedbackEvent("p2", "U1", FeedbackKind.OVERRIDE, t + 60, "r2"), config=config)
        record_outcome(tx, Outcome("p1", True, t + 120, "test"), config=config)
        record_outcome(tx, Outcome("p2", False, t + 120, "test"), config=config)


def _wait_for_catch_up(schedulers: list[Scheduler]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(s._scheduler is not None and s._scheduler.get_job("catch-up") is None for s in schedulers):
            return
        time.sleep(0.02)
    raise AssertionError("the catch-up jobs did not run")


def test_a_failed_upload_releases_the_slot(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(datetime(2025, 3, 24, 9, 0, 3, tzinfo=BERLIN))
    broken = JobDeps(stores[0], client, "C404", timezone="Europe/Berlin", now=clock)
    assert not build_scheduler(broken).run_due(WEEKLY_JOB)
    assert "channel_not_found" in caplog.text
    with stores[0].read() as conn:
        assert claim_count(conn, WEEKLY_JOB) == 0
    assert build_scheduler(deps(stores[1], client, clock)).run_due(WEEKLY_JOB)
    assert len(summaries(standin)) == 1


def test_a_first_summary_that_failed_is_caught_up_after_a_restart(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    # A new install's first summary fails (a wrong ops channel); the channel is fixed and the bot restarted before
    # the in-process retry: the restart must post that summary, not take the database for one where it never ran.
    clock = Clock(datetime(2025, 3, 24, 9, 0, 3, tzinfo=BERLIN))
    broken = JobDeps(stores[0], client, "C404", timezone="Europe/Berlin", now=clock)
    assert not build_scheduler(broken).run_due(WEEKLY_JOB)
    clock.now = datetime(2025, 3, 24, 9, 20, tzinfo=BERLIN)
    texts = _restart_catches_up_once(stores, client, clock, standin)
    assert len(texts) == 1 and "2025-03-17 09:00 – 2025-03-24 09:00" in texts[0]
    with stores[0].read() as conn:
        assert claim_count(conn, WEEKLY_JOB) == 1


def test_a_week_whose_run_failed_in_a_bot_that_stopped_is_posted_by_one_still_running(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    """Two bots on one file. At Monday 09:00 one claims the summary first and its run fails (a wrong ops channel);
    the other's 09:00 run comes meanwhile and finds the slot claimed. The failed run gives its claim back, but only
    its own process retries it, and that process is stopped for good. The bot still running posted nothing until
    the next Monday, and then the next week's summary only: the week was posted only if some process restarted. Its
    own scheduler now catches the week up, once."""
    clock = Clock(datetime(2025, 3, 24, 8, 59, 30, tzinfo=BERLIN))
    assert stores[0].claim_job(WEEKLY_JOB, "2025-03-17T08:00:00+00:00", now=0.0)  # the bots ran the week before
    with stores[0].transaction() as tx:
        assert finish_claim(tx.connection, WEEKLY_JOB, "2025-03-17T08:00:00+00:00", "", 1.0)
    running = build_scheduler(deps(stores[1], client, clock))
    jobs = build_jobs(JobDeps(stores[0], client, "C404", timezone="Europe/Berlin", now=clock))
    (spec,) = [j for j in jobs if j.name == WEEKLY_JOB]

    def meanwhile(slot: datetime) -> None:
        running._safe_run_due(WEEKLY_JOB)  # the other bot's 09:00 run, while this one's is under way
        spec.run(slot)

    failing = Scheduler(stores[0], [replace(j, run=meanwhile) if j is spec else j for j in jobs], now=clock)
    try:
        for s in (failing, running):
            s.start()
            wait_for_start(s)  # nothing to catch up at 08:59; from here on their jobs fire on the test's clock
        assert WEEKLY_JOB in fire_scheduled(failing, clock, datetime(2025, 3, 24, 9, 0, tzinfo=BERLIN))
        assert summaries(standin) == []
        with stores[0].read() as conn:
            assert claim_count(conn, WEEKLY_JOB) == 1  # the week before: this week's claim was given back
        assert failing._scheduler.get_job(f"{WEEKLY_JOB}-retry") is not None  # type: ignore[union-attr]
        assert running._scheduler.get_job(f"{WEEKLY_JOB}-retry") is None  # type: ignore[union-attr]
        failing.shutdown()  # stopped for good, its retry with it
        fire_scheduled(running, clock, datetime(2025, 3, 24, 10, 0, tzinfo=BERLIN))
        texts = summaries(standin)
        assert len(texts) == 1, "the bot still running did not post the week"
        assert "2025-03-17 09:00 – 2025-03-24 09:00" in texts[0]
        fire_scheduled(running, clock, datetime(2025, 3, 24, 12, 0, tzinfo=BERLIN))
    finally:
        for s in (failing, running):
            s.shutdown()
    assert len(summaries(standin)) == 1
    with stores[0].read() as conn:
        assert claim_count(conn, WEEKLY_JOB) == 2
        claim = claim_of(conn, WEEKLY_JOB, "2025-03-24T08:00:00+00:00")
    assert claim is not None and claim.owner == running.owner and claim.done_at is not None
    assert build_scheduler(deps(stores[0], client, clock)).catch_up() == []  # and a restart has nothing to do


def test_the_skip_job_runs_through_the_scheduler(stores: tuple[SQLiteStore, SQLiteStore], client: WebClient) -> None:
    store = stores[0]
    posted = datetime(2025, 3, 24, 10, 0, 0, tzinfo=UTC)
    surface_and_post(store, [prediction(1, posted.timestamp() - 5)], posted_at=posted.timestamp())
    clock = Clock(datetime(2025, 3, 24, 10, 59, 59, tzinfo=UTC))
    wakes: list[int] = []
    job_deps = JobDeps(store, client, OPS, now=clock, skip_timeout_min=60, on_enqueue=lambda: wakes.append(1))
    scheduler = build_scheduler(job_deps)
    assert scheduler.run_due(SKIP_JOB) and store.feedback_log() == []
    clock.now = datetime(2025, 3, 24, 11, 0, 0, tzinfo=UTC)
    assert scheduler.run_due(SKIP_JOB)
    assert not scheduler.run_due(SKIP_JOB)  # same minute: claimed
    assert [a.event.request_id for a in store.feedback_log()] == ["skip:p1"] and wakes == [1]
    clock.now = datetime(2025, 3, 25, 11, 0, 0, tzinfo=UTC)
    assert scheduler.run_due(SKIP_JOB)
    with store.read() as conn:
        assert claim_count(conn, SKIP_JOB) == 2  # the last day's claims are kept, older ones pruned
        assert claim_count(conn, SKIP_JOB, "2025-03-24T10:59:00+00:00") == 0


def test_deps_from_settings(db_path: Path, client: WebClient) -> None:
    settings = Settings(
        slack_bot_token="xoxb-x",
        slack_signing_secret="s" * 16,
        ingest_token="t" * 16,
        incident_channel="C1INC",
        ops_channel=OPS,
        timezone="Europe/Berlin",
        skip_timeout_min=15,
    )
    with SQLiteStore(db_path) as store:
        job_deps = JobDeps.from_settings(settings, store, client)
        assert (job_deps.ops_channel, job_deps.timezone, job_deps.skip_timeout_min) == (OPS, "Europe/Berlin", 15)
        assert sorted(j.name for j in build_jobs(job_deps)) == [MONITOR_JOB, SKIP_JOB, WEEKLY_JOB]


def test_the_chart_is_a_png_of_the_falling_loss(db_path: Path) -> None:
    """The PNG decodes as an image, and its line falls from left to right as L_align does (rows grow downwards)."""
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415 - Pillow comes with matplotlib

    start = datetime(2025, 3, 17, 9, tzinfo=BERLIN)
    with SQLiteStore(db_path) as store:
        # Four answers a day, fewer and fewer of them overrides: L_align 0.75 → 0.0 over the week.
        n = 0
        for day, overrides in enumerate([3, 3, 2, 2, 1, 0, 0]):
            at = start.timestamp() + day * 86_400 + 3600
            ids = list(range(n, n + 4))
            surface_and_post(store, [prediction(i, at, fault_type=f"f{day}") for i in ids], posted_at=at)
            with store.transaction() as tx:
                for k, i in enumerate(ids):
                    kind = FeedbackKind.OVERRIDE if k < overrides else FeedbackKind.LIKE
                    record_feedback(tx, FeedbackEvent(f"p{i}", "U1", kind, at + 60, f"r{i}"), config=store.config)
            n += 4
        report = build_report(store, since=start, until=start + WEEK, timezone="Europe/Berlin")
    assert [d.loss for d in report.days] == [0.75, 0.75, 0.5, 0.5, 0.25, 0.0, 0.0]  # days from Mon 09:00
    image = Image.open(io.BytesIO(render_png(report)))
    assert image.format == "PNG" and image.size == (800, 350)
    rgb = image.convert("RGB")
    blue = [
        (x, y)
        for x in range(rgb.width)
        for y in range(rgb.height)
        if _close(rgb.getpixel((x, y)), (0x1F, 0x77, 0xB4))  # the line's colour
    ]
    assert len(blue) > 300
    xs = sorted({x for x, _ in blue})
    left = [y for x, y in blue if x < xs[0] + 20]
    right = [y for x, y in blue if x > xs[-1] - 20]
    assert sum(left) / len(left) < sum(right) / len(right) - 100  # high loss on the left, low on the right


def _close(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= 12 for a, b in zip(pixel[:3], colour, strict=True))


EVIL = "<!channel> <https://evil.example/login|re-authenticate NPO here>"


def _override(store: SQLiteStore, pid: str, operator: str, at: float, rid: str) -> None:
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent(pid, operator, FeedbackKind.OVERRIDE, at, rid), config=store.config)


def test_slack_text_escapes_and_shortens_keys_and_operators(db_path: Path, standin: StandIn, client: WebClient) -> None:
    """Keys and operator ids come from predictions and clicks: in the Slack text they are escaped (no mention, no
    link) and shortened; the terminal text keeps them whole."""
    t = datetime(2025, 3, 18, 10, tzinfo=UTC).timestamp()
    long_type = "kubernetes_pod_crashloop_" + "x" * 440
    evil_operator = "U0EVIL<!here>" + "y" * 150
    predictions = [prediction(1, t, fault_type=EVIL), prediction(2, t, fault_type=long_type)]
    predictions += [prediction(i, t) for i in range(3, 6)]
    with SQLiteStore(db_path) as store:
        surface_and_post(store, predictions, posted_at=t + 1)
        for i in range(1, 6):  # overrides of 5 real faults: the operator is flagged (disagrees with outcomes)
            _override(store, f"p{i}", evil_operator, t + 60, f"r{i}")
        with store.transaction() as tx:
            for i in range(1, 6):
                record_outcome(tx, Outcome(f"p{i}", True, t + 120, "test"), config=store.config)
        report = build_report(
            store, since=datetime(2025, 3, 17, 9, tzinfo=BERLIN), until=MONDAY_SLOT, timezone="Europe/Berlin"
        )
        assert [f.operator for f in report.flagged] == [evil_operator]
        text = report_text(report)
        assert "<" not in text and ">" not in text  # nothing Slack would read as a mention, a link or a command
        assert " (3), &lt;!channel&gt; &lt;https://evil.example/login\\|re-authenticate" in text  # "|" escaped in a key
        (line,) = [line for line in text.splitlines() if line.startswith("Most overridden keys")]
        keys = [k.rsplit(" (", 1)[0] for k in line.removeprefix("Most overridden keys: ").split(", ")]
        assert len(keys) == 3 and all(len(unescape(k)) <= 80 for k in keys)  # as Slack shows them
        assert any(k.startswith("kubernetes_pod_crashloop_xxx") and k.endswith("…") for k in keys)
        assert "  U0EVIL&lt;!here&gt;yyy" in text and evil_operator not in text
        plain = report_text(report, slack=False)  # the terminal: whole and unescaped
        assert f"{long_type}|investigate|" in plain and f"  {evil_operator}: " in plain
        assert EVIL.replace("|", "\\|") in plain
        run_weekly_summary(store, client, OPS, "Europe/Berlin", MONDAY_SLOT)
    (posted,) = summaries(standin)
    assert "<!channel>" not in posted and "evil.example/login\\|" in posted
    html = " ".join(c["html"] for c in standin.live.state("U1")["channels"])
    assert "evil.example/login\\|" in html  # shown as text ...
    assert 'class="mention"' not in html and 'href="https://evil.example' not in html  # ... not a mention or link


def test_outcomes_are_counted_in_the_week_they_arrive(db_path: Path) -> None:
    """Liked on Sunday, its outcome on Monday after the 09:00 summary: counted once, in the week it arrived — the
    week whose MTTR counts it too."""
    sunday = datetime(2025, 3, 23, 22, tzinfo=BERLIN).timestamp()
    week1, week2 = (MONDAY_SLOT - WEEK, MONDAY_SLOT), (MONDAY_SLOT, MONDAY_SLOT + WEEK)
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(1, sunday)], posted_at=sunday + 1)
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent("p1", "U1", FeedbackKind.LIKE, sunday + 60, "r1"), config=store.config)
        monday = datetime(2025, 3, 24, 11, tzinfo=BERLIN).timestamp()
        with store.transaction() as tx:
            record_outcome(tx, Outcome("p1", True, monday, "test"), config=store.config)
        first, second = (build_report(store, since=a, until=b, timezone="Europe/Berlin") for a, b in (week1, week2))
    assert (first.outcomes_known, first.precision, first.repair.n_with) == (0, None, 0)
    assert (second.outcomes_known, second.precision, second.recall, second.repair.n_with) == (1, 1.0, 1.0, 1)
    assert "Outcomes known (recorded in the period): 1 · precision 1.00 · recall 1.00" in report_text(second)


def test_an_outcome_resolved_before_the_summary_but_received_after_it_is_in_the_next_one(db_path: Path) -> None:
    """Resolved on Sunday (its ``at``), received on Monday after the 09:00 summary had been posted: counted in the
    next week's summary, by arrival — by ``at`` it would belong to a summary already posted, and be in none. The
    repair time still runs to the resolution."""
    sunday = datetime(2025, 3, 23, 22, tzinfo=BERLIN).timestamp()
    monday = datetime(2025, 3, 24, 11, tzinfo=BERLIN).timestamp()
    week1, week2 = (MONDAY_SLOT - WEEK, MONDAY_SLOT), (MONDAY_SLOT, MONDAY_SLOT + WEEK)
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(1, sunday), prediction(2, sunday)], posted_at=sunday + 1)
        with store.transaction() as tx:
            record_outcome(tx, Outcome("p1", True, sunday + 1800, "tickets", recorded_at=monday), config=store.config)
            record_outcome(
                tx, Outcome("p2", True, sunday + 1800, "tickets", recorded_at=sunday + 1800), config=store.config
            )
        first, second = (build_report(store, since=a, until=b, timezone="Europe/Berlin") for a, b in (week1, week2))
    assert (first.outcomes_known, second.outcomes_known) == (1, 1)
    assert second.repair.n_with == 1 and second.repair.with_recommendation == pytest.approx(1800, abs=1)


def _report_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *extra])


@pytest.mark.parametrize("where", ["environment", "settings file"])
def test_report_command_with_db_reads_npo_timezone(
    where: str,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--db`` with NPO_TIMEZONE in the environment or in the settings file: days counted in that zone (an
    override at 23:30 UTC on Tuesday is Wednesday's in Berlin, with days from midnight), as ``--help`` says."""
    t = datetime(2025, 3, 18, 23, 30, tzinfo=UTC).timestamp()
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(1, t)], posted_at=t + 1)
        _override(store, "p1", "U1", t + 60, "r1")
    env_file = tmp_path / "settings.env"
    monkeypatch.delenv("NPO_TIMEZONE", raising=False)
    if where == "environment":
        monkeypatch.setenv("NPO_TIMEZONE", "Europe/Berlin")
        env_file.write_text("# nothing here: the zone comes from the environment\n", encoding="utf-8")
    else:
        env_file.write_text("NPO_TIMEZONE=Europe/Berlin\n", encoding="utf-8")
    args = _report_args("--db", str(db_path), "--since", "2025-03-17T00:00", "--env-file", str(env_file))
    assert run_report(args, now=MONDAY_SLOT) == 0
    out = capsys.readouterr().out
    assert out.startswith("NPO weekly summary · 2025-03-17 00:00 – 2025-03-24 09:00 CET")
    assert "Wed 2025-03-19  1.000  (1 answer)" in out
    assert "lower is better): 1.000 over 1 answer\n" in out  # one answer, in the singular
    # --timezone still wins; without any setting the zone is UTC
    assert run_report(_report_args("--db", str(db_path), "--timezone", "UTC"), now=MONDAY_SLOT) == 0
    assert capsys.readouterr().out.startswith("NPO weekly summary · 2025-03-17 08:00 – 2025-03-24 08:00 UTC")
    monkeypatch.delenv("NPO_TIMEZONE", raising=False)
    args = _report_args("--db", str(db_path), "--since", "2025-03-17T00:00", "--env-file", os.devnull)
    assert run_report(args, now=MONDAY_SLOT) == 0
    assert "Tue 2025-03-18  1.000  (1 answer)" in capsys.readouterr().out


def test_report_command_with_db_and_a_malformed_settings_file(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLiteStore(db_path):
        pass
    monkeypatch.delenv("NPO_TIMEZONE", raising=False)
    env_file = tmp_path / "bad.env"
    env_file.write_text("this is not a setting\n", encoding="utf-8")
    assert run_report(_report_args("--db", str(db_path), "--env-file", str(env_file)), now=MONDAY_SLOT) == 2
    assert "npo-bot report: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("0001-01-01", "must not be before 1970"),
        ("0001-01-01T00:00+01:00", "must not be before 1970"),  # was an OverflowError traceback
        ("1969-12-31T23:59Z", "must not be before 1970"),
        ("2025-03-24T09:00:01", "must be in the past"),
        ("9999-12-31T23:59-12:00", "must be in the past"),
    ],
)
def test_report_command_refuses_a_since_out_of_range(
    since: str, message: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLiteStore(db_path):
        pass
    args = _report_args("--db", str(db_path), "--since", since, "--timezone", "Europe/Berlin")
    assert run_report(args, now=MONDAY_SLOT) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err and err.startswith("npo-bot report: --since")


def test_report_until_prints_a_past_week_as_it_was_posted(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--until`` ends the period at a past time: last week's summary again, a fortnight later, has the header and
    the numbers of the one made at its slot (before, the period always ended now, so a past week could only be
    asked for with a --since that reached up to today, and came with everything since)."""
    with SQLiteStore(db_path) as store:
        _some_activity(store)
    zone = ("--timezone", "Europe/Berlin")
    assert run_report(_report_args("--db", str(db_path), *zone), now=MONDAY_SLOT) == 0
    at_the_slot = capsys.readouterr().out
    later = MONDAY_SLOT + timedelta(days=14)
    assert run_report(_report_args("--db", str(db_path), "--until", "2025-03-24T09:00", *zone), now=later) == 0
    again = capsys.readouterr().out
    assert again.startswith("NPO weekly summary · 2025-03-17 09:00 – 2025-03-24 09:00 CET")
    assert "override 50% (1)" in again
    # the same report but for the τ line, which shows the bandit as it is when the report is made
    assert [ln for ln in again.splitlines() if "as of" not in ln] == [
        ln for ln in at_the_slot.splitlines() if "as of" not in ln
    ]
    # with an offset, and with --since: the period between them
    args = _report_args("--db", str(db_path), "--since", "2025-03-20T00:00", "--until", "2025-03-24T08:00Z", *zone)
    assert run_report(args, now=later) == 0
    assert capsys.readouterr().out.startswith("NPO weekly summary · 2025-03-20 00:00 – 2025-03-24 09:00 CET")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--until", "next monday"), "--until must be ISO 8601, got 'next monday'"),
        (("--until", "2025-03-24T09:00:01"), "--until must be in the past, got '2025-03-24T09:00:01'"),
        (("--until", "1969-12-31T23:59Z"), "--until must not be before 1970, got '1969-12-31T23:59Z'"),
        (
            ("--since", "2025-03-20T00:00", "--until", "2025-03-20T00:00"),
            "--since must be before the end of the period (2025-03-20T00:00:00+01:00), got '2025-03-20T00:00'",
        ),
        (
            ("--until", "2025-03-10T00:00", "--since", "2025-03-12T00:00"),
            "--since must be before the end of the period (2025-03-10T00:00:00+01:00), got '2025-03-12T00:00'",
        ),
    ],
)
def test_report_command_refuses_an_until_out_of_range(
    extra: tuple[str, ...], message: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLiteStore(db_path):
        pass
    args = _report_args("--db", str(db_path), *extra, "--timezone", "Europe/Berlin")
    assert run_report(args, now=MONDAY_SLOT) == 2
    assert capsys.readouterr() == ("", f"npo-bot report: {message}\n")


def test_a_year_long_report_has_a_readable_chart(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A year back: one line per day in the text, a chart whose day labels do not overlap."""
    from bot.jobs.report import CHART_MAX_TICKS, chart_figure  # noqa: PLC0415 - new in this change

    t = datetime(2025, 3, 18, 10, tzinfo=UTC).timestamp()
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(1, t)], posted_at=t + 1)
        _override(store, "p1", "U1", t + 60, "r1")
    png = tmp_path / "year.png"
    args = _report_args(
        "--db", str(db_path), "--since", "2024-03-23T09:00", "--timezone", "Europe/Berlin", "--png", str(png)
    )
    assert run_report(args, now=MONDAY_SLOT) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("  ") and ("answers)" in line or "answer)" in line) for line in out.splitlines()) == 366
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    with SQLiteStore(db_path) as store:
        for days in (8, 15, 367):
            since = MONDAY_SLOT - days * (WEEK / 7)
            report = build_report(store, since=since, until=MONDAY_SLOT, timezone="Europe/Berlin")
            assert len(report.days) == days
            fig = chart_figure(report)
            fig.canvas.draw()
            (ax,) = fig.axes
            boxes = [label.get_window_extent() for label in ax.get_xticklabels() if label.get_text()]
            assert 1 < len(boxes) <= CHART_MAX_TICKS
            boxes.sort(key=lambda b: b.x0)
            assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), days  # no overlap
            assert all(b.x0 >= 0 and b.x1 <= fig.bbox.width for b in boxes)


def test_chart_alt_text_of_a_quiet_week(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        report = build_report(
            store, since=datetime(2025, 3, 17, 9, tzinfo=BERLIN), until=MONDAY_SLOT, timezone="Europe/Berlin"
        )
    assert chart_alt_text(report) == (
        "Line chart of NPO's alignment loss L_align by day, 2025-03-17 to 2025-03-24: no answers in this period, "
        "so no values."
    )


def test_a_summary_set_inside_the_hour_the_clocks_go_back_is_posted_once(
    stores: tuple[SQLiteStore, SQLiteStore], standin: StandIn, client: WebClient
) -> None:
    # Sunday 25 October 2026, Berlin: 02:00–03:00 happens twice (CEST, then CET). APScheduler fires at both.
    clock = Clock(datetime(2026, 10, 25, 0, 30, 2, tzinfo=UTC))  # 02:30:02 CEST
    jobs = JobDeps(stores[0], client, OPS, timezone="Europe/Berlin", now=clock, weekly_at=("sun", 2, 30))
    assert build_scheduler(jobs).run_due(WEEKLY_JOB)
    clock.now = datetime(2026, 10, 25, 1, 30, 2, tzinfo=UTC)  # 02:30:02 CET: the same local time again
    assert not build_scheduler(jobs).run_due(WEEKLY_JOB)
    assert not build_scheduler(jobs).catch_up()
    clock.now = datetime(2026, 11, 1, 1, 30, 2, tzinfo=UTC)  # the next Sunday at 02:30 CET
    assert build_scheduler(jobs).run_due(WEEKLY_JOB)
    assert len(summaries(standin)) == 2


@pytest.mark.parametrize("target", ["the database", "its -wal file", "a hard link to it", "a folder", "no folder"])
def test_report_command_refuses_a_png_it_cannot_or_must_not_write(
    target: str, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--png`` naming the database (a slip for ``--db``) overwrote it with the chart, and a folder or a path in a
    missing folder ended in a traceback after the report was printed: now one line, exit 2, the data intact."""
    with SQLiteStore(db_path) as store:
        _some_activity(store)
        wal = Path(f"{db_path}-wal")
        png = {
            "the database": db_path,
            "its -wal file": wal,
            "a hard link to it": tmp_path / "chart.png",
            "a folder": tmp_path,
            "no folder": tmp_path / "missing" / "week.png",
        }[target]
        if target == "a hard link to it":
            png.hardlink_to(db_path)
        args = _report_args("--db", str(db_path), "--png", str(png), "--timezone", "Europe/Berlin")
        assert wal.is_file() or target != "its -wal file"
        assert run_report(args, now=MONDAY_SLOT) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"npo-bot report: --png {png}")
    assert db_path.read_bytes().startswith(b"SQLite format 3\x00")
    with SQLiteStore(db_path, migrate=False) as store:
        report = build_report(
            store, since=datetime(2025, 3, 17, 9, tzinfo=BERLIN), until=MONDAY_SLOT, timezone="Europe/Berlin"
        )
    assert report.counts == {"override": 1, "like": 1}


def test_report_command_exits_1_when_the_chart_cannot_be_written_and_keeps_the_chart_already_there(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chart that fails while it is written (a full disk) is a failed write, exit 1, as for a file ``npo-bot
    simulate`` fails to write; it was exit 2, the code of a refused option. And the file was written in place, so a
    full disk left last week's chart cut short: now the chart is written beside it and renamed over it once whole."""
    with SQLiteStore(db_path) as store:
        _some_activity(store)
    args = _report_args("--db", str(db_path), "--png", "/dev/full", "--timezone", "Europe/Berlin")
    assert run_report(args, now=MONDAY_SLOT) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "npo-bot report: --png /dev/full: cannot write the chart: No space left on device\n"

    charts = tmp_path / "charts"
    charts.mkdir()
    (charts / "week.png").write_bytes(b"last week's chart")
    command = [sys.executable, "-m", "bot.cli", "report", "--db", str(db_path), "--png", str(charts / "week.png")]
    with SQLiteStore(db_path):  # holds the -shm file at its full size, so the report's reading needs no file to grow
        limited = subprocess.run(  # files of this process may not grow past 1 kB: the chart is far larger
            [*command, "--timezone", "Europe/Berlin", "--since", "2025-03-17T09:00"],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)),
            env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert limited.returncode == 1, limited.stderr
    assert limited.stdout == "" and "cannot write the chart: File too large" in limited.stderr, limited.stderr
    assert (charts / "week.png").read_bytes() == b"last week's chart"
    assert sorted(p.name for p in charts.iterdir()) == ["week.png"]  # no hidden partial file left


@pytest.mark.parametrize(
    ("zone", "start"), [("Europe/Berlin", "09:00"), ("America/New_York", "04:00"), ("UTC", "08:00")]
)
def test_the_chart_names_its_axes_and_the_zone_of_its_days(zone: str, start: str, db_path: Path) -> None:
    """The x axis had day ticks but no label: a chart posted to a team across zones did not say in which zone its
    days were counted, nor (the week starting at Monday 09:00 Berlin) at what time of day they start."""
    from bot.jobs.report import chart_figure  # noqa: PLC0415

    with SQLiteStore(db_path) as store:
        _some_activity(store)
        report = build_report(store, since=MONDAY_SLOT - WEEK, until=MONDAY_SLOT, timezone=zone)
    (ax,) = chart_figure(report).axes
    assert ax.get_ylabel() == "L_align"
    assert ax.get_xlabel() == f"day from {start} ({zone})"
    with SQLiteStore(db_path) as store:  # days from midnight: calendar days
        midnight = datetime(2025, 3, 17, tzinfo=ZoneInfo(zone))
        report = build_report(store, since=midnight, until=midnight + WEEK, timezone=zone)
    assert chart_figure(report).axes[0].get_xlabel() == f"day ({zone})" and len(report.days) == 7


def test_repair_times_under_an_hour_are_shown_in_minutes() -> None:
    """MTTR with and without a recommendation is the comparison the report exists for: 5 min and 2 min both read
    "0.1 h" / "0.0 h" before, and "(1 faults)"."""
    import dataclasses  # noqa: PLC0415

    from bot.jobs.report import WeeklyReport  # noqa: PLC0415
    from storage.jobs import RepairTimes  # noqa: PLC0415

    zone = ZoneInfo("UTC")
    report = WeeklyReport(
        since=datetime(2025, 3, 24, tzinfo=zone),
        until=datetime(2025, 3, 31, tzinfo=zone),
        days=(),
        counts={},
        precision=None,
        recall=None,
        outcomes_known=2,
        arms=(),
        f_monitor=None,
        overridden=(),
        repair=RepairTimes(5 * 60, 1, 2.5 * 3600, 3),
    )
    text = report_text(report, slack=False)
    assert "with a recommendation 5 min (1 fault) · without 2.5 h (3 faults)" in text
    later = dataclasses.replace(report, repair=RepairTimes(None, 0, 59, 1))
    assert "with a recommendation n/a (0 faults) · without < 1 min (1 fault)" in report_text(later, slack=False)


def test_a_proposal_that_expired_while_the_bot_was_down_is_in_one_summary(
    store: SQLiteStore, standin: StandIn, client: WebClient
) -> None:
    """Its deadline on Sunday night, the bot down until Monday 10:00: at the restart the catch-up summary (the week to
    Monday 09:00) still sees it open, and the monitor run that records the expiry comes after, dated the deadline —
    a week already summarised. Counted by when its expiry was recorded, it is in the next summary, not in none."""
    deadline = datetime(2025, 3, 23, 22, tzinfo=BERLIN).timestamp()
    with store.transaction() as tx:
        tx.open_proposal(deadline - 86_400, "L_align 0.40 > 0.30 over 60 answers", expires_at=deadline)
        tx.put_monitor_state(replace(tx.get_monitor_state(), open_proposal=True, last_trigger_at=deadline - 86_400))
    assert store.claim_job(WEEKLY_JOB, "2025-03-17T08:00:00+00:00", now=0.0)  # the bot ran the week before
    clock = Clock(datetime(2025, 3, 24, 10, 0, 30, tzinfo=BERLIN))  # restarted at 10:00
    scheduler = build_scheduler(deps(store, client, clock))
    assert scheduler.catch_up() == [WEEKLY_JOB]  # the summary of the week to Monday 09:00
    assert scheduler.run_due(MONITOR_JOB)  # the 10:00 monitor run: the proposal expires
    with store.read() as conn:
        assert conn.execute("SELECT state FROM retraining_proposals").fetchall() == [("expired",)]
    clock.now = datetime(2025, 3, 31, 9, 0, 30, tzinfo=BERLIN)
    assert scheduler.run_due(WEEKLY_JOB)
    lines = [next(x for x in text.splitlines() if x.startswith("F_monitor")) for text in summaries(standin)]
    assert len(lines) == 2
    assert lines[0].endswith("this period: 1 raised, 0 approved, 0 dismissed, 0 expired")  # still open then
    assert lines[1].endswith("this period: 0 raised, 0 approved, 0 dismissed, 1 expired")


def _blue_pixels(png: bytes) -> int:
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    rgb = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(_close(rgb.getpixel((x, y)), (0x1F, 0x77, 0xB4)) for x in range(rgb.width) for y in range(rgb.height))


@pytest.mark.parametrize("kind", [FeedbackKind.LIKE, FeedbackKind.OVERRIDE])
def test_a_week_at_the_best_or_worst_loss_is_drawn_whole(kind: FeedbackKind, tmp_path: Path) -> None:
    """A week of only Likes (L_align 0 every day, the best week there is) or only Overrides (1) was drawn on the
    frame of the chart: the line hidden under the axis, half of each dot cut off, so the best week's chart looked
    nearly empty. Its line shows as much as a week at 0.5 does."""
    start = datetime(2025, 3, 17, 9, tzinfo=BERLIN)
    drawn = {}
    for answer in (kind, FeedbackKind.NEUTRAL):
        with SQLiteStore(tmp_path / f"{answer.value}.db") as store:
            for day in range(7):
                at = start.timestamp() + day * 86_400 + 3600
                surface_and_post(store, [prediction(day, at, fault_type=f"f{day}")], posted_at=at)
                with store.transaction() as tx:
                    event = FeedbackEvent(f"p{day}", "U1", answer, at + 60, f"r{day}")
                    record_feedback(tx, event, config=store.config)
            report = build_report(store, since=start, until=start + WEEK, timezone="Europe/Berlin")
        expected = {"like": 0.0, "override": 1.0, "neutral": 0.5}[answer.value]
        assert {d.loss for d in report.days if d.loss is not None} == {expected}
        drawn[answer] = _blue_pixels(render_png(report))
    assert drawn[kind] >= 0.9 * drawn[FeedbackKind.NEUTRAL], drawn


def test_report_command_reads_a_backup_without_changing_it(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``npo-bot report`` "only reads the database", yet it opened the file as the bot does, which switched a
    backup (one file, rollback journal) to WAL: a change to the file, and on read-only media, or for a file the
    user may not write, a refusal ("attempt to write a readonly database") instead of the report."""
    from bot.cli import main  # noqa: PLC0415

    with SQLiteStore(db_path) as store:
        _some_activity(store)
    copy = tmp_path / "backup.db"
    assert main(["db", "backup", str(copy), "--db", str(db_path)]) == 0
    before = copy.read_bytes()
    capsys.readouterr()
    args = _report_args("--db", str(copy), "--since", "2025-03-17T09:00", "--timezone", "Europe/Berlin")
    assert run_report(args, now=MONDAY_SLOT) == 0
    assert "override 50% (1)" in capsys.readouterr().out
    assert copy.read_bytes() == before
    assert not Path(f"{copy}-wal").exists() and not Path(f"{copy}-shm").exists()
    with SQLiteStore(copy, read_only=True) as store, store.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_the_chart_of_a_week_without_answers_says_so(db_path: Path) -> None:
    """A week nobody answered in was posted as an empty frame: nothing told it from a chart whose line failed to draw
    (its alt text said "no answers in this period", the image did not). It says so on the chart, and a week with
    answers has no such note."""
    from bot.jobs.report import chart_figure  # noqa: PLC0415

    since = datetime(2025, 3, 17, 9, tzinfo=BERLIN)
    with SQLiteStore(db_path) as store:
        quiet = build_report(store, since=since, until=MONDAY_SLOT, timezone="Europe/Berlin")
        _some_activity(store)
        busy = build_report(store, since=since, until=MONDAY_SLOT, timezone="Europe/Berlin")
    assert all(d.loss is None for d in quiet.days) and busy.loss is not None
    (ax,) = chart_figure(quiet).axes
    assert [t.get_text() for t in ax.texts] == ["no answers in this period"]
    assert _blue_pixels(render_png(quiet)) == 0  # no line, only the note (drawn in grey)
    (ax,) = chart_figure(busy).axes
    assert len(ax.texts) == 0
