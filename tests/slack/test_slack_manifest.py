"""The Slack app manifest matches what the bot serves: one request URL for everything, the /npo command, the
App Home event, and the scopes of the Web API methods the bot calls."""

from __future__ import annotations

from pathlib import Path

import pytest

MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yml"


def test_manifest() -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    settings, features = data["settings"], data["features"]
    (command,) = features["slash_commands"]
    urls = {command["url"], settings["interactivity"]["request_url"], settings["event_subscriptions"]["request_url"]}
    assert len(urls) == 1 and urls.pop().endswith("/slack/events")
    assert command["command"] == "/npo" and settings["interactivity"]["is_enabled"] is True
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert features["app_home"]["home_tab_enabled"] is True
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "commands", "files:write", "channels:read", "groups:read", "usergroups:read"} <= scopes
    assert settings["socket_mode_enabled"] is False
