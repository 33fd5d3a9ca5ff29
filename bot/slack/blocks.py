"""Block Kit builders: the recommendation message, its updated form after a click, the override modal and the
digest message (the App Home is :mod:`bot.slack.home_blocks`). Pure functions of their inputs; nothing here calls
Slack.

Every builder respects Slack's limits whatever the input (10 kB descriptions, emoji, multi-byte text): a message
has ≤ 50 blocks, section text ≤ 3000 characters, fields ≤ 2000, button text ≤ 75, button value ≤ 2000,
``action_id``/``block_id`` ≤ 255, and action_ids are unique within a message. Button styles are ``primary`` or
``danger`` only. Long text is truncated with an ellipsis, never rejected; a list that does not fit (labels, answers,
digest lines, mutes) is cut between items and the rest counted (``…and 12 more``), never cut silently. A message's
blocks hold at most ``MAX_MESSAGE_TEXT`` characters of text in all (Slack refuses longer ones: ``msg_blocks_too_long``).
Digests are the exception to counting: the delivery worker lists only what fits one message (``digest_fit``) and
posts the rest in the next digest, since a recommendation it marks sent must have been shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.slack.text import duration, escape, escaped, mrkdwn, outcome_source, plain, slack_time, truncate
from npo.policy_base import TURNED_DOWN_REASONS
from npo.types import Decision, FeedbackKind, Prediction, Severity

Block = dict[str, Any]

ACTION_LIKE = "npo_like"
ACTION_OVERRIDE = "npo_override"
ACTION_NEUTRAL = "npo_neutral"
ACTION_CONFIRM_FAULT = "npo_confirm_fault"
ACTION_FALSE_ALARM = "npo_false_alarm"
FEEDBACK_ACTIONS: dict[str, FeedbackKind] = {
    ACTION_LIKE: FeedbackKind.LIKE,
    ACTION_OVERRIDE: FeedbackKind.OVERRIDE,
    ACTION_NEUTRAL: FeedbackKind.NEUTRAL,
}
OUTCOME_ACTIONS: dict[str, bool] = {ACTION_CONFIRM_FAULT: True, ACTION_FALSE_ALARM: False}
FEEDBACK_BLOCK_ID = "npo_feedback"
OUTCOME_BLOCK_ID = "npo_outcome"

OVERRIDE_CALLBACK_ID = "npo_override_modal"
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "reason"
DETAILS_BLOCK_ID = "details"
DETAILS_ACTION_ID = "details"
CORRECTIVE_BLOCK_ID = "corrective_action"
CORRECTIVE_ACTION_ID = "corrective_action"
FALSE_POSITIVE, WRONG_ACTION = TURNED_DOWN_REASONS  # these two turn a recommendation down (the blast radius)
OVERRIDE_REASONS: dict[str, str] = {
    "false_positive": FALSE_POSITIVE,
    "wrong_action": WRONG_ACTION,
    "already_handled": "Already handled",
    "maintenance": "Maintenance",
    "other": "Other",
}

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_BUTTON_TEXT = 75
MAX_VALUE = 2000
MAX_ID = 255
MAX_FALLBACK_TEXT = 3000
MAX_ANSWER_LINES = 20
MAX_ANSWER_REASON = 200  # characters of an answer's reason shown in the message (the full text stays stored)
MAX_ANSWER_WHO = 80
# Slack refuses a message whose blocks hold too much text in all (``msg_blocks_too_long``): the figure is undocumented,
# about 13,000 characters (reported in bolt-js#2509), so messages keep below 12,000 (the stand-in's limit).
MAX_MESSAGE_TEXT = 12_000
_END_OF_CALENDAR = 253_402_300_800  # 10000-01-01 00:00 UTC, in Unix seconds
MAX_SUMMARY_NAME = 900  # escaped characters of a fault type, target or action in a summary: all three fit 3000
MAX_SHOWN_ID = 1000  # escaped characters of an id or a key shown in a message
MAX_SHOWN_REASON = 500  # escaped characters of a decision's reason in the message's context line
MAX_LABEL_KEY = 100  # escaped characters of a label's name in the context line
MAX_LABEL_VALUE = 300  # escaped characters of a label's value in the context line
LATE_POST_S = 600.0  # a message posted this long after its prediction arrived says so (``npo_late``)
MAX_LIST_NAME = 80  # characters of a fault type, target or action in a list line (digest, notification text)
DIGEST_TEXT = 10_000  # characters of the digest's list (header and hint apart), within MAX_MESSAGE_TEXT

_SEVERITY_ICON = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":large_blue_circle:",
}
_KIND_ICON = {
    FeedbackKind.LIKE: ":thumbsup:",
    FeedbackKind.OVERRIDE: ":no_entry:",
    FeedbackKind.NEUTRAL: ":neutral_face:",
    FeedbackKind.SKIPPED: ":zzz:",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """One person's current (effective) answer on a recommendation."""

    operator: str
    kind: FeedbackKind
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OutcomeView:
    real_fault: bool
    at: float
    source: str


