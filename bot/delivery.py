"""The delivery worker: posts what the outbox holds to Slack, in order, at Slack's pace, and never loses it.

One thread, started by ``npo-bot serve`` and stopped with it. Each pass leases the due outbox messages
(``claim_due``), sends them with a synchronous ``slack_sdk.WebClient`` (small timeout, no built-in retries) and
records the result:

* success → ``mark_sent`` with the ``(channel, ts)`` (stored with the recommendation);
* HTTP 429, or a rate limit Slack names in the body (``ratelimited``, ``rate_limited``: :data:`RATE_LIMIT_ERRORS`)
  → ``mark_retry`` after ``Retry-After`` (at most :data:`RETRY_AFTER_CAP_S`, with a warning; without one, the
  back-off but at least a second), and what Slack limited waits that long too: ``chat.postMessage`` and
  ``chat.update`` (:data:`PER_CHANNEL_METHODS`) are limited per channel, so the messages sent with that method to that
  channel (and the channel's posts) wait, while other channels' go on; any other method (``chat.postEphemeral``) is
  limited per workspace, so every message sent with it waits;
* connection errors (``URLError``/``OSError``/``TimeoutError``), HTTP 5xx and Slack's transient errors →
  ``mark_retry`` with exponential backoff (0.5 s · 2ⁿ, at most 60 s, plus jitter), for as long as it takes;
* an update of a recommendation whose post failed for good → ``mark_failed`` too (there is no message to update,
  one error log line); an update of one that was posted inside a digest → ``mark_sent`` without a call; so is a
  plain message's update (``message_update``) when a later update of that message is pending or sent (its blocks
  are newer: the retry of a failed one would put the older ones back);
* a recommendation's update sent → the other updates of that recommendation not tried yet when it read it (queued
  while it was claimed, in flight or held back) are marked sent with it, without a call: it showed what they were
  queued for — unless the recommendation changed before that is recorded (an answer may have been queued to ride
  with one). One tried before is sent again all the same (its call may be applied late: its retry is the last word);
* a recommendation (post or update) whose blocks Slack refuses (:data:`REFUSED_BLOCKS`) → sent once more at once in
  the compact rendering (:func:`bot.slack.blocks.compact_view`): NPO keeps within Slack's limits counting
  characters, but how Slack counts some text (emoji, other scripts) is undocumented;
* a plain message or its update (``message``, ``message_update``: a retraining alert) whose blocks Slack refuses →
  sent once more at once in short (:func:`bot.slack.blocks.compact_message_blocks`: its text and its buttons);
* a digest Slack refuses → posted again at once with half as many lines (the rest following), down to one line; a
  kind's line (a storm listed by kind) refused alone → that kind listed first, one recommendation a line, and the
  rest of the pass one by one too; a refusal answered too late in the lease → the digest deferred, not sent again;
* any other Slack error (``channel_not_found``, ``not_in_channel``, ``invalid_auth``, a refusal of a short
  rendering or of a digest's single line…) → ``mark_failed``, one clear log line, and
  ``npo_deliveries_total{result="failed"}`` (``npo-bot db requeue`` puts them back once the cause is fixed).

Posts (recommendations, digests, messages) are spaced ≥ 1 s per channel and kept in outbox order; updates and
ephemeral replies are not spaced. More than ``storm_threshold`` recommendations pending for one channel are folded
into one digest message; capped (``digest_item``) recommendations wait ``digest_delay_s`` and are folded likewise.
A digest's header says why: an alert storm, the hourly cap, or (for recommendations ``npo-bot db requeue`` put back,
``requeued_at`` in their payload) that their posts failed earlier and they are posted late — a requeued backlog
counts toward the threshold but is no storm.
A digest lists them one line each when they fit one Slack message; a storm too large for that is listed one line
per kind (fault type and action: how many, the highest severity and confidence, the targets), so a digest a second
keeps up with any storm. Only what a posted digest lists or counts in its lines is marked sent; what does not fit
(more kinds than one message holds) waits for the channel's next slot and leads the next digest (one with no
prediction in the database to list is failed).
A stop (SIGTERM, Ctrl-C) finishes the call in flight and hands the rest of the pass back, due at once, so the next
start sends it without waiting out a lease. A restart resumes pending messages: a lease taken by a dead process
expires and the message is sent then. A post the database refused to record (locked) is noted in a file next to it
and recorded before anything is claimed again, by this process or the next one; a post that comes back with less of
its lease left than recording it may wait for the write lock is noted there first, so that a worker claiming it once
the lease ends finds it posted.

Slack offers no idempotency key for ``chat.postMessage``, so a post of its own (a recommendation's, a ``message``'s, a
``thread_reply``'s) carries its outbox id in Slack's message metadata (:data:`OUTBOX_EVENT`), a digest the ids of all it
lists or counts (as ranges, ``"12-40,45"``; one whose ranges run longer than :data:`DIGEST_TAG_MAX_CHARS` is not tagged,
nor one whose tag Slack refused, :data:`REFUSED_METADATA`: it is sent again at once untagged), and the try after one
whose result is unknown looks for it before posting again: after a read timeout, a connection dropped once the request
was written, a 5xx or an answer that is not JSON (``unanswered_since`` in the payload,
:meth:`storage.SQLiteStore.mark_retry`), or after a lease taken over from a worker that left no result
(:meth:`storage.SQLiteStore.claim_due`). It reads the channel's newest messages since then (``conversations.history``,
:data:`HISTORY_LOOKUP_LIMIT` of them, with their metadata; a thread reply's thread, ``conversations.replies``, since a
channel's history lists no replies); a message carrying the id is recorded as the post, and nothing is posted. A
digest's items look once per digest (when one of them has ``unanswered_since``): each found in a message Slack has (a
digest that listed it, or its own post) is recorded as sent in it, as a posted digest records its items, and only the
rest is posted. A lookup Slack refuses (the app lacks ``channels:history`` / ``groups:history``: one warning per worker
naming the scope) or that fails is passed by: the message is posted as it would be without it, and may then show twice.
Every other try costs no extra call.

Message kinds: ``recommendation`` / ``digest_item`` (``{"prediction_id"}``), ``update`` (``{"prediction_id",
"channel"?, "ts"?}`` → ``chat.update``), ``ephemeral`` (``{"user", "text"}``), ``message`` (``{"text", "blocks"?}``),
``thread_reply`` (``{"thread_ts", "text"}``: a reply in a message's thread, e.g. under a retraining alert) and
``message_update`` (``{"ts", "text", "blocks"}``: ``chat.update`` of a message that is not a recommendation).
"""

from __future__ import annotations

import functools
import http.client
import logging
import random
import sqlite3
import threading
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.metrics import Metrics
from bot.service import NpoService
from bot.slack.blocks import (
    Block,
    DigestGroup,
    RecommendationView,
    compact_message_blocks,
    compact_view,
    digest_blocks,
    digest_fallback_text,
    digest_fit,
    digest_groups,
    fallback_text,
    grouped_digest_blocks,
    grouped_digest_fit,
    recommendation_blocks,
)
from storage import LeaseLost, OutboxItem, StorageBusy, StorageError, is_locked
from storage.outbox import (
    fold_updates,
    later_message_update,
    next_due_at,
    post_state,
    riding_updates,
    sent_as,
    shares_message,
    storm_channels,
)
from storage.store_outbox import UNANSWERED_KEY

