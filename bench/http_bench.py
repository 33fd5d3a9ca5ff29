"""Signed Slack clicks through the real HTTP server: verify, record (m(k), bandit arm, feedback row), queue the
message update — at 1 and 10 concurrent keep-alive clients, next to the same server answering a no-op route
(``GET /livez``) in the same run. The server runs in its own process; the database is a real SQLite file (WAL,
synchronous=NORMAL). Every click is a new (person, recommendation) pair, so each one does the full
read-modify-write.

The load comes from httpx clients in their own processes: one process per 5 connections. A single httpx process
driving 10 connections saturates its own core (≈ 1 ms of client CPU per request) and then adds a tail of its own
(p99 ≈ 150 ms while the server answers every request within ≈ 5 ms), so that figure is also printed, labelled
"1 client process". The "+ delivery worker" rows run the worker too, posting ``chat.update`` to the stand-in
(in a third process) for the clicked messages.

Targets on a 2-core machine: p50 ≤ 3 ms and p99 ≤ 15 ms at 1 client; ≥ 800 clicks/s with p99 ≤ 50 ms at 10.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from slack_sdk import WebClient

from bench import Row, client_pool, interrupted, row_name, start_server, stop_on_sigterm, stop_process
from bot.app import build_bot
from bot.config import Settings
from bot.serve import fast_impl, uvicorn_config
from bot.standin.signing import signed_headers
from npo.types import Prediction

SECRET = "bench-signing-secret-0123456789"
TOKEN = "xoxb-bench"
CHANNEL = "C0BENCH"
FULL_PATH = "full path"
TARGETS = {row_name("signed Like clicks/s, 10 clients", FULL_PATH): 800.0}
#: The latency targets (ms), the README's "1 client ≤ 3 / ≤ 15 ms; 10: ≤ 50 ms", on the rows :func:`_rows` names.
CEILINGS = {
    row_name("signed Like click p50, 1 client ≤ 3 ms", FULL_PATH): 3.0,
    row_name("signed Like click p99, 1 client ≤ 15 ms", FULL_PATH): 15.0,
    row_name("signed Like click p99, 10 clients ≤ 50 ms", FULL_PATH): 50.0,
    # Every click answered 200 is recorded: the clicks recorded, worker off, are the clicks sent (a check, not a time).
    "clicks recorded ≠ sent, worker off (difference)": 0.0,
}
Request = tuple[str, str, bytes, dict[str, str]]


CONNECTIONS_PER_PROCESS = 5


def _settings(db: Path, users: list[str], api_url: str = "http://127.0.0.1:9/api/") -> Settings:
    return Settings(
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        ingest_token="bench-ingest-token-0123",
        incident_channel=CHANNEL,
        ops_channel="C0BENCHOPS",
        slack_api_url=api_url,  # the stand-in, or never called (worker off, responders listed)
        db_path=db,
        responders=tuple(users),
        # The click limit is charged on every click (its cost is measured) but never reached: the 100 users click
        # far faster than any person, and a refused click would skip the learning being measured.
        feedback_burst=100_000,
    )


def _click(user: str, pid: str, n: int, message_ts: str | None = None) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0BENCH"},
        "team": {"id": "T0BENCH"},
        "container": {"type": "message", "message_ts": message_ts or f"1700000000.{n:06d}", "channel_id": CHANNEL},
        "channel": {"id": CHANNEL},
        "trigger_id": f"trigger-{n}",
        "actions": [
            {
                "action_id": "npo_like",
                "block_id": "npo_feedback",
                "type": "button",
                "value": pid,
                "action_ts": f"1700000000.{n:06d}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(base: str, requests: list[Request], concurrency: int) -> tuple[list[float], float, int]:
    """Send ``requests`` with ``concurrency`` keep-alive connections; latencies (s), wall time (s), non-2xx count."""
    latencies: list[float] = []
    failures = 0
    queue = iter(requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal failures
            for method, path, body, headers in queue:
                start = time.perf_counter()
                response = await client.request(method, path, content=body or None, headers=headers)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code >= 300

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started, failures


def _client_process(base: str, requests: list[Request], concurrency: int) -> tuple[list[float], float, float, int]:
    """One client process: latencies, start and end (``perf_counter`` is system-wide monotonic), failures."""
    started = time.perf_counter()
    latencies, wall, failures = asyncio.run(_drive(base, requests, concurrency))
    return latencies, started, started + wall, failures


def warm_up_and_measured(make: Callable[[int], Request], count: int) -> tuple[list[Request], list[Request]]:
    """A warm-up of a tenth of ``count`` requests (at least 20), then the ``count`` requests measured."""
    warm = max(20, count // 10)
    requests = [make(i) for i in range(warm + count)]
    return requests[:warm], requests[warm:]


def _measure(
    pool: Any, base: str, make: Callable[[int], Request], count: int, concurrency: int, processes: int
) -> tuple[float, float, float]:
    """p50 (ms), p99 (ms) and rate (/s) of ``count`` requests from ``processes`` client processes sharing
    ``concurrency`` connections, after a warm-up of a tenth as many."""
    for batch in warm_up_and_measured(make, count):
        per = max(1, concurrency // processes)
        parts = pool.starmap(_client_process, [(base, batch[i::processes], per) for i in range(processes)])
    latencies = [lat for part in parts for lat in part[0]]
    failures = sum(part[3] for part in parts)
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    wall = max(part[2] for part in parts) - min(part[1] for part in parts)
    return _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000, len(latencies) / wall


def _prepare(db: Path, users: list[str], count: int, api_url: str | None) -> dict[str, str]:
    """Decide enough predictions for ``count`` clicks; with the stand-in, post their messages there (as the
    worker would) and return each one's ``ts``, so the clicks' ``chat.update`` calls find their message."""
    needed = 2 * count // len(users) + 2
    bot = build_bot(_settings(db, users), seed=0, run_worker=False)
    try:
        now = time.time()
        bot.service.decide(
            [
                Prediction(f"b{i}", "disk_failure", f"host-{i}", "investigate", 0.99, received_at=now)
                for i in range(needed)
            ]
        )
        ts_of: dict[str, str] = {}
        if api_url is not None:
            client = WebClient(token=TOKEN, base_url=api_url)
            for item in bot.store.claim_due(now + 1, needed):
                ts = str(client.chat_postMessage(channel=CHANNEL, text="bench")["ts"])
                bot.store.mark_sent(item.id, CHANNEL, ts)
                ts_of[str(item.prediction_id)] = ts
        return ts_of
    finally:
        bot.close()


class ClickMaker:
    """Signed Like clicks, each by a new (user, recommendation) pair; ``made`` counts them (the clicks sent)."""

    def __init__(self, users: list[str], pids: list[str], ts_of: dict[str, str]) -> None:
        self._pairs = iter((u, pid) for pid in pids for u in users)
        self._ts_of = ts_of
        self.made = 0

    def __call__(self, _: int) -> Request:
        user, pid = next(self._pairs)
        body = _click(user, pid, self.made, self._ts_of.get(pid))
        self.made += 1
        headers = signed_headers(SECRET, body, "application/x-www-form-urlencoded")
        return "POST", "/slack/events", body, headers


def recorded_rows(sent: int, recorded: int) -> list[Row]:
    """The clicks recorded with the worker off, the clicks sent, and the difference (checked: :data:`CEILINGS`)."""
    loop, http = fast_impl()
    return [
        (f"clicks recorded, worker off (uvicorn loop={loop}, http={http})", float(recorded), "events"),
        ("clicks sent, worker off", float(sent), "events"),
        ("clicks recorded ≠ sent, worker off (difference)", float(abs(sent - recorded)), "events"),
    ]


def _noop(_: int) -> Request:
    return "GET", "/livez", b"", {}


def _rows(label: str, variant: str, figures: tuple[float, float, float], targets: tuple[str, str]) -> list[Row]:
    p50, p99, rate = figures
    return [
        (row_name(f"signed Like click p50, {label} {targets[0]}".rstrip(), variant), p50, "ms"),
        (row_name(f"signed Like click p99, {label} {targets[1]}".rstrip(), variant), p99, "ms"),
        (row_name(f"signed Like clicks/s, {label}", variant), rate, "clicks/s" if "no-op" not in variant else "req/s"),
    ]


def run(quick: bool = False) -> list[Row]:
    clicks = 400 if quick else 3000
    users = [f"U0BENCH{i:03d}" for i in range(100)]
    per_case = 2 * (clicks + max(20, clicks // 10))  # 1 and 10 clients
    rows: list[Row] = []
    recorded = sent = 0
    with tempfile.TemporaryDirectory() as tmp, client_pool(2) as pool:
        for worker in (False, True):
            db = Path(tmp) / f"bench-{worker}.db"
            with standin_process() if worker else _nothing() as api_url:
                ts_of = _prepare(db, users, per_case + (0 if worker else clicks + max(20, clicks // 10)), api_url)
                pids = sorted(ts_of) if worker else [f"b{i}" for i in range(2 * per_case // len(users) + 2)]
                click = ClickMaker(users, pids, ts_of)

                with _server_process(db, users, api_url) as url:
                    for concurrency in (1, 10):
                        label = f"{concurrency} client{'s' if concurrency > 1 else ''}"
                        targets = ("≤ 3 ms", "≤ 15 ms") if concurrency == 1 else ("", "≤ 50 ms")
                        processes = max(1, concurrency // CONNECTIONS_PER_PROCESS)
                        if worker:
                            figures = _measure(pool, url, click, clicks, concurrency, processes)
                            rows += _rows(label, "full path + delivery worker", figures, targets)
                            continue
                        figures = _measure(pool, url, _noop, clicks, concurrency, processes)
                        rows += _rows(label, "baseline: no-op GET", figures, targets)
                        figures = _measure(pool, url, click, clicks, concurrency, processes)
                        rows += _rows(label, FULL_PATH, figures, targets)
                        if processes > 1:
                            figures = _measure(pool, url, click, clicks, concurrency, 1)
                            rows += _rows(label, "full path, 1 client process (client-bound)", figures, targets)
            if not worker:
                bot = build_bot(_settings(db, users), run_worker=False)
                recorded, sent = bot.store.counts().get("feedback_like", 0), click.made
                bot.close()
    return rows + recorded_rows(sent, recorded)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@contextmanager
def standin_process() -> Iterator[str]:
    """The Slack stand-in in a process of its own (as Slack is not in the bot's process); its Web API URL."""
    child = start_server(
        [sys.executable, "-m", "bot.standin", "--token", TOKEN, "--channel", CHANNEL],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        api_url = ""
        while not api_url:
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("the stand-in did not start")
            if line.startswith("api_url:"):
                api_url = line.split(maxsplit=1)[1].strip()
        yield api_url
    finally:
        stop_process(child, 10)
        if child.stdout is not None:
            child.stdout.close()


@contextmanager
def _server_process(db: Path, users: list[str], api_url: str | None) -> Iterator[str]:
    """The bot in its own process (so the clients do not share its GIL), on a free loopback port; with
    ``api_url`` its delivery worker runs against that Web API."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = start_server(
        [sys.executable, "-m", "bench.http_bench", "--serve", str(db), str(port), ",".join(users), api_url or ""],
        cwd=Path(__file__).resolve().parent.parent,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(child, 10)


def _serve(db: str, port: str, users: str, api_url: str) -> None:
    settings = _settings(Path(db), users.split(","), api_url) if api_url else _settings(Path(db), users.split(","))
    bot = build_bot(settings, run_worker=bool(api_url))
    try:
        uvicorn.Server(uvicorn_config(bot.asgi, "127.0.0.1", int(port), log_level="warning")).run()
    finally:
        bot.close()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        _serve(*sys.argv[2:])
    else:
        stop_on_sigterm()
        try:
            for name, value, unit in run(quick="--quick" in sys.argv):
                print(f"{name:<80} {value:>10.2f} {unit}")
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM
            sys.exit(interrupted("python -m bench.http_bench", exc))