@dataclass(frozen=True, slots=True)
class RecommendationView:
    """What a recommendation message shows: the prediction, the decision, the answers so far, the outcome,
    ``posted_at``, when its message was (or is being) posted: None while unknown, and ``closed_at``, when it was
    closed without an outcome (its alert resolved without saying whether the fault was real): None while open."""

    prediction: Prediction
    decision: Decision
    answers: Sequence[Answer] = field(default_factory=tuple)
    outcome: OutcomeView | None = None
    posted_at: float | None = None
    closed_at: float | None = None

    @property
    def closed(self) -> bool:
        """Whether nothing is left to act on: an outcome was recorded, or the alert resolved without one."""
        return self.outcome is not None or self.closed_at is not None


def _button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": plain(text, MAX_BUTTON_TEXT),
        "action_id": action_id[:MAX_ID],
        "value": truncate(value, MAX_VALUE, suffix=""),
    }
    if style in ("primary", "danger"):
        button["style"] = style
    return button


def _count_more(hidden: int, noun: str) -> str:
    return f"… +{hidden} more {noun}{'' if hidden == 1 else 's'}"


def _joined(items: Sequence[str], budget: int, *, noun: str, sep: str = ", ") -> str:
    """``items`` joined by ``sep`` if they fit ``budget`` characters, else the first ones that fit and
    ``… +N more <noun>s`` counting the rest (whole items only)."""
    text = sep.join(items)
    if len(text) <= budget:
        return text
    room = budget - len(sep) - len(_count_more(len(items), noun))  # the count at its longest
    shown: list[str] = []
    used = 0
    for item in items:
        used += len(item) + (len(sep) if shown else 0)
        if used > room:
            break
        shown.append(item)
    return sep.join([*shown, _count_more(len(items) - len(shown), noun)])


def _fault_at(p: Prediction) -> str:
    """When the fault is predicted, as an absolute time (`` (at <!date^…>)``), so a post or an update read hours
    after the prediction arrived (a Slack outage, a requeue) still says when; empty when unknown or
    beyond the calendar (a lead of 1e300 s: no date to give)."""
    if p.time_to_fault_s is None:
        return ""
    at = p.received_at + p.time_to_fault_s
    return f" (at {slack_time(at)})" if 0 <= at < _END_OF_CALENDAR else ""


def _late_note(view: RecommendationView) -> list[Block]:
    """A context line when the message went out ``LATE_POST_S`` or more after the prediction arrived (the outbox
    waited out a Slack outage, a requeue): how late, since the lead in the summary counts from the arrival, and
    whether the predicted fault time had passed by then. Its first post and every update say the same."""
    p = view.prediction
    if view.posted_at is None or view.posted_at - p.received_at < LATE_POST_S:
        return []
    note = (
        f":hourglass: Posted *{duration(view.posted_at - p.received_at)}* after the prediction arrived "
        f"({slack_time(p.received_at)}): the time to fault above counts from its arrival."
    )
    if p.time_to_fault_s is not None and p.received_at + p.time_to_fault_s <= view.posted_at:
        note += " The predicted fault time had passed when this was posted."
    return [{"type": "context", "block_id": "npo_late", "elements": [mrkdwn(note, MAX_SECTION)]}]


