"""Load test: the running service under a realistic on-call storm, for a fixed time, on loopback only.

``python -m bench --only load`` (or ``python -m bench.load_bench``, which also prints PASS/FAIL per check) starts
the Slack stand-in and the bot (``build_bot`` under uvicorn, delivery worker on) in processes of their own, seeds
400 surfaced recommendations, and then drives it for ``--seconds`` (default 60) from two client processes at fixed
arrival rates (open loop: a slow answer does not slow the senders down):

==================================  ===========================================================================
route                                 rate
==================================  ===========================================================================
signed Like/Neutral clicks            300 /s, each a new (responder, recommendation) pair
override modal submissions            10 /s (``view_submission`` with a reason)
prediction batches                    20 /s × 100 predictions = 2,000 predictions/s (10 % confident enough to
                                      surface, so the channel is in a permanent alert storm)
Alertmanager storms                   one webhook of 50 firing alerts every 2 s; the next one resolves them
``/npo status``                       2 /s
App Home opens                        2 /s (Events API ``app_home_opened``)
==================================  ===========================================================================

It reports per route the requests/s, p50/p99/max latency (from the moment the request was sent), the 5xx count,
the server's peak RSS, and whether every accepted item — each prediction, alert, click and override answered 200
— is in the database afterwards. Baselines in the same run: the no-op ``GET /livez`` on the same server stack
(closed loop, 10 connections), and raw SQLite (``bench.storage_bench``): a read-modify-write per event and
``SQLiteStore.decide_many`` in batches, without HTTP.

Bounded: at most ``seconds`` of load (plus ≈ 20 s of set-up and baselines); every request has a 10 s timeout, and
what is unanswered 15 s after the last request was sent is cut off. The short CI run (``smoke``) checks what must
hold at any speed, so it waits longer (:data:`CHECK_PATIENCE`): a slow machine is not a failure there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import uvicorn

from bench import (
    Row,
    client_pool,
    interrupted,
    row_name,
    start_server,
    stop_on_sigterm,
    stop_process,
    unwritable_output,
)
from bench.http_bench import CHANNEL, TOKEN, _measure, _noop
from bench.storage_bench import raw_read_modify_write, store_decide_batched
from bot.app import build_bot
from bot.config import Settings
from bot.serve import uvicorn_config
from bot.slack.payloads import parse_override, request_id
from bot.standin import StandIn
from bot.standin.signing import signed_headers
from npo.policy import DEFAULT_POLICY_TEXT

SECRET = "load-signing-secret-0123456789"
INGEST = "load-ingest-token-0123456789"
FORM = "application/x-www-form-urlencoded"
# Enough people that nobody reaches the per-person click limit (30 at once, then one every 2 s): 300 clicks/s for
# a minute from 2,000 responders is 9 answers each.
CLICKERS = [f"U0LOAD{i:04d}" for i in range(2000)]
OVERRIDERS = [f"U0OVER{i:03d}" for i in range(200)]
SEEDS = 400
RATES = {"click": 300.0, "override": 10.0, "predictions": 20.0, "alertmanager": 0.5, "command": 2.0, "home": 2.0}
BATCH = 100
CONNECTIONS = 48  # per client process


@dataclass(frozen=True)
class Patience:
    """How long a client waits: ``request_s`` for each step of one request once it has a connection (connect, send,
    first answer byte), ``grace_s`` for every answer after the last request was sent; what is unanswered then is cut
    off and counted as an error. A request waiting for one of the client's own connections is not yet sent."""

    request_s: float
    grace_s: float


BENCH_PATIENCE = Patience(10.0, 15.0)  # the benchmark's bounds, on a quiet machine
# The checks that hold at any speed (the CI run, the kill cycles): a slow machine is waited for, a stuck server is not.
CHECK_PATIENCE = Patience(120.0, 300.0)
CONFIDENT_SHARE = float(os.environ.get("NPO_LOAD_CONFIDENT", "0.1"))  # share of predictions that surface
ALERTS_PER_STORM = 50
FIG_CLICKS = "signed clicks/s, mixed load"
FIG_PREDICTIONS = "predictions/s (batched ingest), mixed load"
CHECKS = "load test: checks passed"
N_CHECKS = 6
FULL = "full service"
TARGETS = {
    row_name(FIG_CLICKS, FULL): 300.0,
    row_name(FIG_PREDICTIONS, FULL): 2000.0,
    CHECKS: float(N_CHECKS),
}
LIMITS = {"click_p99_ms": 50.0, "rss_mb": 250.0}
ITEM_ROUTES = {"click", "override", "predictions", "alertmanager"}  # the routes whose answers store items


