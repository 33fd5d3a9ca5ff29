"""The weekly summary flags the people whose answers need a look: one-sided answers, low trust, answers the
outcomes contradict, clicks over the rate limit; ``npo-bot report`` prints the same lines, and the refused clicks
are in the audit log (``npo-bot db export --what audit``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from jobs_testing import RELAXED_POLICY, prediction, surface_and_post
from slack_sdk import WebClient

from bot.cli import build_parser, main
from bot.jobs.cli import run_report
from bot.jobs.report import OperatorFlag, build_report, operator_flags, render_png, report_text
from bot.jobs.weekly import WEEK, post_report, run_weekly_summary
from bot.service import NpoService
from bot.standin import StandIn
from npo.trust import OperatorTrust, TrustConfig, trust_weight
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore
from storage.operators import OperatorActivity
from storage.ratelimit import ClickLimit

SLOT = datetime(2025, 3, 24, 9, 0, tzinfo=UTC)
START = (SLOT - WEEK + timedelta(hours=1)).timestamp()
HONEST, PARTNER, ABUSER, HASTY = "U0ALICE", "U0BOB", "U0MALLORY", "U0CAROL"
N = 12
OPS = "C2OPS"  # the stand-in's ops channel (tests/jobs/conftest.py; not imported: other folders have a conftest too)


def _week(db_path: Path) -> None:
    """12 recommendations, 9 real faults. Alice answers all truthfully, Bob the first six, Mallory overrides all;
    Carol likes four at once with a bucket of two. Then every outcome."""
    clock = [START]
    with SQLiteStore(db_path) as store:
        surface_and_post(store, [prediction(i, START) for i in range(N)], posted_at=START)
        service = NpoService(
            store,
            RELAXED_POLICY,
            rng=np.random.default_rng(0),
            clock=lambda: clock[0],
            click_limit=ClickLimit(per_minute=1.0, burst=2),
        )

        def click(i: int, who: str, kind: FeedbackKind) -> str:
            event = FeedbackEvent(
                f"p{i}", who, kind, clock[0], f"{who}:{i}", "reason" if kind.value == "override" else ""
            )
            return service.record_click(event, None).status

        real = [i % 4 != 3 for i in range(N)]
        for i in range(N):
            clock[0] += 60.0  # one token a minute: the three steady answerers never run out
            truthful = FeedbackKind.LIKE if real[i] else FeedbackKind.OVERRIDE
            assert click(i, HONEST, truthful) == "recorded"
            if i < 6:
                assert click(i, PARTNER, truthful) == "recorded"
            assert click(i, ABUSER, FeedbackKind.OVERRIDE) == "recorded"
        assert [click(i, HASTY, FeedbackKind.LIKE) for i in range(4)] == ["recorded"] * 2 + ["rate_limited"] * 2
        for i in range(N):
            clock[0] += 60.0
            service.record_outcome(Outcome(f"p{i}", real[i], clock[0], "test"))


def test_the_weekly_report_flags_one_sided_distrusted_and_rate_limited_people(db_path: Path) -> None:
    _week(db_path)
    with SQLiteStore(db_path) as store:
        report = build_report(store, since=SLOT - WEEK, until=SLOT, timezone="UTC")
    flagged = {f.operator: f for f in report.flagged}
    assert set(flagged) == {ABUSER, HASTY}  # the honest engineers are not flagged
    mallory = flagged[ABUSER]
    assert mallory.reasons == ("one-sided", "low trust", "disagrees with outcomes")
    assert (mallory.side, mallory.side_share, mallory.answers) == ("override", 1.0, N)
    assert mallory.others_share == pytest.approx(4 / 20)  # Alice's 3 + Bob's 1 override of the others' 20 answers
    assert mallory.weight == 0.0 and mallory.with_outcome == N and mallory.agreed == 3
    carol = flagged[HASTY]
    assert carol.reasons == ("rate-limited",) and carol.rate_limited == 2 and carol.answers == 2
    text = report_text(report)
    assert "Answers to look at (2 people):" in text
    assert (
        f"  {ABUSER}: one-sided: override 100% of 12 answers, everyone else 20%; trust weight 0.00, agreement with "
        "outcomes and peers" in text
    )
    assert "agreed with 3 of 12 outcomes" in text
    assert f"  {HASTY}: 2 clicks over the rate limit" in text


def test_a_quiet_week_flags_nobody(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        report = build_report(store, since=SLOT - WEEK, until=SLOT, timezone="UTC")
    assert report.flagged == ()
    assert "Answers to look at: none" in report_text(report)


def test_one_sided_needs_enough_answers_and_a_team_that_answers_otherwise() -> None:
    config = TrustConfig()
    few = OperatorActivity("U1", {"override": 9})
    team = OperatorActivity("U2", {"like": 20, "override": 5})
    assert operator_flags([few, team], config) == ()  # 9 answers: too few to call one-sided
    many = OperatorActivity("U1", {"override": 10})
    assert operator_flags([many, team], config)[0].reasons == ("one-sided",)
    alike = OperatorActivity("U2", {"override": 20, "like": 5})  # everyone overrides much: a noisy week, not abuse
    assert operator_flags([many, alike], config) == ()
    alone = OperatorActivity("U1", {"like": 30})  # nobody to compare with
    assert operator_flags([alone], config) == ()


def test_the_weekly_summary_post_carries_the_flags(db_path: Path, client: WebClient, standin: StandIn) -> None:
    _week(db_path)
    with SQLiteStore(db_path) as store:
        run_weekly_summary(store, client, OPS, "UTC", SLOT)
    posted = [m.text for m in standin.messages(OPS) if m.text.startswith("NPO weekly summary")]
    assert len(posted) == 1 and f"  {ABUSER}: one-sided" in posted[0] and f"  {HASTY}: 2 clicks" in posted[0]


def test_a_summary_with_hundreds_of_flagged_people_still_fits_a_slack_message(
    db_path: Path, client: WebClient, standin: StandIn
) -> None:
    """Every reason at once for 250 people (a large rota in a bad week) makes their lines about 47,000 characters,
    more than Slack keeps of a message's text (40,000, the chart's ``initial_comment`` too): the post was refused
    (or cut) and the week had no summary. The Slack text lists the worst 20 and counts the rest; the terminal
    lists everyone."""
    _week(db_path)
    heavy = [
        OperatorFlag(
            f"U0{i:09d}",
            12 + i % 7,
            "override",
            1.0,
            0.2,
            0.1,
            0.25,
            12,
            1.0,
            3,
            ("one-sided", "low trust", "disagrees with outcomes", "rate-limited"),
        )
        for i in range(250)
    ]
    rate_limited_only = OperatorFlag("U0AAAAAAAAA", 40, None, None, None, None, None, 0, 0.0, 1, ("rate-limited",))
    with SQLiteStore(db_path) as store:
        week = build_report(store, since=SLOT - WEEK, until=SLOT, timezone="UTC")
    report = replace(week, flagged=(rate_limited_only, *heavy))
    assert sum(len(line) + 1 for line in report_text(report, slack=False).splitlines()) > 40_000
    post_report(client, OPS, report, render_png(report))
    (posted,) = [m.text for m in standin.messages(OPS) if m.text.startswith("NPO weekly summary")]
    assert len(posted) <= 10_000
    listed = [line for line in posted.splitlines() if line.startswith("  U0")]
    assert len(listed) == 20 and all(": one-sided: override 100% of 18 answers" in line for line in listed)
    assert posted.endswith(
        "Answers to look at (251 people):\n" + "\n".join(listed) + "\n  … and 231 more: see `npo-bot report`"
    )
    terminal = report_text(report, slack=False)
    assert all(f"  {f.operator}: " in terminal for f in report.flagged) and "more: see" not in terminal


def test_report_command_and_audit_export_show_it(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _week(db_path)
    args = build_parser().parse_args(
        ["report", "--db", str(db_path), "--since", (SLOT - WEEK).isoformat(), "--timezone", "UTC"]
    )
    assert run_report(args, now=SLOT) == 0  # the clock pinned to the test's week
    out = capsys.readouterr().out
    assert f"  {ABUSER}: one-sided: override 100% of 12 answers" in out and f"  {HASTY}: 2 clicks over" in out
    assert main(["db", "export", "--db", str(db_path), "--what", "audit"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    refused = [line for line in lines if line["kind"] == "feedback_rate_limited"]
    assert [(r["subject"], json.loads(r["detail"])["operator"]) for r in refused] == [("p2", HASTY), ("p3", HASTY)]
    assert all(json.loads(r["detail"])["kind"] == "like" for r in refused)


def test_each_flag_starts_where_the_readme_says() -> None:
    """The README's thresholds, each at its edge: ≥ 90 % one answer, everyone else's share ≥ 30 points lower, a
    trust weight below 0.5, most of at least 5 known outcomes disagreed with; the flag names that person only."""
    config = TrustConfig()
    team = OperatorActivity("U2", {"like": 16, "override": 4})  # everyone else overrides 20 %
    assert operator_flags([OperatorActivity("U1", {"override": 9, "like": 1}), team], config)[0].operator == "U1"
    assert operator_flags([OperatorActivity("U1", {"override": 8, "like": 1, "neutral": 1}), team], config) == ()
    half = OperatorActivity("U2", {"like": 8, "override": 2})  # 20 %: 70 points below 90 %
    edge = OperatorActivity("U2", {"like": 7, "override": 3})  # 30 %: 60 points below 90 % — flagged
    close = OperatorActivity("U2", {"like": 3, "override": 7})  # 70 %: 20 points below 90 % — not
    nine = OperatorActivity("U1", {"override": 9, "like": 1})
    assert [f.operator for f in operator_flags([nine, half], config)] == ["U1"]
    assert [f.operator for f in operator_flags([nine, edge], config)] == ["U1"]
    assert operator_flags([nine, close], config) == ()
    # trust: weight below 0.5 only (mean 0.675 gives exactly 0.5 with full_agreement 0.85)
    low = OperatorActivity("U3", {"like": 1}, trust=OperatorTrust("U3", agree=13.0, disagree=7.0))
    even = OperatorActivity("U3", {"like": 1}, trust=OperatorTrust("U3", agree=27.0, disagree=13.0))
    assert operator_flags([low], config)[0].reasons == ("low trust",)
    assert trust_weight(OperatorTrust("U3", agree=27.0, disagree=13.0), config) == pytest.approx(0.5)
    assert operator_flags([even], config) == ()
    # outcomes: at least 5 known, most of them disagreed with
    assert operator_flags([OperatorActivity("U4", {"like": 5}, 5, 2.0)], config)[0].reasons == (
        "disagrees with outcomes",
    )
    assert operator_flags([OperatorActivity("U4", {"like": 4}, 4, 0.0)], config) == ()
    assert operator_flags([OperatorActivity("U4", {"like": 5}, 5, 2.5)], config) == ()  # half: not most