def _summary_blocks(view: RecommendationView) -> list[Block]:
    """The headline (severity, fault type, target, time to fault, action), the numbers, a context line and, for a
    message posted late, a note saying so.

    Each name is shortened to ``MAX_SUMMARY_NAME`` escaped characters, so the recommended action is always shown
    (a 500-character target full of ``&`` used to push it out of the section); labels that do not fit are counted.
    """
    p, d = view.prediction, view.decision
    icon = _SEVERITY_ICON.get(p.severity, "")
    title = (
        f"{icon} *{escape(p.severity.value.upper())}* · *{escaped(p.fault_type, MAX_SUMMARY_NAME)}* on "
        f"`{escaped(p.target, MAX_SUMMARY_NAME)}`\n"
        f"Predicted fault in *{duration(p.time_to_fault_s)}*{_fault_at(p)} · "
        f"recommended action: *{escaped(p.action, MAX_SUMMARY_NAME)}*"
    )
    tau = "-" if d.threshold is None else f"{d.threshold:.2f}"
    fields = [
        mrkdwn(f"*Confidence p(s)*\n{d.confidence:.2f}", MAX_FIELD),
        mrkdwn(f"*Score R(s)*\n{d.score:.2f} (m={d.misalignment:.2f})", MAX_FIELD),
        mrkdwn(f"*Threshold τ*\n{tau}", MAX_FIELD),
        mrkdwn(f"*Key*\n`{escaped(d.key, MAX_SHOWN_ID)}`", MAX_FIELD),
    ]
    context = f"id `{escaped(p.id, MAX_SHOWN_ID)}` · {escaped(d.reason, MAX_SHOWN_REASON)}"
    if p.labels:
        labels = [
            f"{escaped(k, MAX_LABEL_KEY, one_line=True)}={escaped(v, MAX_LABEL_VALUE, one_line=True)}"
            for k, v in sorted(p.labels.items())
        ]
        context += " · " + _joined(labels, MAX_SECTION - len(context) - 3, noun="label")
    return [
        {"type": "section", "block_id": "npo_summary", "text": mrkdwn(title, MAX_SECTION)},
        {"type": "section", "block_id": "npo_numbers", "fields": fields},
        {"type": "context", "block_id": "npo_context", "elements": [mrkdwn(context, MAX_SECTION)]},
        *_late_note(view),
    ]


def _answer_line(a: Answer) -> str:
    """One answer on one line: the reason's whitespace collapsed and cut to ``MAX_ANSWER_REASON`` characters."""
    who = "no answer (skipped)" if a.operator == "system" else f"<@{escape(truncate(a.operator, MAX_ANSWER_WHO))}>"
    reason = escape(truncate(" ".join(a.reason.split()), MAX_ANSWER_REASON))
    reason = f" — {reason}" if reason else ""
    return f"{_KIND_ICON.get(a.kind, '')} *{a.kind.value}* by {who} at {slack_time(a.at)}{reason}"


def _hidden_line(hidden: int) -> str:
    return f"…and {hidden} earlier answer{'' if hidden == 1 else 's'} not shown"


def _answer_lines(answers: Sequence[Answer]) -> list[str]:
    """The newest answers (last in ``answers``) that fit one section, oldest first, after a line counting the rest.

    Older answers are dropped first, whole lines only, so the newest answer is always listed and no line is cut.
    """
    reserve = len(_hidden_line(len(answers))) + 1  # room for the "earlier answers" line, whatever it will say
    budget = MAX_SECTION - reserve
    shown: list[str] = []
    used = 0
    for a in reversed(answers):
        if len(shown) == MAX_ANSWER_LINES:
            break
        line = truncate(_answer_line(a), budget)  # a line is ~400 characters at most: a guard, never cuts
        if shown and used + 1 + len(line) > budget:
            break
        used += len(line) + (1 if shown else 0)
        shown.append(line)
    shown.reverse()
    hidden = len(answers) - len(shown)
    return ([_hidden_line(hidden)] if hidden > 0 else []) + shown


def _count(answers: Sequence[Answer], kind: FeedbackKind) -> str:
    n = sum(1 for a in answers if a.kind is kind)
    return f" ({n})" if n else ""


CONFIRMED_ICON = ":white_check_mark:"
FALSE_ALARM_ICON = ":information_source:"
CLOSED_ICON = ":checkered_flag:"


def _state_note(view: RecommendationView) -> str:
    """How a closed recommendation ended, for its notification text and its digest line (``""`` while open)."""
    if view.outcome is not None:
        return "confirmed fault" if view.outcome.real_fault else "false alarm"
    return "" if view.closed_at is None else "alert resolved"