# -- the service under test -----------------------------------------------------------------------------------------
def _settings(db: Path, port: int, api_url: str, policy: Path) -> Settings:
    return Settings(
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        ingest_token=INGEST,
        incident_channel=CHANNEL,
        ops_channel="C0LOADOPS",
        slack_api_url=api_url,
        db_path=db,
        port=port,
        responders=(*CLICKERS, *OVERRIDERS),
        policy_file=policy,
    )


def _serve(db: str, port: str, api_url: str, policy: str) -> None:
    variant = os.environ.get("NPO_LOAD_VARIANT", "")  # diagnosis: "no-worker", "writer"
    bot = build_bot(_settings(Path(db), int(port), api_url, Path(policy)), run_worker=variant != "no-worker")
    if variant == "writer":
        bot.deps.storage_mode = "writer"
    try:
        uvicorn.Server(uvicorn_config(bot.asgi, "127.0.0.1", int(port), log_level="warning")).run()
    finally:
        bot.close()


def write_policy(directory: Path) -> Path:
    """The default policy with the channel's hourly cap lifted: a storm goes to digests, not to a 300 s wait."""
    path = directory / "load-policy.toml"
    path.write_text(DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000"), encoding="utf-8")
    return path


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def service_process(db: Path, port: int, api_url: str, policy: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The bot in its own process on ``127.0.0.1:port`` (stopped on exit, killed if it does not stop in 15 s)."""
    child = start_server(
        [sys.executable, "-m", "bench.load_bench", "--serve", str(db), str(port), api_url, str(policy)],
        cwd=Path(__file__).resolve().parent.parent,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    try:
        wait_up(f"http://127.0.0.1:{port}", child)
        yield child
    finally:
        stop_process(child, 15)


def wait_up(url: str, child: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or child.poll() is not None:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (Linux ``/proc``; 0 when unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Samples a process's RSS every 0.25 s in a thread; ``peak`` in MB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


# -- requests -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Req:
    route: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    items: tuple[tuple[str, str], ...] = ()  # (kind, id) this request makes durable when answered 200
    signed: bool = False  # a request from Slack: timestamped and signed when it is sent (:meth:`send_headers`)

    def send_headers(self, now: float | None = None) -> dict[str, str]:
        """The headers to send at ``now`` (default: the current time). A request from Slack gets its timestamp and
        signature at that moment, as Slack signs each request when it sends it: one signed when the plan was built
        would be refused for its age (Slack's 300 s replay window) once a run lasts longer than that."""
        if not self.signed:
            return self.headers
        stamp = int(time.time() if now is None else now)
        return signed_headers(SECRET, self.body, self.headers["Content-Type"], stamp)


def _ingest_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"}


def prediction_json(pid: str, i: int, rng: np.random.Generator, tag: str = "") -> dict[str, Any]:
    """A prediction; ``i`` and ``tag`` make its target unique (a repeated fault type + target + action within the
    dedupe window would be answered ``duplicate`` and not stored under its own id)."""
    confident = rng.random() < CONFIDENT_SHARE
    return {
        "id": pid,
        "fault_type": ("disk_failure", "memory_ecc", "psu", "nic_flap")[i % 4],
        "target": f"r{i % 40}-n{i}{tag}",
        "action": "drain" if i % 20 == 0 else ("investigate", "replace_disk", "migrate_vms")[i % 3],
        "confidence": 0.97 if confident else float(rng.uniform(0.05, 0.45)),
        "severity": "critical" if confident else "warning",
        "time_to_fault_s": float(rng.integers(600, 86_400)),
        "labels": {"cluster": f"r{i % 40}"},
    }


def prediction_batches(prefix: str, n_batches: int, seed: int = 0) -> list[Req]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        batch = [prediction_json(f"{prefix}{b}-{j}", b * BATCH + j, rng, f".{prefix}") for j in range(BATCH)]
        items = tuple(("prediction", p["id"]) for p in batch)
        out.append(
            Req("predictions", "POST", "/api/v1/predictions", json.dumps(batch).encode(), _ingest_headers(), items)
        )
    return out


def alert_storms(n: int) -> list[Req]:
    out = []
    for s in range(n):
        alerts = [
            {
                "status": "firing",
                "labels": {"alertname": "DiskWillFail", "instance": f"am{s}-n{a}:9100", "severity": "critical"},
                "annotations": {"confidence": "0.9", "action": "investigate"},
                "fingerprint": f"load{s:04d}{a:03d}",
            }
            for a in range(ALERTS_PER_STORM)
        ]
        if s > 0:  # the previous storm resolves
            alerts += [
                {
                    "status": "resolved",
                    "labels": {"alertname": "DiskWillFail"},
                    "fingerprint": f"load{s - 1:04d}{a:03d}",
                }
                for a in range(ALERTS_PER_STORM)
            ]
        body = {"version": "4", "status": "firing", "alerts": alerts}
        items = tuple(("prediction", f"am:load{s:04d}{a:03d}") for a in range(ALERTS_PER_STORM))
        out.append(
            Req("alertmanager", "POST", "/api/v1/alertmanager", json.dumps(body).encode(), _ingest_headers(), items)
        )
    return out


def _signed(route: str, body: str, content_type: str, items: tuple[tuple[str, str], ...] = ()) -> Req:
    """A request from Slack to ``/slack/events``, signed when it is sent."""
    return Req(route, "POST", "/slack/events", body.encode(), {"Content-Type": content_type}, items, signed=True)


def clicks(recs: list[tuple[str, str, str]], n: int, seed: int = 1) -> list[Req]:
    """``n`` signed clicks (Like, a few Neutral), each a new (user, recommendation) pair, on the seeded messages."""
    rng = np.random.default_rng(seed)
    n_pairs = len(recs) * len(CLICKERS)
    order = rng.permutation(n_pairs)[:n]
    out = []
    for k, idx in enumerate(order):
        user, (pid, channel, ts) = CLICKERS[int(idx) % len(CLICKERS)], recs[int(idx) // len(CLICKERS)]
        action = "npo_neutral" if k % 10 == 0 else "npo_like"
        action_ts = f"1800000000.{k:06d}"
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": "T0LOAD"},
            "team": {"id": "T0LOAD"},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel},
            "channel": {"id": channel},
            "trigger_id": f"trigger-{k}",
            "actions": [
                {
                    "action_id": action,
                    "block_id": "npo_feedback",
                    "type": "button",
                    "value": pid,
                    "action_ts": action_ts,
                }
            ],
        }
        rid = request_id(user, action, pid, action_ts)
        out.append(_signed("click", urlencode({"payload": json.dumps(payload)}), FORM, (("feedback", rid),)))
    return out


def overrides(recs: list[tuple[str, str, str]], n: int) -> list[Req]:
    """``n`` override modal submissions with a reason, each a new (user, recommendation) pair."""
    out = []
    for k in range(n):
        user = OVERRIDERS[k % len(OVERRIDERS)]
        pid, channel, ts = recs[(k // len(OVERRIDERS)) % len(recs)]
        view_id = f"V0LOAD{k:06d}"
        payload = {
            "type": "view_submission",
            "team": {"id": "T0LOAD"},
            "user": {"id": user, "team_id": "T0LOAD"},
            "view": {
                "id": view_id,
                "type": "modal",
                "callback_id": "npo_override_modal",
                "private_metadata": json.dumps({"prediction_id": pid, "channel": channel, "ts": ts}),
                "state": {
                    "values": {
                        "reason": {"reason": {"type": "static_select", "selected_option": {"value": "false_positive"}}},
                        "details": {"details": {"type": "plain_text_input", "value": "load test"}},
                    }
                },
            },
        }
        rid = parse_override(payload).request_id()  # the key the bot stores the answer under
        out.append(_signed("override", urlencode({"payload": json.dumps(payload)}), FORM, (("feedback", rid),)))
    return out


def commands(n: int) -> list[Req]:
    out = []
    for k in range(n):
        fields = {
            "command": "/npo",
            "text": "status",
            "user_id": CLICKERS[k % len(CLICKERS)],
            "channel_id": CHANNEL,
            "team_id": "T0LOAD",
            "trigger_id": f"cmd-{k}",
            "response_url": "http://127.0.0.1:9/unused",
        }
        out.append(_signed("command", urlencode(fields), FORM))
    return out


def home_opens(n: int) -> list[Req]:
    out = []
    for k in range(n):
        event = {
            "type": "event_callback",
            "team_id": "T0LOAD",
            "event_id": f"EvLOAD{k:06d}",
            "event_time": int(time.time()),
            "event": {"type": "app_home_opened", "user": CLICKERS[k % len(CLICKERS)], "tab": "home"},
        }
        out.append(_signed("home", json.dumps(event), "application/json"))
    return out


# -- the client processes ---------------------------------------------------------------------------------------------
@dataclass
class RouteResult:
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: list[tuple[str, str]] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)  # e.g. ConnectError, ReadTimeout, "unanswered"

    def error(self, kind: str, n: int = 1) -> None:
        self.errors += n
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + n


async def _drive(
    base: str,
    schedule: dict[str, tuple[float, list[Req]]],
    start_at: float,
    patience: Patience = CHECK_PATIENCE,
) -> dict[str, RouteResult]:
    results = {route: RouteResult() for route in schedule}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    # A request due while every connection is busy waits here, not in httpx's pool: the pool times such a request
    # out (its pool timeout) and re-examines every waiting request against every connection whenever one is added or
    # answered, so a few hundred waiting took the client's own process seconds of CPU, starving the server it shares
    # the cores with. It is signed when it goes out, as Slack signs a request when it sends it.
    slots = asyncio.Semaphore(CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=patience.request_s) as client:

        async def one(req: Req, due: float) -> None:
            r = results[req.route]
            sent = time.perf_counter()
            r.lags.append(sent - due)
            try:
                async with slots:
                    response = await client.request(req.method, req.path, content=req.body, headers=req.send_headers())
            except httpx.HTTPError as exc:
                r.error(type(exc).__name__)
                return
            r.latencies.append(time.perf_counter() - sent)
            r.statuses[response.status_code] = r.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                r.accepted.extend(req.items)

        async def pace(rate: float, reqs: list[Req], t0: float) -> None:
            tasks = []
            for i, req in enumerate(reqs):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(req, due)))
            # Bounded: whatever is unanswered ``grace_s`` after the last send is cut off and counted as an error.
            _, late = await asyncio.wait(tasks, timeout=patience.grace_s) if tasks else (set(), set())
            for task in late:
                task.cancel()
            if late:
                results[reqs[0].route].error("unanswered", len(late))

        t0 = time.perf_counter() + max(0.0, start_at - time.time())
        await asyncio.gather(*(pace(rate, reqs, t0) for rate, reqs in schedule.values()))
    return results


def _client(
    base: str, schedule: dict[str, tuple[float, list[Req]]], start_at: float, patience: Patience
) -> dict[str, RouteResult]:
    return asyncio.run(_drive(base, schedule, start_at, patience))


# -- the run ----------------------------------------------------------------------------------------------------------
def _seed(base: str, db: Path) -> list[tuple[str, str, str]]:
    """Ingest SEEDS confident predictions and wait until their messages (digests: a storm) are posted; their
    (prediction id, channel, ts)."""
    seeds = [
        {"id": f"seed-{i}", "fault_type": "disk_failure", "target": f"s{i}-n{i}", "action": "investigate",
         "confidence": 0.99, "severity": "critical"}
        for i in range(SEEDS)
    ]  # fmt: skip
    response = httpx.post(f"{base}/api/v1/predictions", json=seeds, headers=_ingest_headers(), timeout=30)
    response.raise_for_status()
    deadline = time.monotonic() + 30
    while True:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT prediction_id, channel, message_ts FROM recommendations "
                "WHERE prediction_id LIKE 'seed-%' AND message_ts IS NOT NULL AND message_ts != ''"
            ).fetchall()
        if len(rows) >= SEEDS or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(rows) < SEEDS // 2:
        raise RuntimeError(f"only {len(rows)} of {SEEDS} seeded recommendations were posted")
    return [(str(p), str(c), str(t)) for p, c, t in rows]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _present(db: Path, accepted: list[tuple[str, str]]) -> tuple[int, int]:
    """(accepted, missing): every accepted prediction id / feedback request id looked up in the database."""
    want: dict[str, set[str]] = {"prediction": set(), "feedback": set()}
    for kind, ident in accepted:
        want[kind].add(ident)
    conn = sqlite3.connect(db)
    try:
        have_p = {r[0] for r in conn.execute("SELECT id FROM predictions")}
        have_f = {r[0] for r in conn.execute("SELECT request_id FROM feedback")}
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    missing = len(want["prediction"] - have_p) + len(want["feedback"] - have_f) + (0 if ok else 1)
    if missing and os.environ.get("NPO_LOAD_DEBUG"):
        print("missing:", sorted(want["prediction"] - have_p)[:5], sorted(want["feedback"] - have_f)[:5])
    return len(want["prediction"]) + len(want["feedback"]), missing


