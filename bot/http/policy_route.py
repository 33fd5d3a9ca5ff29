"""``POST /api/v1/policy/reload``: re-read the safety policy file (``NPO_POLICY_FILE``) without a restart.

Same bearer token as the ingest API. The file is parsed completely before anything changes: a file that cannot be
read or parsed (bad TOML, an unknown rule, a wrong type — ``PolicyError`` names the line and field; not UTF-8;
empty or comments only) is refused with 422 and the running policy stays in force; so is a change of
``blast_radius.disruptive_actions`` or ``blast_radius.stale_after_seconds``, which the store counts open
recommendations with (restart to apply it). On success
the next decision uses the new policy. Every attempt is logged (an error line for a refused file). Without
``NPO_POLICY_FILE`` (the built-in default policy) there is nothing to reload: 409.

:func:`read_policy_file` is how the bot reads the policy file, at start-up and here: UTF-8 with or without a
byte-order mark, and ``timezone = "Europe/Berlin"`` resolved with :class:`zoneinfo.ZoneInfo` (an unknown zone
is refused like any other error, naming its field).
"""

from __future__ import annotations

import logging
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.service import NpoService
from npo.policy import Policy, PolicyError, parse_policy

log = logging.getLogger(__name__)


def _unreadable(path: Path, message: str) -> PolicyError:
    return PolicyError(message, field_name="NPO_POLICY_FILE", line=None, source=path.name)


def read_policy_file(path: Path) -> Policy:
    """Read and parse a policy file. Raises ``PolicyError`` for a bad policy (an unknown time zone included), for a
    file that cannot be read or is not UTF-8 (field ``NPO_POLICY_FILE``), and for one that sets nothing (empty, or
    comments only): a file truncated to nothing or to its opening comments (a failed write, a full disk) would
    otherwise be the default policy, every freeze window and allowed action of the real one gone; the defaults are
    asked for with ``version = 1`` (or no ``NPO_POLICY_FILE``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, f"cannot read {path.name}: {exc.strerror or exc}") from None
    try:
        # utf-8-sig: a leading byte-order mark (some Windows editors write one) is not part of the TOML
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _unreadable(path, f"line {line} is not UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8") from None
    if _sets_nothing(text):
        raise _unreadable(
            path,
            "the policy file is empty or holds only comments (a truncated write?); write `version = 1` for the "
            "defaults, or unset NPO_POLICY_FILE",
        )
    return parse_policy(text, path.name, zone=ZoneInfo)


def _sets_nothing(text: str) -> bool:
    """Whether ``text`` is a TOML document without a single key: blank, or comments only (a file cut off after its
    opening comments is as empty as one cut to nothing). Bad TOML is not "nothing": ``parse_policy`` names its line."""
    try:
        return not tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    status: int  # HTTP status: 200 reloaded, 409 nothing to reload, 422 refused
    message: str
    field: str | None = None


class PolicyHolder:
    """Owns the reload of the policy file the service decides with (``service.replace_policy``)."""

    def __init__(self, service: NpoService, path: Path | None) -> None:
        self._service = service
        self.path = path
        self._lock = threading.Lock()

    @property
    def policy(self) -> Policy:
        """The policy file's rules in force (without the runtime mutes layered over them)."""
        return self._service.base_policy

    def reload(self) -> ReloadResult:
        """Parse the file; swap it in only if it is valid and compatible. Never raises for a bad file."""
        if self.path is None:
            return ReloadResult(False, 409, "no policy file is configured (NPO_POLICY_FILE): nothing to reload")
        with self._lock:
            try:
                new = read_policy_file(self.path)
            except PolicyError as exc:  # a bad policy, or a file that cannot be read, is not UTF-8 or is empty
                log.error("policy reload refused, the current policy stays in force: %s", exc)
                return ReloadResult(False, 422, str(exc), exc.field)
            old = self.policy
            for name, changed in (  # the store counts open recommendations with these (a change of case is none)
                ("disruptive_actions", new.blast_radius.disruptive_keys != old.blast_radius.disruptive_keys),
                ("stale_after_seconds", new.blast_radius.stale_after_seconds != old.blast_radius.stale_after_seconds),
            ):
                if changed:
                    message = f"blast_radius.{name} changed: restart the service to apply it"
                    log.error("policy reload refused, the current policy stays in force: %s", message)
                    return ReloadResult(False, 422, message, f"blast_radius.{name}")
            self._service.replace_policy(new)  # a decision uses the old or the new policy, whole
            log.info("policy reloaded from %s", self.path)
            return ReloadResult(True, 200, f"reloaded {self.path.name}")