def recommendation_blocks(view: RecommendationView) -> list[Block]:
    """The recommendation message: summary, numbers, who answered, Like/Override/Neutral and outcome buttons.

    Once an outcome is known the buttons are replaced by the outcome line (nothing left to answer). Once its alert
    resolved without saying whether the fault was real (``closed_at``) a line says so; every button stays: whether
    the recommendation was worth showing is still worth an answer (an alert that cleared by itself is the false
    alarm an Override teaches best), and the outcome can still be recorded. This holds for a message posted after
    it was closed (the outbox waited out Slack) as for an update.
    """
    pid = view.prediction.id
    blocks = _summary_blocks(view)
    lines = _answer_lines(view.answers)
    if lines:
        blocks.append({"type": "section", "block_id": "npo_answers", "text": mrkdwn("\n".join(lines), MAX_SECTION)})
    skip = next((a for a in view.answers if a.operator == "system" and a.kind is FeedbackKind.SKIPPED), None)
    if skip is not None:
        note = f":zzz: Nobody answered in time: counted as *skipped* at {slack_time(skip.at)}."
        if view.outcome is None:  # the answer buttons are still shown (an outcome replaces them, below)
            note += " An answer now still counts and replaces the skip."
        blocks.append({"type": "context", "block_id": "npo_skipped", "elements": [mrkdwn(note, MAX_SECTION)]})
    if view.outcome is not None:
        o = view.outcome
        verdict = f"{CONFIRMED_ICON} Confirmed fault" if o.real_fault else f"{FALSE_ALARM_ICON} False alarm"
        text = f"{verdict} · recorded {slack_time(o.at)} via {outcome_source(o.source)}"
        blocks.append({"type": "context", "block_id": "npo_resolved", "elements": [mrkdwn(text, MAX_SECTION)]})
        return blocks[:MAX_MESSAGE_BLOCKS]
    if view.closed_at is not None:
        text = (
            f"{CLOSED_ICON} Its alert resolved {slack_time(view.closed_at)} without saying whether the fault was "
            "real: closed. An answer still counts, and whether it was a real fault can still be recorded."
        )
        blocks.append({"type": "context", "block_id": "npo_closed", "elements": [mrkdwn(text, MAX_SECTION)]})
    a = view.answers
    blocks.append(
        {
            "type": "actions",
            "block_id": FEEDBACK_BLOCK_ID,
            "elements": [
                _button(f"👍 Like{_count(a, FeedbackKind.LIKE)}", ACTION_LIKE, pid, "primary"),
                _button(f"✋ Override{_count(a, FeedbackKind.OVERRIDE)}", ACTION_OVERRIDE, pid, "danger"),
                _button(f"😐 Neutral{_count(a, FeedbackKind.NEUTRAL)}", ACTION_NEUTRAL, pid),
            ],
        }
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": OUTCOME_BLOCK_ID,
            "elements": [
                _button("Confirmed fault", ACTION_CONFIRM_FAULT, pid),
                _button("False alarm", ACTION_FALSE_ALARM, pid),
            ],
        }
    )
    return blocks[:MAX_MESSAGE_BLOCKS]


COMPACT_TEXT = 80  # characters of each free text (names, key, the decision's reason) in the compact rendering


def compact_view(view: RecommendationView) -> RecommendationView:
    """The same recommendation with its free texts cut short, for when Slack refuses the full message
    (``invalid_blocks``, ``msg_blocks_too_long``): the messages keep within Slack's limits as NPO counts them
    (characters), but Slack's own counting of some text (emoji, other scripts) is not documented. Fault type,
    target, action, key and the decision's reason are cut to :data:`COMPACT_TEXT` characters, labels and the
    answers' reasons left out (every answer is still listed and counted); the prediction id stays whole, since the
    buttons carry it."""
    p, d = view.prediction, view.decision
    prediction = replace(
        p,
        fault_type=truncate(p.fault_type, COMPACT_TEXT),
        target=truncate(p.target, COMPACT_TEXT),
        action=truncate(p.action, COMPACT_TEXT),
        labels={},
    )
    decision = replace(d, key=truncate(d.key, COMPACT_TEXT), reason=truncate(d.reason, COMPACT_TEXT))
    answers = tuple(replace(a, reason="") for a in view.answers)
    return replace(view, prediction=prediction, decision=decision, answers=answers)


COMPACT_MESSAGE_TEXT = 300  # characters of a plain message's notification text shown in its compact rendering
COMPACT_NOTE = "Shown in short: Slack refused this message in full."