@dataclass
class LoadReport:
    seconds: float
    per_route: dict[str, dict[str, float]]
    server_5xx: int
    transport_errors: int
    rss_peak_mb: float
    accepted: int
    missing: int
    predictions_per_s: float
    clicks_per_s: float
    noop: tuple[float, float, float]
    raw_rmw_per_s: float
    decide_batched_per_s: float
    lag_p99_ms: float
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # per route: transport errors by kind

    def checks(self) -> dict[str, bool]:
        """The load test's checks, against the same targets as :data:`TARGETS` (what ``python -m bench`` reports).
        A run of some routes only (``--routes``) is checked on those: the rate and latency of a route it did not
        drive, or the presence of items when none of its routes sends any, are not checked (they failed it)."""
        ran = set(self.per_route)
        click = self.per_route.get("click", {})
        min_clicks, min_predictions = TARGETS[row_name(FIG_CLICKS, FULL)], TARGETS[row_name(FIG_PREDICTIONS, FULL)]
        refused = int(sum(p["non_200"] for p in self.per_route.values())) - self.server_5xx
        out: dict[str, bool] = {}
        if "click" in ran:
            out[f"≥ {min_clicks:,.0f} signed clicks/s (got {self.clicks_per_s:,.1f})"] = self.clicks_per_s >= min_clicks
        if "predictions" in ran:
            out[f"≥ {min_predictions:,.0f} predictions/s (got {self.predictions_per_s:,.1f})"] = (
                self.predictions_per_s >= min_predictions
            )
        if "click" in ran:
            out[f"click p99 < 50 ms (got {click.get('p99_ms', float('nan')):.1f} ms)"] = (
                click.get("p99_ms", 1e9) < LIMITS["click_p99_ms"]
            )
        out[
            f"every request answered 200 (got {self.server_5xx} 5xx, {refused} other, {self.transport_errors} cut off)"
        ] = self.server_5xx == 0 and refused == 0 and self.transport_errors == 0
        out[f"server RSS < 250 MB (peak {self.rss_peak_mb:.0f} MB)"] = 0 < self.rss_peak_mb < LIMITS["rss_mb"]
        if ran & ITEM_ROUTES:
            out[f"every accepted item present ({self.accepted - self.missing:,} of {self.accepted:,})"] = (
                self.missing == 0 and self.accepted > 0
            )
        return out


