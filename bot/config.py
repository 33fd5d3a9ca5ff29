"""Settings for the running bot, read once at start-up from the environment and an optional ``.env`` file.

:func:`load_settings` reads the bot's settings; everything it starts receives a :class:`Settings`. Three commands
also read ``os.environ`` themselves: ``NPO_DATA_DIR`` (``bot/evaluate/cli.py``, environment only), and
``NPO_TIMEZONE`` / ``NPO_DB_PATH`` (``bot/jobs/cli.py``, ``bot/db_cli.py``, with :func:`read_setting`: the one value
as :func:`load_settings` finds it), so ``report --db`` and ``db`` need no complete settings. Values in the real
environment win over the ``.env`` file (one set empty there too). Every
problem is collected and reported together in one :class:`ConfigError`, each naming its variable, so one start-up
shows all of them.

The ``.env`` parser is deliberately small: ``NAME=value`` lines, ``#`` comments, blank lines, an optional
``export`` prefix and optional single or double quotes around the value, as python-dotenv and docker compose read
them: a quoted value is what is between the quotes, and a ``#`` after the closing quote starts a comment; in an
unquoted value a ``#`` after whitespace does. No interpolation and no escape sequences. A UTF-8 byte-order mark is
ignored. A malformed line is reported by file and line number, never with its value (it may hold a secret); a
message about a value that is quoted masks any Slack token and the value of any secret setting in it.

An ``NPO_*`` or ``SLACK_*`` name that no setting reads (a typo such as ``NPO_DB_PAHT``) is logged as a warning,
with the closest known name, and otherwise ignored: it may belong to another tool.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, cast

from npo.feedback import SKIP_LAMBDA_MAX, SKIP_LAMBDA_MIN

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# The bandit's cost of "suppressed, then a real fault", in answers (NPO_MISS_WEIGHT). Chosen on the demo's stream,
# where seven of ten kinds are noise: see README, "Configuration".
DEFAULT_MISS_WEIGHT = 3.0
MISS_WEIGHT_MAX = 10.0  # the largest weight npo.bandit.BanditConfig accepts
# What a resolved Alertmanager/Grafana alert that does not say whether the fault was real (annotation npo_outcome)
# means (NPO_ALERTMANAGER_RESOLVED): "unknown" — no outcome, it only closes the recommendation — or "real_fault".
AlertmanagerResolved = Literal["unknown", "real_fault"]
# The step size η of the m(k) update (NPO_STEP_SIZE): "decaying" — Robbins–Monro η_n = (n + 10)^−0.6 over the key's
# effective count (npo.misalignment.EtaSchedule's default) — or a constant in (0, 1].
StepSize = Literal["decaying"] | float
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A host name to listen on: dot-separated labels of letters, digits, - and _ (no scheme, port, path or space).
_HOST_NAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")
_CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_RESPONDER_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_TEAM_RE = re.compile(r"^[TE][A-Z0-9]{2,}$")
_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
_URL_AUTHORITY_RE = re.compile(r"^(?:\[(?P<ip6>[^\]]*)\]|[^:\[\]]+)(?::(?P<port>[0-9]*))?$")  # host[:port]
_SHOWN_NAME_RE = re.compile(r"[A-Z][A-Z0-9_.-]*")
# ``user:password@`` after ``//`` anywhere, or at the start; up to the authority's last ``@``, as httpx reads it (a
# password may hold a raw ``@``)
_URL_USERINFO_RE = re.compile(r"(?:(?<=//)|^)[^/?#\s]+@")
# ``name=value`` in a query string (or a fragment): the value ends at ``&``, ``#``, a space, or a quote that ends the
# text or is followed by a space (the one closing a quoted URL in a message: httpx's ``for url '…'``)
_URL_PARAM_RE = re.compile(r"(?<=[?&#])(?P<name>[^=&#\s]+)=(?P<value>(?:[^&#\s'\"]|['\"](?=[^&#\s'\"]))*)")
# A query parameter whose value is a credential: its name (decoded, in lower case) holds one of these
_SECRET_PARAM_RE = re.compile(r"token|key|secret|passw|pwd|auth|credential|signature|session|(?:sig|pass)(?![a-z])")
_LINE_END_RE = re.compile(r"\r\n|\r|\n")  # line ends as python-dotenv counts them (splitlines() also takes U+2028…)
T = TypeVar("T")
log = logging.getLogger(__name__)

_PREFIXES = ("SLACK_", "NPO_")
# NPO_*/SLACK_* names read outside the settings (by the evaluation CLI, the load bench, the reliability script and
# the tests): no warning for these. Every other name is known from what load_settings reads (_Reader.asked).
_READ_ELSEWHERE = frozenset(
    {
        "NPO_DATA_DIR",  # bot/evaluate/cli.py
        "NPO_LOAD_CONFIDENT",  # bench/load_bench.py
        "NPO_LOAD_DEBUG",
        "NPO_LOAD_VARIANT",
        "NPO_FAULT_SECONDS",  # scripts/reliability, tests/hardening
        "NPO_DEMO_SCREENSHOT",  # tests/demo
        "NPO_HYPOTHESIS",  # tests/conftest.py
    }
)


DEFAULT_ENV_FILE = Path(".env")  # the settings file a command reads when no --env-file is given; it may be absent


class NoSettingsFile(Exception):
    """The settings file named with ``--env-file`` does not exist. One line, naming the option and the file."""


def settings_file(named: Path | None) -> Path:
    """The settings file a command reads: ``named`` (its ``--env-file``), else :data:`DEFAULT_ENV_FILE`.

    ``./.env`` may be absent: the settings then come from the environment alone. A file named explicitly must
    exist (a pipe such as ``<(sops -d npo.env.enc)`` does): a typo in ``--env-file`` otherwise ran the command on
    the environment alone, and ``db migrate`` created an empty ``./npo.db``. Raises :class:`NoSettingsFile`.
    """
    if named is None:
        return DEFAULT_ENV_FILE
    if not named.exists():
        raise NoSettingsFile(f"--env-file {named}: no such file")
    return named


class ConfigError(ValueError):
    """One or more settings are missing or invalid. ``problems`` maps each variable name to what is wrong."""

    def __init__(self, problems: Mapping[str, str], notes: Mapping[str, str] | None = None) -> None:
        self.problems = dict(problems)
        self.notes = dict(notes or {})  # context that is not itself a problem (which settings file was read)
        lines = "\n".join(f"  {name}: {message}" for name, message in self.problems.items())
        lines += "".join(f"\n  note: {name}: {message}" for name, message in self.notes.items())
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the bot needs from its environment. Built once by :func:`load_settings`; immutable."""

    slack_bot_token: str
    slack_signing_secret: str
    ingest_token: str
    incident_channel: str
    ops_channel: str
    slack_api_url: str = DEFAULT_SLACK_API_URL
    db_path: Path = Path("npo.db")
    db_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    host: str = "127.0.0.1"
    port: int = 3000
    responders: tuple[str, ...] = ()  # U…/W… user ids and S… user-group ids; empty = incident channel members
    policy_file: Path | None = None
    skip_lambda: float = 0.3
    step_size: StepSize = "decaying"  # η of the m(k) update: "decaying" or a constant in (0, 1]
    skip_timeout_min: float = 60.0
    miss_weight: float = DEFAULT_MISS_WEIGHT  # the threshold bandit's weight of a suppressed real fault
    alertmanager_resolved: AlertmanagerResolved = "unknown"  # a resolved alert that does not say: no outcome
    timezone: str = "UTC"
    max_body_bytes: int = 1_000_000
    body_timeout_s: float = 30.0  # a request body that sends nothing for this long is answered 408
    storm_threshold: int = 20  # more pending recommendations than this for one channel → one digest message
    digest_delay_s: float = 300.0  # how long capped (digest) recommendations gather before their digest is posted
    slack_timeout_s: float = 5.0  # Web API timeout of the delivery worker and the listeners' look-ups
    update_interval_s: float = 1.0  # a recommendation's message is updated (chat.update) at most this often
    feedback_rate_per_min: float = 30.0  # each person's clicks refill at this many a minute (0 = no limit)
    feedback_burst: int = 30  # ...into a bucket of this many: the clicks one person may make at once
    poll_url: str | None = None  # a URL serving predictions as JSON, polled by ``serve`` (off when None)
    poll_interval_s: float = 30.0
    poll_token: str = ""  # optional bearer token sent to poll_url
    poll_max_bytes: int = 10_000_000  # a poll's answer larger than this is refused (nothing of it decided)
    monitor_interval_min: float = 60.0  # the meta-monitor runs this often
    monitor_loss_threshold: float = 0.3  # L_align over the window above this triggers a retraining proposal
    monitor_window: int = 200  # the most recent answers L_align is averaged over
    monitor_window_days: float = 7.0  # ...of the last this many days
    monitor_min_samples: int = 30  # answers needed in the window before L_align may trigger
    monitor_cooldown_h: float = 6.0  # hours after a proposal before the next one
    monitor_proposal_expiry_h: float = 168.0  # hours after which a proposal nobody answered expires
    weekly_summary_at: tuple[str, int, int] = ("mon", 9, 0)  # weekday name, hour, minute in ``timezone``
    team_id: str = "T00000000"
    bot_user_id: str = "U00000000"
    slack_app_token: str = ""  # app-level token (xapp-…) for Socket Mode (``npo-bot socket``); unused over HTTP
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def web_api_timeout(self) -> int:
        """``NPO_SLACK_TIMEOUT_S`` for slack_sdk's Web API clients, as it is (0.3 s stays 0.3 s, 2.9 s stays 2.9 s):
        slack_sdk annotates ``timeout`` as ``int`` but hands it to urllib and aiohttp, which take seconds as a float.
        """
        return cast(int, self.slack_timeout_s)

    @property
    def user_responders(self) -> frozenset[str]:
        return frozenset(r for r in self.responders if r[0] in "UW")

    @property
    def group_responders(self) -> tuple[str, ...]:
        return tuple(r for r in self.responders if r.startswith("S"))

    def __repr__(self) -> str:
        """Secrets masked: a repr can end up in a log line, a traceback or a test failure."""
        fields = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({fields})"

    def redacted(self) -> dict[str, object]:
        """The settings with the secrets masked (for a start-up log line)."""
        secret = {"slack_bot_token", "slack_signing_secret", "ingest_token", "poll_token", "slack_app_token"}
        shown = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "extra"}
        for name, value in shown.items():
            if name in secret and value:
                shown[name] = "***"
            elif name in ("slack_api_url", "poll_url") and value:
                shown[name] = masked_url(value)
        return shown


