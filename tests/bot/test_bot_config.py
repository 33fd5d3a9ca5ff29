"""Settings: read once from the environment over .env, every problem reported with its variable."""

from __future__ import annotations

import os
import re
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


def test_a_missing_env_file_is_a_note_not_a_counted_problem(tmp_path: Path) -> None:
    """One wrong setting is one problem: the absent settings file is said (the settings came from the environment
    only, which explains a value missing), but it is not counted as a second problem."""
    missing = tmp_path / ".env"
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, "NPO_INGEST_TOKEN": "short"}, missing)
    assert list(info.value.problems) == ["NPO_INGEST_TOKEN"]
    text = str(info.value)
    assert text.startswith("invalid configuration (1 problem(s)):")
    assert f"note: {missing}: no such file: the settings were looked for in the environment only" in text
    assert load_settings(GOOD, missing).ingest_token == GOOD["NPO_INGEST_TOKEN"]  # no problem, no note


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
        "NPO_BODY_TIMEOUT_S",
        "NPO_STORM_THRESHOLD",
        "NPO_DIGEST_DELAY_S",
        "NPO_UPDATE_INTERVAL_S",
        "NPO_POLL_URL",
        "NPO_POLL_INTERVAL_S",
        "NPO_POLL_TOKEN",
        "NPO_POLL_MAX_BYTES",
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
    assert s.poll_max_bytes == 10_000_000
    assert load_settings(env | {"NPO_POLL_MAX_BYTES": "2048"}, None).poll_max_bytes == 2048
    with pytest.raises(ConfigError) as info:
        load_settings(
            GOOD | {"NPO_POLL_URL": "ftp://x", "NPO_POLL_INTERVAL_S": "0.1", "NPO_POLL_MAX_BYTES": "1e9"}, None
        )
    assert set(info.value.problems) == {"NPO_POLL_URL", "NPO_POLL_INTERVAL_S", "NPO_POLL_MAX_BYTES"}


def test_repr_masks_every_secret(tmp_path: Path) -> None:
    env = GOOD | {"NPO_POLL_TOKEN": "poll-token-abcdef", "SLACK_APP_TOKEN": "xapp-1-secret"}
    s = load_settings(env, tmp_path / "missing.env")
    text = repr(s)
    for secret in ("xoxb-1", "s3cret", "ingest-token-0123456789", "poll-token-abcdef", "xapp-1-secret"):
        assert secret not in text and secret not in str(s) and secret not in f"{s!r}"
    assert text.startswith("Settings(") and "incident_channel='C0INC'" in text and "slack_bot_token='***'" in text


ROOT = Path(__file__).resolve().parents[2]


def _write_env(tmp_path: Path, text: str) -> Path:
    env_file = tmp_path / ".env"
    env_file.write_text(text, encoding="utf-8")
    return env_file


def test_quoted_value_followed_by_a_comment(tmp_path: Path) -> None:
    env_file = _write_env(
        tmp_path,
        'SLACK_BOT_TOKEN="xoxb-1-2-3"   # from the OAuth page\n'
        "SLACK_SIGNING_SECRET=abcdefabcdefabcdef\n"
        "NPO_INGEST_TOKEN=0123456789abcdef0123\n"
        'NPO_INCIDENT_CHANNEL="C0123ABCD"  # #incidents\n'
        "NPO_OPS_CHANNEL='C0456EFGH'# no space before the comment\n"
        'NPO_TIMEZONE="Europe/Berlin" # local zone\n'
        'export NPO_PORT="4000" # exported, quoted, commented\n'
        "NPO_HOST=0.0.0.0\t# unquoted, tab before the comment\n"
        'NPO_POLL_TOKEN="tok # not a comment"\n'
        "NPO_DB_PATH=data/npo#1.db\n",
    )
    s = load_settings({}, env_file)
    assert (s.slack_bot_token, s.incident_channel, s.ops_channel) == ("xoxb-1-2-3", "C0123ABCD", "C0456EFGH")
    assert (s.timezone, s.port, s.host) == ("Europe/Berlin", 4000, "0.0.0.0")
    assert s.poll_token == "tok # not a comment" and s.db_path == Path("data/npo#1.db")


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A=plain", "plain"),
        ("A=plain # comment", "plain"),
        ("A=   # comment", ""),  # empty, then a comment (python-dotenv: empty too)
        ("A=\t# comment", ""),
        ("A=#x", "#x"),  # no whitespace before the '#': the value
        ("A=x#y", "x#y"),
        ('A="quoted"', "quoted"),
        ("A='quoted' # comment", "quoted"),
        ('A="a # b" # c', "a # b"),
        ("A='it's'", "it's"),  # wholly quoted: inner quotes kept, as before
        ('A="a\\"b" # c', 'a\\"b'),  # an escaped quote does not close; no escape processing
        ('A="a\\nb"', "a\\nb"),  # no escape sequences (python-dotenv would make a line break of it)
        ("A=${HOME}/npo.db", "${HOME}/npo.db"),  # no interpolation (python-dotenv and docker compose expand it)
        ('A="$HOME/npo.db"', "$HOME/npo.db"),
        ('A=""', ""),
        ("A=", ""),
        ("export A = 'x'", "x"),
    ],
)
def test_env_file_values(line: str, value: str) -> None:
    assert parse_env_file(line + "\n") == {"A": value}