def run_load(
    seconds: float = 60.0, *, quick: bool = False, routes: set[str] | None = None, smoke: bool = False
) -> LoadReport:
    """The mixed load for ``seconds`` (5 with ``quick``). ``smoke``: the CI check — small baselines, few seeds."""
    seconds = 5.0 if quick else seconds
    small = quick or smoke
    with tempfile.TemporaryDirectory() as tmp, client_pool(2) as pool:
        tmpdir = Path(tmp)
        db, port, policy = tmpdir / "load.db", free_port(), write_policy(tmpdir)
        base = f"http://127.0.0.1:{port}"
        with (
            StandIn(token=TOKEN, channels={CHANNEL: "incident"}) as standin,
            service_process(db, port, standin.api_url, policy) as server,
        ):
            recs = _seed(base, db)
            noop = _measure(pool, base, _noop, 200 if smoke else 600 if quick else 3000, 10, 2)
            n = {route: int(rate * seconds) for route, rate in RATES.items()}
            plan_a = {"click": (RATES["click"], clicks(recs, n["click"])),
                      "override": (RATES["override"], overrides(recs, n["override"]))}  # fmt: skip
            plan_b = {
                "predictions": (RATES["predictions"], prediction_batches("lp-", n["predictions"])),
                "alertmanager": (RATES["alertmanager"], alert_storms(max(1, n["alertmanager"]))),
                "command": (RATES["command"], commands(n["command"])),
                "home": (RATES["home"], home_opens(n["home"])),
            }
            if routes is not None:  # a subset, to find which route costs what
                plan_a = {k: v for k, v in plan_a.items() if k in routes}
                plan_b = {k: v for k, v in plan_b.items() if k in routes}
            start_at = time.time() + 1.0
            with RssSampler(server.pid) as rss:
                patience = CHECK_PATIENCE if smoke else BENCH_PATIENCE
                parts = pool.starmap(_client, [(base, plan, start_at, patience) for plan in (plan_a, plan_b)])
            results = {route: r for part in parts for route, r in part.items()}
        accepted = [item for r in results.values() for item in r.accepted]
        total, missing = _present(db, accepted)
        raw_rmw = raw_read_modify_write(tmpdir / "raw.db", "NORMAL", 600 if small else 3000)
        decided = store_decide_batched(tmpdir / "batched.db", "NORMAL", 2000 if smoke else 4000 if quick else 20000)
    per_route: dict[str, dict[str, float]] = {}
    for route, r in results.items():
        per_route[route] = {
            "requests": float(len(r.latencies)),
            "per_s": len(r.latencies) / seconds,
            "p50_ms": _percentile(r.latencies, 50) * 1000,
            "p99_ms": _percentile(r.latencies, 99) * 1000,
            "max_ms": max(r.latencies, default=float("nan")) * 1000,
            "5xx": float(sum(c for s, c in r.statuses.items() if s >= 500)),
            "non_200": float(sum(c for s, c in r.statuses.items() if s != 200)),
        }
    ok_predictions = len(results["predictions"].accepted) if "predictions" in results else 0
    ok_clicks = len(results["click"].accepted) if "click" in results else 0
    # Over the schedule's own span (n requests at ``rate`` last n / rate s, which ``seconds`` may not be exactly):
    # the offered rate when every request is accepted, less in proportion to those that are not.
    span = {route: len(reqs) / rate for plan in (plan_a, plan_b) for route, (rate, reqs) in plan.items() if reqs}
    lags = [lag for r in results.values() for lag in r.lags]
    return LoadReport(
        seconds=seconds,
        per_route=per_route,
        server_5xx=int(sum(p["5xx"] for p in per_route.values())),
        transport_errors=sum(r.errors for r in results.values()),
        rss_peak_mb=rss.peak,
        accepted=total,
        missing=missing,
        predictions_per_s=ok_predictions / span["predictions"] if "predictions" in span else 0.0,
        clicks_per_s=ok_clicks / span["click"] if "click" in span else 0.0,
        noop=noop,
        raw_rmw_per_s=raw_rmw,
        decide_batched_per_s=decided,
        lag_p99_ms=_percentile(lags, 99) * 1000,
        statuses={route: dict(sorted(r.statuses.items())) for route, r in results.items()},
        errors={route: dict(sorted(r.error_kinds.items())) for route, r in results.items() if r.error_kinds},
    )