def compact_message_blocks(text: str, blocks: Sequence[Mapping[str, Any]]) -> list[Block]:
    """A plain message (a retraining alert, its update) in short, for when Slack refuses its blocks
    (``invalid_blocks``, ``msg_blocks_too_long``; see :func:`compact_view`): its notification ``text`` (the
    bot's own mrkdwn, cut to :data:`COMPACT_MESSAGE_TEXT` characters), its buttons (``actions`` blocks) unchanged so
    it can still be answered, and a line saying it is shortened."""
    kept: list[Block] = [{"type": "section", "block_id": "npo_compact", "text": mrkdwn(text, COMPACT_MESSAGE_TEXT)}]
    kept += [dict(b) for b in blocks if b.get("type") == "actions"][: MAX_MESSAGE_BLOCKS - 2]
    kept.append({"type": "context", "block_id": "npo_compact_note", "elements": [mrkdwn(COMPACT_NOTE)]})
    return kept


def _fault_due(view: RecommendationView) -> str:
    """When the fault is predicted, for the notification text: in how long and at what time (``· fault in 6.0 h (at
    <!date^…>)``). The lead counts from the prediction's arrival, as the headline's; for a message posted
    ``LATE_POST_S`` or more after it, from the post (``· predicted fault time passed (at …)`` once it had), since a
    notification has no room for the late note. Empty when the time to fault is unknown."""
    p = view.prediction
    if p.time_to_fault_s is None:
        return ""
    lead = p.time_to_fault_s
    if view.posted_at is not None and view.posted_at - p.received_at >= LATE_POST_S:
        lead -= view.posted_at - p.received_at
    if lead <= 0:
        return f" · predicted fault time passed{_fault_at(p)}"
    return f" · fault in {duration(lead)}{_fault_at(p)}"


def fallback_text(view: RecommendationView) -> str:
    """The notification text (``text`` argument) that goes with the blocks, which screen readers read instead of
    them: what, where, what to do and when (``[critical] disk_failure on r12-n04: drain (p=0.97) · fault in 6.0 h (at
    <!date^…>)``). mrkdwn, so the prediction's names are escaped (a target reading ``<!channel>`` must not notify
    the channel)."""
    p = view.prediction
    names = (truncate(name, MAX_LIST_NAME) for name in (p.fault_type, p.target, p.action))
    text = escape("[{}] {} on {}: {} (p={:.2f})".format(p.severity.value, *names, p.confidence)) + _fault_due(view)
    state = _state_note(view)
    return f"{text} · closed: {state}" if state else text


DIGEST_TEXT_KINDS = 3  # kinds a digest's notification text names; the rest are counted


def digest_fallback_text(views: Sequence[RecommendationView]) -> str:
    """The notification text of a digest of ``views`` (what screen readers read instead of its blocks): how many,
    and what — the first kinds (fault type and action) with their target, or how many targets, the rest counted:
    ``5 recommendations in one digest: 3 × disk_failure → drain on 3 targets, psu_failure → failover on pdu14-52 and
    1 more kind``. mrkdwn, so the names are escaped."""
    kinds: dict[tuple[str, str], list[str]] = {}
    for v in views:
        kinds.setdefault((v.prediction.fault_type, v.prediction.action), []).append(v.prediction.target)
    parts = []
    for (fault, action), targets in list(kinds.items())[:DIGEST_TEXT_KINDS]:
        what = f"{truncate(fault, MAX_LIST_NAME)} → {truncate(action, MAX_LIST_NAME)}"
        distinct = list(dict.fromkeys(targets))
        where = truncate(distinct[0], MAX_LIST_NAME) if len(distinct) == 1 else f"{len(distinct)} targets"
        parts.append(f"{len(targets)} × {what} on {where}" if len(targets) > 1 else f"{what} on {where}")
    more = len(kinds) - len(parts)
    if more:
        parts.append(f"{more} more kind{'s' if more > 1 else ''}")
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)
    count = f"{len(views)} recommendation{'s' if len(views) != 1 else ''} in one digest"
    return escape(f"{count}: {listed}" if listed else count)


