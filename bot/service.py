"""The bot's use-cases, shared by the HTTP ingest, the Slack listeners, the poller and ``npo-bot replay``.

Each method is one store transaction around one loop step (``decide``, ``record_feedback``, ``record_outcome``)
plus the outbox message that makes Slack reflect it, so "acknowledged" always means "stored and queued". Slow
work (Web API calls) never happens here: the delivery worker reads the outbox. Thread-safe: the store serialises
writers and the random generator is used under a lock.

Clicks are limited per person (:class:`storage.ratelimit.ClickLimit`, a token bucket kept in SQLite and charged
inside the click's own transaction, so the limit holds across threads and processes): a click over the limit is
not applied to the learning state, is stored as a ``feedback_rate_limited`` audit line, and is answered with status
``rate_limited`` so the listener can tell the person.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bot.config import AlertmanagerResolved
from bot.slack.blocks import Answer, Dashboard, OutcomeView, RecommendationView
from npo.alignment import alignment_loss
from npo.loop import (
    SYSTEM_OPERATOR,
    DecideResult,
    FeedbackResult,
    NotSurfaced,
    OutcomeResult,
    UnknownPrediction,
    record_feedback,
    record_outcome,
)
from npo.policy import Mute, Policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction
from storage import SQLiteStore, StorageError
from storage.mutes import active_mutes, add_mute, lift_mutes
from storage.outbox import closed_at, message_of, posted_at, postpone, recent_recommendations, update_waiting
from storage.ratelimit import RATE_LIMITED, ClickLimit, remember_rate_limited, remember_unchanged, take, was_remembered
from storage.store import SQLiteTransaction

UPDATE_KIND = "update"
ALERT_RESOLVED = "alert_resolved"  # the audit kind (and processed_requests kind) of an alert resolved without a truth
ALIGNMENT_WINDOW = 500
MUTE_REFRESH_S = 2.0  # how often the mutes are re-read (another process may have added one)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Where a recommendation was posted: the channel id and the message ``ts``."""

    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class ClickResult:
    # "recorded", "replaced", "duplicate" (same request), "unchanged" (same answer again) or "rate_limited"
    # (over the person's click limit: not applied; retry_after_s says when their next click will count)
    status: str
    feedback: FeedbackResult | None
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClosedResult:
    """What :meth:`NpoService.close_without_outcome` did. ``closed``: the prediction's open recommendation was
    closed now (False: none was open — suppressed or blocked, or already closed by an outcome or an earlier report
    of the same end, which changes nothing — or another alert merged into the prediction still fires).
    ``still_firing``: how many such alerts kept it open."""

    closed: bool
    still_firing: int = 0