def test_malformed_env_lines_never_show_the_value(tmp_path: Path) -> None:
    secret = "8f2b1c9e7d6a5f4e3b2a1c0d9e8f7a6b"
    env_file = _write_env(
        tmp_path,
        "\n".join(f"{k}={v}" for k, v in GOOD.items() if k != "SLACK_SIGNING_SECRET")
        + f'\nSLACK-SIGNING_SECRET={secret}\n{secret}\nNPO_POLL_TOKEN="{secret}\nxoxb-{secret}=1\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file)
    text = str(info.value)
    assert secret not in text and secret[:8] not in text
    assert f"{env_file} line 5" in text and "'SLACK-SIGNING_SECRET' is not a valid variable name" in text
    assert f"{env_file} line 6" in text and "no '='" in text
    assert f"{env_file} line 7" in text and "NPO_POLL_TOKEN: unterminated quote" in text
    assert f"{env_file} line 8" in text


def test_env_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    body = "# settings\n" + "\n".join(f"{k}={v}" for k, v in GOOD.items()) + "\n"
    env_file.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert load_settings({}, env_file).incident_channel == "C0INC"
    env_file.write_bytes(b"\xef\xbb\xbf" + b"NPO_PORT=4000\n" + body.encode())  # first line a setting
    assert load_settings({}, env_file).port == 4000
    assert parse_env_file("\ufeffA=1\n") == {"A": "1"}


def test_env_file_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"NPO_HOST=\xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        load_settings(GOOD, env_file)


def _unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.config" and r.levelname == "WARNING"]


def test_misspelled_names_are_warned_once_with_a_suggestion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env_file = _write_env(tmp_path, "NPO_DB_PAHT=var/lib/npo.db\nNPO_SKIP_TIMEOUT_MINS=5\nOTHER_TOOL_X=1\n")
    environ = GOOD | {"NPO_DB_PAHT": "var/npo.db", "SLACK_WEBHOOK": "x", "HOME": "/root", "NPO_DATA_DIR": "/d"}
    with caplog.at_level("WARNING", logger="bot.config"):
        s = load_settings(environ, env_file)
    assert s.db_path == Path("npo.db") and s.skip_timeout_min == 60.0  # still ignored: a warning, not a refusal
    warnings = _unknown_warnings(caplog)
    assert len(warnings) == 3, warnings  # NPO_DB_PAHT once although it is in both the environment and .env
    assert any("NPO_DB_PAHT" in w and "did you mean NPO_DB_PATH?" in w for w in warnings)
    assert any("NPO_SKIP_TIMEOUT_MINS" in w and "did you mean NPO_SKIP_TIMEOUT_MIN?" in w for w in warnings)
    assert any("SLACK_WEBHOOK" in w for w in warnings)
    assert not any(n in w for w in warnings for n in ("OTHER_TOOL_X", "HOME", "NPO_DATA_DIR", "var/"))


def test_misspelled_required_name_is_warned_before_the_error(caplog: pytest.LogCaptureFixture) -> None:
    environ = {k: v for k, v in GOOD.items() if k != "SLACK_BOT_TOKEN"} | {"SLACK_BOT_TOKN": "xoxb-1"}
    with caplog.at_level("WARNING", logger="bot.config"), pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        load_settings(environ, None)
    assert any("did you mean SLACK_BOT_TOKEN?" in w for w in _unknown_warnings(caplog))


def test_every_name_the_project_reads_or_documents_is_known(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No warning for a name read anywhere in the code, the scripts or .env.example (e.g. NPO_DATA_DIR)."""
    name_re = re.compile(r"\b(?:NPO|SLACK)_[A-Z0-9_]*[A-Z0-9]\b")
    files = [ROOT / ".env.example", *(p for p in (ROOT / "scripts").iterdir() if p.is_file())]
    for folder in ("bot", "storage", "npo", "bench", "scripts"):
        files += (p for p in (ROOT / folder).rglob("*.py") if p != ROOT / "bot" / "config.py")  # its docs cite typos
    names = {name for f in files for name in name_re.findall(f.read_text(encoding="utf-8", errors="replace"))}
    assert {"NPO_DATA_DIR", "NPO_LOAD_VARIANT", "NPO_FAULT_SECONDS", "NPO_DB_PATH"} <= names
    with caplog.at_level("WARNING", logger="bot.config"):
        load_settings(GOOD | dict.fromkeys(names - set(GOOD), ""), tmp_path / "missing.env")
    assert _unknown_warnings(caplog) == []


@pytest.mark.parametrize("zone", ["Europe", "Mars/Olympus", "../etc/passwd", ""])
def test_a_time_zone_that_is_not_one_is_a_config_error(zone: str) -> None:
    if not zone:
        assert load_settings(GOOD | {"NPO_TIMEZONE": zone}, None).timezone  # empty: the default
        return
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_TIMEZONE": zone}, None)
    assert "NPO_TIMEZONE" in info.value.problems  # a folder of the zone database ("Europe") included


def test_a_direct_message_as_incident_channel_needs_named_responders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_INCIDENT_CHANNEL": "D0DM"}, None)
    assert "NPO_RESPONDERS" in info.value.problems["NPO_INCIDENT_CHANNEL"]
    named = load_settings(GOOD | {"NPO_INCIDENT_CHANNEL": "D0DM", "NPO_RESPONDERS": "U0ALICE"}, None)
    assert named.incident_channel == "D0DM" and named.responders == ("U0ALICE",)
    assert load_settings(GOOD | {"NPO_INCIDENT_CHANNEL": "G0PRIVATE"}, None).incident_channel == "G0PRIVATE"


def test_credentials_in_a_url_are_never_shown(tmp_path: Path) -> None:
    """``user:password@`` in NPO_POLL_URL works (basic auth) but is masked in the start-up log line and errors."""
    s = load_settings(GOOD | {"NPO_POLL_URL": "https://npo:hunter2pass@feed.example/p"}, None)
    assert s.poll_url == "https://npo:hunter2pass@feed.example/p"
    assert "hunter2pass" not in str(s.redacted()) and "feed.example/p" in str(s.redacted())
    bad = {"NPO_POLL_URL": "htps://npo:hunter2pass@feed.example/p", "SLACK_API_URL": "npo:hunter2pass@slack.local"}
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | bad, None)
    assert set(info.value.problems) == set(bad) and "hunter2pass" not in str(info.value)


@pytest.mark.parametrize(
    "param", ["token", "key", "secret", "password", "auth", "signature", "sig", "access_token", "API_KEY", "apiKey"]
)
def test_a_credential_in_a_url_query_is_never_shown(param: str) -> None:
    """``?token=…`` in NPO_POLL_URL (a feed that authenticates by query string) was shown whole in the start-up log
    line and in the message refusing the URL; other parameters stay readable."""
    url = f"https://feed.example/p?since=1h&{param}=hunter2pass&limit=50"
    s = load_settings(GOOD | {"NPO_POLL_URL": url, "SLACK_API_URL": url}, None)
    assert s.poll_url == url
    shown = str(s.redacted()) + repr(s)
    assert "hunter2pass" not in shown and f"?since=1h&{param}=***&limit=50" in shown
    bad = {"NPO_POLL_URL": url.replace("https", "htps"), "SLACK_API_URL": url.replace("feed.example", ":0")}
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | bad, None)
    assert set(info.value.problems) == set(bad) and "hunter2pass" not in str(info.value)
    assert f"{param}=***" in info.value.problems["NPO_POLL_URL"]


def test_env_file_from_a_pipe_is_read_and_a_folder_is_refused(tmp_path: Path) -> None:
    """``--env-file <(sops -d .env.enc)`` names a pipe, not a regular file: it is read, not silently skipped."""
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(f"{k}={v}\n" for k, v in GOOD.items()).encode())
    os.close(write_end)
    try:
        assert load_settings({}, Path(f"/dev/fd/{read_end}")).incident_channel == "C0INC"
    finally:
        os.close(read_end)
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD, tmp_path)
    assert str(tmp_path) in info.value.problems


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b"])
def test_only_newlines_end_an_env_line(separator: str) -> None:
    """Line ends as python-dotenv and editors see them (CR, LF, CRLF): a pasted U+2028 does not split a line."""
    text = f"# pasted{separator}from a wiki\r\nA=1\rB=x{separator}y\nC=3 # line 4\n"
    assert parse_env_file(text) == {"A": "1", "B": f"x{separator}y", "C": "3"}
    with pytest.raises(ConfigError) as info:
        parse_env_file(text + f"# line 5{separator}b\nnot a setting\n")
    assert list(info.value.problems) == [".env line 6"]


@pytest.mark.parametrize("line", ["export\tA=1", "export  A=1", "\texport A=1"])
def test_export_followed_by_any_whitespace(line: str) -> None:
    assert parse_env_file(line + "\n") == {"A": "1"}


def test_a_bad_env_file_still_reports_every_other_problem(tmp_path: Path) -> None:
    env_file = _write_env(tmp_path, "SLACK_BOT_TOKEN=xoxb-1\nNPO_INGEST_TOKEN short\nNPO_PORT=http\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"NPO_OPS_CHANNEL": "ops"}, env_file)
    assert set(info.value.problems) == {
        f"{env_file} line 2",
        "SLACK_SIGNING_SECRET",
        "NPO_INGEST_TOKEN",
        "NPO_INCIDENT_CHANNEL",
        "NPO_OPS_CHANNEL",
        "NPO_PORT",
    }
    env_file.write_bytes(b"NPO_HOST=caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"NPO_PORT": "http"}, env_file)
    assert {str(env_file), "NPO_PORT", "SLACK_BOT_TOKEN"} <= set(info.value.problems)


def test_monitor_min_samples_may_not_exceed_the_window() -> None:
    """The window never holds more than NPO_MONITOR_WINDOW answers: more needed first means L_align never triggers."""
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_MONITOR_WINDOW": "10", "NPO_MONITOR_MIN_SAMPLES": "30"}, None)
    assert set(info.value.problems) == {"NPO_MONITOR_MIN_SAMPLES"}
    assert "NPO_MONITOR_WINDOW" in info.value.problems["NPO_MONITOR_MIN_SAMPLES"]
    s = load_settings(GOOD | {"NPO_MONITOR_WINDOW": "30", "NPO_MONITOR_MIN_SAMPLES": "30"}, None)
    assert (s.monitor_window, s.monitor_min_samples) == (30, 30)


def test_a_missing_settings_file_is_named_when_settings_are_missing(tmp_path: Path) -> None:
    """``--env-file /etc/npo/npo.evn`` (a typo) or no ``./.env``: the error listed five missing variables and never
    said that the file it was meant to read them from does not exist."""
    typo = tmp_path / "npo.evn"
    with pytest.raises(ConfigError) as info:
        load_settings({}, typo)
    assert "no such file" in info.value.notes[str(typo)] and str(typo) not in info.value.problems
    assert "SLACK_BOT_TOKEN" in info.value.problems
    assert load_settings(GOOD, typo).incident_channel == "C0INC"  # the environment alone is enough: no complaint


NOT_HOSTS = ["localhost:3000", "http://0.0.0.0", "[::]", "0.0.0.0/0", "bad host", "*", "999.1.1.1"]


@pytest.mark.parametrize("host", NOT_HOSTS)
def test_a_host_that_cannot_be_listened_on_is_a_config_error(host: str) -> None:
    """NPO_HOST with a port, a scheme or brackets was taken as given: ``serve`` started its scheduler and delivery
    worker, then failed to listen with "Name or service not known" (naming no setting) and exit status 3, which the
    systemd unit restarts again and again."""
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, "NPO_HOST": host}, None)
    assert list(info.value.problems) == ["NPO_HOST"]
    assert repr(host) in info.value.problems["NPO_HOST"] and "NPO_PORT" in info.value.problems["NPO_HOST"]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "npo-1.internal"])
def test_addresses_and_host_names_to_listen_on(host: str) -> None:
    assert load_settings({**GOOD, "NPO_HOST": f" {host} "}, None).host == host


def _configuration_rows() -> dict[str, str]:
    """Each setting of a table in the README's Configuration section, with the default its row gives ("" when the
    row's default is not a value: required, or empty). Rows naming two settings (``A`` / ``B``) give two."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`((?:NPO|SLACK)_[A-Z0-9_]+)`", cells[0])
        if not names:  # a table of figures (the miss weight's), not of settings
            continue
        defaults = [part.strip() for part in cells[1].split(" / ")]
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults, strict=True):
            rows[name] = default[1:-1] if default.startswith("`") and default.endswith("`") else ""
    return rows


def test_readme_configuration_documents_every_setting_with_its_default() -> None:
    """Every setting the bot reads has a row in the README's Configuration section, and a default given there is
    the one the bot uses (a newcomer reads that section, not ``bot/config.py``)."""
    from bot.config import _setting_names  # noqa: PLC0415

    rows = _configuration_rows()
    assert sorted(_setting_names() - rows.keys()) == []
    assert sorted(rows.keys() - _setting_names()) == []
    defaults = load_settings(GOOD, None)
    for name, default in rows.items():
        if default and name not in GOOD:
            assert load_settings(GOOD | {name: default}, None) == defaults, (name, default)


def test_env_example_gives_every_setting_at_its_default() -> None:
    """``.env.example`` names every setting the bot reads, each empty or at the default the bot uses."""
    from bot.config import _setting_names  # noqa: PLC0415

    example = parse_env_file((Path(__file__).resolve().parents[2] / ".env.example").read_text(encoding="utf-8"))
    assert sorted(_setting_names() ^ example.keys()) == []
    defaults = load_settings(GOOD, None)
    for name, value in example.items():
        if value and name not in GOOD:
            assert load_settings(GOOD | {name: value}, None) == defaults, (name, value)


@pytest.mark.parametrize(
    "url",
    [
        "http://feed.internal:8o8o/predictions",  # a typo in the port
        "http://feed.internal:99999/predictions",  # beyond 65535
        "http://feed.internal:0/predictions",
        "http://[::1/predictions",  # an IPv6 address whose bracket is not closed
        "http://[feed]/predictions",  # brackets around what is no IPv6 address
        "http://npo:hunter2pass@:8080/predictions",  # no host
    ],
)
@pytest.mark.parametrize("name", ["NPO_POLL_URL", "SLACK_API_URL"])
def test_a_url_whose_host_or_port_cannot_be_used_is_a_config_error(name: str, url: str) -> None:
    """Such a URL was accepted, and every poll (every Slack call) then failed with an invalid-URL error in the log
    (or connected to another port: 99999 is 34463 to the socket), call after call, while ``serve`` ran as if
    polling (posting)."""
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {name: url}, None)
    assert set(info.value.problems) == {name} and "hunter2pass" not in str(info.value)
    assert "host" in info.value.problems[name]


