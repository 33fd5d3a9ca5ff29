"""The App Home view: L_align now and its trend, the τ posteriors with intervals, recent overrides with their
reasons, the open retraining proposal, mutes in force and the latest recommendations. Pure; ≤ 100 blocks. A list
that does not fit its blocks is cut between lines and the rest counted (``…and 108 more muted keys not shown``).

Slack refuses a view larger than 250 kB (``views.publish``: ``view_too_large``), and the Home tab is then not shown
at all. A full Home of long non-ASCII names is larger: the client sends the view as JSON with every non-ASCII
character escaped (``\\ud83d\\ude00``, 12 bytes for one emoji), so 100 blocks of text could take over 1 MB.
:func:`home_view` keeps the view within :data:`HOME_VIEW_BYTES` as sent by listing fewer muted keys, overrides and
recommendations (each list cut between lines and the rest counted, as for too many blocks)."""

from __future__ import annotations

import json
from typing import Any

from bot.insights import HomeData
from bot.slack.blocks import (
    MAX_ANSWER_REASON,
    MAX_ANSWER_WHO,
    MAX_HOME_BLOCKS,
    MAX_LIST_NAME,
    MAX_SECTION,
    MAX_SHOWN_ID,
    _pack_lines,
    status_lines,
)
from bot.slack.monitor_blocks import sparkline
from bot.slack.text import escape, escaped, mrkdwn, plain, slack_time, truncate

Block = dict[str, Any]
MUTE_BLOCKS = 10  # sections for the muted keys (the note counting those left off included)
OVERRIDE_BLOCKS = 5
MAX_VIEW_BYTES = 250_000  # Slack refuses a larger view (views.publish: view_too_large)
HOME_VIEW_BYTES = 240_000  # the view as sent (JSON, non-ASCII escaped) at most: a margin below Slack's limit
_LIST_SHARES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)  # of each list's text, tried in turn until the view fits


def _name(text: str) -> str:
    """A fault type, target or action in a list line: shortened to ``MAX_LIST_NAME`` characters, escaped."""
    return escape(truncate(text, MAX_LIST_NAME))


def _who(user: str) -> str:
    return f"<@{escape(truncate(user, MAX_ANSWER_WHO))}>"


def _reason(reason: str) -> str:
    return escape(truncate(" ".join(reason.split()), MAX_ANSWER_REASON))


def _trend_line(data: HomeData) -> str:
    now = data.dashboard.alignment_loss
    before = data.previous_loss
    if now is None:
        return "*L_align trend*: no answers yet"
    if before is None:
        arrow = ""
    elif now < before - 0.01:
        arrow = f" · falling from {before:.3f} :chart_with_downwards_trend:"
    elif now > before + 0.01:
        arrow = f" · rising from {before:.3f} :chart_with_upwards_trend:"
    else:
        arrow = f" · steady (was {before:.3f})"
    return f"*L_align trend*{arrow}\n`{sparkline(data.trend)}` ({data.trend_chunk} answers per bar, 0 ▁ … █ 1)"


def view_bytes(view: dict[str, Any]) -> int:
    """The size of ``view`` as the Slack client sends it: JSON with every non-ASCII character escaped (the larger
    of its encodings, so a view within it is within Slack's limit however Slack counts)."""
    return len(json.dumps(view))


