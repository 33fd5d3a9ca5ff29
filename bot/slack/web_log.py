"""The logger of NPO's synchronous Slack Web API client (the delivery worker's and the scheduled jobs').

slack-sdk logs every request that could not be sent at ERROR (``Failed to send a request to Slack API server: …``)
before raising the error to its caller, and the caller handles it: the delivery worker keeps the message and tries
again, logging that once at WARNING with the reason, or at ERROR when it gives up. During a network outage each try
therefore logged an ERROR for an error that lost nothing. :func:`web_api_logger` gives the client a logger on which
those lines are DEBUG; everything else slack-sdk logs there is kept as it is (and redacted, as all Slack logs are).
"""

from __future__ import annotations

import logging

from bot.slack.log_redaction import redact_slack_logs

__all__ = ["SEND_FAILED", "WEB_API_LOGGER", "web_api_logger"]

WEB_API_LOGGER = "bot.slack.web_api"
SEND_FAILED = "Failed to send a request to Slack API server"  # slack_sdk.web.base_client, before it raises


class _CallerReports(logging.Filter):
    """A request slack-sdk could not send becomes DEBUG: the caller gets the error and reports what it does."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(SEND_FAILED):
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


_FILTER = _CallerReports()


def web_api_logger() -> logging.Logger:
    """The logger for a synchronous ``WebClient`` (``WebClient(logger=web_api_logger())``)."""
    logger = logging.getLogger(WEB_API_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
        redact_slack_logs(logger)
    return logger
