"""Who may answer NPO recommendations: listed users, members of listed user groups, or (when nothing is listed)
the members of the incident channel. Group and channel memberships come from the Web API
(``usergroups.users.list``, ``conversations.members``) and are cached for ``ttl_s``, but a user not among them is
looked up again at once (at most every ``miss_refresh_s``, 30 s): the on-call engineer a user group rotated to, or
who just joined the incident channel, is not refused for minutes; when a refresh fails the last known members are
kept; with nothing known yet, :meth:`ResponderDirectory.allows` raises
:class:`LookupUnavailable` — nobody is let in (fail closed, logged), and the caller tells the person that their
answer could not be checked (not that they may not answer). A refresh is given at most ``lookup_budget_s`` (2 s) in
all: the click waiting for it must be answered within Slack's 3 s.

:meth:`ResponderDirectory.check` tries the look-up once at start (the bot's lifespan): an answer from Slack that no
retry fixes (a user group it does not know, the incident channel it cannot find, a scope the token lacks, a token it
refuses) is one error line naming the setting or scope to fix. The bot keeps running — posting, ingest and the
responders listed by user id do not depend on the look-up, and some causes are fixed without a restart (inviting the
bot to a private channel) — and a Slack that merely fails to answer is a warning: clicks look up again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)
LOOKUP_BUDGET_S = 2.0  # one refresh, all its calls: what Slack's 3 s for answering a click leaves for it
MISS_REFRESH_S = 30.0  # a user not in the cached members has them looked up again, at most this often
# Errors of the look-up's methods that name the bot token as the cause (a retry gets the same answer).
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type"}
)


class LookupUnavailable(Exception):
    """Whether a user may answer cannot be told now: the member look-up failed (or took too long) and no member
    list is known yet. Nothing may be recorded. ``fix`` names the setting, scope or token to fix when Slack refused
    the look-up for a reason no retry changes (then trying again does not help); None when it may pass later."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


