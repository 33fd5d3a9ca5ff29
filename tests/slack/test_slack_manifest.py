"""The Slack app manifest matches what the bot serves: one request URL for everything, the /npo command, the
App Home event, and the scopes of the Web API methods the bot calls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from slack_sdk.web import WebClient

from bot.slack.bolt_app import HANDLED_EVENTS

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
    assert {"channels:history", "groups:history"} <= scopes
    assert settings["socket_mode_enabled"] is False


# The bot scopes each Web API method the bot calls needs (docs.slack.dev/reference/methods/<method>).
SCOPES_OF_METHOD: dict[str, set[str]] = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "views_open": set(),
    "views_publish": set(),
    "files_upload_v2": {"files:write"},  # files.getUploadURLExternal + files.completeUploadExternal
    "conversations_members": {"channels:read", "groups:read"},  # public or private incident channel
    "conversations_history": {"channels:history", "groups:history"},  # a post whose answer was lost, looked for
    "conversations_replies": {"channels:history", "groups:history"},  # a thread reply whose answer was lost
    "usergroups_users_list": {"usergroups:read"},
    "apps_connections_open": set(),  # Socket Mode, with the app-level token (connections:write)
}
ROOT = MANIFEST.parent


def _bot_sources() -> str:
    files = sorted(p for p in (ROOT / "bot").rglob("*.py") if "standin" not in p.parts)
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_manifest_scopes_are_exactly_those_of_the_web_api_calls_and_listeners_match() -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    source = _bot_sources()
    called = set(re.findall(r"client(?:\(\))?\.([a-z]+_[A-Za-z0-9_]+)\(", source))
    # Only the Web API's methods need scopes: a Socket Mode client's own methods (stop_dispatching) are not calls
    # to Slack. Every Web API method is a WebClient method; a call by name (api_call) would escape the search.
    methods = {name for name in called if callable(getattr(WebClient, name, None))}
    assert {"chat_postMessage", "files_upload_v2", "views_publish"} <= methods  # the search finds the calls
    assert "api_call(" not in source
    unknown = methods - set(SCOPES_OF_METHOD)
    assert not unknown, f"add the scopes of {sorted(unknown)} to SCOPES_OF_METHOD (and to the manifest)"
    needed = set().union(*(SCOPES_OF_METHOD[m] for m in methods)) | {"commands"}
    assert set(data["oauth_config"]["scopes"]["bot"]) == needed
    events = set(re.findall(r"app\.event\(\"([a-z_]+)\"\)", source))
    assert set(data["settings"]["event_subscriptions"]["bot_events"]) == events == HANDLED_EVENTS
    commands = set(re.findall(r"app\.command\(\"(/[a-z]+)\"\)", source))
    assert {c["command"] for c in data["features"]["slash_commands"]} == commands
