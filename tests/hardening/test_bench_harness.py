"""The benchmark harness itself (``bench/``): what its figures count, the targets it checks, the options it
refuses. No speed is measured or asserted here."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from slack_sdk.signature import Clock, SignatureVerifier

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the bench package lives at the repository root, beside the installed ones

from bench import http_bench, load_bench  # noqa: E402
from bench.__main__ import Report, attach_baselines, format_summary, format_table, main  # noqa: E402
from bench.load_bench import (  # noqa: E402
    SECRET,
    TARGETS,
    LoadReport,
    clicks,
    commands,
    home_opens,
    overrides,
    prediction_batches,
    rows,
)


class _At(Clock):
    """Slack's verifier reading the clock at ``now``."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class _HeldServer(ThreadingHTTPServer):
    request_queue_size = 128  # every connection of a load client at once
    daemon_threads = True


@contextmanager
def _server_holding_answers(hold_s: float) -> Iterator[str]:
    """A loopback HTTP server as slow as the service on a loaded machine: it answers nothing until ``hold_s``
    after the first request arrived, then every request 200. Its base URL."""
    opened, first = threading.Event(), threading.Lock()
    timers: list[threading.Timer] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service answers

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with first:
                if not timers:
                    timers.append(threading.Timer(hold_s, opened.set))
                    timers[0].start()
            opened.wait()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = _HeldServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        opened.set()
        for timer in timers:
            timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_the_load_clients_wait_for_a_slow_server_rather_than_give_up_on_it() -> None:
    """On a loaded machine the CI load run failed with every click cut off and no 5xx: the client gave up, not the
    server. A request waiting for one of the client's connections timed out in httpx's pool after 10 s, one sent
    timed out after 10 s without an answer, and a few hundred waiting in the pool cost the client seconds of CPU,
    so it fell half a minute behind its own schedule. The run that checks what must hold at any speed waits for the
    answers: here a server silent for longer than the benchmark's 10 s, with more requests than connections."""
    recs = [(f"p-{i}", "C0LOAD", f"1800000000.{i:06d}") for i in range(60)]
    reqs = clicks(recs, 60)  # more than the 48 connections of a client process
    with _server_holding_answers(hold_s=12.0) as base:
        results = asyncio.run(load_bench._drive(base, {"click": (1000.0, reqs)}, time.time()))
    r = results["click"]
    assert (r.errors, r.statuses, len(r.latencies)) == (0, {200: 60}, 60), r


def test_the_load_test_signs_each_slack_request_when_it_sends_it_as_slack_does() -> None:
    planned_at = time.time()
    recs = [("p-1", "C0LOAD", "1800000000.000001")]
    requests = [*clicks(recs, 1), *overrides(recs, 1), *commands(1), *home_opens(1)]
    sent_at = planned_at + 400  # a run longer than Slack's 300 s replay window: sent minutes after the plan
    for req in requests:
        headers = req.send_headers(sent_at)
        assert headers["X-Slack-Request-Timestamp"] == str(int(sent_at)), req.route
        assert SignatureVerifier(SECRET, clock=_At(sent_at)).is_valid_request(req.body, headers), req.route
    [batch] = prediction_batches("t-", 1)
    assert batch.send_headers(sent_at)["Authorization"].startswith("Bearer ")  # not from Slack: not signed
    assert "X-Slack-Signature" not in batch.send_headers(sent_at)


def _load_report(
    clicks_per_s: float = 300.0,
    refused: dict[str, int] | None = None,
    routes: tuple[str, ...] = ("click", "override", "predictions", "alertmanager", "command", "home"),
) -> LoadReport:
    """A load test's report: every figure on target unless told otherwise; ``refused``: answers other than 200
    (and not 5xx) per route; ``routes``: the routes driven (``--routes``)."""
    items = {"click", "override", "predictions", "alertmanager"} & set(routes)
    per_route = {
        route: {"requests": 100.0, "per_s": 10.0, "p50_ms": 2.0, "p99_ms": 20.0, "max_ms": 40.0, "5xx": 0.0,
                "non_200": float((refused or {}).get(route, 0))}
        for route in routes
    }  # fmt: skip
    return LoadReport(
        seconds=60.0, per_route=per_route, server_5xx=0, transport_errors=0, rss_peak_mb=100.0,
        accepted=20_000 if items else 0, missing=0, predictions_per_s=2000.0 if "predictions" in routes else 0.0,
        clicks_per_s=clicks_per_s if "click" in routes else 0.0, noop=(1.0, 5.0, 2000.0),
        raw_rmw_per_s=30_000.0, decide_batched_per_s=40_000.0, lag_p99_ms=1.0,
    )  # fmt: skip


def test_the_load_test_fails_a_route_whose_requests_are_refused_without_a_5xx() -> None:
    assert all(_load_report().checks().values())
    for route in ("override", "command", "home", "alertmanager"):  # no rate target of their own
        failed = [name for name, ok in _load_report(refused={route: 120}).checks().items() if not ok]
        assert len(failed) == 1 and "answered 200" in failed[0] and "120 other" in failed[0], (route, failed)