class NpoService:
    """The loop over one :class:`SQLiteStore` with one policy, one random generator and one clock.

    ``on_enqueue`` is called (outside the transaction) after anything was queued for Slack, so the delivery
    worker can wake up at once. ``update_interval_s``: a recommendation's message is updated at most once per
    this many seconds — the first update after a quiet spell is due at once, later ones are due that long after
    the previous one, and answers arriving meanwhile fold into that one pending update (a burst of 100 clicks
    costs a couple of ``chat.update`` calls, not 100: Slack rate-limits ``chat.update`` to about 50 a minute).
    ``click_limit``: each person's clicks that would change the learning state are limited to ``burst`` at once
    and ``per_minute`` a minute after that (``per_minute`` = 0: no limit); skips (``system``) are never limited.
    ``alertmanager_resolved`` (``NPO_ALERTMANAGER_RESOLVED``): what a resolved Alertmanager/Grafana alert that does
    not say whether the fault was real means — ``"unknown"`` (no outcome: it only closes the recommendation) or
    ``"real_fault"`` (an outcome ``real_fault = true``); read by the webhook route.
    """

    def __init__(
        self,
        store: SQLiteStore,
        policy: Policy,
        *,
        rng: np.random.Generator,
        clock: Callable[[], float] = time.time,
        on_enqueue: Callable[[], None] = lambda: None,
        update_interval_s: float = 1.0,
        click_limit: ClickLimit | None = None,
        alertmanager_resolved: AlertmanagerResolved = "unknown",
    ) -> None:
        self.store = store
        self.alertmanager_resolved: AlertmanagerResolved = alertmanager_resolved
        self.update_interval_s = update_interval_s
        self.click_limit = ClickLimit() if click_limit is None else click_limit
        self._update_due: dict[str, float] = {}  # prediction id → when its last queued update was due
        self.base_policy = policy
        self._policy = policy
        self._mutes_read_at = -math.inf
        self._mute_reads = 0  # reads of the mutes begun (their order: see _refresh_mutes)
        self._mutes_applied = 0  # the latest-begun read applied
        self._policy_lock = threading.Lock()
        self.clock = clock
        self.on_enqueue = on_enqueue
        self._rng = rng
        self._rng_lock = threading.Lock()

    # -- predictions -------------------------------------------------------------------------------------------
    def decide(self, predictions: Sequence[Prediction], *, refuse_conflicts: bool = False) -> list[DecideResult]:
        """Decide and persist ``predictions`` in one transaction (all or nothing); surfaced ones are queued. An id
        sent again with another body is a duplicate whose ``conflict`` names the fields that differ, or, with
        ``refuse_conflicts``, :class:`~npo.loop.ConflictingPrediction`, and nothing of the batch is stored."""
        if not predictions:
            return []
        with self._rng_lock:
            results = self.store.decide_many(
                predictions, policy=self.policy, rng=self._rng, now=self.clock(), refuse_conflicts=refuse_conflicts
            )
        if any(r.decision.surfaced and not r.duplicate for r in results):
            self.on_enqueue()
        return results

    # -- the policy and its runtime mutes -----------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """The file's policy plus the mutes in force (``/npo mute``), re-read at most every ``MUTE_REFRESH_S``."""
        now = self.clock()
        if now - self._mutes_read_at >= MUTE_REFRESH_S:
            self._refresh_mutes(now)
        return self._policy

    def replace_policy(self, policy: Policy) -> None:
        """Swap the file's policy (a reload); the mutes in force stay layered over the new one. The new policy is in
        force at once with the mutes last read, then they are read again; when that read fails (the database not
        readable), the reload has still happened — it is logged, and the next decision reads the mutes again."""
        with self._policy_lock:
            self.base_policy = policy
            mutes = self._policy.mutes
            self._policy = dataclasses.replace(policy, mutes=mutes) if mutes else policy
        try:
            self._refresh_mutes(self.clock())
        except (sqlite3.Error, StorageError) as exc:
            log.warning("policy reloaded; the mutes could not be read again (the ones last read stay): %s", exc)

    def _refresh_mutes(self, now: float) -> None:
        """Re-read the mutes in force. Reads run outside the lock, so a read that began earlier can end later: it
        is dropped when a read that began after it was already applied (else a decide's refresh that started
        just before a ``mute()`` committed could replace that mute's own refresh and hide it)."""
        with self._policy_lock:
            self._mute_reads += 1
            ticket = self._mute_reads
        with self.store.read() as conn:
            mutes = tuple(active_mutes(conn, now))
        with self._policy_lock:
            if ticket < self._mutes_applied:
                return
            self._mutes_applied = ticket
            self._policy = dataclasses.replace(self.base_policy, mutes=mutes) if mutes else self.base_policy
            self._mutes_read_at = now

    def mute(self, key: str, duration_s: float, *, by: str, reason: str = "", request_id: str = "") -> Mute | None:
        """Mute scenario ``key`` for ``duration_s`` seconds from now: a Safety Policy rule (``mute``) that blocks
        its predictions until it expires. Stored and audited in one transaction; in force at once here, within
        ``MUTE_REFRESH_S`` in other processes. Raises :class:`npo.types.InvalidRecord` for a bad key or duration.

        ``request_id`` (the slash command's trigger id): a request seen before changes nothing and returns None,
        so a replayed ``/npo mute`` cannot put back a mute lifted since."""
        now = self.clock()
        mute = Mute(key, now, now + duration_s, by, reason)
        with self.store.transaction() as tx:
            if request_id and not tx.claim_request(request_id, "command", now):
                return None
            mute_id = add_mute(tx.connection, mute)
            tx.audit("policy_mute", key, {"id": mute_id, "until": mute.until, "by": by, "reason": reason}, now)
        self._refresh_mutes(now)
        return mute

    def unmute(self, key: str, *, by: str, request_id: str = "") -> int | None:
        """Lift the mutes of ``key`` in force (audited); returns how many were lifted (None: ``request_id`` was
        seen before, nothing changed — see :meth:`mute`)."""
        now = self.clock()
        with self.store.transaction() as tx:
            if request_id and not tx.claim_request(request_id, "command", now):
                return None
            lifted = lift_mutes(tx.connection, key, at=now, by=by)
            if lifted:
                tx.audit("policy_unmute", key, {"lifted": lifted, "by": by}, now)
        self._refresh_mutes(now)
        return lifted

    # -- feedback ----------------------------------------------------------------------------------------------
    def record_click(self, event: FeedbackEvent, message: MessageRef | None) -> ClickResult:
        """Record one engineer's answer and queue the message update, in one transaction.

        The same request id again is ``duplicate``; the same person giving the same answer again is
        ``unchanged`` (no answer stored; its request id is remembered, so a replay of it after the person changed
        their answer is a ``duplicate`` too, not their old answer again); a different answer replaces theirs (loop
        rule). A click over the person's
        limit (``click_limit``) is ``rate_limited``: only its audit line is stored, and its request id is
        remembered, so a retry of it is ``duplicate`` (audited and charged once). Neither a duplicate nor an
        unchanged answer takes from the limit. Raises the loop's :class:`npo.loop.LoopError` for an unknown or
        unsurfaced prediction (nothing stored).

        The answer's time (``event.at``) is when it is recorded: the service's clock once the write transaction has
        begun, not when the click came in. An answer that waited for the write lock (another connection's long
        write) across the weekly summary's slot is then in the next summary, not in neither: the summary reads its
        week under the write lock (:func:`bot.jobs.weekly.run_weekly_summary`).
        """
        limit = self.click_limit
        with self.store.transaction() as tx:
            event = replace(event, at=self.clock())
            if tx.has_request(event):
                return ClickResult("duplicate", None)
            limited = limit.enabled and event.operator != SYSTEM_OPERATOR
            if was_remembered(tx.connection, event.request_id):  # refused for the limit, or a repeat, before
                return ClickResult("duplicate", None)
            current = tx.effective_feedback(event.prediction_id, event.operator)
            if current is not None and current.event.kind is event.kind and current.event.reason == event.reason:
                remember_unchanged(tx.connection, event.request_id, self.clock())
                return ClickResult("unchanged", None)
            if limited:
                refused = self._over_limit(tx, event)
                if refused is not None:
                    return refused
            result = record_feedback(tx, event, config=self.store.config)
            if result.status != "duplicate":
                self._queue_update(tx, event.prediction_id, message)
        if result.status != "duplicate":
            self.on_enqueue()
        return ClickResult(result.status, result)

    def _over_limit(self, tx: SQLiteTransaction, event: FeedbackEvent) -> ClickResult | None:
        """Charge the click to its person's bucket; when it is over the limit, audit it, remember its request id
        and return the ``rate_limited`` result, else None. A click on an unknown or unsurfaced prediction is not
        charged: the loop refuses it next, and it changes nothing."""
        decision = tx.get_decision(event.prediction_id)
        if decision is None or not decision.surfaced:
            return None
        now = self.clock()
        taken = take(tx.connection, event.operator, now, self.click_limit)
        if taken.allowed:
            return None
        remember_rate_limited(tx.connection, event.request_id, now)
        detail = {
            "operator": event.operator,
            "kind": event.kind.value,
            "request_id": event.request_id,
            "per_minute": self.click_limit.per_minute,
            "burst": self.click_limit.burst,
            "retry_after_s": round(taken.retry_after_s, 3),
        }
        tx.audit(RATE_LIMITED, event.prediction_id, detail, now)
        return ClickResult("rate_limited", None, taken.retry_after_s)

    def record_outcome(
        self,
        outcome: Outcome,
        message: MessageRef | None = None,
        *,
        surfaced_only: bool = False,
        reporter: str | None = None,
    ) -> OutcomeResult:
        """Record an outcome (first one wins) and queue a message update when it was new and was surfaced.
        ``surfaced_only`` (the Slack outcome buttons, which only a surfaced recommendation shows): a prediction
        that was not surfaced raises :class:`npo.loop.NotSurfaced`, and nothing is stored. ``reporter``: the
        person who clicked it; one of trust weight 0 records nothing but an audit line (``not_trusted``). An
        arrival time (``recorded_at``) is taken again once the write transaction has begun, as an answer's time is (see
        :meth:`record_click`): one that waited for the write lock across the weekly slot is in the next summary."""
        with self.store.transaction() as tx:
            if outcome.recorded_at is not None:
                outcome = replace(outcome, recorded_at=max(outcome.recorded_at, self.clock()))
            decision = tx.get_decision(outcome.prediction_id)
            if decision is None and (alias := tx.alias_of(outcome.prediction_id)) is not None:
                # the id of a prediction found a duplicate by fingerprint: the outcome is the one it duplicated
                outcome = replace(outcome, prediction_id=alias)
                decision = tx.get_decision(alias)
            if surfaced_only and decision is not None and not decision.surfaced:
                raise NotSurfaced(outcome.prediction_id, decision.verdict)
            result = record_outcome(tx, outcome, config=self.store.config, reporter=reporter)
            queued = result.recorded and decision is not None and decision.surfaced
            if queued:
                self._queue_update(tx, outcome.prediction_id, message)
        if queued:
            self.on_enqueue()
        return result

    def first_outcome(self, prediction_id: str) -> Outcome | None:
        """The outcome on record for ``prediction_id`` (or for the prediction it was found a duplicate of): the
        first one reported, which later ones do not replace; None when there is none."""
        return self.store.outcome(self.store.alias_of(prediction_id) or prediction_id)

    def alias_of(self, prediction_id: str) -> str | None:
        """The prediction that ``prediction_id`` was found a duplicate of by fingerprint (same fault type, target
        and action within the dedupe window), whose decision it was answered with; None if it was not one."""
        return self.store.alias_of(prediction_id)

    def close_without_outcome(
        self,
        prediction_id: str,
        at: float,
        *,
        source: str,
        alert_id: str | None = None,
        alert_prefix: str | None = None,
        episode_sep: str | None = None,
    ) -> ClosedResult:
        """The prediction's alert ended (at ``at``, as ``source`` reports) without saying whether the fault was
        real: no outcome — nothing for the bandit's miss term, m(k) or trust — but its recommendation is closed,
        so it stops counting toward the blast radius and the open recommendations, and the end is audited
        (``alert_resolved``, ``real_fault`` null), once per alert: a repeat of the report changes nothing.
        An outcome may still come later (the outcomes route, the Slack outcome buttons, a resolved alert that says)
        and is recorded and learnt from as usual. A recommendation closed now has its message updated to say so (its
        buttons stay: an answer still counts); one whose post still waits in the outbox is posted so. Raises
        :class:`npo.loop.UnknownPrediction`.

        ``alert_id``: the id the alert was sent under (default ``prediction_id``), another when it was found a
        duplicate of the prediction by fingerprint. ``alert_prefix`` (``am:``): the ids of alerts that report their
        own end; the recommendation stays open while one of those merged into the prediction (its own id, or one
        found a duplicate of it) has not ended — several alerts of one fault type, target and action within the
        dedupe window, or an alert whose labels changed, share one recommendation, and the end of one of them is
        not the end of the others. ``episode_sep`` (``@``): an alert id ``ID`` has ended when one of its episodes
        (``ID@…``) has: an alert stored under its plain id before episode ids, re-sent under its episode's id (found
        a duplicate of it), reports its end under that one."""
        now = self.clock()
        alert = prediction_id if alert_id is None else alert_id
        with self.store.transaction() as tx:
            decision = tx.get_decision(prediction_id)
            if decision is None:
                raise UnknownPrediction(prediction_id)
            if not tx.claim_request(f"{ALERT_RESOLVED}:{alert}", ALERT_RESOLVED, now):
                return ClosedResult(closed=False)
            firing = (
                []
                if alert_prefix is None
                else tx.unended_alerts(
                    prediction_id,
                    prefix=alert_prefix,
                    ended=f"{ALERT_RESOLVED}:",
                    excluding=alert,
                    episode_sep=episode_sep,
                )
            )
            closed = not firing and tx.close_recommendation(prediction_id, at)
            detail: dict[str, Any] = {
                "real_fault": None,
                "source": source,
                "closed": closed,
                "verdict": decision.verdict.value,
            }
            if alert != prediction_id:
                detail["alert"] = alert
            if firing:
                detail["still_firing"] = len(firing)
            tx.audit(ALERT_RESOLVED, prediction_id, detail, at)
            queued = closed and decision.surfaced
            if queued:  # its message says it closed (a post still waiting is rendered so too)
                self._queue_update(tx, prediction_id, None)
        if queued:
            self.on_enqueue()
        return ClosedResult(closed=closed, still_firing=len(firing))

    def _queue_update(self, tx: SQLiteTransaction, prediction_id: str, message: MessageRef | None) -> None:
        """Queue a chat.update of the recommendation, unless one not yet picked up is already waiting; due at
        once, or ``update_interval_s`` after the previous one (runs under the store's write lock).

        The message updated is the one stored when the recommendation was posted, never the one the request names
        (``message``: the click's container, the modal's metadata): a request naming another message must not
        overwrite it. One not posted yet is found by the delivery worker once it is."""
        if update_waiting(tx.connection, UPDATE_KIND, prediction_id):
            return
        payload: dict[str, Any] = {"prediction_id": prediction_id}
        where = message_of(tx.connection, prediction_id)
        if message is not None and where is not None and (message.channel, message.ts) != where:
            log.warning(
                "a request about %s named the message %s/%s, but it was posted as %s/%s: that one is updated",
                prediction_id,
                message.channel,
                message.ts,
                *where,
            )
        channel = where[0] if where is not None else ""
        now = self.clock()
        due = max(now, self._update_due.get(prediction_id, -math.inf) + self.update_interval_s)
        outbox_id = tx.enqueue(channel or "-", UPDATE_KIND, payload, now, prediction_id=prediction_id)
        if due > now:
            postpone(tx.connection, outbox_id, due)
        if len(self._update_due) > 10_000:  # forget messages quiet for longer than the interval
            self._update_due = {k: v for k, v in self._update_due.items() if v + self.update_interval_s > now}
        self._update_due[prediction_id] = due

    # -- reads -------------------------------------------------------------------------------------------------
    def recommendation(self, prediction_id: str) -> RecommendationView | None:
        """Everything the recommendation message shows, read in one snapshot (read-only)."""
        with self.store.read() as conn:
            tx = SQLiteTransaction(conn, self.store.config, self.store.disruptive_actions)
            prediction = tx.get_prediction(prediction_id)
            decision = tx.get_decision(prediction_id)
            if prediction is None or decision is None:
                return None
            answers = tuple(
                Answer(a.event.operator, a.event.kind, a.event.at, a.event.reason)
                for a in tx.feedback_for(prediction_id)
            )
            outcome = tx.get_outcome(prediction_id)
            posted = posted_at(conn, prediction_id)
            closed = closed_at(conn, prediction_id)
        view_outcome = None if outcome is None else OutcomeView(outcome.real_fault, outcome.at, outcome.source)
        return RecommendationView(prediction, decision, answers, view_outcome, posted, closed)

    def message_ref(self, prediction_id: str) -> MessageRef | None:
        """Where the recommendation was posted, once it was (read-only)."""
        with self.store.read() as conn:
            where = message_of(conn, prediction_id)
        return None if where is None else MessageRef(*where)

    def dashboard(self, *, recent: int = 0) -> Dashboard:
        """Alignment loss over the last answers, answer rates, τ posterior means, row counts (read-only)."""
        samples = self.store.alignment_samples(last_n=ALIGNMENT_WINDOW)
        counts = self.store.counts()
        answered = {k.value: counts.get(f"feedback_effective_{k.value}", 0) for k in FeedbackKind}  # changed: once
        total = sum(answered.values())
        rates = {k: n / total for k, n in answered.items()} if total else {}
        bandit = self.store.bandit()
        taus = dict(zip(bandit.config.thresholds, bandit.posterior_means(), strict=True))
        views: list[RecommendationView] = []
        if recent:
            with self.store.read() as conn:
                ids = recent_recommendations(conn, recent)
            views = [v for pid in ids if (v := self.recommendation(pid)) is not None]
        loss = alignment_loss([s.y for s in samples]) if samples else None
        return Dashboard(loss, len(samples), rates, taus, counts, views)