def masked_url(text: str) -> str:
    """``text`` (a URL, or a message naming URLs) with every URL's credentials replaced, for messages and log lines:
    ``user:password@`` by ``***@``, and the value of a query parameter named like a credential (``token``,
    ``api_key``, ``access_token``, ``secret``, ``password``, ``auth``, ``signature``, ``sig``, ``X-Amz-Credential``…,
    in any case) by ``***``."""
    return _URL_PARAM_RE.sub(_masked_param, _URL_USERINFO_RE.sub("***@", text))


def _masked_param(match: re.Match[str]) -> str:
    name = match["name"]
    if not match["value"] or not _SECRET_PARAM_RE.search(urllib.parse.unquote_plus(name).lower()):
        return match.group()
    return f"{name}=***"


def _bad_name(name: str) -> str:
    """Describe the invalid name part of a malformed line without showing anything that may be a secret.

    Only a leading upper-case word (``SLACK-SIGNING_SECRET``), at most 32 characters, is shown: tokens and keys
    (``xoxb-…``, hex, base64) have lower-case letters, and a line like ``NAME: value==`` stops at the colon.
    """
    shown = match.group() if (match := _SHOWN_NAME_RE.match(name)) else ""
    if len(shown) < 2:
        return "the text before '=' is not a valid variable name"
    cut = shown[:32] + ("…" if len(shown) > 32 or len(shown) < len(name) else "")
    return f"{cut!r} is not a valid variable name"