@pytest.mark.parametrize(
    "url",
    [
        "http://feed.internal:8080/predictions",
        "https://npo:hunter2pass@feed.internal/p?since=1h",
        "http://[::1]:9100/predictions",
        "http://127.0.0.1:/predictions",  # an empty port is the scheme's
        "http://feed.internal",
    ],
)
def test_urls_with_a_usable_host_and_port(url: str) -> None:
    assert load_settings(GOOD | {"NPO_POLL_URL": url}, None).poll_url == url
    api_url = load_settings(GOOD | {"SLACK_API_URL": url}, None).slack_api_url
    assert api_url == (url if url.endswith("/") else url + "/")


@pytest.mark.parametrize("token", ["s3cr€t-poll-token", "poll-token\n-second-line", "poll\x00token", "poll\x7ftoken"])
def test_a_poll_token_an_http_header_cannot_carry_is_a_config_error(token: str) -> None:
    """A non-ASCII character in NPO_POLL_TOKEN stopped ``serve`` with a ``UnicodeEncodeError`` traceback and exit
    status 1 (restarted by the service manager, to fail again); a line break made every poll fail with the whole
    header, token included, in the log line."""
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_POLL_URL": "http://127.0.0.1:9100/predictions", "NPO_POLL_TOKEN": token}, None)
    assert set(info.value.problems) == {"NPO_POLL_TOKEN"}
    assert "poll" not in str(info.value).replace("NPO_POLL_TOKEN", "")  # no part of the token is shown
    assert load_settings(GOOD | {"NPO_POLL_TOKEN": "a.b-c_d~e+f/g== h"}, None).poll_token == "a.b-c_d~e+f/g== h"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SLACK_TEAM_ID", "t0123abcd", "must be a workspace id like T0123ABCD (auth.test's team_id), got 't0123abcd'"),
        (
            "SLACK_TEAM_ID",
            "xoxb-1-2",
            "must be a workspace id like T0123ABCD (auth.test's team_id), got 'xoxb-***'",
        ),  # a token is never shown
        (
            "SLACK_BOT_USER_ID",
            "B0123ABCD",
            "must be the bot's user id like U0123ABCD (auth.test's user_id), got 'B0123ABCD' (B… is the bot id; the"
            " bot *user* id starts with U)",
        ),
        ("SLACK_BOT_USER_ID", "@npo", "must be the bot's user id like U0123ABCD (auth.test's user_id), got '@npo'"),
    ],
)
def test_a_workspace_or_bot_user_id_that_is_not_one_is_a_config_error(name: str, value: str, message: str) -> None:
    """Before, any text was handed to Bolt: a bot id (B…) in SLACK_BOT_USER_ID made Bolt's check for the bot's own
    events compare against the wrong id, silently."""
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, name: value}, None)
    assert info.value.problems == {name: message}


