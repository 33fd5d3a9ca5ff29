"""The ``/npo`` slash command, answered in the ack itself (an ephemeral reply) — except ``summary``:

* ``status`` — alignment loss, answer rates, τ posteriors, queue;
* ``summary`` — the weekly report's text for the last 7 days (``npo-bot report`` in the terminal); keys are
  shortened in it, and should it still not fit in a reply, whole lines are left off and the reply says how many.
  Building it reads the week's answers (about a second with 20,000, several with 100,000), longer than Slack waits
  for the ack (3 s), so the ack only says it is being worked on (:data:`SUMMARY_WORKING`) and the report is built
  after it (:meth:`~bot.slack.deps.SlackDeps.spawn`) and posted to the command's ``response_url`` as an ephemeral
  reply — one of the five posts Slack allows there within 30 minutes —, or, should building it fail, one line that
  says so (:data:`SUMMARY_FAILED`); a post Slack fails (5xx) or that cannot reach it is tried again, briefly
  (:data:`SUMMARY_RETRY_S`), and logged once should it still not arrive. Only the invocation's id is stored (as a
  mute's is): the same request again (a replay of its signed bytes, an envelope Slack sends again) builds and posts
  nothing and is told so (:data:`SUMMARY_REPLAYED`); a report lost to a stop is asked for again. A command with no
  ``response_url`` gets the report in the ack, as before;
* ``why <recommendation id>`` — score, τ, the rule behind the verdict, the key's history and mutes;
* ``mute <key> <duration> [reason]`` — a Safety Policy rule that blocks the key's predictions until it expires
  (responders only; audited); ``unmute <key>`` lifts it;
  a key or an id with spaces is written in double quotes or backticks (``"disk_failure|restart pod|…"``);
* ``help`` — usage. Anything else gets the usage too.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.insights import Why, summary_text, why
from bot.service import NpoService
from bot.slack.blocks import MAX_ANSWER_REASON, MAX_SHOWN_REASON, lookup_refused_text, status_lines
from bot.slack.deps import SlackDeps
from bot.slack.log_redaction import redact
from bot.slack.payloads import replay_key
from bot.slack.responders import LookupUnavailable
from bot.slack.text import escape, escaped, truncate
from npo.types import MAX_TEXT_LEN, InvalidRecord
from storage.monitoring import key_known
from storage.mutes import muted_until

log = logging.getLogger(__name__)
# slack-sdk's webhook client logs, at DEBUG, each request's URL and body: a response_url lets anyone post to the
# channel for half an hour, and one outside hooks.slack.com (GovSlack's, a stand-in's) escapes the log redaction.
# Its own logger, never below INFO, keeps those lines out; what goes wrong is logged here.
_WEBHOOK_LOG = logging.getLogger("bot.slack.command.response_url")
_WEBHOOK_LOG.setLevel(logging.INFO)

MAX_REPLY = 3000
MAX_WHY_NAME = 300  # escaped characters of an id, a fault type, a target or an action in ``/npo why``
MAX_WHY_KEY = 600  # escaped characters of a key in ``/npo why``
MAX_MUTED_KEY = 200  # escaped characters of the key named first in the mute reply (the unmute hint has it whole)
MIN_MUTE_S = 60.0
MAX_MUTE_S = 30 * 86_400.0
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION_PART = r"(\d{1,9}(?:\.\d{1,9})?)\s*(sec|min|hr|s|m|h|d|w)"
_DURATION_RE = re.compile(rf"^(?:{_DURATION_PART})+$", re.IGNORECASE)
_PART_RE = re.compile(_DURATION_PART, re.IGNORECASE)
_QUOTES = {'"': '"', "“": "”", "`": "`"}  # opening → closing

# Slack mrkdwn: <, > and & are control characters, written &lt; &gt; &amp; even inside `code`.
USAGE = (
    "*NPO* learns from your clicks which fault recommendations to surface.\n"
    "`/npo status` — alignment loss, answer rates, threshold posteriors, queue\n"
    "`/npo summary` — the last 7 days: L_align by day, answer rates, precision/recall, MTTR, τ posteriors\n"
    "`/npo why &lt;recommendation id&gt;` — score, τ, the rule behind the decision, the key's history\n"
    "`/npo mute &lt;key&gt; &lt;duration&gt; [reason]` — block a scenario key's recommendations for a while "
    "(duration like `30m`, `4h`, `2d`, `1h30m`; at most 30 d; a key with spaces in double quotes)\n"
    "`/npo unmute &lt;key&gt;` — lift a mute\n"
    "`/npo help` — this message\n"
    "On a recommendation: *Like* (right call), *Override* (wrong; give a reason), *Neutral*; "
    "*Confirmed fault* / *False alarm* record what really happened."
)


def parse_duration(text: str) -> float:
    """``30m``, ``4h``, ``2d``, ``1w``, ``90s``, or several units largest first, ``1h30m``, ``2d12h`` → seconds.
    Raises ValueError naming what is wrong."""
    text = text.strip()
    if not _DURATION_RE.match(text):
        raise ValueError(
            f"`{escape(truncate(text, 40))}` is not a duration; use a number and a unit, like `30m`, `4h`, `2d` "
            "or `1h30m`"
        )
    parts = [(float(n), _UNITS[unit.lower()]) for n, unit in _PART_RE.findall(text)]
    sizes = [size for _, size in parts]
    if sizes != sorted(set(sizes), reverse=True):
        raise ValueError(
            f"`{escape(truncate(text, 40))}` repeats a unit or puts a smaller one first; write it largest first, "
            "each unit once, like `1d12h` or `1h30m`"
        )
    seconds = sum(n * size for n, size in parts)
    if not MIN_MUTE_S <= seconds <= MAX_MUTE_S:
        raise ValueError("a mute lasts between 1 minute and 30 days")
    return seconds


def first_arg(text: str) -> tuple[str, str]:
    """The first argument of ``text`` and the text after it: a word, or a text in double quotes or backticks (as
    keys are shown), which may hold spaces — an action, a fault type or an id may."""
    text = text.lstrip()
    close = _QUOTES.get(text[:1])
    if close is not None and (end := text.find(close, 1)) >= 1:
        return text[1:end], text[end + 1 :]  # ``""`` is an empty argument, not a key of two quote marks
    parts = text.split(maxsplit=1)
    return (parts[0] if parts else ""), (parts[1] if len(parts) == 2 else "")


def _arg(text: str) -> str:
    """``text`` as an argument of ``/npo`` that :func:`first_arg` reads back whole: bare when it is one word not
    starting with a quote mark, else in double quotes — or, when it holds one itself (an action may), in curly
    quotes or backticks."""
    if len(text.split()) == 1 and text == text.strip() and text[:1] not in _QUOTES:
        return text
    for opening, closing in _QUOTES.items():
        if closing not in text:
            return f"{opening}{text}{closing}"
    return f'"{text}"'  # holds every closing mark: no quoting reads it back whole


def fit_lines(text: str, limit: int = MAX_REPLY, *, see: str = "`npo-bot report`") -> str:
    """``text`` if it fits in ``limit`` characters, else its first lines and a last line saying how many more there
    are (and where to read them: ``see``) — never a line cut in half, never a silent cut."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    size = sum(len(line) + 1 for line in lines)  # characters of lines[:keep] with their newlines
    for keep in range(len(lines) - 1, 0, -1):
        size -= len(lines[keep]) + 1
        more = len(lines) - keep
        note = f"… ({more} more line{'s' if more != 1 else ''}: see {see})"
        if size + len(note) <= limit:
            return "\n".join([*lines[:keep], note])
    # Not even the first line fits whole: it is shortened (visibly) rather than left off, so the reply says something.
    more = len(lines) - 1
    note = f"\n… ({more} more line{'s' if more != 1 else ''}: see {see})" if more else ""
    if len(note) + 2 > limit:  # no room even for the note and a character of the line
        return truncate(text, limit)
    return truncate(lines[0], limit - len(note)) + note


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _who(operator: str) -> str:
    return "(skip timeout)" if operator == "system" else f"<@{escape(operator)}>"


