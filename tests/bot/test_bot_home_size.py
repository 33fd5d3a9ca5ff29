"""The App Home stays within the 250 kB Slack accepts for a view, counted as the client sends it (JSON, non-ASCII
escaped), whatever its lists hold: every name, id, key and reason at its longest, in emoji and other scripts."""

from __future__ import annotations

import re

import pytest

from bot.insights import HomeData
from bot.jobs.report import ArmSummary
from bot.slack.blocks import Answer, Dashboard, RecommendationView
from bot.slack.home_blocks import home_view
from bot.standin import limits
from npo.policy_types import Mute
from npo.types import MAX_ID_LEN, MAX_TEXT_LEN, Decision, FeedbackKind, Prediction, Verdict
from storage.monitoring import OverrideLine, Proposal


def _recommendation(i: int, ch: str) -> RecommendationView:
    name = f"{i}" + ch * MAX_TEXT_LEN
    p = Prediction(
        id=(f"{i}-" + ch * MAX_ID_LEN)[:MAX_ID_LEN],
        fault_type=name[:MAX_TEXT_LEN],
        target=name[:MAX_TEXT_LEN],
        action=name[:MAX_TEXT_LEN],
        confidence=0.9,
        time_to_fault_s=600,
    )
    d = Decision(p.id, p.target, Verdict.SURFACE, "all_rules_passed", p.target, 0.9, 0.1, 0.8, 0.7, 2, 0.0)
    return RecommendationView(p, d, (Answer("U0ALICE", FeedbackKind.LIKE, 1.7e9),))


def _full_home(ch: str) -> HomeData:
    recent = tuple(_recommendation(i, ch) for i in range(10))
    dashboard = Dashboard(0.3, 100, {"like": 0.5, "override": 0.5}, {0.5: 0.4}, {"predictions": 10}, recent)
    mutes = tuple(
        Mute(key=(f"{i}|" + ch * MAX_TEXT_LEN)[:MAX_TEXT_LEN], since=1.7e9, until=1.8e9, by="U0ALICE", reason=ch * 500)
        for i in range(200)
    )
    overrides = tuple(
        OverrideLine(p.id, "U0BOB", 1.7e9, ch * 2000, p.target, p.fault_type, p.target)
        for p in (v.prediction for v in recent[:8])
    )
    arms = tuple(ArmSummary(t, 0.5, 0.4, 0.6, 10) for t in (0.5, 0.6, 0.7, 0.8, 0.9))
    proposal = Proposal(1, 1.7e9, ch * 3000, "open", None, None, None, 1.8e9)
    return HomeData(dashboard, (0.3,) * 20, 5, 0.2, arms, 0.5, overrides, proposal, mutes)


@pytest.mark.parametrize("ch", ["🔥", "ディ", "é", "&", "x"])
def test_a_full_home_tab_fits_slacks_view_size_and_counts_what_it_leaves_off(ch: str) -> None:
    """Full lists of longest names in emoji were sent as ~430 kB of JSON: Slack refuses over 250 kB."""
    view = home_view(_full_home(ch))
    assert limits.view_bytes(view) <= limits.MAX_VIEW_BYTES
    assert limits.check_view(view) == []
    text = "\n".join(str(b["text"]["text"]) for b in view["blocks"] if b["type"] == "section")
    notes = " ".join(e["text"] for b in view["blocks"] if b["type"] == "context" for e in b["elements"])
    listed = len(re.findall(r"^:mute: ", text, flags=re.MULTILINE))
    more = re.search(r"…and (\d+) more muted keys not shown", notes)
    assert more is not None and listed + int(more.group(1)) == 200 and listed > 0
    assert "*Latest recommendations*" in text and "Open retraining proposal #1" in text


def test_a_small_home_tab_is_listed_in_full() -> None:
    data = _full_home("x")
    small = HomeData(**{**{f: getattr(data, f) for f in data.__dataclass_fields__}, "mutes": data.mutes[:3]})
    view = home_view(small)
    text = "\n".join(str(b["text"]["text"]) for b in view["blocks"] if b["type"] == "section")
    assert len(re.findall(r"^:mute: ", text, flags=re.MULTILINE)) == 3 and "more muted keys" not in str(view)