def rows(report: LoadReport) -> list[Row]:
    out: list[Row] = [
        (row_name(FIG_CLICKS, "baseline: raw sqlite3 read-modify-write per event"), report.raw_rmw_per_s, "/s"),
        (row_name(FIG_CLICKS, FULL), report.clicks_per_s, "/s"),
        (row_name(FIG_PREDICTIONS, "baseline: SQLiteStore.decide_many, batches of 1,000, no HTTP"),
         report.decide_batched_per_s, "/s"),
        (row_name(FIG_PREDICTIONS, FULL), report.predictions_per_s, "/s"),
        (row_name("no-op GET /livez, same server, 10 connections", "baseline: requests/s"), report.noop[2], "req/s"),
        (row_name("no-op GET /livez, same server, 10 connections", "p99"), report.noop[1], "ms"),
    ]  # fmt: skip
    for route, p in report.per_route.items():
        out += [
            (f"{route}: requests/s", p["per_s"], "req/s"),
            (f"{route}: p50 latency", p["p50_ms"], "ms"),
            (f"{route}: p99 latency", p["p99_ms"], "ms"),
            (f"{route}: max latency", p["max_ms"], "ms"),
        ]
    checks = report.checks()
    out += [
        ("server peak RSS", report.rss_peak_mb, "MB"),
        ("5xx answers", float(report.server_5xx), "answers"),
        ("accepted items missing from the database", float(report.missing), "items"),
        (CHECKS, float(sum(checks.values())), "checks"),
    ]
    return out