class ResponderDirectory:
    """Answers "may this user answer?" with at most one round of look-ups per ``ttl_s``."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        users: Iterable[str],
        groups: Iterable[str],
        channel: str,
        ttl_s: float = 300.0,
        lookup_budget_s: float = LOOKUP_BUDGET_S,
        miss_refresh_s: float = MISS_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._users = frozenset(users)
        self._groups = tuple(groups)
        self._channel = channel
        self._ttl_s = ttl_s
        self._lookup_budget_s = lookup_budget_s
        self._clock = clock
        self._members: frozenset[str] | None = None
        self._failure = ""  # why the last refresh failed ("" once one succeeded)
        self._fix: str | None = None  # what to fix, when Slack refused the last refresh for a lasting reason
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")  # when the last refresh began (succeeded or not)
        self._miss_refresh_s = miss_refresh_s
        self._lock = asyncio.Lock()

    @property
    def needs_lookups(self) -> bool:
        """False when the allow-list is only user ids (no Web API calls at all)."""
        return bool(self._groups) or not self._users

    async def allows(self, user_id: str) -> bool:
        """Whether ``user_id`` may answer. Raises :class:`LookupUnavailable` when that needs members that could not
        be looked up (and none are known from an earlier look-up)."""
        if user_id in self._users:
            return True
        if not self.needs_lookups:
            return False
        if self._clock() - self._fetched_at >= self._ttl_s:
            async with self._lock:
                if self._clock() - self._fetched_at >= self._ttl_s:
                    await self._refresh()
        if self._members is None:
            raise LookupUnavailable(f"no member list yet: the responder look-up failed ({self._failure})", self._fix)
        if user_id in self._members:
            return True
        # Not in the cached list, which may predate them: the on-call group rotated, they joined the channel. Looked
        # up again at once, at most every ``miss_refresh_s`` (a non-responder's clicks cost few look-ups).
        if self._clock() - self._attempted_at >= self._miss_refresh_s:
            async with self._lock:
                if self._clock() - self._attempted_at >= self._miss_refresh_s:
                    await self._refresh()
        return user_id in self._members

    async def check(self) -> str | None:
        """Try the look-up once (the members are not kept: the first click still looks them up). Returns, and logs
        as an error, what to fix when Slack answers with an error that names a setting, a scope or the token; None
        when the look-up works or is not needed, or fails otherwise (a warning: Slack unreachable, slow, 5xx)."""
        if not self.needs_lookups:
            return None
        method, subject = "", ""
        try:
            async with asyncio.timeout(self._lookup_budget_s):
                if self._groups:
                    method = "usergroups.users.list"
                    for subject in self._groups:
                        await self._client.usergroups_users_list(usergroup=subject)
                else:
                    method, subject = "conversations.members", self._channel
                    await self._client.conversations_members(channel=subject, limit=1)
        except Exception as exc:
            fix = self._misconfiguration(exc, method, subject)
            if fix is None:
                log.warning("responder look-up not checked at start (%s); clicks will look up", self._describe(exc))
                return None
            who = "only the user ids in NPO_RESPONDERS" if self._users else "nobody"
            log.error("responder look-up refused by Slack: %s; until it is fixed %s can answer", fix, who)
            return fix
        return None

    @staticmethod
    def _misconfiguration(exc: Exception, method: str, subject: str) -> str | None:
        """What to fix, for an error of ``method`` (looking up ``subject``) that a retry would get again."""
        if not isinstance(exc, SlackApiError):
            return None
        error = str(exc.response.get("error") or "")
        if error in TOKEN_ERRORS:
            return f"SLACK_BOT_TOKEN was refused ({error})"
        if error == "missing_scope":
            needed = exc.response.get("needed") or (
                "usergroups:read" if method == "usergroups.users.list" else "channels:read or groups:read"
            )
            return f"SLACK_BOT_TOKEN lacks the scope {needed} ({method}: missing_scope): add it to the app, reinstall"
        if error in ("no_such_subteam", "plan_upgrade_required"):
            return f"NPO_RESPONDERS: Slack has no user group {subject} for the bot ({error})"
        if error == "channel_not_found":
            return (
                f"NPO_INCIDENT_CHANNEL: Slack finds no channel {subject} ({error}): a wrong id, or a private"
                " channel the bot has not been invited to"
            )
        if error == "method_not_supported_for_channel_type":
            return f"NPO_INCIDENT_CHANNEL: {subject} has no member list ({error}); list who answers in NPO_RESPONDERS"
        return None

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        method, subject = "", ""
        try:
            members: set[str] = set()
            async with asyncio.timeout(self._lookup_budget_s):  # Slack's Web API timeout may be longer (5 s)
                if self._groups:
                    method = "usergroups.users.list"
                    for subject in self._groups:
                        response = await self._client.usergroups_users_list(usergroup=subject)
                        members.update(response.get("users") or [])
                else:
                    method, subject = "conversations.members", self._channel
                    members.update(await self._channel_members())
        except Exception as exc:  # SlackApiError, aiohttp and OS errors, the budget running out: keep serving clicks
            self._failure = self._describe(exc)
            self._fix = self._misconfiguration(exc, method, subject)
            log.warning(
                "responder look-up failed (%s); keeping %s",
                self._failure,
                "the last list" if self._members is not None else "none",
            )
            self._fetched_at = self._clock() - self._ttl_s + 10.0  # retry in 10 s, not on every click
            return
        self._members = frozenset(members)
        self._failure = ""
        self._fix = None
        self._fetched_at = self._clock()

    def _describe(self, exc: Exception) -> str:
        """A failed look-up in one line: Slack's error code, the budget running out, or the exception."""
        if isinstance(exc, SlackApiError):
            return f"Slack answered {exc.response.get('error') or exc.response.status_code}"
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._lookup_budget_s:g} s"
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]

    async def _channel_members(self) -> set[str]:
        members: set[str] = set()
        cursor = None
        for _ in range(100):  # at most 100 pages of 1,000
            response = await self._client.conversations_members(channel=self._channel, limit=1000, cursor=cursor)
            members.update(response.get("members") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return members
