"""The composition root: builds every part of the running bot from :class:`~bot.config.Settings`, wires them
explicitly, and owns their life cycle. Nothing else constructs stores, clients or apps; nothing happens at import.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from slack_bolt.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.types import ASGIApp

from bot.config import Settings, masked_url
from bot.delivery import DeliveryWorker, WorkerConfig, lease_for
from bot.http.asgi import build_asgi_app
from bot.http.policy_route import read_policy_file
from bot.ingest.poller import Poller
from bot.jobs.build import JobDeps, build_scheduler
from bot.jobs.runner import Scheduler
from bot.metrics import Metrics
from bot.retraining import ApprovalRunner
from bot.service import NpoService
from bot.slack.bolt_app import build_bolt_app, build_web_client
from bot.slack.deps import SlackDeps
from bot.slack.responders import ResponderDirectory
from bot.slack.web_log import web_api_logger
from npo.bandit import BanditConfig
from npo.feedback import FeedbackCodes
from npo.loop import LoopConfig
from npo.misalignment import EtaSchedule
from npo.policy import DEFAULT_POLICY, Policy
from storage import SQLiteStore
from storage.ratelimit import ClickLimit
from storage.store import CLOSE_WAIT_S

log = logging.getLogger(__name__)


def load_policy(settings: Settings) -> Policy:
    """The policy file named by ``NPO_POLICY_FILE``, else the built-in default (raises ``PolicyError``; time
    zones named in the file are resolved with ``zoneinfo``, as ``NPO_TIMEZONE`` is)."""
    if settings.policy_file is None:
        return DEFAULT_POLICY
    return read_policy_file(settings.policy_file)


def loop_config(settings: Settings) -> LoopConfig:
    """The loop's defaults, with the skip code, the step size of m(k), the default channel and the bandit's miss
    weight from the settings."""
    step = settings.step_size
    return LoopConfig(
        codes=FeedbackCodes(settings.skip_lambda),
        eta=EtaSchedule() if step == "decaying" else EtaSchedule(kind="constant", eta=step),
        bandit=BanditConfig(miss_weight=settings.miss_weight),
        default_channel=settings.incident_channel,
    )


def build_store(settings: Settings, policy: Policy) -> SQLiteStore:
    return SQLiteStore(
        settings.db_path,
        loop_config(settings),
        disruptive_actions=policy.blast_radius.disruptive_actions,
        stale_after_s=policy.blast_radius.stale_after_seconds,
        synchronous=settings.db_synchronous,
    )


@dataclass
class Bot:
    """Every long-lived part of the service. ``asgi`` starts and stops the worker, the scheduler (skip sweeper,
    meta-monitor, weekly summary) and the poller (when ``NPO_POLL_URL`` is set) in its lifespan."""

    settings: Settings
    store: SQLiteStore
    service: NpoService
    metrics: Metrics
    deps: SlackDeps
    bolt: AsyncApp
    async_client: AsyncWebClient
    worker: DeliveryWorker
    scheduler: Scheduler
    asgi: ASGIApp
    poller: Poller | None = None
    approvals: ApprovalRunner | None = None

    def close(self) -> None:
        """Stop the scheduler, the worker, the poller and the approval runner and close the database (idempotent)."""
        self.scheduler.shutdown()
        if self.approvals is not None:
            self.approvals.stop()
        self.worker.stop()
        if self.poller is not None:
            self.poller.stop()
        if not self.store.close():
            log.warning(
                "a database write was still running %g s after the stop; its connection is left for the process's exit"
                " to end (SQLite rolls an unfinished transaction back at the next start)",
                CLOSE_WAIT_S,
            )


def build_poller(settings: Settings, service: NpoService) -> Poller | None:
    """The predictions poller for ``NPO_POLL_URL`` (``None`` when it is not set)."""
    if settings.poll_url is None:
        return None
    headers = {"Authorization": f"Bearer {settings.poll_token}"} if settings.poll_token else None
    return Poller(
        settings.poll_url,
        service.decide,
        interval_s=settings.poll_interval_s,
        clock=service.clock,
        headers=headers,
        timeout_s=settings.slack_timeout_s,
        max_body_bytes=settings.poll_max_bytes,
    )


def build_bot(settings: Settings, *, seed: int | None = None, run_worker: bool = True) -> Bot:
    """Wire the whole service. ``run_worker=False`` leaves deliveries queued, the poller off and the responder
    look-up unchecked at start (benchmarks, some tests)."""
    policy = load_policy(settings)
    store = build_store(settings, policy)
    metrics = Metrics()
    service = NpoService(
        store,
        policy,
        rng=np.random.default_rng(seed),
        update_interval_s=settings.update_interval_s,
        click_limit=ClickLimit(settings.feedback_rate_per_min, settings.feedback_burst),
        alertmanager_resolved=settings.alertmanager_resolved,
    )
    sync_client = WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=settings.web_api_timeout,
        retry_handlers=[],
        logger=web_api_logger(),  # a request it could not send is the worker's to report (bot.slack.web_log)
    )
    worker = DeliveryWorker(
        service,
        sync_client,
        metrics,
        WorkerConfig(
            storm_threshold=settings.storm_threshold,
            digest_delay_s=settings.digest_delay_s,
            lease_s=lease_for(float(sync_client.timeout)),
        ),
    )
    service.on_enqueue = worker.wake
    scheduler = build_scheduler(JobDeps.from_settings(settings, store, sync_client, on_enqueue=worker.wake))
    async_client = build_web_client(settings)
    responders = ResponderDirectory(
        async_client,
        users=settings.user_responders,
        groups=settings.group_responders,
        channel=settings.incident_channel,
    )
    # Approvals of retraining proposals are carried out here, after their click was answered (bot.retraining).
    approvals = ApprovalRunner(store, on_enqueue=worker.wake, clock=service.clock)
    deps = SlackDeps(
        service,
        responders,
        settings.incident_channel,
        timezone=settings.timezone,
        ops_channel=settings.ops_channel,
        wake_approvals=approvals.wake,
    )
    bolt = build_bolt_app(settings, deps, async_client)
    poller = build_poller(settings, service)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if run_worker:
            await responders.check()  # at most 2 s; a setting Slack refuses is logged now, not at every click
            worker.start()
            approvals.start()
            scheduler.start()
            if poller is not None:
                poller.start()
                log.info("polling %s every %g s", masked_url(poller.url), settings.poll_interval_s)
        try:
            yield
        finally:
            scheduler.shutdown()
            if poller is not None:
                poller.stop()
            await asyncio.to_thread(approvals.stop)  # the retraining in progress finishes (seconds)
            worker.stop()
            await deps.drain()

    asgi = build_asgi_app(
        service=service,
        bolt=bolt,
        metrics=metrics,
        ingest_token=settings.ingest_token,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        lifespan=lifespan,
        policy_file=settings.policy_file,
    )
    return Bot(settings, store, service, metrics, deps, bolt, async_client, worker, scheduler, asgi, poller, approvals)