def run(quick: bool = False) -> list[Row]:
    return rows(run_load(quick=quick))


def print_report(report: LoadReport) -> None:
    print(f"mixed load for {report.seconds:.0f} s (client schedule lag p99 {report.lag_p99_ms:.1f} ms)")
    print(f"{'route':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'5xx':>5} {'non-200':>8}")
    for route, p in report.per_route.items():
        print(
            f"{route:<14} {p['per_s']:>8.1f} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} {p['max_ms']:>8.1f} "
            f"{p['5xx']:>5.0f} {p['non_200']:>8.0f}"
        )
    p50, p99, rate = report.noop
    print(
        f"baseline no-op GET /livez (same server, 10 connections): {rate:,.0f} req/s, p50 {p50:.2f}, p99 {p99:.2f} ms"
    )
    print(f"baseline raw sqlite3 read-modify-write per event: {report.raw_rmw_per_s:,.0f} /s")
    print(f"baseline SQLiteStore.decide_many (batches of 1,000, no HTTP): {report.decide_batched_per_s:,.0f} /s")
    odd = {route: {s: n for s, n in st.items() if s != 200} for route, st in report.statuses.items()}
    if any(odd.values()):
        print("answers other than 200:", {route: st for route, st in odd.items() if st})
    if report.errors:
        print("requests cut off:", report.errors)
    print(f"server peak RSS {report.rss_peak_mb:.0f} MB; accepted items {report.accepted:,}, missing {report.missing}")
    for name, passed in report.checks().items():
        print(f"{'PASS' if passed else 'FAIL'} {name}")


