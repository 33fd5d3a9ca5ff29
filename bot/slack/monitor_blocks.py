"""Block Kit for the meta-monitor: the retraining alert (why, the most misaligned keys, a small L_align chart,
Approve / Dismiss) and its resolved form. Pure functions; nothing here calls Slack."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.slack.text import escape, escaped, mrkdwn, plain, slack_time, truncate
from npo.monitor import loss_text, threshold_text

Block = dict[str, Any]

ACTION_APPROVE = "npo_retrain_approve"
ACTION_DISMISS = "npo_retrain_dismiss"
RETRAIN_ACTIONS: dict[str, bool] = {ACTION_APPROVE: True, ACTION_DISMISS: False}
ALERT_ACTIONS_BLOCK_ID = "npo_retrain_actions"
ALERT_HINT_BLOCK_ID = "npo_retrain_hint"
_BARS = "▁▂▃▄▅▆▇█"
KEY_CHARS = 80  # a key's name in the alert, escaped, at most (as in the weekly summary): five keys always fit


def expired_line(at: float) -> str:
    """The status line of an alert whose proposal expired at ``at``."""
    return f"Expired unanswered at {slack_time(at)}: not counted toward F_monitor"


def resolved_text(proposal_id: int, line: str) -> str:
    """The notification text of an alert updated with its status ``line`` (what screen readers read instead of its
    blocks): which proposal it is, then the line — the line alone did not say what was approved or expired."""
    return f"Retraining proposal #{proposal_id}: {line}"


def sparkline(values: Sequence[float | None]) -> str:
    """A one-line chart of values in [0, 1] (a gap for None): ``▁▂▅█``; the scale is fixed, 0 → ▁, 1 → █."""
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(_BARS[min(len(_BARS) - 1, max(0, int(v * len(_BARS))))])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class KeyMisalignment:
    """A key's share of overrides in the current window: its mean code, how many answers, its learned m(k)."""

    key: str
    loss: float
    answers: int
    m: float | None


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """Everything the retraining alert shows."""

    proposal_id: int
    reason: str
    loss: float | None
    n_in_window: int
    previous_loss: float | None
    n_previous: int
    threshold: float
    ph_statistic: float
    ph_threshold: float
    ph_samples: int
    drift_alarm: bool
    f_monitor: float | None
    keys: Sequence[KeyMisalignment]
    trend: Sequence[float | None]
    trend_chunk: int
    ph_peak: float | None = None  # the highest statistic since the previous run (an alarm may have come and gone)
    expires_at: float | None = None  # when the proposal expires if nobody answers it


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def alert_text(f: AlertFacts) -> str:
    return escaped(f"NPO retraining proposal #{f.proposal_id}: {f.reason}", 300)  # "L_align 0.62 > 0.30"


