"""A secret pasted into the wrong setting is never shown by the message that refuses that setting.

Messages about a channel, a zone, a URL … quote the value they got, which helps with a typo. A line pasted in the
wrong place (the bot token as ``NPO_INCIDENT_CHANNEL``, the ingest token as ``NPO_OPS_CHANNEL``) then printed the
secret to the terminal or the service's log. Run as a child process with a real environment, as a service
manager starts the bot.
"""

from __future__ import annotations

import os
from pathlib import Path

from cli_testing import npo_bot

BOT_TOKEN = "xoxb-fake-bot-token-for-tests-AbCdEfGh"
INGEST_TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"


def test_a_secret_in_another_setting_is_masked(tmp_path: Path) -> None:
    environ = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
        "NPO_INGEST_TOKEN": INGEST_TOKEN,
        "NPO_INCIDENT_CHANNEL": BOT_TOKEN,  # the line above pasted again
        "NPO_OPS_CHANNEL": INGEST_TOKEN,
        "NPO_TIMEZONE": "xapp-1-A0123456789-1234567890-abcdef0123456789",  # a Slack token of no setting
    }
    done = npo_bot(tmp_path, "replay", os.devnull, environ=environ)
    assert done.returncode == 2
    assert "NPO_INCIDENT_CHANNEL: must be a channel id like C0123ABCD, got 'xoxb-***'" in done.stderr
    assert "NPO_OPS_CHANNEL: must be a channel id like C0123ABCD, got '***'" in done.stderr
    assert "NPO_TIMEZONE: must be an IANA time zone like Europe/Berlin, got 'xapp-***'" in done.stderr
    for secret in (BOT_TOKEN, INGEST_TOKEN, "AbCdEf", "9f86d081", "abcdef0123456789"):
        assert secret not in done.stderr
