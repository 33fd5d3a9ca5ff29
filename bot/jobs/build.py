"""``build_scheduler``: the bot's scheduled jobs (skip sweeper every minute, meta-monitor hourly by default,
weekly summary) on one :class:`~bot.jobs.runner.Scheduler`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from slack_sdk import WebClient

from bot.config import Settings
from bot.jobs.monitor import MONITOR_JOB, run_monitor
from bot.jobs.runner import INTERVAL_ORIGIN, Clock, JobSpec, Scheduler, slot_id, utc_now
from bot.jobs.skips import sweep_skips
from bot.jobs.weekly import WEEKLY_JOB, run_weekly_summary, weekly_trigger
from npo.monitor import MonitorConfig
from storage import SQLiteStore
from storage.jobs import prune_claims, prune_requests

SKIP_JOB = "skip_sweeper"
WEEKLY_RETRY_S = 300.0
SKIP_CLAIMS_KEPT = timedelta(days=1)
MONITOR_CLAIMS_KEPT = timedelta(days=30)
# How long a Slack request's id is remembered (``processed_requests``) before the skip sweeper prunes it. A request
# is only accepted again within minutes of its first delivery: Slack retries an event at most three times, the last
# about 5 minutes after the first (Socket Mode deliveries are retried on the same schedule, and come only from Slack
# over the app's own connection); an HTTP request replayed later carries its signed timestamp, and the signature
# check (the same wall clock as the row's ``at``) refuses one more than 5 minutes from now before the id is looked
# up. A row a day old therefore stands for a request nobody can get accepted again; the day leaves a wide margin
# over those minutes.
REQUESTS_KEPT = timedelta(days=1)


def _noop() -> None:
    return None


@dataclass(frozen=True, slots=True)
class JobDeps:
    """What the jobs need: the store, a synchronous Web API client, the ops channel and the settings they use."""

    store: SQLiteStore
    client: WebClient
    ops_channel: str
    timezone: str = "UTC"
    skip_timeout_min: float = 60.0
    on_enqueue: Callable[[], None] = _noop
    now: Clock = field(default=utc_now)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    monitor_interval_min: float = 60.0
    weekly_at: tuple[str, int, int] = ("mon", 9, 0)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: SQLiteStore, client: WebClient, on_enqueue: Callable[[], None] = _noop
    ) -> JobDeps:
        return cls(
            store,
            client,
            settings.ops_channel,
            settings.timezone,
            settings.skip_timeout_min,
            on_enqueue,
            monitor=monitor_config(settings),
            monitor_interval_min=settings.monitor_interval_min,
            weekly_at=settings.weekly_summary_at,
        )


def monitor_config(settings: Settings) -> MonitorConfig:
    return MonitorConfig(
        loss_threshold=settings.monitor_loss_threshold,
        window=settings.monitor_window,
        window_s=settings.monitor_window_days * 86_400.0,
        cooldown_s=settings.monitor_cooldown_h * 3600.0,
        min_samples=settings.monitor_min_samples,
        proposal_expiry_s=settings.monitor_proposal_expiry_h * 3600.0,
    )


def monitor_trigger(interval_min: float) -> IntervalTrigger:
    """Every ``interval_min`` minutes, on slots counted from a fixed origin (the same slots in every process)."""
    return IntervalTrigger(seconds=round(interval_min * 60), start_date=INTERVAL_ORIGIN, timezone=UTC)


def build_jobs(deps: JobDeps) -> list[JobSpec]:
    def sweep(slot: datetime) -> None:
        sweep_skips(
            deps.store,
            now=deps.now().timestamp(),
            timeout_s=deps.skip_timeout_min * 60,
            on_enqueue=deps.on_enqueue,
            clock=lambda: deps.now().timestamp(),
        )
        with deps.store.transaction() as tx:  # one claim row a minute: keep a day of them
            prune_claims(tx.connection, SKIP_JOB, slot_id(slot - SKIP_CLAIMS_KEPT))
            prune_requests(tx.connection, (slot - REQUESTS_KEPT).timestamp())

    def weekly(slot: datetime) -> None:
        run_weekly_summary(deps.store, deps.client, deps.ops_channel, deps.timezone, slot, clock=deps.now)

    def monitor(slot: datetime) -> None:
        run_monitor(
            deps.store,
            deps.monitor,
            now=deps.now().timestamp(),
            channel=deps.ops_channel,
            on_enqueue=deps.on_enqueue,
            slot=slot.timestamp(),  # the cooldown counts scheduled runs, not how late each one started
            clock=lambda: deps.now().timestamp(),
        )
        with deps.store.transaction() as tx:
            prune_claims(tx.connection, MONITOR_JOB, slot_id(slot - MONITOR_CLAIMS_KEPT))

    interval = timedelta(minutes=deps.monitor_interval_min)
    return [
        JobSpec(SKIP_JOB, CronTrigger(second=0, timezone="UTC"), sweep, lookback=timedelta(minutes=2)),
        JobSpec(MONITOR_JOB, monitor_trigger(deps.monitor_interval_min), monitor, lookback=2 * interval),
        JobSpec(
            WEEKLY_JOB,
            weekly_trigger(deps.timezone, *deps.weekly_at),
            weekly,
            lookback=timedelta(days=8),
            catch_up=True,
            retry_after_s=WEEKLY_RETRY_S,
        ),
    ]


def build_scheduler(deps: JobDeps) -> Scheduler:
    """The bot's scheduler (not started): call ``start()`` with the service and ``shutdown()`` when it stops."""
    return Scheduler(deps.store, build_jobs(deps), now=deps.now)
