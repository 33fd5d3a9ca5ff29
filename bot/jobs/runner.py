"""A small wrapper around APScheduler 3.11's ``BackgroundScheduler`` that runs each scheduled slot exactly once
across every scheduler sharing the SQLite file.

* Jobs live in the in-memory job store and are rebuilt at every :meth:`Scheduler.start` (explicit ids,
  ``replace_existing=True``, ``coalesce=True``, ``max_instances=1``, no misfire limit: a late run still runs once).
* Each run works out its *slot* (the trigger's latest fire time at ``now()``, ISO UTC) and claims ``(job, slot)``
  with :meth:`SQLiteStore.claim_job` first; a slot already claimed (by another scheduler or process) does nothing.
* A run that raises is logged and releases its claim, so the next run (or a retry ``retry_after_s`` later, doubled
  after each further failure of that slot in a row up to an hour: :func:`retry_delay`) tries the same slot again;
  the scheduler keeps going. The released claim stays in the table, free to take
  (:func:`storage.jobs.release_claim`), so a restart before the retry catches the slot up — also the job's first.
  A refusal from Slack is one warning line with its error, not a traceback. A run that finishes records it
  (``done_at``).
* A run whose process died mid-way (SIGKILL, out of memory, power loss) leaves its claim unfinished; once the claim
  is ``stale_after_s`` old (15 min: far longer than any run takes) the slot may be claimed again, so it is taken
  over rather than lost. A run that really is still going after that long may then run twice.
* ``catch_up`` jobs: at start, when the last claimed slot is older than the trigger's previous fire time, that one
  slot runs at once — one catch-up however many slots were missed (coalesced); none when it was already claimed
  and finished, and none on a database where the job never ran (a first start has missed nothing). A slot whose
  claim is unfinished is taken over once stale: at once if it already is, else by a retry when it becomes so.
* The same catch-up runs again every :data:`CATCH_UP_EVERY` while the scheduler runs, in every process: a slot
  given back by a failed run whose process has stopped since (its retry was that process's alone), or left
  unfinished by one that died, is run by a process still running, without a restart — once, as the claim decides.
  A slot is left to its own scheduled run for :data:`CATCH_UP_SETTLE` after its fire time, and a slot this process
  failed and will retry itself is left to that retry (its back-off holds).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from slack_sdk.errors import SlackApiError

from storage import SQLiteStore
from storage.jobs import claim_of, finish_claim, last_claim, release_claim

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
STALE_CLAIM_S = 900.0  # an unfinished claim this old belongs to a run that died (no run takes minutes)
CATCH_UP_EVERY = timedelta(minutes=5)  # how often a running scheduler looks for a ``catch_up`` slot still owed
CATCH_UP_SETTLE = timedelta(minutes=1)  # ... one at least this old (its own scheduled run has the first go)
INTERVAL_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # interval slots are counted from here (a Monday, 00:00 UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def slot_id(slot: datetime) -> str:
    """The claim period of a slot: its instant in UTC, ISO 8601 (sorts as text)."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def previous_fire_time(trigger: BaseTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The trigger's latest fire time at or before ``now`` (searched from ``now - lookback``), or None. Compared as
    instants: two datetimes of one zone compare by wall time, wrong in the hour the clocks repeat or after a gap."""
    now = now.astimezone(UTC)
    t = trigger.get_next_fire_time(None, now - lookback)
    previous = None
    while t is not None and t.astimezone(UTC) <= now:
        previous = t
        t = trigger.get_next_fire_time(t, t)
    return previous


MAX_RETRY_S = 3600.0  # the longest wait between two retries of a failing slot


def retry_delay(retry_after_s: float | None, failures: int) -> float | None:
    """How long after its ``failures``-th failure in a row a slot is tried again: ``retry_after_s``, doubled at each
    further failure up to :data:`MAX_RETRY_S` (a cause that lasts — the bot removed from the channel — is not
    hammered every few minutes for the rest of the week); None when the job does not retry."""
    if retry_after_s is None:
        return None
    return min(retry_after_s * 2.0 ** min(failures - 1, 32), max(MAX_RETRY_S, retry_after_s))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One scheduled job. ``run(slot)`` does the work for the slot (a timezone-aware datetime).

    ``lookback`` bounds the search for the previous fire time (longer than the trigger's period).
    ``catch_up``: run the latest missed slot at start. ``retry_after_s``: after a failure, try the same slot
    again this long later (None: wait for the next scheduled run). ``stale_after_s``: a claim whose run has not
    finished this long after it was taken is counted as dead (its process died mid-run) and may be taken over.
    """

    name: str
    trigger: BaseTrigger
    run: Callable[[datetime], object]
    lookback: timedelta
    catch_up: bool = False
    retry_after_s: float | None = None
    stale_after_s: float = STALE_CLAIM_S


