"""The scheduled jobs' settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, load_settings
from bot.jobs.build import monitor_config, monitor_trigger
from bot.jobs.weekly import weekly_trigger

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-x",
    "SLACK_SIGNING_SECRET": "s" * 16,
    "NPO_INGEST_TOKEN": "t" * 16,
    "NPO_INCIDENT_CHANNEL": "C1INC",
    "NPO_OPS_CHANNEL": "C2OPS",
}


def test_defaults() -> None:
    settings = load_settings(BASE, None)
    assert settings.weekly_summary_at == ("mon", 9, 0) and settings.monitor_interval_min == 60
    config = monitor_config(settings)
    assert (config.loss_threshold, config.window, config.min_samples, config.cooldown_s) == (0.3, 200, 30, 6 * 3600)
    assert settings.monitor_proposal_expiry_h == 168 and config.proposal_expiry_s == 7 * 24 * 3600  # a week
    assert settings.monitor_window_days == 7 and config.window_s == 7 * 24 * 3600  # the paper's 7 days


def test_values_are_parsed() -> None:
    settings = load_settings(
        BASE
        | {
            "NPO_WEEKLY_SUMMARY_AT": "Friday 16:30",
            "NPO_TIMEZONE": "Europe/Berlin",
            "NPO_MONITOR_INTERVAL_MIN": "15",
            "NPO_MONITOR_LOSS_THRESHOLD": "0.25",
            "NPO_MONITOR_WINDOW": "50",
            "NPO_MONITOR_MIN_SAMPLES": "20",
            "NPO_MONITOR_COOLDOWN_H": "12",
            "NPO_MONITOR_PROPOSAL_EXPIRY_H": "72",
            "NPO_MONITOR_WINDOW_DAYS": "30",
        },
        None,
    )
    assert settings.weekly_summary_at == ("fri", 16, 30)
    trigger = weekly_trigger(settings.timezone, *settings.weekly_summary_at)
    fire = trigger.get_next_fire_time(None, datetime(2025, 3, 26, 12, tzinfo=ZoneInfo("Europe/Berlin")))
    assert fire is not None and fire.isoformat() == "2025-03-28T16:30:00+01:00" and fire.strftime("%A") == "Friday"
    config = monitor_config(settings)
    assert (config.loss_threshold, config.window, config.min_samples, config.cooldown_s) == (0.25, 50, 20, 12 * 3600)
    assert config.proposal_expiry_s == 72 * 3600
    assert config.window_s == 30 * 24 * 3600
    assert monitor_trigger(settings.monitor_interval_min).interval.total_seconds() == 900


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NPO_WEEKLY_SUMMARY_AT", "1 09:00", "weekday name"),
        ("NPO_WEEKLY_SUMMARY_AT", "mon 25:00", "weekday name"),
        ("NPO_WEEKLY_SUMMARY_AT", "month 09:00", "weekday name"),  # its first letters are no Monday
        ("NPO_WEEKLY_SUMMARY_AT", "monkey 09:00", "weekday name"),
        ("NPO_WEEKLY_SUMMARY_AT", "satellite 09:00", "weekday name"),
        ("NPO_TIMEZONE", "Mars/Olympus", "IANA time zone"),
        ("NPO_MONITOR_INTERVAL_MIN", "0", "between 1 and 1440"),
        ("NPO_MONITOR_LOSS_THRESHOLD", "1.5", "between 0 and 1"),
        ("NPO_MONITOR_WINDOW", "five", "integer"),
        ("NPO_MONITOR_PROPOSAL_EXPIRY_H", "0", "between 1 and 2160"),
        ("NPO_MONITOR_PROPOSAL_EXPIRY_H", "never", "number"),
        ("NPO_MONITOR_WINDOW_DAYS", "0", "between 1 and 365"),
        ("NPO_MONITOR_WINDOW_DAYS", "a week", "number"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(BASE | {name: value}, None)
    assert list(caught.value.problems) == [name] and message in caught.value.problems[name]


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("mon 09:00", "mon"),
        ("Monday 09:00", "mon"),
        ("TUES 09:00", "tue"),
        ("thur 09:00", "thu"),
        ("Thurs 09:00", "thu"),
    ],
)
def test_weekday_names_and_their_short_forms(value: str, day: str) -> None:
    assert load_settings(BASE | {"NPO_WEEKLY_SUMMARY_AT": value}, None).weekly_summary_at == (day, 9, 0)
