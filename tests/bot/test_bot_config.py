"""Settings: read once from the environment over .env, every problem reported with its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings, parse_env_file

GOOD = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s3cret",
    "NPO_INGEST_TOKEN": "ingest-token-0123456789",
    "NPO_INCIDENT_CHANNEL": "C0INC",
    "NPO_OPS_CHANNEL": "C0OPS",
}


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(GOOD, tmp_path / "missing.env")
    assert s.slack_api_url == "https://slack.com/api/" and s.port == 3000 and s.host == "127.0.0.1"
    assert s.responders == () and s.db_synchronous == "NORMAL"


def test_every_problem_is_listed(tmp_path: Path) -> None:
    env = {"SLACK_BOT_TOKEN": "nope", "NPO_PORT": "http", "NPO_SKIP_LAMBDA": "0.9", "NPO_RESPONDERS": "U1X,bob"}
    with pytest.raises(ConfigError) as info:
        load_settings(env, None)
    problems = info.value.problems
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "NPO_INGEST_TOKEN",
        "NPO_PORT",
        "NPO_SKIP_LAMBDA",
        "NPO_RESPONDERS",
        "NPO_INCIDENT_CHANNEL",
    ):
        assert name in problems and name in str(info.value)


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport NPO_PORT=4000\nSLACK_API_URL='http://127.0.0.1:9/api'\nNPO_RESPONDERS=U0A,S0GROUP\n"
        + "\n".join(f"{k}={v}" for k, v in GOOD.items()),
        encoding="utf-8",
    )
    s = load_settings({"NPO_PORT": "5000"}, env_file)
    assert s.port == 5000
    assert s.slack_api_url == "http://127.0.0.1:9/api/"
    assert s.user_responders == {"U0A"} and s.group_responders == ("S0GROUP",)
    assert "xoxb" not in str(s.redacted())


def test_malformed_env_file_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_env_file("A=1\nthis is not a setting\n")


def test_env_example_lists_every_variable() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text(encoding="utf-8")
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_API_URL",
        "NPO_DB_PATH",
        "NPO_HOST",
        "NPO_PORT",
        "NPO_INGEST_TOKEN",
        "NPO_INCIDENT_CHANNEL",
        "NPO_OPS_CHANNEL",
        "NPO_RESPONDERS",
        "NPO_POLICY_FILE",
        "NPO_SKIP_LAMBDA",
        "NPO_MISS_WEIGHT",
        "NPO_DB_SYNCHRONOUS",
        "NPO_MAX_BODY_BYTES",
        "NPO_STORM_THRESHOLD",
        "NPO_DIGEST_DELAY_S",
        "NPO_UPDATE_INTERVAL_S",
        "NPO_POLL_URL",
        "NPO_POLL_INTERVAL_S",
        "NPO_POLL_TOKEN",
        "NPO_SLACK_TIMEOUT_S",
    ):
        assert f"\n{name}=" in example, name


def test_poller_and_update_interval_settings(tmp_path: Path) -> None:
    s = load_settings(GOOD, tmp_path / "missing.env")
    assert s.poll_url is None and s.poll_interval_s == 30.0 and s.update_interval_s == 1.0
    env = GOOD | {
        "NPO_POLL_URL": "http://127.0.0.1:9100/predictions",
        "NPO_POLL_INTERVAL_S": "5",
        "NPO_POLL_TOKEN": "tok",
        "NPO_UPDATE_INTERVAL_S": "0",
    }
    s = load_settings(env, None)
    assert (s.poll_url, s.poll_interval_s, s.poll_token, s.update_interval_s) == (
        "http://127.0.0.1:9100/predictions",
        5.0,
        "tok",
        0.0,
    )
    assert s.redacted()["poll_token"] == "***"
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_POLL_URL": "ftp://x", "NPO_POLL_INTERVAL_S": "0.1"}, None)
    assert set(info.value.problems) == {"NPO_POLL_URL", "NPO_POLL_INTERVAL_S"}


def test_repr_masks_every_secret(tmp_path: Path) -> None:
    env = GOOD | {"NPO_POLL_TOKEN": "poll-token-abcdef", "SLACK_APP_TOKEN": "xapp-1-secret"}
    s = load_settings(env, tmp_path / "missing.env")
    text = repr(s)
    for secret in ("xoxb-1", "s3cret", "ingest-token-0123456789", "poll-token-abcdef", "xapp-1-secret"):
        assert secret not in text and secret not in str(s) and secret not in f"{s!r}"
    assert text.startswith("Settings(") and "incident_channel='C0INC'" in text and "slack_bot_token='***'" in text
