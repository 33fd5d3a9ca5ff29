"""Secrets kept out of the logs of Slack's own libraries, at every level.

At DEBUG, slack-sdk's Socket Mode client logs every message it receives whole: an envelope's payload carries Slack's
verification ``token`` and a ``response_url`` (anyone holding it may post to the channel for half an hour), and its
Web API client logs each answer's body (``apps.connections.open``'s one-time WebSocket URL with its ``ticket``).
:class:`SecretRedactor` rewrites such records before any handler sees them, keeping the rest of the line: the values
of ``token`` / ``response_url`` fields (JSON, Python ``repr`` or form-encoded), ``xapp-`` / ``xox…-`` tokens,
``hooks.slack.com`` URLs and WebSocket ``ticket`` parameters become ``[redacted]``.

A filter on a logger sees only records logged on that logger (not those of its children), so
:func:`redact_slack_logs` puts it on each logger that Slack's libraries and NPO's Slack clients log on.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "REDACTED_LOGGERS", "SecretRedactor", "redact", "redact_slack_logs"]

REDACTED = "[redacted]"

# The loggers slack-sdk and slack-bolt log requests, answers and envelopes on (module loggers, created here if their
# module is not imported yet), and those NPO gives its Bolt app and Socket Mode client.
REDACTED_LOGGERS = (
    "bot.slack.bolt",
    "bot.slack.socket_mode",
    "bot.socket_mode",
    "slack_bolt",
    "slack_sdk",
    "slack_sdk.web.base_client",
    "slack_sdk.web.async_base_client",
    "slack_sdk.web.legacy_base_client",
    "slack_sdk.web.slack_response",
    "slack_sdk.web.async_slack_response",
    "slack_sdk.webhook.client",
    "slack_sdk.webhook.async_client",
    "slack_sdk.socket_mode.aiohttp",
    "slack_sdk.socket_mode.builtin.client",
    "slack_sdk.socket_mode.websocket_client",
    "slack_sdk.socket_mode.websockets",
)

_QUOTE = r"\\?[\"']"  # a quote, or an escaped one (JSON inside a string)
_SECRET_FIELDS = r"token|response_url|app_token|bot_token|signing_secret|client_secret"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "token": "…", 'response_url': '…', \"token\": \"…\" — the value of a JSON or repr field
    (
        re.compile(rf"(?P<k>(?P<q>{_QUOTE})(?:{_SECRET_FIELDS})(?P=q)\s*:\s*)(?P<v>{_QUOTE})[^\"'\s]*?(?P=v)"),
        rf"\g<k>\g<v>{REDACTED}\g<v>",
    ),
    # %22token%22%3A+%22…%22 — a field of URL-encoded JSON (an interaction's form-encoded ``payload``)
    (
        re.compile(rf"(?P<k>%22(?:{_SECRET_FIELDS})%22%3A(?:\+|%20)*%22)(?:(?!%22)[^&\s\"'<>])*%22", re.IGNORECASE),
        rf"\g<k>{REDACTED}%22",
    ),
    # token=…&response_url=… — a form-encoded body or a query string; ticket=… in a WebSocket URL
    (re.compile(rf"(?<![\w-])(?P<k>(?:{_SECRET_FIELDS}|ticket)=)[^&\s\"'<>]+"), rf"\g<k>{REDACTED}"),
    # a Slack token anywhere: xoxb-, xoxp-, xoxa-, xoxe-, xoxs-, xapp-
    (re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]+"), REDACTED),
    # an incoming webhook or a response_url, with its slashes JSON-escaped or URL-encoded too
    (re.compile(r"(?P<h>hooks\.slack\.com)(?:(?:\\?/|%2F)[^\s\"'<>\\/%&]*)+", re.IGNORECASE), rf"\g<h>/{REDACTED}"),
)


def redact(text: str) -> str:
    """``text`` with every secret :class:`SecretRedactor` knows replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactor(logging.Filter):
    """Rewrites a record whose message, traceback or stack carries a secret (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: left for the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_REDACTOR = SecretRedactor()


def redact_slack_logs(*loggers: logging.Logger) -> None:
    """Put the redacting filter on :data:`REDACTED_LOGGERS`, on every ``slack_sdk`` / ``slack_bolt`` logger created so
    far (Bolt's per-middleware loggers) and on ``loggers``; once each, however often it is called."""
    names = set(REDACTED_LOGGERS) | {
        name for name in logging.Logger.manager.loggerDict if name.startswith(("slack_sdk.", "slack_bolt."))
    }
    for logger in (*(logging.getLogger(name) for name in sorted(names)), *loggers):
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