def _reason(reason: str) -> str:
    """`` — reason`` on one line, shortened as on the recommendation's message (the full text stays stored): its
    line breaks and blank runs collapsed, so a multi-line reason adds no lines to the reply."""
    text = " ".join(reason.split())
    return f" — {escape(truncate(text, MAX_ANSWER_REASON))}" if text else ""


def why_text(w: Why, now: float) -> str:
    p, d, h = w.prediction, w.decision, w.history
    tau = "none (blocked before the bandit)" if d.threshold is None else f"{d.threshold:.2f} (arm {d.arm})"
    lines = [
        f"*Recommendation `{escaped(p.id, MAX_WHY_NAME)}`*: {escaped(p.fault_type, MAX_WHY_NAME)} on "
        f"`{escaped(p.target, MAX_WHY_NAME)}` → *{escaped(p.action, MAX_WHY_NAME)}* "
        f"({p.severity.value}, p = {p.confidence:.2f}), decided {_when(d.decided_at)}",
        f"*Verdict*: {d.verdict.value} · rule `{escaped(d.rule, MAX_WHY_NAME)}` — "
        f"{escaped(d.reason, MAX_SHOWN_REASON)}",
        f"*Score* R(s) = p(s)·(1 − m) = {d.confidence:.2f} · (1 − {d.misalignment:.2f}) = *{d.score:.2f}* · "
        f"*τ* = {tau}",
    ]
    answers = ", ".join(f"{k} {n}" for k, n in sorted(h.answers.items())) or "none"
    verdicts = ", ".join(f"{v} {n}" for v, n in sorted(h.verdicts.items())) or "none"
    m_now = "no state yet" if h.m is None else f"m(k) now {h.m:.2f} after {h.n} update(s)"
    lines.append(f"*Key* `{escaped(h.key, MAX_WHY_KEY)}`: {m_now} · answers: {answers} · decisions: {verdicts}")
    for mute, lifted in w.mutes:
        state = (
            f"lifted {_when(lifted)}"
            if lifted is not None
            else ("*in force*" if mute.active(now) else ("expired" if mute.until <= now else "scheduled"))
        )
        lines.append(f":mute: Muted by <@{escape(mute.by)}> until {_when(mute.until)} ({state}){_reason(mute.reason)}")
    if w.answers:
        lines.append("*Answers here*:")
        lines += [f"• {kind} by {_who(op)}{_reason(reason)}" for op, kind, _, reason in w.answers]
    if h.latest:
        lines.append("*Latest answers on this key*:")
        lines += [f"• {kind} by {_who(op)} {_when(at)}{_reason(reason)}" for op, kind, at, reason in h.latest]
    return "\n".join(lines)


