"""Block Kit builders stay within Slack's limits for any input (10 kB text, emoji, multi-byte)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack.blocks import (
    Answer,
    OutcomeView,
    RecommendationView,
    digest_blocks,
    digest_fallback_text,
    digest_fit,
    digest_groups,
    fallback_text,
    grouped_digest_blocks,
    grouped_digest_fit,
    override_modal,
    recommendation_blocks,
)
from bot.slack.text import duration, slack_time, truncate
from bot.standin import limits
from npo.types import Decision, FeedbackKind, Prediction, Severity, Verdict

HUGE = "🔥ディスク" * 2000  # ~12 k characters, emoji and multi-byte
TEN_KB = "x" * 10_000


def _view(text: str, answers: int = 3, outcome: bool = False) -> RecommendationView:
    p = Prediction(
        id=("id-" + text)[:200],
        fault_type=text[:500],
        target=text[:500],
        action=text[:500],
        confidence=0.97,
        time_to_fault_s=7200,
        labels={"cluster": text[:3000], "note": text},
    )
    d = Decision(p.id, text[:500], Verdict.SURFACE, "all_rules_passed", text, 0.97, 0.1, 0.87, 0.7, 2, 0.0)
    people = tuple(Answer(f"U{i:04d}", FeedbackKind.OVERRIDE, 1.7e9, text) for i in range(answers))
    return RecommendationView(p, d, people, OutcomeView(True, 1.7e9, text) if outcome else None)


def _check_blocks(blocks: list[dict[str, Any]], max_blocks: int = 50) -> None:
    assert len(blocks) <= max_blocks
    parsed = Block.parse_all(blocks)
    assert None not in parsed
    for block in parsed:
        _no_none(block.to_dict())
    action_ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(action_ids) == len(set(action_ids))
    for b in blocks:
        assert len(b.get("block_id", "")) <= 255
        for e in b.get("elements", []) if b["type"] == "actions" else []:
            assert e.get("style") in (None, "primary", "danger")
            assert e["text"]["type"] == "plain_text" and len(e["text"]["text"]) <= 75
            assert len(e["value"]) <= 2000


def _no_none(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            assert v is not None
            _no_none(v)
    elif isinstance(value, list):
        for v in value:
            _no_none(v)


@pytest.mark.parametrize("text", ["disk", TEN_KB, HUGE, "<@U123> & <!channel>"])
@pytest.mark.parametrize(("answers", "outcome"), [(0, False), (3, False), (60, False), (2, True)])
def test_recommendation_message_is_valid(text: str, answers: int, outcome: bool) -> None:
    _check_blocks(recommendation_blocks(_view(text, answers, outcome)))


def test_buttons_have_like_override_neutral() -> None:
    blocks = recommendation_blocks(_view("disk"))
    labels = [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert any("Like" in t for t in labels) and any("Override" in t for t in labels)
    assert any("Neutral" in t for t in labels)


def test_user_text_cannot_mention_anyone() -> None:
    blocks = recommendation_blocks(_view("<!channel>"))
    text = str([b for b in blocks if b["type"] != "actions"])  # button values are data, never rendered
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


@pytest.mark.parametrize("text", ["disk", HUGE])
def test_digest_is_valid(text: str) -> None:
    views = [_view(text, 1) for _ in range(200)]
    _check_blocks(digest_blocks(views, why=text))


@pytest.mark.parametrize("text", ["disk", HUGE])
def test_override_modal_is_valid(text: str) -> None:
    modal = override_modal(_view(text).prediction, channel="C1", message_ts="1.2")
    View(**modal).validate_json()
    _check_blocks(modal["blocks"])


@pytest.mark.parametrize("limit", [1, 2, 5, 75, 3000])
def test_truncate_never_exceeds_and_keeps_characters_whole(limit: int) -> None:
    for text in (HUGE, "👩‍👩‍👧‍👦" * 100, "a&amp;" * 1000):
        cut = truncate(text, limit)
        assert len(cut) <= limit
        cut.encode("utf-8")


def _answers_text(view: RecommendationView) -> str:
    blocks = recommendation_blocks(view)
    return next(b for b in blocks if b.get("block_id") == "npo_answers")["text"]["text"]


def _with_answers(*answers: Answer, outcome: OutcomeView | None = None) -> RecommendationView:
    view = _view("disk", answers=0)
    return RecommendationView(view.prediction, view.decision, answers, outcome)


def test_long_override_reasons_do_not_push_a_later_answer_out() -> None:
    """Two long reasons (each within the modal's 2000 characters) used to fill the 3000-character section, so the
    third answer was counted on the button but never listed and the second reason was cut mid-sentence."""
    alice = "Already handled: Disk r12 was swapped during the 02:00 maintenance window.\n" * 25
    bob = "Already handled: the SMART errors are from the old disk, see CHG-4411. " * 20
    view = _with_answers(
        Answer("U0ALICE", FeedbackKind.OVERRIDE, 1.7e9, alice[:2000]),
        Answer("U0BOB", FeedbackKind.OVERRIDE, 1.7e9 + 60, bob[:2000]),
        Answer("U0MALLORY", FeedbackKind.LIKE, 1.7e9 + 120),
    )
    lines = _answers_text(view).split("\n")
    assert len(lines) == 3  # one line per answer (a multi-line reason is kept on its line), nothing hidden
    assert [line.split(" by ")[1].split(" at ")[0] for line in lines] == ["<@U0ALICE>", "<@U0BOB>", "<@U0MALLORY>"]
    for line in lines[:2]:
        reason = line.split(" — ", 1)[1]
        assert len(reason) <= 200 and reason.endswith("…") and reason.startswith("Already handled: ")
    assert "Like (1)" in str(recommendation_blocks(view)) and "Override (2)" in str(recommendation_blocks(view))


def test_when_answers_do_not_fit_the_oldest_are_dropped_and_counted() -> None:
    people = [Answer(f"U{i:04d}", FeedbackKind.OVERRIDE, 1.7e9 + i, f"reason {i} " + "x" * 2000) for i in range(15)]
    people.append(Answer("U0LAST", FeedbackKind.NEUTRAL, 1.8e9))
    text = _answers_text(_with_answers(*people))
    assert len(text) <= 3000 and not text.endswith("…")  # whole lines only: the section itself is never cut
    header, *lines = text.split("\n")
    hidden = len(people) - len(lines)
    assert hidden > 0 and header == f"…and {hidden} earlier answers not shown"
    shown = [line.split(" by <@")[1].split(">")[0] for line in lines]
    assert shown == [a.operator for a in people[hidden:]]  # the newest answers, oldest of them first
    assert shown[-1] == "U0LAST" and "<!date^1800000000^" in lines[-1]
    assert lines[-1].endswith("at <!date^1800000000^{date_short_pretty} {time}|2027-01-15 08:00 UTC>")
    for line in lines[:-1]:
        assert line.endswith("…") and len(line.split(" — ", 1)[1]) <= 200


def test_at_most_twenty_answer_lines_and_the_rest_counted() -> None:
    people = [Answer(f"U{i:04d}", FeedbackKind.LIKE, 1.7e9 + i) for i in range(21)]
    header, *lines = _answers_text(_with_answers(*people)).split("\n")
    assert header == "…and 1 earlier answer not shown" and len(lines) == 20 and "<@U0020>" in lines[-1]


def test_skip_note_invites_an_answer_only_while_the_buttons_are_shown() -> None:
    skip = Answer("system", FeedbackKind.SKIPPED, 1.7e9)
    for outcome in (None, OutcomeView(True, 1.7e9 + 60, "slack")):
        blocks = recommendation_blocks(_with_answers(skip, outcome=outcome))
        note = next(b for b in blocks if b.get("block_id") == "npo_skipped")["elements"][0]["text"]
        has_buttons = any(b["type"] == "actions" for b in blocks)
        assert "counted as *skipped*" in note
        assert has_buttons is (outcome is None)
        assert ("An answer now still counts" in note) is has_buttons


def test_the_notification_text_cannot_mention_anyone() -> None:
    """The ``text`` that goes with the blocks (notifications, screen readers) is mrkdwn too: a target or label from a
    tenant's workload reading ``<!channel>`` notified the whole channel, where the blocks escape it."""
    text = fallback_text(_view("<!channel> & <@U0BOSS>"))
    names = re.sub(r"<!date\^\d+\^[^|<>]*\|[^<>]*>", "", text)  # the fault time's date token is the bot's own
    assert "<" not in names and ">" not in names
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in text


def test_the_notification_text_says_what_where_and_when() -> None:
    """The notification text, which push notifications and screen readers use instead of the blocks, named the
    fault, target and action but not when the fault is predicted: ``[warning] disk on disk: disk (p=0.97)``."""
    view = _view("disk")
    p = view.prediction
    token = slack_time(p.received_at + 7200)
    assert fallback_text(view) == f"[{p.severity.value}] disk on disk: disk (p=0.97) · fault in 2.0 h (at {token})"
    # posted 1.5 h after it arrived: in how long from the post; posted after the fault time: that it passed
    assert fallback_text(replace(view, posted_at=p.received_at + 5400)).endswith(f"· fault in 30 min (at {token})")
    passed = fallback_text(replace(view, posted_at=p.received_at + 9000))
    assert passed.endswith(f"· predicted fault time passed (at {token})")
    # no time to fault: nothing said about it
    unknown = replace(view, prediction=replace(p, time_to_fault_s=None))
    assert fallback_text(unknown).endswith("disk (p=0.97)")


def test_the_largest_recommendation_message_is_one_slack_accepts() -> None:
    """Every field at its largest and full of characters that escape to 4–5 (names, id, key, reason, labels, 30
    answers with long reasons, a skip, an outcome): within each block's limits and within the text Slack takes across
    a message's blocks (``msg_blocks_too_long``), as the stand-in checks them."""
    amp = "&<>" * 166
    p = Prediction(
        id=("&" * 200), fault_type=amp, target=amp, action=amp, confidence=0.9, labels={f"&{i}": amp for i in range(50)}
    )
    d = Decision(p.id, amp, Verdict.SURFACE, "all_rules_passed", "&" * 3000, 0.9, 0.1, 0.8, 0.5, 1, 0.0)
    answers = [Answer("&" * 200, FeedbackKind.OVERRIDE, 1.7e9 + i, "&" * 3000) for i in range(30)]
    answers.append(Answer("system", FeedbackKind.SKIPPED, 1.7e9))
    views = [RecommendationView(p, d, tuple(answers), o) for o in (None, OutcomeView(True, 1.7e9, "&" * 200))]
    views.append(RecommendationView(p, d, tuple(answers), posted_at=1.8e9, closed_at=1.7e9))  # late, alert resolved
    for view in views:
        blocks = recommendation_blocks(view)
        _check_blocks(blocks)
        assert limits.check_blocks(blocks, max_blocks=limits.MAX_MESSAGE_BLOCKS) == []
        assert limits.blocks_text_chars(blocks) <= limits.MAX_BLOCKS_TEXT_CHARS


@pytest.mark.parametrize("name", ["disk", "&<>" * 166])
def test_a_digest_lists_what_fits_and_counts_the_rest(name: str) -> None:
    views = [_view(name, 1) for _ in range(300)]
    views = [
        RecommendationView(replace(v.prediction, id=f"p{i}"), replace(v.decision, prediction_id=f"p{i}"))
        for i, v in enumerate(views)
    ]
    blocks = digest_blocks(views, why="alert storm")
    _check_blocks(blocks)
    assert limits.blocks_text_chars(blocks) <= limits.MAX_BLOCKS_TEXT_CHARS
    listed = [pid for b in blocks if b["type"] == "section" for pid in re.findall(r"id `(p\d+)`", b["text"]["text"])]
    assert listed == [f"p{i}" for i in range(len(listed))]  # the first ones, in order
    (note,) = [b["elements"][0]["text"] for b in blocks if b.get("block_id") == "npo_digest_more"]
    assert note.startswith(f"…and {300 - len(listed)} more recommendations not shown")


@pytest.mark.parametrize("name", ["disk", "&<>" * 166])
def test_digest_fit_is_what_one_digest_lists_in_full(name: str) -> None:
    """The delivery worker posts ``digest_fit`` of the pending recommendations per digest and the rest in the next
    one: that many are all listed, in order, within Slack's limits and with no "not shown" note, one more would not
    fit, and the header counts what the message lists and says how many follow."""
    views = [
        RecommendationView(replace(v.prediction, id=f"p{i}"), replace(v.decision, prediction_id=f"p{i}"))
        for i, v in enumerate(_view(name, 1) for _ in range(300))
    ]
    fit = digest_fit(views)
    assert 0 < fit < 300
    blocks = digest_blocks(views[:fit], why="alert storm", following=300 - fit)
    _check_blocks(blocks)
    assert limits.blocks_text_chars(blocks) <= limits.MAX_BLOCKS_TEXT_CHARS
    listed = [pid for b in blocks if b["type"] == "section" for pid in re.findall(r"id `(p\d+)`", b["text"]["text"])]
    assert listed == [f"p{i}" for i in range(fit)]
    assert not [b for b in blocks if b.get("block_id") == "npo_digest_more"]
    header = blocks[0]["text"]["text"]
    assert header == f":package: *{fit} recommendation(s) in one digest* — alert storm · {300 - fit} more to follow"
    assert any(b.get("block_id") == "npo_digest_more" for b in digest_blocks(views[: fit + 1], why="alert storm"))
    assert "to follow" not in str(digest_blocks(views[:fit], why="alert storm")[0])
    assert digest_fit(views[:1]) == 1 and digest_fit([]) == 0


@pytest.mark.parametrize("name", ["disk", "&<>" * 166])
def test_a_storm_too_big_to_list_one_by_one_is_one_counted_line_per_kind(name: str) -> None:
    """1,000 recommendations of 3 kinds (fault type and action) and one of a fourth (p500): one line per kind, in the
    order each first appears, counting its recommendations with the highest severity and confidence and naming
    targets (the rest counted); the kind seen once keeps its own line with its id. The message holds all four
    lines within Slack's limits and its header counts 1,001 recommendations of 4 kinds."""
    base = _view(name, 1)
    views = []
    for i in range(1001):
        kind = 3 if i == 500 else i % 3
        p = replace(
            base.prediction,
            id=f"p{i}",
            fault_type=f"{name}{kind}",
            action=f"drain{kind}",
            target=f"r{i}-n{i}",
            confidence=0.5 + (i % 50) / 100,
            severity=Severity.CRITICAL if i == 6 else Severity.WARNING,
        )
        views.append(RecommendationView(p, replace(base.decision, prediction_id=p.id, confidence=p.confidence)))
    assert digest_fit(views) < len(views)
    groups = digest_groups(views)
    assert [len(g.members) for g in groups] == [334, 334, 332, 1]  # p500 is the fourth kind
    assert sorted(i for g in groups for i in g.members) == list(range(1001))
    assert groups[0].line.startswith(":red_circle: *334 × ") and "(p up to 0.99)" in groups[0].line
    assert "`r0-n0`, `r3-n3`" in groups[0].line and re.search(r"… \+\d+ more targets$", groups[0].line)
    assert "id `p500`" in groups[3].line and "×" not in groups[3].line
    assert grouped_digest_fit(groups) == 4 and grouped_digest_fit([]) == 0
    blocks = grouped_digest_blocks(groups, why="alert storm")
    _check_blocks(blocks)
    assert limits.blocks_text_chars(blocks) <= limits.MAX_BLOCKS_TEXT_CHARS
    header = blocks[0]["text"]["text"]
    assert header.startswith(":package: *1001 recommendation(s) of 4 kind(s) in one digest* — alert storm")
    assert "to follow" not in header and "to follow" in str(grouped_digest_blocks(groups[:2], why="x", following=5))


def test_a_closed_recommendation_is_shown_closed_in_its_message_and_in_digests() -> None:
    """Closed before its message or digest went out (the outbox waited for Slack): its alert resolved → a line
    saying so, every button kept (an answer still counts); an outcome → the outcome, no buttons. A digest line says
    how each ended; a grouped digest's line counts those of its kind already closed."""
    open_view = _view("disk", 0)
    resolved = replace(open_view, closed_at=1.7e9)
    confirmed = replace(open_view, outcome=OutcomeView(True, 1.7e9, "api"))
    actions = [
        [b["block_id"] for b in recommendation_blocks(v) if b["type"] == "actions"]
        for v in (open_view, resolved, confirmed)
    ]
    assert actions == [["npo_feedback", "npo_outcome"], ["npo_feedback", "npo_outcome"], []]
    assert "Its alert resolved" in str(recommendation_blocks(resolved))
    assert fallback_text(resolved).endswith("· closed: alert resolved")
    assert fallback_text(confirmed).endswith("· closed: confirmed fault") and "closed" not in fallback_text(open_view)
    lines = str(digest_blocks([open_view, resolved, confirmed], why="x"))
    assert lines.count("closed: *alert resolved*") == 1 and lines.count("closed: *confirmed fault*") == 1
    views = [replace(v, prediction=replace(v.prediction, id=f"p{i}")) for i, v in enumerate([open_view, resolved])]
    (group,) = digest_groups(views)
    assert group.line.endswith(":checkered_flag: 1 closed already")
    (group,) = digest_groups([replace(v, closed_at=1.7e9) for v in views])
    assert group.line.endswith("all closed already")
    (group,) = digest_groups([open_view, open_view])
    assert "closed" not in group.line


def test_an_override_reason_shows_control_characters_as_escapes_and_mrkdwn_escaped() -> None:
    """The reason typed in the Override modal is free text: a terminal escape or a bell in it reached the message
    raw. Shown as its escape now; ``&``, ``<``, ``>`` stay escaped, line breaks fold into the line."""
    view = _with_answers(Answer("U0ALICE", FeedbackKind.OVERRIDE, 1.7e9, "Other: \x1b[2J\x07 <!here> & co\nsee \x7f"))
    text = _answers_text(view)
    assert "Other: \\x1b[2J\\x07 &lt;!here&gt; &amp; co see \\x7f" in text, text
    assert not any(c in text for c in ("\x1b", "\x07", "\x7f", "<!here>")), text


def test_a_digest_s_notification_text_names_the_first_kinds_and_counts_the_rest() -> None:
    views = [_view(name) for name in ("a", "b", "c", "d", "e")]
    assert (
        digest_fallback_text(views)
        == "5 recommendations in one digest: a → a on a, b → b on b, c → c on c and 2 more kinds"
    )
    assert (
        digest_fallback_text(views[:4])
        == "4 recommendations in one digest: a → a on a, b → b on b, c → c on c and 1 more kind"
    )
    assert digest_fallback_text(views[:1]) == "1 recommendation in one digest: a → a on a"
    long = digest_fallback_text([_view("x" * 500 + "<!channel>")])
    assert "<!channel>" not in long and len(long) < 300  # each name shortened to MAX_LIST_NAME


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (45, "45 s"),
        (720, "12 min"),
        (21_600, "6.0 h"),
        (302_400, "3.5 d"),
        (364 * 86_400, "364.0 d"),
        (2.1 * 365 * 86_400, "2.1 y"),
        (999 * 365 * 86_400, "999.0 y"),
        (1e300, "over 1,000 y"),  # was a number of days of 295 digits, in the headline and the notification
    ],
)
def test_durations_read_as_people_read_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