def _quoted(value: str) -> str | None:
    """The text between the quotes of ``value`` (which starts with a quote); None when it is not well quoted.

    ``"x"``, ``"x" # comment`` and ``"x"#comment`` give ``x``. A quote escaped with a backslash does not close the
    value (the backslash is kept: no escape sequences); a value wholly in quotes keeps any inner quotes as before.
    """
    quote = value[0]
    close = 1
    while (close := value.find(quote, close)) != -1 and value[close - 1] == "\\":
        close += 1
    if close != -1 and re.fullmatch(r"\s*(#.*)?", value[close + 1 :]):
        return value[1:close]
    if len(value) >= 2 and value[-1] == quote:
        return value[1:-1]
    return None


def parse_env_file(text: str, source: str = ".env") -> dict[str, str]:
    """Parse ``.env`` text into a dict. Raises :class:`ConfigError` naming the line of a malformed entry.

    ``source`` names the file in the messages. A message never repeats the line's value: it may be a secret.
    """
    values, problems = _parse_env(text, source)
    if problems:
        raise ConfigError(problems)
    return values


def _parse_env(text: str, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """The values of the well-formed lines of ``text``, and a problem for each malformed line (by line number)."""
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for number, raw in enumerate(_LINE_END_RE.split(text.removeprefix("\ufeff")), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^export\s+", "", line)
        name, sep, value = line.partition("=")
        name = name.strip()
        where = f"{source} line {number}"
        if not sep:
            problems[where] = "expected NAME=value, found no '=' (the line is not shown)"
            continue
        if not _NAME_RE.match(name):
            problems[where] = (
                f"expected NAME=value, but {_bad_name(name)} (letters, digits and _; the value is not shown)"
            )
            continue
        if value.strip()[:1] in ("'", '"'):
            inner = _quoted(value.strip())
            if inner is None:
                problems[where] = f"{name}: unterminated quote, or text after the closing quote (value not shown)"
                continue
            value = inner
        else:  # split before stripping: in ``NAME=  # comment`` the ``#`` follows whitespace, so the value is empty
            value = re.split(r"\s#", value, maxsplit=1)[0].strip()
        values[name] = value
    return values, problems


_SECRET_NAMES = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "NPO_INGEST_TOKEN", "NPO_POLL_TOKEN")
_SLACK_TOKEN_RE = re.compile(
    r"\b(xox[a-z]|xapp)-[A-Za-z0-9][A-Za-z0-9-]*"
)  # a Slack token, where a message quotes a value


def _without_secrets(problems: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """``problems`` with every secret a message would quote masked: a Slack token (``xoxb-***``) and the value of
    any secret setting, which a line pasted in the wrong place (the bot token as ``NPO_INCIDENT_CHANNEL``) puts in
    a message that shows what it got. The message goes to the terminal or the service's log."""
    secrets = sorted({v for n in _SECRET_NAMES if len(v := values.get(n, "").strip()) >= 8}, key=len, reverse=True)
    hidden = {}
    for name, message in problems.items():
        text = _SLACK_TOKEN_RE.sub(r"\1-***", message)  # first: the kind of token stays visible
        for secret in secrets:  # the longest first: one secret may contain another
            text = text.replace(secret, "***")
        hidden[name] = text
    return hidden


def _warn_unknown(names: Iterable[str], known: Iterable[str]) -> None:
    """Log each ``NPO_*``/``SLACK_*`` name that nothing reads, once, with the closest known name if there is one."""
    candidates = sorted(set(known) | _READ_ELSEWHERE)
    for name in sorted({n for n in names if n.startswith(_PREFIXES)} - set(candidates)):
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        log.warning("unknown setting %s is ignored%s", name, hint)


def _warn_exposed(env_file: Path | None, from_file: Mapping[str, str]) -> None:
    """Log once when ``env_file`` is a regular file that holds a secret (:data:`_SECRET_NAMES`) and other users may
    read or change it (any group or other permission bit), as ``ssh`` does for a private key: ``cp .env.example
    .env`` keeps the example's mode, usually 0644. A pipe (``<(sops -d …)``), a missing file or Windows: nothing."""
    if env_file is None or os.name == "nt":
        return
    held = [n for n in _SECRET_NAMES if from_file.get(n, "").strip()]
    if not held:
        return
    try:
        st = env_file.stat()
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
        return
    log.warning(
        "%s holds %s and other users may %s it (mode %04o): chmod 600 %s",
        env_file,
        ", ".join(held),
        "read" if mode & 0o044 else "change",
        mode,
        env_file,
    )


class _Reader:
    """Reads typed values from a merged mapping, collecting problems instead of stopping at the first."""

    def __init__(self, values: Mapping[str, str], problems: Mapping[str, str]) -> None:
        self.values = values
        self.problems: dict[str, str] = dict(problems)  # the settings file's own problems come first
        self.asked: set[str] = set()  # every name read: the settings' own list of variables

    def raw(self, name: str) -> str:
        self.asked.add(name)
        return self.values.get(name, "").strip()

    def required(self, name: str, check: Callable[[str], str | None] | None = None) -> str:
        value = self.raw(name)
        if not value:
            self.problems[name] = "is required"
            return ""
        if check is not None and (message := check(value)):
            self.problems[name] = message
        return value

    def optional(self, name: str, default: T, convert: Callable[[str], T]) -> T:
        value = self.raw(name)
        if not value:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.problems[name] = str(exc)
            return default


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return convert


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {text}")
        return number

    return convert


def _api_url(text: str) -> str:
    """The Web API's base URL, ending in ``/``, with a host and port a connection can be opened to: with a bad one
    every Slack call would fail (or reach another port) while ``serve`` ran as if posting."""
    text = _http_url(text)
    return text if text.endswith("/") else text + "/"


def _usable_authority(ip6: str | None, port: str | None) -> bool:
    """Whether a URL's bracketed IPv6 address (None: a host name or an IPv4 address) and port (empty: the
    scheme's) can be connected to."""
    if port and not 1 <= int(port) <= 65535:
        return False
    if ip6 is not None:
        try:
            ipaddress.IPv6Address(ip6)
        except ValueError:
            return False
    return True


def _http_url(text: str) -> str:
    """An http(s) URL whose host and port a connection can be opened to: a port that is no number (``:8o8o``),
    beyond 65535 (the socket layer takes 99999 as 34463) or an IPv6 address without its closing bracket would fail
    every request (every poll of ``NPO_POLL_URL``, every Slack call to ``SLACK_API_URL``), a traceback in the log
    each time, while ``serve`` runs as if all were well."""
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", text):
        raise ValueError(f"must be an http(s) URL, got {masked_url(text)!r}")
    authority = re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[2]
    match = _URL_AUTHORITY_RE.match(authority)
    if match is None or not _usable_authority(match["ip6"], match["port"]):
        raise ValueError(
            "must name a host (an IPv6 address in brackets) and, if any, a port from 1 to 65535, "
            f"got {masked_url(text)!r}"
        )
    return text


def _poll_token(text: str) -> str:
    """A token an HTTP header can carry: ASCII without control characters. A non-ASCII character stopped ``serve``
    with a traceback (httpx encodes headers as ASCII), and a line break failed every poll with the header, token
    included, in the log line. The message names the place, never the character."""
    for place, char in enumerate(text, start=1):
        if not " " <= char <= "~":
            raise ValueError(
                f"character {place} is not one an HTTP header can carry (only ASCII letters, digits, punctuation "
                "and spaces: no accented letter, line break or other control character)"
            )
    return text


def _host(text: str) -> str:
    """An address to listen on: an IP address (``0.0.0.0``, ``::``) or a host name. Checked here, so that
    ``localhost:3000``, ``http://0.0.0.0`` or ``[::]`` stops start-up naming the setting, before the scheduler runs
    (the listener would fail later with "Name or service not known" and exit status 3, which a service manager
    restarts)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOST_NAME_RE.match(text) or re.fullmatch(r"[\d.]+", text):  # 999.1.1.1: no address, no name
            raise ValueError(
                "must be an IP address or a host name to listen on, like 127.0.0.1, 0.0.0.0 or :: (no scheme, "
                f"brackets or port: the port is NPO_PORT), got {text!r}"
            ) from None
    return text


def _synchronous(text: str) -> Literal["NORMAL", "FULL"]:
    upper = text.upper()
    if upper == "NORMAL":
        return "NORMAL"
    if upper == "FULL":
        return "FULL"
    raise ValueError(f"must be NORMAL or FULL, got {text!r}")


def _alertmanager_resolved(text: str) -> AlertmanagerResolved:
    lower = text.lower()
    if lower == "unknown":
        return "unknown"
    if lower == "real_fault":
        return "real_fault"
    raise ValueError(f"must be unknown or real_fault, got {text!r}")


def _step_size(text: str) -> StepSize:
    if text.lower() == "decaying":
        return "decaying"
    try:
        number = float(text)
    except ValueError:
        number = math.nan
        shown = repr(text)
    else:
        shown = text
    if not (math.isfinite(number) and 0.0 < number <= 1.0):
        raise ValueError(f"must be decaying or a constant step size in (0, 1], got {shown}")
    return number


def _responders(text: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [item for item in items if not _RESPONDER_RE.match(item)]
    if bad:
        raise ValueError(f"expected comma-separated U…/W… user or S… user-group ids, got {', '.join(bad)}")
    return items


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Accepted spellings of each weekday: its three letters, its English name, and the common short forms "tues",
# "thur", "thurs". "month" or "monkey" are no Monday.
_WEEKDAY_NAMES = {
    **{day: day for day in _WEEKDAYS},
    **{
        f"{day}{rest}": day
        for day, rest in zip(_WEEKDAYS, ("day", "sday", "nesday", "rsday", "day", "urday", "day"), strict=True)
    },
    "tues": "tue",
    "thur": "thu",
    "thurs": "thu",
}


def _weekly_at(text: str) -> tuple[str, int, int]:
    match = re.match(r"^([A-Za-z]+)\s+(\d{1,2}):(\d{2})$", text.strip())
    day = _WEEKDAY_NAMES.get(match.group(1).lower(), "") if match else ""
    if not match or not day or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise ValueError(f"must be a weekday name and a time like 'mon 09:00', got {text!r}")
    return day, int(match.group(2)), int(match.group(3))


def _timezone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the zone database ("Europe")
        raise ValueError(f"must be an IANA time zone like Europe/Berlin, got {text!r}") from None
    return text


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"no such file: {text}")
    return path


def _channel(text: str) -> str | None:
    return None if _CHANNEL_RE.match(text) else f"must be a channel id like C0123ABCD, got {text!r}"


def _token(text: str) -> str | None:
    return None if text.startswith("xoxb-") else "must be a bot token starting with xoxb-"


def _signing_secret(text: str) -> str | None:
    """Any text but a Slack token: the bot token pasted here too (both come from the app's settings) would start
    the bot, and the signature check would then refuse every click, command and event. The value is not shown."""
    if re.match(r"^(xox[a-z]|xapp)-", text):
        return (
            "must be the app's signing secret (Basic Information → App Credentials → Signing Secret), "
            "not a token (xoxb-…, xapp-…)"
        )
    return None


def _team_id(text: str) -> str:
    """A workspace id (T…) or, on Enterprise Grid, an organisation id (E…), as ``auth.test`` returns ``team_id``."""
    if not _TEAM_RE.match(text):
        raise ValueError(f"must be a workspace id like T0123ABCD (auth.test's team_id), got {text!r}")
    return text


def _bot_user_id(text: str) -> str:
    """The bot's user id (U…, W… on Enterprise Grid), as ``auth.test`` returns ``user_id``: Bolt drops events the bot
    caused by it, so a wrong one lets the bot react to its own messages. The bot id (B…) is a common mix-up."""
    if _USER_RE.match(text):
        return text
    hint = " (B… is the bot id; the bot *user* id starts with U)" if text.startswith("B") else ""
    raise ValueError(f"must be the bot's user id like U0123ABCD (auth.test's user_id), got {text!r}{hint}")


def _app_token(text: str) -> str:
    if not text.startswith("xapp-"):
        raise ValueError("must be an app-level token starting with xapp-")
    return text


def _long_secret(text: str) -> str | None:
    return None if len(text) >= 16 else "must be at least 16 characters"


def _merged(environ: Mapping[str, str], env_file: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """The ``NPO_*``/``SLACK_*`` values of ``environ`` over those of the ``env_file`` (if it exists), and the
    file's problems (it cannot be read, is not UTF-8, or has malformed lines; its well-formed lines still count)."""
    merged, _, file_problems = _read_both(environ, env_file)
    return merged, file_problems


def _read_both(
    environ: Mapping[str, str], env_file: Path | None
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """:func:`_merged`, with the file's own values between (the file is read once: it may be a pipe)."""
    merged: dict[str, str] = {}
    file_problems: dict[str, str] = {}
    # exists(), not is_file(): ``--env-file <(sops -d .env.enc)`` names a pipe. A folder is an error, not skipped.
    if env_file is not None and env_file.exists():
        try:
            text = env_file.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows editors) is dropped
        except UnicodeError as exc:
            file_problems[str(env_file)] = f"cannot be read as UTF-8 text: {exc}"
        except OSError as exc:
            file_problems[str(env_file)] = f"cannot be read: {exc.strerror or exc}"
        else:
            values, file_problems = _parse_env(text, str(env_file))
            merged.update(values)
    from_file = dict(merged)
    merged.update({k: v for k, v in environ.items() if k.startswith(_PREFIXES)})
    return merged, from_file, file_problems


def read_setting(environ: Mapping[str, str], env_file: Path | None, name: str) -> str:
    """The value of the one setting ``name`` exactly as :func:`load_settings` finds it — the environment over the
    ``env_file``, a variable set empty in the environment hiding the file's value, surrounding whitespace dropped
    — without the rest of the settings (``npo-bot db`` needs only the database path). "" when it is not set.
    Raises :class:`ConfigError` when the file cannot be read, is not UTF-8 or has a malformed line, as
    :func:`load_settings` would."""
    return read_settings(environ, env_file, name)[name]


def read_settings(environ: Mapping[str, str], env_file: Path | None, *names: str) -> dict[str, str]:
    """Each of ``names`` as :func:`read_setting` finds it, from one reading of the file (``npo-bot report`` needs
    the database path and the time zone): an unknown name in it is warned about once, not once per setting."""
    merged, file_problems = _merged(environ, env_file)
    if file_problems:
        raise ConfigError(file_problems)
    _warn_unknown(merged, _setting_names())  # a typo (NPO_DB_PAHT) is said here too, not only by ``serve``
    return {name: merged.get(name, "").strip() for name in names}


def _setting_names() -> set[str]:
    """Every name :func:`load_settings` reads."""
    r = _Reader({}, {})
    _read_settings(r)
    return r.asked


def _read_settings(r: _Reader) -> Settings:
    """The settings as ``r`` reads them, each problem collected in ``r.problems``."""
    return Settings(
        slack_bot_token=r.required("SLACK_BOT_TOKEN", _token),
        slack_signing_secret=r.required("SLACK_SIGNING_SECRET", _signing_secret),
        ingest_token=r.required("NPO_INGEST_TOKEN", _long_secret),
        incident_channel=r.required("NPO_INCIDENT_CHANNEL", _channel),
        ops_channel=r.required("NPO_OPS_CHANNEL", _channel),
        slack_api_url=r.optional("SLACK_API_URL", DEFAULT_SLACK_API_URL, _api_url),
        db_path=r.optional("NPO_DB_PATH", Path("npo.db"), Path),
        db_synchronous=r.optional("NPO_DB_SYNCHRONOUS", "NORMAL", _synchronous),
        host=r.optional("NPO_HOST", "127.0.0.1", _host),
        port=r.optional("NPO_PORT", 3000, _int_in(0, 65535)),
        responders=r.optional("NPO_RESPONDERS", (), _responders),
        policy_file=r.optional("NPO_POLICY_FILE", None, _existing_file),
        skip_lambda=r.optional("NPO_SKIP_LAMBDA", 0.3, _float_in(SKIP_LAMBDA_MIN, SKIP_LAMBDA_MAX)),
        step_size=r.optional("NPO_STEP_SIZE", "decaying", _step_size),
        skip_timeout_min=r.optional("NPO_SKIP_TIMEOUT_MIN", 60.0, _float_in(1, 7 * 24 * 60)),
        miss_weight=r.optional("NPO_MISS_WEIGHT", DEFAULT_MISS_WEIGHT, _float_in(0, MISS_WEIGHT_MAX)),
        alertmanager_resolved=r.optional("NPO_ALERTMANAGER_RESOLVED", "unknown", _alertmanager_resolved),
        timezone=r.optional("NPO_TIMEZONE", "UTC", _timezone),
        max_body_bytes=r.optional("NPO_MAX_BODY_BYTES", 1_000_000, _int_in(1024, 100_000_000)),
        body_timeout_s=r.optional("NPO_BODY_TIMEOUT_S", 30.0, _float_in(0.1, 600)),
        storm_threshold=r.optional("NPO_STORM_THRESHOLD", 20, _int_in(1, 10_000)),
        digest_delay_s=r.optional("NPO_DIGEST_DELAY_S", 300.0, _float_in(0, 86_400)),
        slack_timeout_s=r.optional("NPO_SLACK_TIMEOUT_S", 5.0, _float_in(0.1, 60)),
        update_interval_s=r.optional("NPO_UPDATE_INTERVAL_S", 1.0, _float_in(0, 60)),
        feedback_rate_per_min=r.optional("NPO_FEEDBACK_RATE_PER_MIN", 30.0, _float_in(0, 100_000)),
        feedback_burst=r.optional("NPO_FEEDBACK_BURST", 30, _int_in(1, 100_000)),
        poll_url=r.optional("NPO_POLL_URL", None, _http_url),
        poll_interval_s=r.optional("NPO_POLL_INTERVAL_S", 30.0, _float_in(1, 86_400)),
        poll_token=r.optional("NPO_POLL_TOKEN", "", _poll_token),
        poll_max_bytes=r.optional("NPO_POLL_MAX_BYTES", 10_000_000, _int_in(1024, 500_000_000)),
        monitor_interval_min=r.optional("NPO_MONITOR_INTERVAL_MIN", 60.0, _float_in(1, 24 * 60)),
        monitor_loss_threshold=r.optional("NPO_MONITOR_LOSS_THRESHOLD", 0.3, _float_in(0, 1)),
        monitor_window=r.optional("NPO_MONITOR_WINDOW", 200, _int_in(10, 100_000)),
        monitor_window_days=r.optional("NPO_MONITOR_WINDOW_DAYS", 7.0, _float_in(1, 365)),
        monitor_min_samples=r.optional("NPO_MONITOR_MIN_SAMPLES", 30, _int_in(1, 100_000)),
        monitor_cooldown_h=r.optional("NPO_MONITOR_COOLDOWN_H", 6.0, _float_in(0, 24 * 30)),
        monitor_proposal_expiry_h=r.optional("NPO_MONITOR_PROPOSAL_EXPIRY_H", 168.0, _float_in(1, 24 * 90)),
        weekly_summary_at=r.optional("NPO_WEEKLY_SUMMARY_AT", ("mon", 9, 0), _weekly_at),
        team_id=r.optional("SLACK_TEAM_ID", "T00000000", _team_id),
        bot_user_id=r.optional("SLACK_BOT_USER_ID", "U00000000", _bot_user_id),
        slack_app_token=r.optional("SLACK_APP_TOKEN", "", _app_token),
    )


def load_settings(environ: Mapping[str, str], env_file: Path | None = Path(".env")) -> Settings:
    """Build :class:`Settings` from ``environ`` (normally ``os.environ``) over the ``env_file`` (if it exists).

    Raises :class:`ConfigError` listing every missing or invalid variable, and every malformed line of the file
    (the well-formed ones still count). Reads the file; nothing else.
    """
    merged, from_file, file_problems = _read_both(environ, env_file)
    r = _Reader(merged, file_problems)
    settings = _read_settings(r)
    _warn_unknown(merged, r.asked)  # before any ConfigError: a typo may be why a required name is missing
    _warn_exposed(env_file, from_file)
    direct_message = settings.incident_channel.startswith("D") and "NPO_INCIDENT_CHANNEL" not in r.problems
    if direct_message and not settings.responders:
        # Who may answer defaults to the incident channel's members, which a direct message does not list to the bot
        # (conversations.members would need im:read, which the manifest does not ask for).
        r.problems["NPO_INCIDENT_CHANNEL"] = (
            "a direct-message channel (D…) has no member list the bot may read: set NPO_RESPONDERS, "
            "or use a channel (C… or G…)"
        )
    monitor_read = not {"NPO_MONITOR_WINDOW", "NPO_MONITOR_MIN_SAMPLES"} & r.problems.keys()
    if monitor_read and settings.monitor_min_samples > settings.monitor_window:
        r.problems["NPO_MONITOR_MIN_SAMPLES"] = (
            f"must be at most NPO_MONITOR_WINDOW ({settings.monitor_window}): the window never holds more answers, "
            "so L_align could never trigger"
        )
    for name, problem in r.problems.items():
        if problem == "is required" and name in environ and from_file.get(name, "").strip():
            # The environment wins, also when it sets the variable empty (a unit's ``Environment=NAME=``, compose's
            # ``NAME: ${NAME}`` with NAME unset): "is required" alone sent the operator to a file that has it.
            r.problems[name] = f"is required: it is set empty in the environment, which hides its value in {env_file}"
    if r.problems:
        notes = {}
        if env_file is not None and not env_file.exists():  # no ./.env (a named --env-file must exist: settings_file)
            notes[str(env_file)] = "no such file: the settings were looked for in the environment only"
        raise ConfigError(_without_secrets(r.problems, merged), notes)
    return settings