class Scheduler:
    """Runs ``jobs`` on a ``BackgroundScheduler``, one claim per (job, slot) in ``store``. ``now`` is injectable
    (tests); APScheduler itself fires on the real clock, and each run reads the slot from ``now()``."""

    def __init__(self, store: SQLiteStore, jobs: Sequence[JobSpec], *, now: Clock = utc_now) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate job names: {names}")
        self.store = store
        self.jobs = {j.name: j for j in jobs}
        self.now = now
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[str, int]] = {}  # each job's slot failing now and its failed runs in a row

    # -- running one slot ----------------------------------------------------------------------------------
    def current_slot(self, name: str) -> datetime | None:
        job = self.jobs[name]
        return previous_fire_time(job.trigger, self.now(), job.lookback)

    def run_due(self, name: str) -> bool:
        """Claim and run ``name``'s current slot. True when this call ran it (and it succeeded)."""
        job = self.jobs[name]
        slot = self.current_slot(name)
        if slot is None:
            return False
        period = slot_id(slot)
        now = self.now().timestamp()
        with self.store.read() as conn:
            earlier = claim_of(conn, name, period)
        if not self.store.claim_job(name, period, now=now, owner=self.owner, stale_after_s=job.stale_after_s):
            log.debug("job %s slot %s already claimed", name, period)
            return False
        if earlier is not None and not earlier.released:
            log.warning(
                "job %s slot %s: taking over the claim %s took %.0f s ago, whose run never finished (its process "
                "died mid-run?)",
                name,
                period,
                earlier.owner or "(unnamed)",
                now - earlier.claimed_at,
            )
        try:
            job.run(slot)
        except Exception as exc:
            failing, before = self._failures.get(name, (period, 0))
            failures = before + 1 if failing == period else 1  # a new slot starts its back-off afresh
            self._failures[name] = (period, failures)
            delay = retry_delay(job.retry_after_s, failures)
            after = "" if delay is None else f"; retrying in {delay:.0f} s"
            if isinstance(exc, SlackApiError):  # Slack's answer says it all (not_in_channel, …): no traceback
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
                log.warning(
                    "job %s failed for slot %s: Slack answered %s (failure %d in a row)%s",
                    name,
                    period,
                    error or exc.response.status_code,
                    failures,
                    after,
                )
            else:
                log.exception("job %s failed for slot %s; the claim is released for a retry%s", name, period, after)
            with self.store.transaction() as tx:
                release_claim(tx.connection, name, period, self.owner)
            self._schedule_retry(job, delay)
            return False
        self._failures.pop(name, None)
        with self.store.transaction() as tx:
            finished = finish_claim(tx.connection, name, period, self.owner, self.now().timestamp())
        if not finished:
            log.warning("job %s ran for slot %s, but its claim was taken over meanwhile as stale", name, period)
        log.info("job %s ran for slot %s", name, period)
        return True

    def _safe_run_due(self, name: str) -> None:
        """The APScheduler entry point: never raises (a storage error is logged; the next run retries)."""
        try:
            self.run_due(name)
        except Exception:
            log.exception("job %s could not run", name)

    def missed_slot(self, name: str) -> datetime | None:
        """The previous fire time when it is newer than the last claimed slot, or claimed by a run that never
        finished (the one to catch up), else None.

        None as well when the job never ran on this database (a first start has missed nothing)."""
        slot = self.current_slot(name)
        if slot is None:
            return None
        period = slot_id(slot)
        with self.store.read() as conn:
            last = last_claim(conn, name)
            claim = claim_of(conn, name, period)
        if last is None:
            return None
        if claim is not None:
            return slot if claim.done_at is None else None
        return slot if last < period else None

    def catch_up(self, *, settled: timedelta = timedelta(0)) -> list[str]:
        """Run, once each, the missed latest slot of every ``catch_up`` job; returns the names that ran. A slot
        claimed by a run that never finished and is not stale yet is retried once it is. A slot this process failed
        and has a retry of still to come is left to it, and one whose fire time is less than ``settled`` ago to its
        scheduled run (at start, none; every :data:`CATCH_UP_EVERY` after, :data:`CATCH_UP_SETTLE`)."""
        ran = []
        for name, job in self.jobs.items():
            slot = self.missed_slot(name) if job.catch_up else None
            if slot is None or slot.timestamp() > self.now().timestamp() - settled.total_seconds():
                continue
            if self._retry_pending(name, slot_id(slot)):
                continue
            if self.run_due(name):
                ran.append(name)
                continue
            with self.store.read() as conn:
                claim = claim_of(conn, name, slot_id(slot))
            if claim is not None and claim.done_at is None and not claim.released:  # a failed run retries itself
                wait = claim.claimed_at + job.stale_after_s - self.now().timestamp()
                log.info("job %s slot %s is claimed by a run not finished; looking again in %.0f s", name, slot, wait)
                self._schedule_retry(job, after_s=max(1.0, wait + 1.0))
        return ran

    # -- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """(Re)build every job on a fresh ``BackgroundScheduler`` and start it; catch-up runs on its threads."""
        with self._lock:
            if self._scheduler is not None:
                return
            scheduler = BackgroundScheduler(
                timezone=UTC,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            for name, job in self.jobs.items():
                scheduler.add_job(
                    self._safe_run_due,
                    trigger=job.trigger,
                    args=(name,),
                    id=name,
                    name=name,
                    replace_existing=True,
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=None,
                )
            if any(j.catch_up for j in self.jobs.values()):
                scheduler.add_job(self._safe_catch_up, id="catch-up", name="catch-up", replace_existing=True)
                scheduler.add_job(  # a slot a stopped process failed, or one that died mid-run: no restart needed
                    self._safe_catch_up,
                    kwargs={"settled": CATCH_UP_SETTLE},
                    trigger=IntervalTrigger(
                        seconds=CATCH_UP_EVERY.total_seconds(), start_date=INTERVAL_ORIGIN, timezone=UTC
                    ),
                    id="catch-up-check",
                    name="catch-up-check",
                    replace_existing=True,
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=None,
                )
            scheduler.start()
            self._scheduler = scheduler

    def _safe_catch_up(self, settled: timedelta = timedelta(0)) -> None:
        try:
            self.catch_up(settled=settled)
        except Exception:
            log.exception("catch-up failed")

    def _retry_pending(self, name: str, period: str) -> bool:
        """Whether this process's last run of ``name`` failed for ``period`` and its retry is still to come."""
        scheduler = self._scheduler
        failing, _ = self._failures.get(name, ("", 0))
        return failing == period and scheduler is not None and scheduler.get_job(f"{name}-retry") is not None

    def _schedule_retry(self, job: JobSpec, after_s: float | None) -> None:
        """Run ``job`` again ``after_s`` from now (nothing when that is None)."""
        scheduler = self._scheduler
        delay = after_s
        if delay is None or scheduler is None or not scheduler.running:
            return
        scheduler.add_job(
            self._safe_run_due,
            trigger="date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            args=(job.name,),
            id=f"{job.name}-retry",
            replace_existing=True,
            misfire_grace_time=None,
        )

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler (waiting for running jobs by default). Idempotent."""
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=wait)

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