@pytest.mark.parametrize(
    ("routes", "checked"),
    [
        (("command", "home"), {"answered 200", "RSS"}),
        (("click",), {"clicks/s", "click p99", "answered 200", "RSS", "item present"}),
        (("predictions", "alertmanager"), {"predictions/s", "answered 200", "RSS", "item present"}),
        (("override",), {"answered 200", "RSS", "item present"}),
    ],
)
def test_a_load_test_of_some_routes_is_checked_on_those_routes(routes: tuple[str, ...], checked: set[str]) -> None:
    """``--routes`` with a subset always exited 1: the click and prediction rates of routes not driven were 0, the
    click p99 of no clicks n/a, and "every accepted item present" needs items, which commands and App Home opens do
    not send."""
    checks = _load_report(routes=routes).checks()
    assert all(checks.values()), checks
    assert {key for key in checked if any(key in name for name in checks)} == checked and len(checks) == len(checked)
    failed = _load_report(routes=routes, refused={routes[0]: 1}).checks()
    assert [name for name, ok in failed.items() if not ok] == [n for n in failed if "answered 200" in n]
    assert len(_load_report().checks()) == load_bench.N_CHECKS  # all routes: every check, as python -m bench counts


def test_the_load_tests_checks_and_python_m_bench_judge_the_click_rate_alike() -> None:
    for rate, met in ((300.0, True), (299.0, False), (294.5, False)):
        report = _load_report(clicks_per_s=rate)
        [check] = [ok for name, ok in report.checks().items() if "signed clicks/s" in name]
        [result] = [r for r in attach_baselines("load_bench", rows(report), TARGETS) if r.name.endswith("full service")
                    and "clicks" in r.name]  # fmt: skip
        assert check is met and result.passed is met, rate


def test_python_m_bench_checks_the_click_latency_targets_the_readme_states() -> None:
    # the rows the HTTP bench produces for the full path, at its worst: 1 client 4 / 20 ms, 10 clients 900/s, 60 ms
    produced = [
        *http_bench._rows("1 client", "full path", (4.0, 20.0, 300.0), ("≤ 3 ms", "≤ 15 ms")),
        *http_bench._rows("10 clients", "full path", (5.0, 60.0, 900.0), ("", "≤ 50 ms")),
    ]
    results = attach_baselines("http_bench", produced, http_bench.TARGETS, getattr(http_bench, "CEILINGS", {}))
    checked = {(r.name.split(" | ")[0], r.value): r.passed for r in results if r.target is not None}
    assert checked == {  # README, Click latency: 1 client ≤ 3 / ≤ 15 ms; 10: ≥ 800 /s, ≤ 50 ms
        ("signed Like click p50, 1 client ≤ 3 ms", 4.0): False,
        ("signed Like click p99, 1 client ≤ 15 ms", 20.0): False,
        ("signed Like clicks/s, 10 clients", 900.0): True,
        ("signed Like click p99, 10 clients ≤ 50 ms", 60.0): False,
    }
    report = Report({}, True, results, [], [])
    assert "≤15.00 MISS" in format_table(results)
    assert "MISS signed Like click p99, 10 clients ≤ 50 ms | full path: 60.00 ms (≤50.00)" in format_summary(report)
    assert "targets: 1 of 4 met" in format_summary(report)
    within = attach_baselines("http_bench", [(produced[0][0], 3.0, "ms")], {}, http_bench.CEILINGS)
    assert within[0].passed is True  # a ceiling is met at the bound itself


@pytest.mark.parametrize(
    ("entry", "argv"),
    [(main, ["--only", "core", "--quick"]), (load_bench.main, ["--quick"])],
    ids=["python -m bench", "python -m bench.load_bench"],
)
def test_a_json_file_that_cannot_be_written_is_refused_before_anything_runs(
    entry: Callable[[list[str]], int], argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_folder = tmp_path / "a-folder"
    a_folder.mkdir()
    for path, why in {tmp_path / "missing" / "out.json": "does not exist", a_folder: "is a folder"}.items():
        with pytest.raises(SystemExit) as exit_:
            entry([*argv, "--json", str(path)])
        out, err = capsys.readouterr()
        assert exit_.value.code == 2 and out == "", out  # refused before anything ran
        [line] = [x for x in err.splitlines() if "error" in x]
        assert "--json: " in line and why in line, err


def test_the_http_bench_measures_as_many_clicks_as_it_says_after_its_warm_up() -> None:
    made: list[int] = []

    def make(i: int) -> tuple[str, str, bytes, dict[str, str]]:
        made.append(i)
        return "GET", "/livez", b"", {}

    warm, measured = http_bench.warm_up_and_measured(make, 3000)  # README: 3,000 signed Like clicks per row
    assert (len(warm), len(measured)) == (300, 3000)
    assert made == list(range(3300))  # each request made once: a warm-up request is never measured again


def test_the_http_bench_checks_the_clicks_recorded_against_the_clicks_sent() -> None:
    """The clicks recorded (worker off) were printed alone: a run that lost clicks looked like any other."""
    made = http_bench.ClickMaker(["U1", "U2"], ["p1", "p2"], {})
    for i in range(3):
        made(i)
    assert made.made == 3
    for sent, recorded, met in ((1320, 1320, True), (1320, 1319, False), (1320, 1321, False)):
        results = attach_baselines(
            "http_bench", http_bench.recorded_rows(sent, recorded), http_bench.TARGETS, http_bench.CEILINGS
        )
        [check] = [r for r in results if r.target is not None]
        assert check.passed is met, (sent, recorded)
        summary = format_summary(Report({}, True, results, [], []))
        assert f"{'PASS' if met else 'MISS'} clicks recorded ≠ sent, worker off (difference)" in summary