COMMAND_FAILED = "Sorry, NPO could not answer that just now."
REPLAYED = "This `/npo` request was already carried out; nothing was changed."
SUMMARY_WORKING = "Working on the summary…"
SUMMARY_REPLAYED = "This `/npo summary` request was already carried out; its report is not posted again."
# Waits between the tries of posting the summary to its response_url after a 5xx or a connection error: four posts
# at most (Slack takes five within 30 minutes), over about 3.5 s.
SUMMARY_RETRY_S = (0.5, 1.0, 2.0)
SUMMARY_FAILED = (
    "Sorry, NPO could not build the summary just now (the bot's log has the error); please try again in a minute."
)


def is_summary(text: str) -> bool:
    """Whether ``/npo <text>`` asks for the summary (as :func:`reply_for` reads it)."""
    word, rest = first_arg(html.unescape(text or ""))
    return word.lower() == "summary" and not rest.split()


async def summary_reply(deps: SlackDeps) -> str:
    """The reply to ``/npo summary``: the last 7 days' report, whole lines left off should it not fit."""
    return fit_lines(await deps.query(summary_text, deps.service, deps.timezone))


async def deliver_summary(deps: SlackDeps, response_url: str, user: str, *, timeout: int) -> None:
    """Build the summary (after the ack) and post it to the command's ``response_url``, ephemeral, as the ack
    carried it before; a failure to build it posts :data:`SUMMARY_FAILED` instead. A post Slack fails (5xx) or
    that cannot reach it is tried again after each wait of :data:`SUMMARY_RETRY_S`; one Slack refuses (4xx: an
    expired or used-up URL) is not. What still did not arrive is logged once (never the URL: anyone holding it may
    post to the channel)."""
    try:
        reply = await summary_reply(deps)
    except Exception:
        log.exception("/npo summary for %s failed", user)
        reply = SUMMARY_FAILED
    # slack-sdk's own retries off: each try is one post, so the tries stay within the five Slack allows.
    webhook = AsyncWebhookClient(response_url, timeout=timeout, logger=_WEBHOOK_LOG, retry_handlers=[])
    text = truncate(reply, MAX_REPLY)
    tries = 0
    for wait in (*SUMMARY_RETRY_S, None):
        tries += 1
        why, again = await _post_once(webhook, text, response_url)
        if why is None:
            return
        if not again or wait is None:
            break
        await asyncio.sleep(wait)
    # The person is not told (there is nowhere else to): the log says so, once.
    after = f" after {tries} tries" if tries > 1 else ""
    log.warning("/npo summary for %s not delivered%s: its response_url %s", user, after, why)