# -- SIGKILL under load -----------------------------------------------------------------------------------------------
@dataclass
class KillReport:
    cycles: int
    accepted: int
    missing: int
    integrity_ok: bool
    surfaced_without_outbox: int
    posts: int
    distinct_messages: int
    unposted: int
    drained: bool
    transport_errors: int

    @property
    def duplicate_posts(self) -> int:
        """Posts Slack accepted twice: the answer was lost when the process died mid-call (no idempotency key)."""
        return max(0, self.posts - self.distinct_messages)

    def checks(self) -> dict[str, bool]:
        out = {
            f"every accepted prediction, click and override present after {self.cycles} kill(s) "
            f"({self.accepted - self.missing:,} of {self.accepted:,})": self.missing == 0 and self.accepted > 0,
            "database intact (integrity_check, foreign keys)": self.integrity_ok,
            f"every surfaced recommendation has its outbox message ({self.surfaced_without_outbox} without)": (
                self.surfaced_without_outbox == 0
            ),
        }
        if self.drained:
            out[f"every recommendation posted after the restarts ({self.unposted} not)"] = self.unposted == 0
            out[f"duplicate Slack posts ≤ kills ({self.duplicate_posts} duplicate(s), {self.cycles} kill(s))"] = (
                self.duplicate_posts <= self.cycles
            )
        return out


def _kill_plan(recs: list[tuple[str, str, str]], cycle: int, seconds: float, clicks_done: int) -> dict[str, Any]:
    n_batches = int(10 * seconds)
    batches = prediction_batches(f"k{cycle}-", n_batches, seed=cycle)
    for req in batches:  # 20 per batch: 200 predictions/s, 20 of them surfaced (the channel is in a storm)
        body = json.loads(req.body)[:20]
        object.__setattr__(req, "body", json.dumps(body).encode())
        object.__setattr__(req, "items", tuple(("prediction", p["id"]) for p in body))
    all_clicks = clicks(recs, clicks_done + int(100 * seconds), seed=0)[clicks_done:]
    return {
        "predictions": (10.0, batches),
        "click": (100.0, all_clicks),
        "override": (2.0, overrides(recs[cycle % len(recs) :] + recs[: cycle % len(recs)], int(2 * seconds))),
    }


def _killed_run(base: str, plan: dict[str, Any], kill_after: float, child: subprocess.Popen[bytes]) -> RouteResult:
    timer = threading.Timer(kill_after, child.kill)  # SIGKILL: no shutdown, no flush, leases left behind
    timer.start()
    try:
        results = asyncio.run(_drive(base, plan, time.time()))
    finally:
        timer.cancel()  # the kill has come (it is due before the load ends), or the run stopped: no wait for it
    child.wait()
    merged = RouteResult()
    for r in results.values():
        merged.accepted += r.accepted
        merged.errors += r.errors
    return merged