def alert_blocks(f: AlertFacts) -> list[Block]:
    """The alert message (≤ 50 blocks): header, why with the numbers, keys, chart, Approve / Dismiss."""
    peak = ""
    if f.ph_peak is not None and f.ph_peak > f.ph_statistic + 0.005:
        peak = f", up to {f.ph_peak:.2f} since the previous run"
    shown_loss = "n/a" if f.loss is None else loss_text(f.loss, f.threshold, digits=3)
    why = (
        f"*Why:* {escape(f.reason)}\n"
        f"• L_align over the last {f.n_in_window} answers: *{shown_loss}* "
        f"(threshold θ = {threshold_text(f.threshold)}; the {f.n_previous} answers before: "
        f"{_num(f.previous_loss, '.3f')})\n"
        f"• Page–Hinkley drift statistic: *{f.ph_statistic:.2f}*{peak} (alarm above {f.ph_threshold:g}; "
        f"{f.ph_samples} answers since the last reset){' — *alarm*' if f.drift_alarm else ''}\n"
        f"• F_monitor so far: {_num(f.f_monitor)}"
    )
    key_lines = [
        f"`{truncate(escape(k.key), KEY_CHARS)}` — L {k.loss:.2f} over {k.answers} answer(s)"
        + ("" if k.m is None else f", m(k) {k.m:.2f}")
        for k in f.keys
    ]
    chart = sparkline(f.trend)
    blocks: list[Block] = [
        {
            "type": "header",
            "block_id": "npo_retrain_header",
            "text": plain(f"Retraining proposed (#{f.proposal_id})", 150),
        },
        {"type": "section", "block_id": "npo_retrain_why", "text": mrkdwn(why)},
        {
            "type": "section",
            "block_id": "npo_retrain_keys",
            "text": mrkdwn("*Most misaligned keys in the window:*\n" + ("\n".join(key_lines) or "none")),
        },
        {
            "type": "section",
            "block_id": "npo_retrain_chart",
            "text": mrkdwn(
                f"*L_align trend* (oldest → newest, {f.trend_chunk} answers per bar, 0 ▁ … █ 1):\n`{chart or '-'}`"
            ),
        },
        {
            "type": "actions",
            "block_id": ALERT_ACTIONS_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "text": plain("Approve retraining", 75),
                    "action_id": ACTION_APPROVE,
                    "value": str(f.proposal_id),
                    "style": "primary",
                },
                {
                    "type": "button",
                    "text": plain("Dismiss", 75),
                    "action_id": ACTION_DISMISS,
                    "value": str(f.proposal_id),
                },
            ],
        },
        _hint_block(f.expires_at),
    ]
    return blocks


def _hint_block(expires_at: float | None) -> Block:
    """The hint under the buttons: what each does, and when the proposal expires if nobody answers it."""
    expiry = (
        ""
        if expires_at is None
        else f" If nobody answers, the proposal expires at {slack_time(expires_at)} without counting toward it."
    )
    return {
        "type": "context",
        "block_id": ALERT_HINT_BLOCK_ID,
        "elements": [
            mrkdwn(
                "Approve fits a new model on the logged feedback and promotes it only if it beats, on the most "
                "recent answers, both the current one and the base rate (every answer predicted at the answers' "
                "mean code), and starts learning the threshold τ again. Dismiss records that the monitor was "
                "wrong. Both count toward F_monitor." + expiry
            )
        ],
    }


def extended_line(by: str, until: float) -> str:
    """The status line of an alert whose approval by ``by`` was given up and whose deadline moved to ``until``."""
    return (
        f"The approval by <@{escape(by)}> could not be carried out and was not recorded: the proposal is open until "
        f"{slack_time(until)}"
    )


def extended_blocks(original: Sequence[Mapping[str, Any]], until: float, line: str) -> list[Block]:
    """The alert, still open, after its deadline was moved to ``until``: the same blocks and buttons, the hint under
    them naming the new deadline (it named the old one), and one status line (``line``, :func:`extended_line`) in
    place of any earlier one. Answered or expired later, :func:`resolved_blocks` drops the hint and the line."""
    kept: list[Block] = []
    for block in original:
        if block.get("block_id") == "npo_retrain_status":
            continue
        kept.append(_hint_block(until) if block.get("block_id") == ALERT_HINT_BLOCK_ID else dict(block))
    kept.append({"type": "context", "block_id": "npo_retrain_status", "elements": [mrkdwn(line)]})
    return kept[:50]


def resolved_blocks(original: Sequence[Mapping[str, Any]], line: str) -> list[Block]:
    """The alert after Approve / Dismiss (or its expiry): the same blocks without the buttons and without the hint
    under them (what each button does, and when the proposal expires if nobody answers: no longer true once it is
    answered or expired), plus one status line."""
    dropped = (ALERT_HINT_BLOCK_ID, "npo_retrain_status")
    kept = [dict(b) for b in original if b.get("type") != "actions" and b.get("block_id") not in dropped]
    kept.append({"type": "context", "block_id": "npo_retrain_status", "elements": [mrkdwn(line)]})
    return kept[:50]
