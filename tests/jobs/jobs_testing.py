"""Helpers for the job tests (a unique module name so tests can import it)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
from apscheduler.job import Job  # type: ignore[import-untyped]
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]

from bot.jobs.runner import Scheduler
from npo.loop import decide, record_feedback
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.types import FeedbackEvent, FeedbackKind, Prediction
from storage import SQLiteStore

TOKEN = "xoxb-jobs-test"
OPS = "C2OPS"  # the ops channel of the jobs' stand-in (here, not in conftest: other folders' conftest modules
# share that module name, so ``from conftest import`` may find theirs when several folders run together)

RELAXED_POLICY = parse_policy(
    DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000")
    .replace("seconds = 3600", "seconds = 0")
    .replace(
        'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]', "disruptive_actions = []"
    )
)


def prediction(i: int, at: float, *, confidence: float = 0.99, fault_type: str = "disk_failure") -> Prediction:
    return Prediction(
        id=f"p{i}",
        fault_type=fault_type,
        target=f"r{i % 7}-n{i}",
        action="investigate",
        confidence=confidence,
        received_at=at,
    )


def surface_and_post(store: SQLiteStore, predictions: list[Prediction], *, posted_at: float) -> None:
    """Decide (all must be surfaced) and mark each recommendation's message as sent at ``posted_at``."""
    rng = np.random.default_rng(0)
    with store.transaction() as tx:
        for p in predictions:
            result = decide(tx, p, config=store.config, policy=RELAXED_POLICY, rng=rng, now=p.received_at)
            assert result.decision.verdict.value == "surface", result.decision
    for n, item in enumerate(store.claim_due(posted_at, limit=len(predictions) + 10)):
        store.mark_sent(item.id, item.channel, f"1700000000.{n:06d}", at=posted_at)


def surface_two_keys(store: SQLiteStore, n: int, *, at: float) -> None:
    """n recommendations p0…p<n-1> over two keys, all decided and posted before any answer (so all surface)."""
    surface_and_post(
        store, [prediction(i, at, fault_type=("disk_failure", "psu")[i % 2]) for i in range(n)], posted_at=at
    )


def reply(store: SQLiteStore, first: int, kinds: list[FeedbackKind], *, at: float) -> None:
    """U1 answers p<first>, p<first+1>, … with ``kinds``, one second apart from ``at``."""
    with store.transaction() as tx:
        for n, kind in enumerate(kinds):
            i = first + n
            record_feedback(tx, FeedbackEvent(f"p{i}", "U1", kind, at + n, f"r{i}"), config=store.config)


class Clock:
    """A settable "now" for the scheduler (``Scheduler(now=clock)``): ``clock.now = …`` moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def wait_for_start(scheduler: Scheduler) -> None:
    """Wait until the catch-up ``start()`` runs at once has finished, then pause the scheduler: from here on its jobs
    fire only through :func:`fire_scheduled`, on the test's clock."""
    background = scheduler._scheduler
    assert background is not None, "start the scheduler first"
    running = background._lookup_executor("default")._instances  # job id -> runs under way (APScheduler 3)
    deadline = time.monotonic() + 30
    while background.get_job("catch-up") is not None or running.get("catch-up"):
        assert time.monotonic() < deadline, "the catch-up at start did not finish"
        time.sleep(0.02)
    background.pause()


def fire_scheduled(scheduler: Scheduler, clock: Clock, until: datetime) -> list[str]:
    """Fire ``scheduler``'s APScheduler jobs as APScheduler would from ``clock.now`` to ``until`` — each at its
    trigger's fire times, in order of time, ``clock.now`` set to each — on this thread, and return the ids fired.

    The scheduler must be started and then paused (:func:`wait_for_start`), so that nothing fires on the real clock
    meanwhile. Only the jobs' own triggers are read, so a job ``start()`` did not schedule never fires.
    A retry (a ``date`` job, set on the real clock) is not fired."""
    background = scheduler._scheduler
    assert background is not None, "start the scheduler first"
    fired: list[str] = []
    step = timedelta(microseconds=1)
    while True:
        due: dict[datetime, list[Job]] = {}
        for job in background.get_jobs():
            if isinstance(job.trigger, DateTrigger):
                continue
            at = job.trigger.get_next_fire_time(None, clock.now + step)
            if at is not None and at <= until:
                due.setdefault(at, []).append(job)
        if not due:
            return fired
        at = min(due)
        clock.now = at
        for job in due[at]:
            job.func(*job.args, **job.kwargs)
            fired.append(str(job.id))