log = logging.getLogger(__name__)
# Slack's answers refusing a message's blocks as too long or malformed: a recommendation is sent again compact.
REFUSED_BLOCKS = frozenset(("invalid_blocks", "msg_blocks_too_long"))

POST_KINDS = frozenset({"recommendation", "digest_item", "message", "thread_reply"})
#: Posts kept in outbox order per channel (digest items wait for their digest on purpose and are not).
ORDERED_KINDS = ("recommendation", "message", "thread_reply")
#: The Web API method each outbox kind is sent with (Slack's rate limits, and so a 429's Retry-After, are per method).
METHOD_OF_KIND = {
    **dict.fromkeys(POST_KINDS, "chat.postMessage"),
    "update": "chat.update",
    "message_update": "chat.update",
    "ephemeral": "chat.postEphemeral",
}
#: The methods Slack limits per channel (chat.postMessage: about one message a second per channel; an update is
#: held with its channel as well): their 429 holds back that channel's messages only. Every other method is limited
#: per workspace (per method, by tier), and its 429 holds back every message sent with it.
PER_CHANNEL_METHODS = frozenset({"chat.postMessage", "chat.update"})
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# A rate limit named in the body, whatever the HTTP status: ``ratelimited`` (any method, usually with a 429) and
# ``rate_limited`` (chat.postMessage's own: "Application has posted too many messages"). Waited out as a 429 is.
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
# slack_sdk's error for an answer that is not JSON (a truncated body, a proxy's error page): transient, not final.
NON_JSON_ANSWER = "Received a response in a non-JSON format"
MAX_BACKOFF_S = 60.0
# The longest a 429's Retry-After is waited. Slack's own values are seconds to a minute (its limits are counted per
# minute); a larger one comes from something in between (a proxy, a gateway) and, honoured, would stall every message
# it holds back (a channel's, or a workspace-wide method's) for as long. Five minutes leaves any value Slack sends
# untouched, a wrong one costs one more 429 every five minutes, and a recommendation held longer than that is of
# little use to whoever is on call.
RETRY_AFTER_CAP_S = 300.0
#: Updates (``chat.update``): a message edited again is shown as the last call Slack applied left it.
UPDATE_KINDS = frozenset({"update", "message_update"})
#: Failures after which a call may still have reached Slack (its answer lost: a timeout, a dropped connection).
_ANSWER_LOST = (OSError, TimeoutError, http.client.HTTPException)
#: How much longer than the client's timeout an update whose answer was lost waits before its retry: Slack may still
#: apply the lost call, and an older rendering applied after a newer one would stay on the message.
LOST_UPDATE_SETTLE_S = 1.0
NOT_YET_POSTED_RETRY_S = 30.0  # a safety net: the post, once out, makes its waiting updates due at once
# Posts tagged with their outbox id in Slack's message metadata, and looked for after a try whose result is unknown
# (a digest is tagged with the ids of all it lists or counts, and looked for likewise: :meth:`_digests_found`).
LOOKUP_KINDS = frozenset({"recommendation", "message", "thread_reply"})
# The metadata's event_type; its event_payload is {"outbox_id": <id>}, or a digest's {"outbox_ids": "<ranges>"}: the
# ids it carries as ascending ranges ("12-40,45"), as a string (a storm's digest may count hundreds, mostly in a row).
OUTBOX_EVENT = "npo_outbox"
# The longest digest tag sent: Slack's limit on metadata is undocumented (``metadata_too_large``), and a digest it
# refused for its tag would not be posted at all. One whose ranges run longer is posted untagged (a lost answer
# reposts it, as before): a storm's ids come in a few runs; only hundreds of ids interleaved with other channels' run
# longer.
DIGEST_TAG_MAX_CHARS = 2000
# Slack's answers refusing a post's metadata: a digest is then posted once more, untagged.
REFUSED_METADATA = frozenset(("metadata_too_large", "invalid_metadata_format", "invalid_metadata_schema"))
# How many of the channel's newest messages the look-up reads: Slack's largest page for apps not in its Marketplace
# (since 2025-05-29; their conversations.history is also limited to one call a minute).
HISTORY_LOOKUP_LIMIT = 15
# Read from this long before the unknown try, for the clocks of this host and of Slack (message ts) to differ.
HISTORY_LOOKUP_MARGIN_S = 60.0
HISTORY_SCOPES = "channels:history (public channels) or groups:history (private channels)"