def run_kill_cycles(cycles: int = 20, seconds: float = 3.0, *, drain: bool = True, seed_n: int = 60) -> KillReport:
    """``cycles`` times: drive the service, SIGKILL it at a random moment under load, restart it on the same
    database. Then check that nothing accepted was lost and (``drain``) that every recommendation was posted, with
    duplicate posts counted (at most one per kill: the worker posts one message at a time)."""
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory() as tmp, StandIn(token=TOKEN, channels={CHANNEL: "incident"}) as standin:
        tmpdir = Path(tmp)
        db, port, policy = tmpdir / "kill.db", free_port(), write_policy(tmpdir)
        base = f"http://127.0.0.1:{port}"
        accepted: list[tuple[str, str]] = []
        errors = 0
        with service_process(db, port, standin.api_url, policy):
            global SEEDS  # noqa: PLW0603 - fewer seeded recommendations here
            saved, SEEDS = SEEDS, seed_n
            try:
                recs = _seed(base, db)
            finally:
                SEEDS = saved
        clicks_done = 0
        for cycle in range(cycles):
            plan = _kill_plan(recs, cycle, seconds, clicks_done)
            clicks_done += len(plan["click"][1])
            with service_process(db, port, standin.api_url, policy) as child:
                result = _killed_run(base, plan, float(rng.uniform(0.3, seconds)), child)
            accepted += result.accepted
            errors += result.errors
        drained = False
        with service_process(db, port, standin.api_url, policy):
            if drain:  # a message leased by a killed process is sent once its lease (60 s) expires
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    with sqlite3.connect(db) as conn:
                        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
                    if not pending:
                        drained = True
                        break
                    time.sleep(0.5)
        total, missing = _present(db, accepted)
        conn = sqlite3.connect(db)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            integrity = integrity and not conn.execute("PRAGMA foreign_key_check").fetchall()
            orphans = conn.execute(
                "SELECT COUNT(*) FROM recommendations r WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE "
                "o.prediction_id = r.prediction_id AND o.kind IN ('recommendation', 'digest_item'))"
            ).fetchone()[0]
            distinct = conn.execute(
                "SELECT COUNT(DISTINCT message_ts) FROM recommendations WHERE channel = ? AND message_ts != ''",
                (CHANNEL,),
            ).fetchone()[0]
            unposted = conn.execute(
                "SELECT COUNT(*) FROM recommendations WHERE message_ts IS NULL OR message_ts = ''"
            ).fetchone()[0]
        finally:
            conn.close()
        posts = sum(1 for c in standin.calls("chat.postMessage") if _accepted_post(c, CHANNEL))
    return KillReport(
        cycles, total, missing, integrity, int(orphans), posts, int(distinct), int(unposted), drained, errors
    )


def _accepted_post(call: Any, channel: str) -> bool:
    """A ``chat.postMessage`` call the stand-in answered ``ok`` (a message now in ``channel``)."""
    return bool(
        call.status == 200
        and isinstance(call.response, dict)
        and call.response.get("ok")
        and call.body.get("channel") == channel
    )


def print_kill_report(report: KillReport) -> None:
    print(
        f"{report.cycles} SIGKILL/restart cycle(s) under load: {report.accepted:,} items accepted, "
        f"{report.transport_errors:,} requests cut off by the kills (not accepted, the sender would retry); "
        f"{report.posts} posts, {report.duplicate_posts} duplicate(s)"
    )
    for name, passed in report.checks().items():
        print(f"{'PASS' if passed else 'FAIL'} {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the mixed load (default 60, max 600)")
    parser.add_argument("--quick", action="store_true", help="5 s of load (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--routes", help=f"comma-separated subset of {','.join(RATES)} (default: all)")
    parser.add_argument(
        "--kill-cycles", type=int, metavar="N", help="instead: N SIGKILL/restart cycles under load (1-100)"
    )
    parser.add_argument("--no-drain", action="store_true", help="with --kill-cycles: skip waiting for the posts")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be between 1 and 600")
    if args.json is not None and (problem := unwritable_output(args.json)):
        parser.error(f"--json: {problem}")
    if args.kill_cycles is not None and not 1 <= args.kill_cycles <= 100:
        parser.error("--kill-cycles must be between 1 and 100")
    routes = set(args.routes.split(",")) if args.routes else None
    if routes is not None and not routes <= set(RATES):
        parser.error(f"--routes: unknown route(s) {', '.join(sorted(routes - set(RATES)))}")
    stop_on_sigterm()
    try:
        return _main(args, routes)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: servers stopped, temporary folders removed by now
        return interrupted("python -m bench.load_bench", exc)


def _main(args: argparse.Namespace, routes: set[str] | None) -> int:
    if args.kill_cycles is not None:
        kill = run_kill_cycles(args.kill_cycles, drain=not args.no_drain)
        print_kill_report(kill)
        return 0 if all(kill.checks().values()) else 1
    report = run_load(args.seconds, quick=args.quick, routes=routes)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=2, default=list) + "\n", encoding="utf-8")
    return 0 if all(report.checks().values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        _serve(*sys.argv[2:])
    else:
        sys.exit(main())
