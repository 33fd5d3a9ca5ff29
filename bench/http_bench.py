"""Signed Slack clicks through the real HTTP server: verify, record (m(k), bandit arm, feedback row), queue the
message update — at 1 and 10 concurrent keep-alive clients, next to the same server answering a no-op route
(``GET /livez``) in the same run. The delivery worker is off (it is not on the ack path); the database is a
real SQLite file (WAL, synchronous=NORMAL). Every click is a new (person, recommendation) pair, so each one does
the full read-modify-write.

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
from urllib.parse import urlencode

import httpx
import uvicorn

from bench import Row, row_name
from bot.app import build_bot
from bot.config import Settings
from bot.serve import fast_impl, uvicorn_config
from bot.standin.signing import signed_headers
from npo.types import Prediction

SECRET = "bench-signing-secret-0123456789"
CHANNEL = "C0BENCH"
TARGETS = {row_name("signed Like clicks/s, 10 clients", "full path"): 800.0}
Request = tuple[str, str, bytes, dict[str, str]]


def _settings(db: Path, users: list[str]) -> Settings:
    return Settings(
        slack_bot_token="xoxb-bench",
        slack_signing_secret=SECRET,
        ingest_token="bench-ingest-token-0123",
        incident_channel=CHANNEL,
        ops_channel="C0BENCHOPS",
        slack_api_url="http://127.0.0.1:9/api/",  # never called: the worker is off, responders are listed
        db_path=db,
        responders=tuple(users),
    )


def _click(user: str, pid: str, n: int) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0BENCH"},
        "team": {"id": "T0BENCH"},
        "container": {"type": "message", "message_ts": f"1700000000.{n:06d}", "channel_id": CHANNEL},
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


def _measure(base: str, make: Callable[[int], Request], count: int, concurrency: int) -> tuple[float, float, float]:
    requests = [make(i) for i in range(count)]
    asyncio.run(_drive(base, requests[: max(20, count // 10)], concurrency))  # warm-up (its clicks are extra)
    latencies, wall, failures = asyncio.run(_drive(base, requests[max(20, count // 10) :], concurrency))
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000, len(latencies) / wall


def run(quick: bool = False) -> list[Row]:
    clicks = 400 if quick else 3000
    users = [f"U0BENCH{i:03d}" for i in range(100)]
    predictions_needed = 2 * (clicks + max(20, clicks // 10)) // len(users) + 2
    with tempfile.TemporaryDirectory() as tmp:
        bot = build_bot(_settings(Path(tmp) / "bench.db", users), seed=0, run_worker=False)
        now = time.time()
        bot.service.decide(
            [
                Prediction(f"b{i}", "disk_failure", f"host-{i}", "investigate", 0.99, received_at=now)
                for i in range(predictions_needed)
            ]
        )
        pairs = iter((u, f"b{p}") for p in range(predictions_needed) for u in users)
        counter = iter(range(10**9))

        def click(_: int) -> Request:
            user, pid = next(pairs)
            body = _click(user, pid, next(counter))
            headers = signed_headers(SECRET, body, "application/x-www-form-urlencoded")
            return "POST", "/slack/events", body, headers

        def noop(_: int) -> Request:
            return "GET", "/livez", b"", {}

        bot.close()
        rows: list[Row] = []
        with _server_process(Path(tmp) / "bench.db", users) as url:
            for concurrency in (1, 10):
                base_p50, base_p99, base_rate = _measure(url, noop, clicks, concurrency)
                p50, p99, rate = _measure(url, click, clicks, concurrency)
                label = f"{concurrency} client{'s' if concurrency > 1 else ''}"
                target50, target99 = ("≤ 3 ms", "≤ 15 ms") if concurrency == 1 else ("", "≤ 50 ms")
                rows += [
                    (
                        row_name(f"signed Like click p50, {label} {target50}".rstrip(), "baseline: no-op GET"),
                        base_p50,
                        "ms",
                    ),
                    (row_name(f"signed Like click p50, {label} {target50}".rstrip(), "full path"), p50, "ms"),
                    (row_name(f"signed Like click p99, {label} {target99}", "baseline: no-op GET"), base_p99, "ms"),
                    (row_name(f"signed Like click p99, {label} {target99}", "full path"), p99, "ms"),
                    (row_name(f"signed Like clicks/s, {label}", "baseline: no-op GET"), base_rate, "req/s"),
                    (row_name(f"signed Like clicks/s, {label}", "full path"), rate, "clicks/s"),
                ]
        bot = build_bot(_settings(Path(tmp) / "bench.db", users), run_worker=False)
        recorded = bot.store.counts().get("feedback_like", 0)
        bot.close()
    loop, http = fast_impl()
    rows.append((f"clicks recorded (uvicorn loop={loop}, http={http})", float(recorded), "events"))
    return rows


@contextmanager
def _server_process(db: Path, users: list[str]) -> Iterator[str]:
    """The bot in its own process (so the client does not share its GIL), on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.http_bench", "--serve", str(db), str(port), ",".join(users)],
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
        child.terminate()
        child.wait(10)


def _serve(db: str, port: str, users: str) -> None:
    bot = build_bot(_settings(Path(db), users.split(",")), run_worker=False)
    try:
        uvicorn.Server(uvicorn_config(bot.asgi, "127.0.0.1", int(port), log_level="warning")).run()
    finally:
        bot.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        _serve(*sys.argv[2:])
    else:
        for name, value, unit in run(quick="--quick" in sys.argv):
            print(f"{name:<80} {value:>10.2f} {unit}")