async def _post_once(webhook: AsyncWebhookClient, text: str, response_url: str) -> tuple[str | None, bool]:
    """Post ``text`` once: None when Slack took it, else what went wrong (for the log) and whether another try may
    help — a 5xx or a connection that failed, not a 4xx, a timeout (the post may have arrived) or anything else."""
    try:
        sent = await webhook.send(text=text, response_type="ephemeral")
    except Exception as exc:  # connection refused or reset, timeout
        why = f"could not be reached ({_hidden(f'{type(exc).__name__}: {exc}', response_url)})"
        return why, isinstance(exc, aiohttp.ClientConnectionError)
    if sent.status_code == 200:
        return None, False
    return f"answered {sent.status_code} {_hidden(str(sent.body or ''), response_url)}", sent.status_code >= 500


def _hidden(text: str, response_url: str) -> str:
    """``text`` for the log, shortened, with no response_url in it (an error may quote the URL it failed on)."""
    return truncate(redact(text.replace(response_url, "[redacted]")), 200)


async def reply_for(text: str, user: str, deps: SlackDeps, request_id: str = "") -> str:
    """The reply to ``/npo <text>`` by ``user``; ``request_id`` (the invocation's trigger id) makes a replayed
    mute or unmute change nothing."""
    typed = html.unescape(text or "")  # Slack escapes &, <, > in the command text
    word, rest = first_arg(typed)
    word = word.lower() or "help"
    args = rest.split()
    service = deps.service
    if word == "status" and not args:
        return "\n".join(status_lines(await deps.query(service.dashboard)))
    if word == "summary" and not args:
        return await summary_reply(deps)
    if word == "help" and not args:
        return USAGE
    if word == "why":
        pid, after = first_arg(rest)
        if not pid or after.strip():
            return "Usage: `/npo why &lt;recommendation id&gt;` (the id is shown under each recommendation)."
        found = await deps.query(why, service, pid)
        if found is None:
            return f"No recommendation with id `{escape(truncate(pid, 200))}`."
        return fit_lines(why_text(found, service.clock()), see="`npo-bot db export --what feedback`")
    if word in ("mute", "unmute"):
        return await _mute(word, rest, user, deps, request_id)
    shown = escape(truncate(" ".join(typed.split()), 60))
    return f"Unknown command `{shown}`.\n{USAGE}"


def quote_hint(word: str) -> str:
    """Added to a refusal of ``/npo <word>`` whose words after an unquoted key look like the rest of it (they hold a
    "|"): a key pasted with the spaces of its action, and no quotes."""
    example = '"disk_failure|restart pod|r#-n#|p&gt;=0.9"' + (" 4h" if word == "mute" else "")
    return f"a key with spaces goes in double quotes or backticks, like `/npo {word} {example}`"


def _key_known(service: NpoService, key: str) -> bool:
    with service.store.read() as conn:
        return key_known(conn, key)