def test_workspace_and_bot_user_ids_that_are_ones() -> None:
    settings = load_settings({**GOOD, "SLACK_TEAM_ID": "E0ORG1", "SLACK_BOT_USER_ID": "W0BOT1"}, None)
    assert (settings.team_id, settings.bot_user_id) == ("E0ORG1", "W0BOT1")
    settings = load_settings({**GOOD, "SLACK_TEAM_ID": "T0TEAM", "SLACK_BOT_USER_ID": "U0BOT"}, None)
    assert (settings.team_id, settings.bot_user_id) == ("T0TEAM", "U0BOT")


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize(("mode", "verb"), [(0o644, "read"), (0o640, "read"), (0o620, "change"), (0o600, None)])
def test_a_settings_file_with_secrets_that_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, verb: str | None
) -> None:
    """``cp .env.example .env`` keeps the example's mode (usually 0644): the signing secret and the bot token are
    then readable by every user of the machine. Said once, with the fix; the settings still load. 0600: silence."""
    env_file = _write_env(tmp_path, "SLACK_SIGNING_SECRET=s3cret-from-the-file\nNPO_HOST=127.0.0.1\n")
    env_file.chmod(mode)
    environ = {k: v for k, v in GOOD.items() if k != "SLACK_SIGNING_SECRET"}
    with caplog.at_level("WARNING", logger="bot.config"):
        assert load_settings(environ, env_file).slack_signing_secret == "s3cret-from-the-file"
    exposed = [w for w in _unknown_warnings(caplog) if "chmod 600" in w]
    if verb is None:
        assert exposed == []
    else:
        assert exposed == [
            f"{env_file} holds SLACK_SIGNING_SECRET and other users may {verb} it (mode {mode:04o}): "
            f"chmod 600 {env_file}"
        ]
        assert "s3cret" not in exposed[0]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_readable_settings_file_without_secrets_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Secrets set in the environment (a unit's ``EnvironmentFile`` elsewhere) and only channels and ports in the
    file: nothing to protect there."""
    env_file = _write_env(tmp_path, "NPO_PORT=3001\n")
    env_file.chmod(0o644)
    with caplog.at_level("WARNING", logger="bot.config"):
        assert load_settings(GOOD, env_file).port == 3001
    assert not [w for w in _unknown_warnings(caplog) if "chmod" in w]