def override_modal(prediction: Prediction, *, channel: str, message_ts: str) -> dict[str, Any]:
    """The override modal: a required reason from a fixed list, optional details and corrective action.

    ``private_metadata`` carries the prediction id and the message to update (JSON, ≤ 3000 characters).
    """
    metadata = json.dumps({"prediction_id": prediction.id, "channel": channel, "ts": message_ts})
    options = [{"text": plain(label, 75), "value": value} for value, label in OVERRIDE_REASONS.items()]
    summary = (
        f"Override *{escaped(prediction.action, MAX_SUMMARY_NAME)}* for "
        f"*{escaped(prediction.fault_type, MAX_SUMMARY_NAME)}* on `{escaped(prediction.target, MAX_SUMMARY_NAME)}`"
    )
    return {
        "type": "modal",
        "callback_id": OVERRIDE_CALLBACK_ID,
        "title": plain("Override", 24),
        "submit": plain("Record override", 24),
        "close": plain("Cancel", 24),
        "private_metadata": metadata[:3000],
        "blocks": [
            {"type": "section", "block_id": "npo_modal_summary", "text": mrkdwn(summary, MAX_SECTION)},
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "label": plain("Reason", 2000),
                "element": {
                    "type": "static_select",
                    "action_id": REASON_ACTION_ID,
                    "placeholder": plain("Why is this recommendation wrong?", 150),
                    "options": options,
                },
            },
            {
                "type": "input",
                "block_id": DETAILS_BLOCK_ID,
                "optional": True,
                "label": plain("Details", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": DETAILS_ACTION_ID,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
            {
                "type": "input",
                "block_id": CORRECTIVE_BLOCK_ID,
                "optional": True,
                "label": plain("What should be done instead?", 2000),
                "element": {"type": "plain_text_input", "action_id": CORRECTIVE_ACTION_ID, "max_length": 500},
            },
        ],
    }


def _sections(lines: Sequence[str], max_sections: int, budget: int) -> tuple[list[str], int]:
    """The texts of at most ``max_sections`` sections (≤ 3000 characters each, ``budget`` in all) holding the first
    lines that fit, whole and in order; and how many lines they hold."""
    texts: list[str] = []
    current = ""
    used = placed = 0
    for raw in lines:
        line = truncate(raw, MAX_SECTION)
        joins = bool(current) and len(current) + 1 + len(line) <= MAX_SECTION
        grow = len(line) + (1 if joins else 0)
        if used + grow > budget or (not joins and len(texts) + (1 if current else 0) >= max_sections):
            break
        if joins:
            current = f"{current}\n{line}"
        else:
            if current:
                texts.append(current)
            current = line
        used += grow
        placed += 1
    if current:
        texts.append(current)
    return texts, placed


def _more_line(hidden: int, noun: str, where: str) -> str:
    return f"…and {hidden} more {noun}{'' if hidden == 1 else 's'} not shown" + (f" ({where})" if where else "")


def _pack_lines(
    lines: Sequence[str],
    block_prefix: str,
    max_blocks: int,
    *,
    noun: str = "line",
    where: str = "",
    budget: int | None = None,
) -> list[Block]:
    """Lines packed into as few sections as fit 3000 characters each: at most ``max_blocks`` blocks and ``budget``
    characters of text in all. Lines that do not fit are left off (the last ones, whole) and counted in a last
    context block: ``…and 12 more muted keys not shown (where)`` — the count is of lines, never of sections."""
    cap = MAX_SECTION * max_blocks if budget is None else budget
    texts, placed = _sections(lines, max_blocks, cap)
    note = ""
    if placed < len(lines):
        reserve = len(_more_line(len(lines), noun, where))  # the longest the note can be
        texts, placed = _sections(lines, max_blocks - 1, cap - reserve)
        note = _more_line(len(lines) - placed, noun, where)
    blocks: list[Block] = [
        {"type": "section", "block_id": f"{block_prefix}{i}", "text": mrkdwn(text)} for i, text in enumerate(texts)
    ]
    if note:
        blocks.append({"type": "context", "block_id": f"{block_prefix}more", "elements": [mrkdwn(note)]})
    return blocks


def _digest_line(v: RecommendationView) -> str:
    p, d = v.prediction, v.decision
    return (
        f"{_SEVERITY_ICON.get(p.severity, '')} *{escape(truncate(p.fault_type, MAX_LIST_NAME))}* on "
        f"`{escape(truncate(p.target, MAX_LIST_NAME))}` → *{escape(truncate(p.action, MAX_LIST_NAME))}* "
        f"(p={d.confidence:.2f}, R={d.score:.2f}) · id `{escaped(p.id, MAX_SHOWN_ID)}`{_closed_mark(v)}"
    )


def _closed_mark(v: RecommendationView) -> str:
    """The end of a digest line of a recommendation closed before its digest was posted (an outcome, or its alert
    resolved: the outbox waited for Slack or for the digest): how it ended, so the digest does not list it as
    open. ``""`` while it is open."""
    state = _state_note(v)
    if not state:
        return ""
    icon = CLOSED_ICON if v.outcome is None else CONFIRMED_ICON if v.outcome.real_fault else FALSE_ALARM_ICON
    return f" · {icon} closed: *{state}*"


DIGEST_SECTIONS = MAX_MESSAGE_BLOCKS - 2  # sections of digest lines: the header and the hint take the other two


def digest_fit(views: Sequence[RecommendationView]) -> int:
    """How many of ``views``, from the first, one digest message lists in full: whole lines, in order, within
    ``DIGEST_TEXT`` characters and ``DIGEST_SECTIONS`` sections — at least one when there are any (a line is cut to
    3,000 characters, well within the budget). ``digest_blocks`` of that many lists them all, with no "…not shown"
    note; the delivery worker posts the rest in the next digest."""
    _, placed = _sections([_digest_line(v) for v in views], DIGEST_SECTIONS, DIGEST_TEXT)
    return max(placed, min(1, len(views)))


def _digest_hint(where: str) -> Block:
    """The digest's closing context line: what a digest is not (buttons, skips), and where to look further."""
    text = (
        f"A digest has no buttons, and its recommendations are not counted as skipped: {where}; outcomes can be "
        "reported to `/api/v1/outcomes`."
    )
    return {"type": "context", "block_id": "npo_digest_hint", "elements": [mrkdwn(text)]}


def digest_blocks(views: Sequence[RecommendationView], *, why: str, following: int = 0) -> list[Block]:
    """One message for many recommendations (channel cap or alert storm): one line each, names shortened to
    ``MAX_LIST_NAME`` characters; the header counts them and, with ``following``, says how many more follow in the
    next digest(s). Lines that do not fit the message (``DIGEST_TEXT`` characters: Slack refuses a message with much
    more text in its blocks) are left off and counted, with where to find them — the delivery worker passes only
    what fits (``digest_fit``), so its digests list every recommendation they count."""
    header = f":package: *{len(views)} recommendation(s) in one digest* — {escaped(why, 500)}"
    if following > 0:
        header += f" · {following} more to follow"
    blocks: list[Block] = [{"type": "section", "block_id": "npo_digest_header", "text": mrkdwn(header)}]
    blocks += _pack_lines(
        [_digest_line(v) for v in views],
        "npo_digest_",
        DIGEST_SECTIONS,
        noun="recommendation",
        where="every one: `npo-bot db export --what decisions`",
        budget=DIGEST_TEXT,
    )
    blocks.append(_digest_hint("`/npo why &lt;id&gt;` explains one"))  # < and > are mrkdwn control characters
    return blocks[:MAX_MESSAGE_BLOCKS]


MAX_GROUP_TARGETS = 400  # characters of a digest group's list of targets (the rest counted)
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class DigestGroup:
    """One line of a grouped digest: every recommendation of one kind (fault type and action), counted, with its
    targets. ``members``: the indexes of those recommendations in the views the groups were made from."""

    line: str
    members: tuple[int, ...]


def digest_groups(views: Sequence[RecommendationView]) -> list[DigestGroup]:
    """The views grouped by kind (fault type and action), in the order each kind first appears: one line per kind
    with how many, the highest severity and confidence, and the targets (the first that fit, the rest counted); a
    kind seen once keeps its own line (:func:`digest_blocks`' line, with its id) — for a storm larger than one
    digest can list one by one (:func:`digest_fit`)."""
    kinds: dict[tuple[str, str], list[int]] = {}
    for i, v in enumerate(views):
        kinds.setdefault((v.prediction.fault_type, v.prediction.action), []).append(i)
    groups: list[DigestGroup] = []
    for (fault, action), members in kinds.items():
        if len(members) == 1:  # a kind seen once: its own line, with its id
            groups.append(DigestGroup(_digest_line(views[members[0]]), tuple(members)))
            continue
        shown = [views[i] for i in members]
        severity = max((v.prediction.severity for v in shown), key=_SEVERITY_RANK.__getitem__)
        top = max(v.decision.confidence for v in shown)
        targets = [f"`{escape(truncate(t, MAX_LIST_NAME))}`" for t in dict.fromkeys(v.prediction.target for v in shown)]
        line = (
            f"{_SEVERITY_ICON.get(severity, '')} *{len(members)} × {escape(truncate(fault, MAX_LIST_NAME))}* → "
            f"*{escape(truncate(action, MAX_LIST_NAME))}* (p up to {top:.2f}) on "
            f"{_joined(targets, MAX_GROUP_TARGETS, noun='target')}"
        )
        closed = sum(1 for v in shown if v.closed)
        if closed:  # closed before the digest went out (an outcome, a resolved alert): not open any more
            line += f" · {CLOSED_ICON} {'all' if closed == len(shown) else closed} closed already"
        groups.append(DigestGroup(line, tuple(members)))
    return groups


def grouped_digest_fit(groups: Sequence[DigestGroup]) -> int:
    """How many of ``groups``, from the first, one digest message lists (at least one when there are any)."""
    _, placed = _sections([g.line for g in groups], DIGEST_SECTIONS, DIGEST_TEXT)
    return max(placed, min(1, len(groups)))


def grouped_digest_blocks(groups: Sequence[DigestGroup], *, why: str, following: int = 0) -> list[Block]:
    """One message for a storm: one line per kind of recommendation (:func:`digest_groups`), the header counting
    the recommendations and kinds it covers and, with ``following``, how many more follow in the next digest(s)."""
    count = sum(len(g.members) for g in groups)
    header = (
        f":package: *{count} recommendation(s) of {len(groups)} kind(s) in one digest* — {escaped(why, 500)} · "
        "too many to list one by one"
    )
    if following > 0:
        header += f" · {following} more to follow"
    blocks: list[Block] = [{"type": "section", "block_id": "npo_digest_header", "text": mrkdwn(header)}]
    blocks += _pack_lines([g.line for g in groups], "npo_digest_", DIGEST_SECTIONS, noun="kind", budget=DIGEST_TEXT)
    blocks.append(_digest_hint("`npo-bot db export --what decisions` lists every one"))
    return blocks[:MAX_MESSAGE_BLOCKS]


def ephemeral_refusal_text() -> str:
    return "Sorry, only the on-call responders for this channel can answer NPO recommendations. Nothing was recorded."


# Told instead of a refusal when who may answer could not be looked up (no member list known yet): the person may
# well be a responder, and the same click a little later can count.
LOOKUP_UNAVAILABLE_TEXT = (
    "NPO could not check just now whether you may answer (looking up its on-call responders in Slack failed or took "
    "too long), so nothing was recorded. Please click again in a minute."
)


def lookup_refused_text(fix: str, *, may: str = "answer", nothing: str = "Nothing was recorded") -> str:
    """Told instead of :data:`LOOKUP_UNAVAILABLE_TEXT` when Slack refused the responder look-up for a reason no retry
    changes (``fix``: the setting, scope or token, as :class:`bot.slack.responders.LookupUnavailable` names it): a
    click a minute later would be refused again, so the person is told whom to ask rather than to click again."""
    return (
        f"NPO cannot check whether you may {may}: Slack refuses its look-up of the on-call responders "
        f"({escape(fix)}). {nothing}; trying again will not help until whoever runs NPO fixes this."
    )


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Numbers for the App Home and ``/npo status``."""

    alignment_loss: float | None
    samples: int
    rates: Mapping[str, float]
    tau_means: Mapping[float, float]
    counts: Mapping[str, int]
    recent: Sequence[RecommendationView] = ()


def status_lines(d: Dashboard) -> list[str]:
    loss = "n/a" if d.alignment_loss is None else f"{d.alignment_loss:.3f}"
    rates = ", ".join(f"{k} {v:.0%}" for k, v in d.rates.items()) or "no answers yet"
    taus = ", ".join(f"τ={t:.1f}: {m:.2f}" for t, m in d.tau_means.items())
    return [
        f"*Alignment loss* L_align: {loss} over the last {d.samples} answer(s)",
        f"*Answers*: {rates}",
        f"*Threshold posteriors* (mean reward): {taus}",
        f"*Predictions*: {d.counts.get('predictions', 0)} · surfaced {d.counts.get('decisions_surface', 0)} · "
        f"suppressed {d.counts.get('decisions_suppress', 0)} · blocked {d.counts.get('decisions_block', 0)} · "
        f"digest {d.counts.get('decisions_digest', 0)}",
        f"*Outbox*: {d.counts.get('outbox_pending', 0)} pending · {d.counts.get('outbox_failed', 0)} failed",
    ]