async def _mute(word: str, rest: str, user: str, deps: SlackDeps, request_id: str) -> str:
    key, after = first_arg(rest)
    args = after.split()  # the duration and the reason's words
    if not key.strip():
        key = ""  # a quoted blank names no key
    # The words after an unquoted key hold a "|": likely the rest of a key with spaces, typed without quotes.
    split = rest.lstrip()[:1] not in _QUOTES and any("|" in a for a in args)
    hint = f" ({quote_hint(word)})" if split else ""
    if word == "mute" and (not key or not args):
        return (
            "Usage: `/npo mute &lt;key&gt; &lt;duration&gt; [reason]`, "
            "e.g. `/npo mute disk_failure|drain|r#-n#|p&gt;=0.9 4h`."
        )
    if word == "unmute" and (not key or args):
        return f"Usage: `/npo unmute &lt;key&gt;`{hint}."
    try:
        allowed = await deps.responders.allows(user)
    except LookupUnavailable as exc:
        log.warning("did not %s a key for %s: cannot tell whether they may (%s)", word, user, exc)
        if exc.fix:
            return lookup_refused_text(exc.fix, may="mute or unmute keys", nothing="Nothing was changed")
        return (
            "NPO could not check just now whether you may mute or unmute keys (looking up its on-call responders in "
            "Slack failed or took too long), so nothing was changed. Please try again in a minute."
        )
    if not allowed:
        return "Only on-call responders can mute or unmute keys. Nothing was changed."
    service = deps.service
    if word == "unmute":
        lifted = await deps.storage(service.unmute, key, by=user, request_id=request_id)
        if lifted is None:
            return REPLAYED
        return f"Lifted {lifted} mute(s) of `{escape(key)}`." if lifted else f"`{escape(key)}` is not muted."
    if len(key) > MAX_TEXT_LEN:  # no scenario key is longer (and the database refuses to store one)
        return f"Not muted: a key is at most {MAX_TEXT_LEN} characters, `{escape(truncate(key, 40))}` has {len(key)}."
    try:
        seconds, used = _duration_of(args)
        if split and any("|" in a for a in args[used:]) and not await deps.query(_key_known, service, key):
            # ``wait 5m then restart`` in an unquoted key: its first words are no key, and 5m no duration meant.
            return (
                f"Not muted: no recommendation has had the key `{escaped(key, MAX_MUTED_KEY)}`, and the words after "
                f"it look like the rest of a key: {quote_hint(word)}."
            )
        reason = " ".join(args[used:])[:500]
        mute = await deps.storage(service.mute, key, seconds, by=user, reason=reason, request_id=request_id)
    except InvalidRecord as exc:
        return f"Not muted: {exc.message}."
    except ValueError as exc:
        return f"Not muted: {exc}{hint}."
    if mute is None:
        return REPLAYED
    with service.store.read() as conn:
        known = key_known(conn, key)
        held = muted_until(conn, key, mute.since)
    note = "" if known else " (no recommendation has had this key yet — check the spelling with `/npo why &lt;id&gt;`)"
    until, lifts = mute.until, "lifts it"
    if held is not None and held > mute.until:  # an earlier, longer mute of the key still holds it (the latest wins)
        until, lifts = held, "lifts every mute of it (then mute it again to end it sooner)"
        note += f"; an earlier mute holds it past this one's end, {_when(mute.until)}"
    return (
        f":mute: `{escaped(key, MAX_MUTED_KEY)}` is muted until {_when(until)}: its predictions are blocked by "
        f"the Safety Policy rule `mute`{note}. `/npo unmute {escape(_arg(key))}` {lifts}."
    )


def _duration_of(args: list[str]) -> tuple[float, int]:
    """The duration the words ``args`` start with and how many words it took: ``1h30m`` or ``1h 30m`` (the reason
    follows). Raises ValueError naming the first word when it is no duration."""
    for n in range(len(args), 1, -1):
        joined = "".join(args[:n])
        if _DURATION_RE.match(joined):
            try:
                return parse_duration(joined), n
            except ValueError:  # units not largest first: try fewer words
                continue
    return parse_duration(args[0]), 1


def _request_id(command: dict[str, Any], request: AsyncBoltRequest) -> str:
    """What makes a replayed mute, unmute or summary recognisable: the invocation's trigger id, which Slack always
    sends;
    failing that, the request's signature (a replay is the same signed bytes, so it carries the same one), or in
    Socket Mode the envelope's id (an envelope sent again has the same one). Empty when there is none of these."""
    trigger = str(command.get("trigger_id") or "")
    if trigger:
        return f"command:{trigger}"
    key = replay_key(request.mode, request.headers)
    return f"command-signature:{key}" if key else ""


def _make_listener(deps: SlackDeps) -> Any:
    async def on_command(
        ack: AsyncAck, command: dict[str, Any], request: AsyncBoltRequest, client: AsyncWebClient
    ) -> None:
        text, user = str(command.get("text") or ""), str(command.get("user_id") or "")
        response_url = str(command.get("response_url") or "")
        request_id = _request_id(command, request)
        if is_summary(text):
            try:
                first = not request_id or await deps.storage(
                    deps.service.store.claim_request, request_id, "command", deps.service.clock()
                )
            except Exception:
                log.exception("/npo summary failed")
                await ack(text=COMMAND_FAILED, response_type="ephemeral")
                return
            if not first:  # a replay, or an envelope sent again: its report was built and posted the first time
                log.info("an /npo summary request by %s was received again; its report is not posted again", user)
                await ack(text=SUMMARY_REPLAYED, response_type="ephemeral")
                return
            if response_url:  # too slow for the ack: built after it (module docstring)
                await ack(text=SUMMARY_WORKING, response_type="ephemeral")
                deps.spawn(deliver_summary(deps, response_url, user, timeout=client.timeout), "/npo summary")
                return
        try:
            reply = await reply_for(text, user, deps, request_id=request_id)
        except Exception:
            log.exception("/npo failed")
            reply = COMMAND_FAILED
        await ack(text=truncate(reply, MAX_REPLY), response_type="ephemeral")

    return on_command


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the ``/npo`` command listener to ``app``."""
    app.command("/npo")(_make_listener(deps))