def home_blocks(data: HomeData, share: float = 1.0) -> list[Block]:
    """The Home tab's blocks; ``share``: of each list's (mutes, overrides, recommendations) text at most, the rest
    left off and counted (:func:`home_view` lowers it until the view fits :data:`HOME_VIEW_BYTES`)."""
    d = data.dashboard
    blocks: list[Block] = [
        {"type": "header", "block_id": "npo_home_header", "text": plain("NPO — alignment dashboard", 150)},
        {"type": "section", "block_id": "npo_home_status", "text": mrkdwn("\n".join(status_lines(d)))},
        {"type": "section", "block_id": "npo_home_trend", "text": mrkdwn(_trend_line(data))},
    ]
    arms = "\n".join(
        f"τ = {a.threshold:.2f}: {a.mean:.3f} [{a.low:.3f}, {a.high:.3f}] · {a.pulls} answers + outcomes"
        for a in data.arms
    )
    f_monitor = "n/a" if data.f_monitor is None else f"{data.f_monitor:.2f}"
    blocks.append(
        {
            "type": "section",
            "block_id": "npo_home_tau",
            "text": mrkdwn(
                f"*Threshold τ posteriors* (mean [95 % interval] · all time, the answers to the recommendations "
                f"surfaced at that τ + the outcomes of the predictions it suppressed)\n{arms}\n*F_monitor*: {f_monitor}"
            ),
        }
    )
    if data.proposal is not None and data.proposal_approved_by is not None:
        p, by = data.proposal, data.proposal_approved_by
        text = (
            f":hourglass_flowing_sand: *Retraining proposal #{p.id}* ({escape(p.reason)}) approved"
            f"{f' by {_who(by)}' if by else ''}: the new model is being fitted and compared; the result follows in the "
            "ops channel."
        )
    elif data.proposal is not None and data.proposal_expired_at is not None:
        p = data.proposal
        text = (
            f"*Retraining*: proposal #{p.id} ({escape(p.reason)}) expired unanswered at "
            f"{slack_time(data.proposal_expired_at)}: it can no longer be approved or dismissed, and does not count "
            "toward F_monitor. The meta-monitor raises a new alert if the drift persists."
        )
    elif data.proposal is not None:
        p = data.proposal
        deadline = "" if p.expires_at is None else f" It expires unanswered at {slack_time(p.expires_at)}."
        text = (
            f":rotating_light: *Open retraining proposal #{p.id}* since {slack_time(p.opened_at)}: {escape(p.reason)}\n"
            f"Approve or Dismiss it on the alert in the ops channel.{deadline}"
        )
    else:
        text = "*Retraining*: no open proposal."
    blocks.append({"type": "section", "block_id": "npo_home_proposal", "text": mrkdwn(text)})
    if data.mutes:
        lines = [
            f":mute: `{escaped(m.key, MAX_SHOWN_ID)}` until {slack_time(m.until)} by {_who(m.by)}"
            + (f" — {_reason(m.reason)}" if m.reason else "")
            for m in data.mutes
        ]
        blocks += _pack_lines(
            ["*Muted keys*", *lines],
            "npo_home_mutes_",
            MUTE_BLOCKS,
            noun="muted key",
            where="every mute and unmute: `npo-bot db export --what audit`",
            budget=int(MAX_SECTION * MUTE_BLOCKS * share),
        )
    blocks.append({"type": "divider", "block_id": "npo_home_div1"})
    overrides = [
        f":no_entry: {_who(o.operator)} on *{_name(o.fault_type)}* `{_name(o.target)}` ({slack_time(o.at)}): "
        f"{_reason(o.reason) or '_no reason_'} · id `{escaped(o.prediction_id, MAX_SHOWN_ID)}`"
        for o in data.overrides
    ]
    blocks += _pack_lines(
        ["*Recent overrides*", *(overrides or ["none yet"])],
        "npo_home_overrides_",
        OVERRIDE_BLOCKS,
        noun="override",
        budget=int(MAX_SECTION * OVERRIDE_BLOCKS * share),
    )
    blocks.append({"type": "divider", "block_id": "npo_home_div2"})
    recent = [
        f"*{_name(v.prediction.fault_type)}* on `{_name(v.prediction.target)}` → {_name(v.prediction.action)} · "
        f"{v.decision.verdict.value} · {len(v.answers)} answer(s) · id `{escaped(v.prediction.id, MAX_SHOWN_ID)}`"
        for v in d.recent
    ]
    room = MAX_HOME_BLOCKS - len(blocks)
    blocks += _pack_lines(
        ["*Latest recommendations*", *(recent or ["none yet"])],
        "npo_home_recent_",
        room,
        noun="recommendation",
        budget=int(MAX_SECTION * room * share),
    )
    return blocks[:MAX_HOME_BLOCKS]


def home_view(data: HomeData) -> dict[str, Any]:
    """The ``home`` view for ``views.publish``, within :data:`HOME_VIEW_BYTES` as sent: every list in full when it
    fits, else less of each (half, a quarter, …), the rest counted, until it does."""
    for share in _LIST_SHARES:
        view = {"type": "home", "blocks": home_blocks(data, share)}
        if view_bytes(view) <= HOME_VIEW_BYTES:
            break
    return view