class _Retry(Exception):
    """Try again in ``after_s`` seconds. ``expected``: a normal wait inside the bot (an update queued before its
    post went out), logged at DEBUG; anything Slack answered is a WARNING. ``rate_limited``: Slack's rate limit, which
    the messages it limits wait out too (:func:`limit_key`)."""

    def __init__(self, after_s: float, reason: str, *, expected: bool = False, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.after_s = after_s
        self.expected = expected
        self.rate_limited = rate_limited


class _Held(Exception):
    """Not sent: what it would be sent with is held back by a rate limit until ``until`` (a deferral, not a try)."""

    def __init__(self, until: float, reason: str) -> None:
        super().__init__(reason)
        self.until = until


class _Fail(Exception):
    """Delivery failed for good. ``code``: a short fixed label for the failure metric (Slack's own error code, or
    one of ours), never free text — the message itself may name predictions and is for the log and the outbox."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


# The error codes Slack documents for the methods the worker calls (chat.postMessage, chat.update,
# chat.postEphemeral), those of every Web API method, and the token and workspace refusals Slack also answers them
# with. They label the failure counter as they are; any other answer (from a proxy, a gateway, a fake Slack: no
# bound on how many) is counted as ``other``, so the number of series stays small. The log and the outbox keep the
# answer itself.
DOCUMENTED_ERROR_CODES = frozenset(
    {
        # chat.postMessage, chat.update, chat.postEphemeral
        "as_user_not_supported",
        "attachment_payload_limit_exceeded",
        "block_mismatch",
        "cannot_reply_to_message",
        "cant_broadcast_message",
        "cant_update_message",
        "channel_not_found",
        "duplicate_channel_not_found",
        "duplicate_message_not_found",
        "edit_window_closed",
        "ekm_access_denied",
        "external_channel_migrating",
        "invalid_attachments",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "is_archived",
        "is_inactive",
        "markdown_text_conflict",
        "message_limit_exceeded",
        "message_not_found",
        "messages_tab_disabled",
        "metadata_must_be_sent_from_app",
        "metadata_too_large",
        "missing_file_data",
        "msg_blocks_too_long",
        "msg_too_long",
        "no_dual_broadcast_content_update",
        "no_text",
        "not_in_channel",
        "rate_limited",
        "restricted_action",
        "restricted_action_non_threadable_channel",
        "restricted_action_read_only_channel",
        "restricted_action_thread_locked",
        "restricted_action_thread_only_channel",
        "slack_connect_canvas_sharing_blocked",
        "slack_connect_file_link_sharing_blocked",
        "slack_connect_lists_sharing_blocked",
        "streaming_state_conflict",
        "team_not_found",
        "too_many_attachments",
        "too_many_contact_cards",
        "update_failed",
        "user_not_found",
        "user_not_in_channel",
        # every Web API method
        "access_denied",
        "accesslimited",
        "account_inactive",
        "deprecated_endpoint",
        "enterprise_is_restricted",
        "fatal_error",
        "internal_error",
        "invalid_arg_name",
        "invalid_arguments",
        "invalid_array_arg",
        "invalid_auth",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "is_bot",
        "method_deprecated",
        "missing_post_type",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_authed",
        "org_login_required",
        "ratelimited",
        "request_timeout",
        "service_unavailable",
        "team_access_not_granted",
        "team_added_to_org",
        "token_expired",
        "token_revoked",
        "two_factor_setup_required",
        "unknown_method",
        # the token or the workspace refused (not in the methods' lists, answered all the same)
        "link_disabled",
        "team_disabled",
        "user_removed_from_team",
    }
)
OTHER_ERROR = "other"  # the failure counter's label for an error code Slack does not document


def _error_code(error: str, status: int) -> str:
    """The metric label of a Slack API error: one of Slack's documented codes, ``http_<status>`` when the answer
    named none, else :data:`OTHER_ERROR`."""
    if not error:
        return f"http_{status}"
    return error if error in DOCUMENTED_ERROR_CODES else OTHER_ERROR


LEASE_MARGIN_S = 10.0  # no Slack call is started with less of the lease left (a call times out in seconds)


def lease_for(call_timeout_s: float, lease_s: float = 60.0) -> float:
    """A lease long enough for a call of ``call_timeout_s`` (the client's timeout, ``NPO_SLACK_TIMEOUT_S`` may be up
    to 60 s) to be started with more than that left: at least ``lease_s``."""
    return max(lease_s, 2.0 * (call_timeout_s + LEASE_MARGIN_S))


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    post_interval_s: float = 1.0
    storm_threshold: int = 20
    digest_delay_s: float = 300.0
    lease_s: float = 60.0
    batch: int = 200
    idle_poll_s: float = 1.0


def limit_key(method: str, channel: str) -> tuple[str, str]:
    """What a 429 answered to ``method`` called for ``channel`` holds back: the method in that channel
    (:data:`PER_CHANNEL_METHODS`), else the method in every channel (``""``)."""
    return (method, channel if method in PER_CHANNEL_METHODS else "")


def backoff_s(attempts: int) -> float:
    """Delay before the next try after ``attempts`` failed ones: 0.5 · 2^(n−1) s, at most 60 s, plus ≤ 25 % jitter."""
    base = min(MAX_BACKOFF_S, 0.5 * 2 ** max(0, attempts - 1))
    return float(base * (1 + 0.25 * random.random()))


def classify(exc: BaseException, attempts: int) -> _Retry | _Fail:
    """What to do about a failed Web API call."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        error = str(exc.response.get("error", "")) if hasattr(exc.response, "get") else ""
        if status == 429 or error in RATE_LIMIT_ERRORS:
            headers = getattr(exc.response, "headers", None) or {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            label = f"{error or 'ratelimited'} (HTTP {status}"
            if retry_after is None:  # none given: the back-off, but never sooner than Slack's 1 message/s
                return _Retry(max(1.0, backoff_s(attempts)), f"{label}, no Retry-After)", rate_limited=True)
            try:
                after = max(1.0, float(retry_after))
            except ValueError:
                after = 1.0
            if not after <= RETRY_AFTER_CAP_S:  # also "inf"
                return _Retry(
                    RETRY_AFTER_CAP_S,
                    f"{label}, Retry-After {retry_after} s is longer than Slack's own limits ask: waiting the "
                    f"{RETRY_AFTER_CAP_S:.0f} s cap)",
                    rate_limited=True,
                )
            return _Retry(after, f"{label}, Retry-After {retry_after})", rate_limited=True)
        if status >= 500 or error in TRANSIENT_ERRORS or error.startswith(NON_JSON_ANSWER):
            return _Retry(backoff_s(attempts), f"HTTP {status} {error}".strip())
        return _Fail(error or f"HTTP {status}", _error_code(error, status))
    if isinstance(exc, OSError | TimeoutError | http.client.HTTPException):
        return _Retry(backoff_s(attempts), f"{type(exc).__name__}: {exc}")
    return _Retry(backoff_s(attempts), f"unexpected {type(exc).__name__}: {exc}")


def result_unknown(exc: BaseException) -> bool:
    """Whether a failed call may have been carried out by Slack all the same: its answer was lost (a read timeout, a
    connection reset or closed once the request was written), cut short (not JSON) or came from something in between
    (HTTP 5xx: a gateway's timeout). A connection that could not be made or a request that could not be written is
    urllib's ``URLError``: not sent; any answer Slack gave in JSON with a 4xx or an error is not a post either."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        error = str(exc.response.get("error", "")) if hasattr(exc.response, "get") else ""
        return status >= 500 or error.startswith(NON_JSON_ANSWER)
    if isinstance(exc, urllib.error.URLError):
        return False
    return isinstance(exc, OSError | TimeoutError | http.client.HTTPException)


STORM_WHY = "alert storm: too many at once for one channel"
CROWDED_WHY = "too many at once for one channel"
CAPPED_WHY = "channel hourly cap reached"
REQUEUED_WHY = "their posts failed earlier and were requeued (`npo-bot db requeue`): posted late, together"


def _why(channel_storm: bool | None, items: Sequence[OutboxItem]) -> str:
    """What a digest of ``items`` says about why it is one: requeued ones (``requeued_at``) posted late; else an
    alert storm (``channel_storm`` True: more new recommendations pending for the channel than its threshold), a
    channel crowded by requeued ones (False), or its hourly cap (None: only capped recommendations are folded)."""
    requeued = sum(1 for item in items if item.payload.get("requeued_at") is not None)
    if items and requeued == len(items):
        return REQUEUED_WHY
    why = CAPPED_WHY if channel_storm is None else STORM_WHY if channel_storm else CROWDED_WHY
    if requeued:
        why += f" ({requeued} of them requeued after a failed post)"
    return why


def _outbox_metadata(item: OutboxItem) -> dict[str, Any]:
    """The message metadata a post of ``item`` carries: its outbox id, for :meth:`DeliveryWorker._posted_before`."""
    return {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_id": item.id}}


def _id_ranges(ids: Sequence[int]) -> str:
    """``ids`` as ascending ranges of consecutive ids: ``[3, 4, 5, 7]`` → ``"3-5,7"``."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def _digest_metadata(items: Sequence[OutboxItem]) -> dict[str, Any] | None:
    """The message metadata a digest listing or counting ``items`` carries (their outbox ids, as ranges), for
    :meth:`DeliveryWorker._digests_found`; None (untagged) when they run longer than :data:`DIGEST_TAG_MAX_CHARS`."""
    ranges = _id_ranges([item.id for item in items])
    if len(ranges) > DIGEST_TAG_MAX_CHARS:
        return None
    return {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_ids": ranges}}


def _tagged_ranges(message: dict[str, Any]) -> list[tuple[int, int]]:
    """The outbox ids a Slack message is tagged with (:func:`_outbox_metadata`, :func:`_digest_metadata`), as
    (first, last) ranges; none for a message not tagged so, or tagged with anything malformed."""
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != OUTBOX_EVENT:
        return []
    payload = metadata.get("event_payload")
    if not isinstance(payload, dict):
        return []
    try:
        if "outbox_id" in payload:
            return [(int(payload["outbox_id"]),) * 2]
        ranges = []
        for run in str(payload.get("outbox_ids") or "").split(","):
            first, _, last = run.partition("-")
            ranges.append((int(first), int(last or first)))
        return ranges
    except ValueError:
        return []


def _carries(message: dict[str, Any], outbox_id: int) -> bool:
    """Whether the Slack ``message`` is a post of outbox message ``outbox_id`` (its own, or a digest listing it)."""
    return any(first <= outbox_id <= last for first, last in _tagged_ranges(message))


def _held_reason(method: str, channel: str) -> str:
    where = f" in {channel}" if method in PER_CHANNEL_METHODS else ""
    return f"waiting out Slack's rate limit of {method}{where}"


def _digest_part(
    rest: list[tuple[OutboxItem, RecommendationView]],
    views: list[RecommendationView],
    groups: list[DigestGroup],
    lines: int,
    why: Callable[[Sequence[OutboxItem]], str],
) -> tuple[list[tuple[OutboxItem, RecommendationView]], list[tuple[OutboxItem, RecommendationView]], list[Block]]:
    """The next digest message of ``rest`` (whose views are ``views``): the (item, view) pairs it lists or counts,
    those left for the next one, and its blocks (headed by ``why`` of the items it lists). With ``groups`` (a storm
    too large to list one by one) the first ``lines`` kinds, a line each; else the first ``lines`` recommendations,
    a line each."""
    if groups:
        shown = groups[:lines]
        listed = {i for group in shown for i in group.members}
        part = [pair for i, pair in enumerate(rest) if i in listed]
        left = [pair for i, pair in enumerate(rest) if i not in listed]
        return part, left, grouped_digest_blocks(shown, why=why([i for i, _ in part]), following=len(left))
    part, left = rest[:lines], rest[lines:]
    return part, left, digest_blocks(views[:lines], why=why([i for i, _ in part]), following=len(left))


class DeliveryWorker:
    """Sends outbox messages with ``client``; see the module docstring. ``run_once`` is one pass (for tests)."""

    def __init__(
        self,
        service: NpoService,
        client: WebClient,
        metrics: Metrics,
        config: WorkerConfig = WorkerConfig(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.store = service.store
        self.client = client
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self._ready_at: dict[str, float] = {}  # channel → no post before (Slack's 1 message/s per channel)
        # (Web API method, channel or "" for every channel) → no such call before (a 429's Retry-After: limit_key)
        self._limited_until: dict[tuple[str, str], float] = {}
        self._calling: tuple[str, str] | None = None  # the (method, channel) of the Web API call made last
        self._deferred: list[tuple[int, float, str, int | None]] = []  # this pass's deferrals, written at its end
        self._claimed: dict[int, OutboxItem] = {}  # this pass's messages not tried yet (updates may carry them)
        self._folded: set[int] = set()  # this pass's updates sent along with another update of their message
        self._unrecorded: list[Callable[[], None]] = []  # results the database refused, written before the next pass
        self._history_refused = False  # a look-up for an earlier post was refused for a scope (warned once)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # A call is started only with more of the lease left than it may take (the client's timeout), so that no
        # other worker can claim the message while the call is in flight.
        timeout = float(getattr(client, "timeout", 0) or 0)
        self._lease_margin_s = min(max(LEASE_MARGIN_S, timeout + 1.0), config.lease_s / 2)
        self._call_timeout_s = timeout
        # The longest recording a result may wait for the database's write lock: each try of BEGIN IMMEDIATE waits
        # the busy timeout, with a back-off between tries (storage.store.SQLiteStore._begin_immediate); and a second.
        retries = self.store.lock_retries
        self._record_wait_s = self.store.busy_timeout_s * (retries + 1) + 0.075 * (2**retries - 1) + 1.0

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="npo-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something was queued: look at the outbox now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the message in flight: the rest of the pass is handed back, due at once (not left leased for
        the next start to wait out, nor sent after the store is closed). Waits at least long enough for the call in
        flight and a short resend of it (twice the client's timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(timeout, 2 * self._call_timeout_s + 1.0))
            self._thread = None

    def _run(self) -> None:
        locked_since: float | None = None  # when the passes began to find the database locked
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception as exc:
                if not is_locked(exc):
                    log.exception("delivery pass failed; retrying shortly")
                elif locked_since is None:  # expected and passing: one line, not a traceback every pass
                    locked_since = time.monotonic()
                    log.warning(
                        "the database is locked by another connection (%s): delivery waits, trying again every pass",
                        exc,
                    )
            else:
                if locked_since is not None:
                    log.info(
                        "the database can be written again: delivery goes on (it waited %.0f s)",
                        time.monotonic() - locked_since,
                    )
                    locked_since = None
            self._wake.wait(self._idle_wait())

    def _idle_wait(self) -> float:
        try:
            with self.store.read() as conn:
                due = next_due_at(conn)
        except Exception:
            return self.config.idle_poll_s
        if due is None:
            return self.config.idle_poll_s
        return min(self.config.idle_poll_s, max(0.01, due - self.clock()))

    # -- one pass ----------------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim the due messages and handle each; returns how many were claimed. The messages this pass defers
        are written in one transaction at its end (:meth:`_flush_deferred`). Results an earlier pass could not
        write (:meth:`_write_result`) are written first; while the database still refuses them nothing is claimed."""
        try:
            self._write_kept_results()
            return self._pass()
        finally:
            self._claimed.clear()
            self._flush_deferred()
            self._folded.clear()

    def _pass(self) -> int:
        now = self.clock()
        self._forget_past_holds(now)
        items = self.store.claim_due(now, self.config.batch, lease_s=self.config.lease_s)
        if not items:
            return 0
        storms = self._storm_channels()
        folded: dict[str, list[OutboxItem]] = {}
        claimed = {item.id for item in items}
        self._claimed = {item.id: item for item in items}
        oldest = self.store.oldest_pending(ORDERED_KINDS)
        for item in sorted(items, key=lambda i: i.id):  # outbox order within the pass
            if item.id in self._folded:
                continue  # sent with an earlier update of its message in this pass
            method = METHOD_OF_KIND.get(item.kind, "")
            limited_until = self._held_until(method, item.channel)
            first = oldest.get(item.channel)
            if self._stop.is_set():  # stopping: handed back, due at once, not left to a lease nobody will use
                self._defer(item, self.clock(), "the delivery worker stopped before sending it")
            elif limited_until > self.clock():
                self._defer(item, limited_until, _held_reason(method, item.channel))
            elif item.kind in ORDERED_KINDS and first is not None and first[0] < item.id and first[0] not in claimed:
                # an older post to this channel waits for a retry: this one follows it (outbox order per channel)
                self._defer(item, max(first[1], now) + self.config.post_interval_s, "after an older post")
            elif item.kind in POST_KINDS and self._ready_at.get(item.channel, 0.0) > self.clock():
                self._defer(item, self._ready_at[item.channel], "waiting for the channel's 1 message/s pace")
            elif item.kind == "digest_item" and now < item.created_at + self.config.digest_delay_s:
                self._defer(item, item.created_at + self.config.digest_delay_s, "gathering the digest")
            elif not self._leased(item):
                continue  # the pass ran long: the lease is (nearly) over, the message is claimed again later
            elif item.kind == "digest_item" or (item.kind == "recommendation" and item.channel in storms):
                folded.setdefault(item.channel, []).append(item)
            else:
                self._deliver(item)
        for channel, group in folded.items():
            self._deliver_digest(channel, group, storm=storms.get(channel))
        return len(items)

    def _forget_past_holds(self, now: float) -> None:
        """Forget each channel's pace and each 429's hold that is over at ``now``: one that has passed holds nothing
        back, as one never set. So the worker keeps only the holds still running — the channels of the last second's
        posts and of the rate limits in force — however many channels it has posted to over a long run (incident
        tools create a channel per incident)."""
        self._ready_at = {channel: at for channel, at in self._ready_at.items() if at > now}
        self._limited_until = {key: at for key, at in self._limited_until.items() if at > now}

    def _held_until(self, method: str, channel: str) -> float:
        """Until when a 429 holds back calls of ``method`` for ``channel`` (0: not held)."""
        return self._limited_until.get(limit_key(method, channel), 0.0)

    def _call(self, method: str, channel: str) -> None:
        """Note the Web API call about to be made, for a 429 it may get (:meth:`_handle_error`); raises
        :class:`_Held` instead when a 429 holds such calls back (an update learns its channel only here)."""
        until = self._held_until(method, channel)
        if until > self.clock():
            raise _Held(until, _held_reason(method, channel))
        self._calling = (method, channel)

    def _leased(self, item: OutboxItem) -> bool:
        """Whether enough of the item's lease is left to start a Slack call (``LEASE_MARGIN_S``, or the client's
        timeout and a second when that is longer): else another worker may claim it meanwhile and send it too."""
        return self.clock() < item.next_attempt_at - self._lease_margin_s

    def _write_result(
        self, write: Callable[[], None], *, sent: tuple[Sequence[OutboxItem], str, str] | None = None
    ) -> None:
        """Run ``write``, the record of a call's result. When the database refuses it (locked for longer than the
        busy timeout, a full disk) it is kept and written before the next pass claims anything, then re-raised to end
        this pass: a post Slack has must not be claimed again when its lease ends and posted a second time. A post
        (``sent``: the messages, the channel and ts) is kept in a file next to the database
        (:meth:`storage.SQLiteStore.keep_sent`), so that it is written before any claim even when this process stops
        first; other results, and a post that file refuses too, are kept in memory.

        A post that comes back with less of its lease left than recording it may wait for the write lock
        (``_record_wait_s``) is noted in that file first: the lease could end while the record waits, and another
        worker's claim, which records the notes before it claims anything, would otherwise take the message and post
        it again. Once noted, a record the database finds already made (from the note, by such a claim) is done."""
        noted = sent is not None and self._note_first(*sent)
        try:
            write()
        except (StorageBusy, sqlite3.OperationalError):  # a refused write, not a refused record: it is kept
            if sent is not None:
                items, channel, ts = sent
                try:
                    if not noted:
                        self.store.keep_sent(items, channel, ts)
                except (OSError, sqlite3.Error):
                    log.exception("could not keep a post's result next to the database either; kept in memory")
                else:
                    log.warning(
                        "could not record a post to %s (ts %s) in the database; it is kept next to it and written "
                        "before anything is claimed",
                        channel,
                        ts,
                    )
                    raise
            self._unrecorded.append(write)
            log.warning("could not record a delivery's result; it is written before the next delivery pass")
            raise
        except StorageError:  # no longer pending: another worker's claim recorded the post from its note
            if not noted:
                raise
            log.info("a post's result was recorded from its note, by another worker's claim")

    def _note_first(self, items: Sequence[OutboxItem], channel: str, ts: str) -> bool:
        """Note a post next to the database (:meth:`storage.SQLiteStore.keep_sent`) before recording it there, when
        less of its lease is left than recording it may wait for the write lock; whether it was noted."""
        if min(item.next_attempt_at for item in items) - self.clock() >= self._record_wait_s:
            return False
        try:
            self.store.keep_sent(items, channel, ts)
        except (OSError, sqlite3.Error):
            log.warning("could not note a post to %s (ts %s) next to the database", channel, ts, exc_info=True)
            return False
        return True

    def _write_kept_results(self) -> None:
        """Write the results :meth:`_write_result` kept, oldest first (raises while the database refuses them)."""
        while self._unrecorded:
            self._unrecorded[0]()
            self._unrecorded.pop(0)

    def _record(self, item: OutboxItem, mark: Callable[..., None], *args: Any) -> None:
        """``mark(item.id, *args, attempt=…)`` under this worker's lease (see :meth:`_write_result`)."""
        self._write_result(functools.partial(self._mark, item, mark, *args))

    def _mark(self, item: OutboxItem, mark: Callable[..., None], *args: Any) -> None:
        """``mark(item.id, *args, attempt=…)``; a lost lease is logged, not raised (the worker that claimed the
        message since records its own result)."""
        try:
            mark(item.id, *args, attempt=item.attempts)
        except LeaseLost:
            log.warning("outbox message %d: another worker claimed it after this lease ran out; not recorded", item.id)
            self.metrics.inc("npo_deliveries_total", kind=item.kind, result="lease_lost")

    def _storm_channels(self) -> dict[str, bool]:
        with self.store.read() as conn:
            return storm_channels(conn, self.config.storm_threshold)

    # -- sending -----------------------------------------------------------------------------------------------
    def _deliver(self, item: OutboxItem) -> None:
        self._calling = None
        started = self.clock()
        self._claimed.pop(item.id, None)  # tried now: no longer for another update to carry
        try:
            channel, ts = self._send(item)
        except _Held as held:
            self._claimed[item.id] = item  # not tried after all
            self._defer(item, held.until, str(held))
            return
        except Exception as exc:
            unknown = item.kind in LOOKUP_KINDS and result_unknown(exc)
            self._handle_error([item], exc, unanswered_since=started if unknown else None)
            return
        write = functools.partial(self._mark, item, self.store.mark_sent, channel, ts)
        self._write_result(write, sent=([item], channel, ts))
        self.metrics.inc("npo_deliveries_total", kind=item.kind, result="sent")

    def _send(self, item: OutboxItem) -> tuple[str, str]:
        payload = item.payload
        if item.kind in LOOKUP_KINDS and payload.get(UNANSWERED_KEY) is not None:
            found = self._posted_before(item)
            if found is not None:
                return found
            if not self._leased(item):  # a slow look-up: no time left to post under this lease
                raise _Retry(0.0, "looked for an earlier post; the lease is nearly over", expected=True)
        tag = _outbox_metadata(item) if item.kind in LOOKUP_KINDS else None
        if item.kind == "recommendation":
            view = replace(self._view(str(payload.get("prediction_id"))), posted_at=self.clock())  # posted now
            try:
                return self._post(item.channel, fallback_text(view), recommendation_blocks(view), metadata=tag)
            except SlackApiError as exc:
                compact = self._compact(exc, item, view)
                return self._post(item.channel, fallback_text(compact), recommendation_blocks(compact), metadata=tag)
        if item.kind == "update":
            return self._update(item)
        if item.kind == "ephemeral":
            self._call("chat.postEphemeral", item.channel)
            self.client.chat_postEphemeral(channel=item.channel, user=str(payload["user"]), text=str(payload["text"]))
            return item.channel, ""
        if item.kind == "message":
            text, blocks = str(payload.get("text", "")), list(payload.get("blocks") or [])
            try:
                return self._post(item.channel, text, blocks, metadata=tag)
            except SlackApiError as exc:
                if not blocks:
                    raise
                self._refused(exc, item, f"{item.kind} (outbox message {item.id})")
                return self._post(item.channel, text, compact_message_blocks(text, blocks), metadata=tag)
        if item.kind == "thread_reply":
            thread_ts = str(payload.get("thread_ts") or "")
            return self._post(item.channel, str(payload.get("text", "")), [], thread_ts=thread_ts, metadata=tag)
        if item.kind == "message_update":
            ts, text = str(payload.get("ts") or ""), str(payload.get("text") or " ")
            blocks = list(payload.get("blocks") or [])
            if self._superseded(item, ts):  # a retry after a later update: sending it would undo that one
                return item.channel, ts
            self._call("chat.update", item.channel)
            try:
                self.client.chat_update(channel=item.channel, ts=ts, text=text, blocks=blocks)
            except SlackApiError as exc:
                if not blocks:
                    raise
                self._refused(exc, item, f"{item.kind} (outbox message {item.id})")
                blocks = compact_message_blocks(text, blocks)
                self.client.chat_update(channel=item.channel, ts=ts, text=text, blocks=blocks)
            return item.channel, ts
        raise _Fail(f"unknown outbox kind {item.kind!r}", "unknown_kind")

    def _view(self, prediction_id: str) -> RecommendationView:
        view = self.service.recommendation(prediction_id)
        if view is None:
            raise _Fail(f"prediction {prediction_id!r} is not in the database", "not_in_database")
        return view

    def _posted_before(self, item: OutboxItem) -> tuple[str, str] | None:
        """The (channel, ts) of a post of ``item`` Slack already has, from a try whose answer was lost: looked for
        among the newest messages since that try (:data:`HISTORY_LOOKUP_LIMIT`; a thread reply's in its thread), by
        the outbox id in their metadata (its own post's, or a digest's that listed it). None when there is none, or
        when the look-up failed (logged; the message is posted then)."""
        thread_ts = str(item.payload.get("thread_ts") or "") if item.kind == "thread_reply" else ""
        since = float(item.payload[UNANSWERED_KEY])
        for message in self._recent_posts(item.channel, since, f"outbox message {item.id}", thread_ts=thread_ts):
            if _carries(message, item.id):
                log.info(
                    "outbox message %d was posted already (ts %s), its answer lost: recorded, not posted again",
                    item.id,
                    message.get("ts"),
                )
                return item.channel, str(message.get("ts") or "")
        return None

    def _recent_posts(self, channel: str, since: float, subject: str, *, thread_ts: str = "") -> list[dict[str, Any]]:
        """The channel's newest messages since ``since`` (less :data:`HISTORY_LOOKUP_MARGIN_S`), with their metadata:
        ``conversations.history``, or with ``thread_ts`` that thread's (``conversations.replies``: a channel's
        history lists no replies). None found when the look-up fails (logged, naming ``subject``)."""
        kwargs: dict[str, Any] = {
            "channel": channel,
            "oldest": f"{since - HISTORY_LOOKUP_MARGIN_S:.6f}",
            "limit": HISTORY_LOOKUP_LIMIT,
            "include_all_metadata": True,
        }
        try:
            if thread_ts:
                response = self.client.conversations_replies(ts=thread_ts, **kwargs)
            else:
                response = self.client.conversations_history(**kwargs)
        except Exception as exc:
            self._lookup_failed(channel, subject, exc)
            return []
        return [m for m in response.get("messages") or [] if isinstance(m, dict)]

    def _lookup_failed(self, channel: str, subject: str, exc: Exception) -> None:
        """Log a look-up for an earlier post that failed: a missing scope once per worker (naming the scope to add),
        any other failure each time."""
        error = needed = ""
        if isinstance(exc, SlackApiError):
            error, needed = str(exc.response.get("error") or ""), str(exc.response.get("needed") or "")
        if error != "missing_scope":
            log.warning(
                "could not look for an earlier post of %s in %s (%s); posting it, it may show twice",
                subject,
                channel,
                error or f"{type(exc).__name__}: {exc}",
            )
        elif not self._history_refused:
            self._history_refused = True
            log.warning(
                "Slack refused to list %s's messages (missing_scope): a post whose answer was lost is posted again, "
                "and may show twice. Add the bot scope %s to the Slack app and reinstall it",
                channel,
                needed or HISTORY_SCOPES,
            )

    def _post(
        self,
        channel: str,
        text: str,
        blocks: Sequence[dict[str, Any]],
        *,
        thread_ts: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        kwargs: dict[str, Any] = {"channel": channel, "text": text or " "}
        if blocks:
            kwargs["blocks"] = list(blocks)
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if metadata is not None:
            kwargs["metadata"] = metadata
        self._calling = ("chat.postMessage", channel)  # posts wait for the channel's pace before they get here
        try:
            response = self.client.chat_postMessage(**kwargs)
        finally:
            self._ready_at[channel] = max(self._ready_at.get(channel, 0.0), self.clock() + self.config.post_interval_s)
        return str(response.get("channel") or channel), str(response.get("ts") or "")

    def _update(self, item: OutboxItem) -> tuple[str, str]:
        pid = str(item.payload.get("prediction_id"))
        channel, ts = str(item.payload.get("channel") or ""), str(item.payload.get("ts") or "")
        if not ts:
            ref = self.service.message_ref(pid)
            if ref is None:
                post = self._post_state(pid)
                if post == "failed":
                    raise _Fail(
                        f"recommendation {pid} was never posted (its delivery failed): no message to update",
                        "never_posted",
                    )
                if post == "done":
                    return channel, ts  # sent inside a digest: no message of its own to update
                raise _Retry(NOT_YET_POSTED_RETRY_S, "the recommendation is not posted yet", expected=True)
            channel, ts = ref.channel, ref.ts
        if self._shared_message(channel, ts):
            return channel, ts  # folded into a digest: no single message to update
        self._call("chat.update", channel)
        riders = self._riders(item, pid)  # read before the rendering: what they were queued for is in it
        view = self._view(pid)
        try:
            self.client.chat_update(
                channel=channel, ts=ts, text=fallback_text(view), blocks=recommendation_blocks(view)
            )
        except SlackApiError as exc:
            compact = self._compact(exc, item, view)
            self.client.chat_update(
                channel=channel, ts=ts, text=fallback_text(compact), blocks=recommendation_blocks(compact)
            )
        self._fold(riders, view, channel, ts)
        return channel, ts

    def _riders(self, item: OutboxItem, prediction_id: str) -> list[tuple[int, int]]:
        """The other updates of the prediction this one carries (:func:`storage.outbox.riding_updates`): those never
        tried — queued while it was claimed, held back or in flight, or claimed by this pass and not tried yet. Their
        changes are in the rendering read next, so sending them too would only repeat it."""
        own = [(i.id, i.attempts) for i in self._claimed.values() if i.kind == "update" and i.id != item.id]
        with self.store.read() as conn:
            return riding_updates(conn, prediction_id, item.id, own)

    def _fold(self, riders: list[tuple[int, int]], view: RecommendationView, channel: str, ts: str) -> None:
        """Mark ``riders`` sent with the update that carried them, as rendered from ``view`` — only while the
        recommendation is still as ``view`` shows it: a change made since (an answer given while the update was in
        flight) may have been queued to ride with one of them (:func:`storage.outbox.update_waiting`), which must
        then go out and show it. Checked and written in one write transaction, so no change comes in between. A
        refused write only costs their own calls later (each renders the message as it is then): logged, not
        raised."""
        if not riders:
            return
        try:
            with self.store.transaction() as tx:
                if self.service.recommendation(view.prediction.id) != view:
                    return  # changed since it was rendered: they go out on their own and show it
                folded = fold_updates(tx.connection, riders, channel, ts, self.clock())
        except (StorageBusy, sqlite3.OperationalError) as exc:
            log.warning(
                "could not record %d update(s) sent along with another; they are sent on their own: %s",
                len(riders),
                exc,
            )
            return
        self._folded.update(folded)
        for outbox_id in folded:
            self._claimed.pop(outbox_id, None)
        if folded:
            log.debug("%d update(s) of %s/%s sent along with another update of it", len(folded), channel, ts)
            self.metrics.inc("npo_deliveries_total", float(len(folded)), kind="update", result="sent")

    def _compact(self, exc: SlackApiError, item: OutboxItem, view: RecommendationView) -> RecommendationView:
        """The compact rendering to send again when Slack refused the recommendation's blocks (re-raises any other
        error): its limits are counted in characters, as NPO counts them, but Slack's counting of some text (emoji,
        other scripts) is undocumented, and a recommendation should not be lost to it."""
        self._refused(exc, item, f"{item.kind} message of {view.prediction.id}")
        return compact_view(view)

    def _refused(self, exc: SlackApiError, item: OutboxItem, subject: str) -> None:
        """Log that Slack refused the blocks of ``subject`` and that it is sent again in short; re-raises ``exc`` when
        it is any other error. When the refusal came back with too little of ``item``'s lease left to start another
        call (a slow answer), the message is retried at once instead, under a fresh lease: another worker may
        have claimed it meanwhile, and both would send it."""
        error = str(exc.response.get("error") or "")
        if error not in REFUSED_BLOCKS:
            raise exc
        if not self._leased(item):
            raise _Retry(0.0, f"Slack refused its blocks ({error}); the lease is nearly over", expected=True)
        log.warning("Slack refused the %s (%s): sending it again in short", subject, error)

    def _post_state(self, prediction_id: str) -> str:
        """For a recommendation with no message ts: ``"failed"`` (its post failed for good, or it was never
        surfaced), ``"done"`` (posted, but inside a digest) or ``"waiting"`` (its post is still pending)."""
        with self.store.read() as conn:
            return post_state(conn, prediction_id)

    def _superseded(self, item: OutboxItem, ts: str) -> bool:
        """Whether a later update of the same plain message is pending or sent (``message_update`` carries the
        blocks it was queued with, so one retried after a later one would put the older blocks back)."""
        with self.store.read() as conn:
            return later_message_update(conn, item.id, item.channel, ts)

    def _shared_message(self, channel: str, ts: str) -> bool:
        with self.store.read() as conn:
            return shares_message(conn, channel, ts)

    def _deliver_digest(self, channel: str, items: list[OutboxItem], *, storm: bool | None) -> None:
        """Post one channel's folded ``items`` (in outbox order) as digests. When they fit one message one line each
        (``digest_fit``) it lists them so; otherwise one line per kind (``digest_groups``: fault type and action,
        counted, with the targets), as many kinds as fit. Exactly what a posted digest lists or counts is marked
        sent (in one transaction per post): a recommendation is never recorded as sent unless a posted digest showed
        it. While the channel's pace allows, the next part goes out in this pass; otherwise the rest is deferred to
        the channel's next slot, due together, and leads the next pass's digest (still in outbox order; a deferral
        is not a try). A part that fails is retried or failed alone by ``_handle_error``: the parts before it stay
        posted and marked, the rest wait as long as it does."""
        if self._ready_at.get(channel, 0.0) > self.clock():
            for item in items:
                self._defer(item, self._ready_at[channel], "waiting for the channel's 1 message/s pace")
            return
        items = [item for item in items if self._leased(item)]
        rest: list[tuple[OutboxItem, RecommendationView]] = []
        for item in items:
            try:
                rest.append((item, self._view(str(item.payload.get("prediction_id")))))
            except _Fail as exc:
                self._handle_error([item], exc)  # nothing to list: failed, as a recommendation of its own would be
        rest = self._digests_found(channel, rest)
        why = functools.partial(_why, storm)
        one_by_one = False  # set once a kind's line was refused: this pass lists one recommendation a line
        untagged = False  # set once Slack refused a digest's tag: this pass posts them untagged
        while rest:
            if self._stop.is_set():
                for item, _ in rest:
                    self._defer(item, self.clock(), "the delivery worker stopped before sending it")
                return
            ready_at = self._ready_at.get(channel, 0.0)
            if ready_at > self.clock():
                for item, _ in rest:
                    self._defer(item, ready_at, "the rest of a digest: waiting for the channel's 1 message/s pace")
                return
            if not all(self._leased(item) for item, _ in rest):
                for item, _ in rest:  # the pass ran long: due again at once, claimed with a fresh lease
                    self._defer(item, self.clock(), "the rest of a digest: this lease is nearly over")
                return
            views = [view for _, view in rest]
            fit = digest_fit(views)
            groups = digest_groups(views) if fit < len(views) and not one_by_one else []
            if not 0 < len(groups) < len(views):  # one by one, in as many parts as it takes
                groups = []
            lines = grouped_digest_fit(groups) if groups else fit
            while True:
                part, left, blocks = _digest_part(rest, views, groups, lines, why)
                part_items = [item for item, _ in part]
                tag = None if untagged else _digest_metadata(part_items)
                started = self.clock()
                try:
                    text = digest_fallback_text([view for _, view in part])
                    posted_channel, ts = self._post(channel, text, blocks, metadata=tag)
                    break
                except Exception as exc:
                    error = str(exc.response.get("error") or "") if isinstance(exc, SlackApiError) else ""
                    if error in REFUSED_METADATA and tag is not None and all(self._leased(i) for i, _ in rest):
                        untagged = True  # better posted untagged than not at all
                        log.warning(
                            "Slack refused a digest's tag of %d outbox id(s) for %s (%s): posting it untagged (a "
                            "lost answer would post it again)",
                            len(part),
                            channel,
                            error,
                        )
                        continue
                    if error in REFUSED_BLOCKS and (lines > 1 or (groups and len(part) > 1)):
                        if not all(self._leased(item) for item, _ in rest):  # a slow refusal: no time for another
                            for item, _ in rest:
                                self._defer(item, self.clock(), "a refused digest: this lease is nearly over")
                            return
                        # Slack counts some text differently: fewer lines. One kind's line refused alone: that kind
                        # is listed one recommendation a line, first, and the rest of this pass one by one too, so
                        # only a single recommendation's line can fail for good.
                        if lines > 1:
                            lines //= 2
                        else:
                            rest, one_by_one, groups = part + left, True, []
                            views = [view for _, view in rest]
                            lines = max(1, min(digest_fit(views), len(part)))
                        log.warning(
                            "Slack refused a digest of %d recommendation(s) for %s (%s): sending it again in parts of "
                            "at most %d line(s)",
                            len(part),
                            channel,
                            error,
                            lines,
                        )
                        continue
                    unknown = tag is not None and result_unknown(exc)  # its retry looks for it first
                    due = self._handle_error(part_items, exc, unanswered_since=started if unknown else None)
                    after = self._ready_at.get(channel, self.clock()) if due is None else due
                    for item, _ in left:  # not tried: they follow the part that failed, in outbox order
                        self._defer(item, after, "the rest of a digest: after the part before it")
                    return
            rest = left
            write = functools.partial(self._mark_digest_sent, part_items, posted_channel, ts)
            self._write_result(write, sent=(part_items, posted_channel, ts))

    def _digests_found(
        self, channel: str, rest: list[tuple[OutboxItem, RecommendationView]]
    ) -> list[tuple[OutboxItem, RecommendationView]]:
        """Record as sent what of ``rest`` a post Slack already has lists, from a try whose answer was lost (one of
        them has ``unanswered_since``): a digest (tagged with the ids it lists or counts) or a recommendation's own
        post, looked for among the channel's newest messages since the earliest such try. Each post found is
        recorded as a posted digest part is (:meth:`_mark_digest_sent`, one transaction); returns the rest, to be
        posted. A look-up that fails is passed by (logged): they are all posted then."""
        since = [float(i.payload[UNANSWERED_KEY]) for i, _ in rest if i.payload.get(UNANSWERED_KEY) is not None]
        if not since:
            return rest
        messages = self._recent_posts(channel, min(since), f"a digest of {len(rest)} recommendation(s)")
        found: dict[str, list[OutboxItem]] = {}
        left: list[tuple[OutboxItem, RecommendationView]] = []
        for item, view in rest:
            ts = next((str(m.get("ts") or "") for m in messages if _carries(m, item.id)), None)
            if ts:
                found.setdefault(ts, []).append(item)
            else:
                left.append((item, view))
        for ts, items in found.items():
            log.info(
                "%d outbox message(s) for %s were posted already (ts %s), the answer lost: recorded, not posted again",
                len(items),
                channel,
                ts,
            )
            self._write_result(functools.partial(self._mark_digest_sent, items, channel, ts), sent=(items, channel, ts))
        return left

    def _mark_digest_sent(self, part_items: list[OutboxItem], posted_channel: str, ts: str) -> None:
        """Record the messages one posted digest part listed as sent (one transaction), counting those whose lease
        another worker took meanwhile; those another worker's claim already recorded as this very post (from its
        note next to the database) were not lost, and are only logged."""
        marked = self.store.mark_sent_many([(i.id, i.attempts) for i in part_items], posted_channel, ts)
        if marked < len(part_items):
            with self.store.read() as conn:
                recorded = sent_as(conn, [i.id for i in part_items], posted_channel, ts) - marked
            if recorded:
                log.info(
                    "%d of %d outbox message(s) of a digest were recorded from its note, by another worker's claim",
                    recorded,
                    len(part_items),
                )
            lost = len(part_items) - marked - recorded
            if lost:
                log.warning(
                    "%d of %d outbox message(s) of a digest were claimed by another worker after this lease ran "
                    "out; not recorded",
                    lost,
                    len(part_items),
                )
                self.metrics.inc("npo_deliveries_total", float(lost), kind="digest", result="lease_lost")
        self.metrics.inc("npo_deliveries_total", float(len(part_items)), kind="digest", result="sent")

    # -- outcomes of a failed call -----------------------------------------------------------------------------
    def _retry_at(self, item: OutboxItem, at: float, reason: str, unanswered_since: float | None = None) -> None:
        self._record(item, self.store.mark_retry, at, reason, unanswered_since)

    def _defer(self, item: OutboxItem, at: float, reason: str) -> None:
        """Not tried this pass (not a failure: the back-off is not raised); written with the pass's other deferrals
        when it ends (a backlog waiting for a channel's pace is deferred a batch at a time, and one write
        transaction per message would keep the write lock from clicks)."""
        self._deferred.append((item.id, at, reason, item.attempts))

    def _flush_deferred(self) -> None:
        """Write this pass's deferrals in one transaction. A message whose lease another worker took meanwhile is
        left as that worker has it; a failed write leaves them all to their leases (claimed again once it ends)."""
        deferred, self._deferred = [d for d in self._deferred if d[0] not in self._folded], []
        if not deferred:
            return
        try:
            done = self.store.defer_many(deferred)
        except Exception as exc:
            log.log(
                logging.WARNING if is_locked(exc) else logging.ERROR,
                "could not defer %d outbox message(s); they are claimed again when their lease ends",
                len(deferred),
                exc_info=not is_locked(exc),
            )
            return
        if done < len(deferred):
            log.warning(
                "%d of %d deferred outbox message(s) were claimed by another worker after this lease ran out; "
                "not recorded",
                len(deferred) - done,
                len(deferred),
            )
            self.metrics.inc("npo_deliveries_total", float(len(deferred) - done), kind="deferred", result="lease_lost")

    def _handle_error(
        self, items: list[OutboxItem], exc: BaseException, *, unanswered_since: float | None = None
    ) -> float | None:
        """Record a failed call for ``items``: retried (returns when they are due again) or failed for good
        (returns None). ``unanswered_since``: when the call whose result is unknown was made (the retry looks for
        its post first)."""
        verdict = exc if isinstance(exc, _Retry | _Fail) else classify(exc, max(i.attempts for i in items))
        if isinstance(verdict, _Retry):
            if isinstance(exc, _ANSWER_LOST) and any(i.kind in UPDATE_KINDS for i in items):
                # The update may have reached Slack and be applied after a newer one: the retry, which renders the
                # message as it is then, waits until that late one would have landed, so it is the last word.
                verdict.after_s = max(verdict.after_s, self._call_timeout_s + LOST_UPDATE_SETTLE_S)
            at = self.clock() + verdict.after_s
            if verdict.rate_limited:
                # What Slack limited waits: the method in the channel the call was for (chat.postMessage,
                # chat.update: the channel's posts too), or in every channel (a workspace-wide method).
                calls = {self._calling} if self._calling is not None else set()
                if not calls:  # not known: where the messages were to go
                    calls = {(METHOD_OF_KIND[i.kind], i.channel) for i in items if i.kind in METHOD_OF_KIND}
                for method, channel in calls:
                    if method in PER_CHANNEL_METHODS:
                        self._ready_at[channel] = max(self._ready_at.get(channel, 0.0), at)
                    key = limit_key(method, channel)
                    self._limited_until[key] = max(self._limited_until.get(key, 0.0), at)
            for item in items:
                self._retry_at(item, at, str(verdict), unanswered_since)
            log.log(
                logging.DEBUG if verdict.expected else logging.WARNING,
                "delivery of %d %s message(s) will be retried in %.1f s: %s",
                len(items),
                items[0].kind,
                verdict.after_s,
                verdict,
            )
            self.metrics.inc("npo_deliveries_total", float(len(items)), kind=items[0].kind, result="retry")
            return at
        for item in items:
            self._record(item, self.store.mark_failed, str(verdict))
        log.error(
            "delivery FAILED for good: %s message %s to channel %s: %s",
            items[0].kind,
            ",".join(str(i.id) for i in items),
            items[0].channel,
            verdict,
        )
        self.metrics.inc("npo_deliveries_total", float(len(items)), kind=items[0].kind, result="failed")
        self.metrics.inc("npo_delivery_failures_total", float(len(items)), error=verdict.code)
        return None
