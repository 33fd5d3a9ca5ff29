"""Helpers for the hardening tests: hostile-input strategies (Hypothesis), a database write detector, and the
fuzzing budget shared by every route."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Fixed budget, fixed order: the same requests on every run and every machine, no example database, no deadline
# (the server's latency is measured in bench/, not here). Per-route example counts are in the fuzz module;
# they add up to more than 2,000 requests.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(max_examples: int) -> settings:
    """The fixed fuzzing settings with a per-test example budget."""
    return settings(FUZZ, max_examples=max_examples)


SUBSTANTIVE_TABLES = ("predictions", "decisions", "feedback", "outcomes", "outbox", "audit_log")


class WriteWatch:
    """Detects commits to the database file by any connection: SQLite's ``PRAGMA data_version`` (read on this
    watcher's own connection) changes whenever another connection commits a change."""

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(db_path, check_same_thread=False)

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return {t: int(self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in SUBSTANTIVE_TABLES}

    @contextmanager
    def unchanged(self, what: str) -> Iterator[None]:
        """Fail if anything was committed while the block ran."""
        before = self.version()
        yield
        assert self.version() == before, f"the database changed: {what}"

    def close(self) -> None:
        self.conn.close()


def signed_bytes_headers(secret: str, body: bytes, content_type: str) -> dict[str, str]:
    """Slack's signature headers over raw bytes (which need not be UTF-8), signed as Slack signs."""
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


# -- generic hostile values ------------------------------------------------------------------------------------
def huge_text(min_size: int = 1_000, max_size: int = 50_000) -> st.SearchStrategy[str]:
    """A long string, cheaply: one character repeated, sometimes with a multi-byte character."""
    return st.builds(lambda n, c: c * n, st.integers(min_size, max_size), st.sampled_from(["x", "é", "𝔁", "\x00", " "]))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "0", "1", "true", "null", "NaN", "87%", "1e999", "6h", "\u202e", "\ud800"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
hostile_values = st.one_of(json_values, huge_text(), st.just({"$gt": ""}), st.just([[[[[]]]]]))


def deep_nesting() -> st.SearchStrategy[bytes]:
    """JSON nested far deeper than any decoder's recursion limit (and a little, for contrast)."""
    return st.builds(
        lambda depth, opener: (opener[0] * depth + opener[1] * depth).encode(),
        st.one_of(st.integers(1, 50), st.integers(5_000, 200_000)),
        st.sampled_from([("[", "]"), ('{"a":', "}")]),
    ).map(lambda b: b.replace(b"}", b"1}", 1) if b.startswith(b"{") else b)


raw_bodies = st.one_of(
    st.binary(max_size=300),  # mostly invalid UTF-8 and not JSON
    st.sampled_from([b"", b" ", b"null", b"{", b'{"id": "p1"', b"\xff\xfe{}", b'"\xed\xa0\x80"', b"[]", b"{}"]),
    deep_nesting(),
    st.builds(lambda s: s.encode("utf-8", "surrogatepass"), st.text(max_size=80)),
)


def mutated_record(valid: dict[str, Any], required: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A record shaped like ``valid`` where some fields are missing, of the wrong type, huge or hostile, and
    unknown fields may appear — or something that is not an object at all."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        record: dict[str, Any] = {}
        for name, good in valid.items():
            choice = draw(st.sampled_from(["keep", "keep", "drop", "hostile"]))
            if choice == "keep":
                record[name] = good
            elif choice == "hostile":
                record[name] = draw(hostile_values)
        if draw(st.booleans()):
            record |= draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2))
        return record

    return st.one_of(build(), json_values, st.lists(build(), min_size=1, max_size=3))


# -- per-route bodies --------------------------------------------------------------------------------------------
VALID_PREDICTION = {
    "id": "fz-1",
    "fault_type": "disk_failure",
    "target": "r1-n1",
    "action": "investigate",
    "confidence": 0.9,
    "severity": "critical",
    "time_to_fault_s": 3600,
    "labels": {"cluster": "r1"},
    "channel": "C0INCIDENT",
}
PREDICTION_REQUIRED = ("id", "fault_type", "target", "action", "confidence")
VALID_OUTCOME = {"prediction_id": "fz-1", "real_fault": True, "at": 1_700_000_000.0, "source": "api"}


def _alert() -> st.SearchStrategy[Any]:
    labels = mutated_record({"alertname": "DiskFailing", "instance": "r1-n1:9100", "severity": "critical"}, ())
    annotations = mutated_record({"confidence": "87%", "time_to_fault": "6h", "action": "drain"}, ())
    return st.one_of(
        st.fixed_dictionaries(
            {"status": st.sampled_from(["firing", "resolved"]) | hostile_values, "labels": labels},
            optional={
                "annotations": annotations,
                "fingerprint": st.text(max_size=20) | hostile_values,
                "startsAt": st.text(max_size=30) | hostile_values,
                "endsAt": st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "garbage"])
                | hostile_values,
            },
        ),
        hostile_values,
    )


alertmanager_bodies = st.one_of(
    st.fixed_dictionaries(
        {"alerts": st.lists(_alert(), max_size=4) | hostile_values},
        optional={
            "version": st.just("4") | hostile_values,
            "status": st.sampled_from(["firing", "resolved"]) | hostile_values,
            "commonLabels": hostile_values,
            "commonAnnotations": hostile_values,
            "receiver": hostile_values,
        },
    ),
    json_values,
)


def json_body(value: Any) -> bytes:
    """``value`` as JSON text; NaN and ±Infinity are written as Python's ``json`` writes them."""
    return json.dumps(value).encode("utf-8", "surrogatepass")


# -- Slack interaction payloads ----------------------------------------------------------------------------------
ACTION_IDS = ["npo_like", "npo_override", "npo_neutral", "npo_confirm_fault", "npo_false_alarm"]
slack_ids = st.one_of(
    st.sampled_from(["U0ALICE", "U0MALLORY", "C0INCIDENT", ""]), st.text(string.ascii_uppercase, max_size=12)
)


def block_actions(prediction_ids: list[str]) -> st.SearchStrategy[Any]:
    """``block_actions`` payloads: known and unknown action ids, unknown, hostile or real prediction ids (clicked
    by someone who is not a responder), and every field possibly missing, mistyped, huge or nested."""
    action = mutated_record(
        {"action_id": "npo_like", "block_id": "npo_feedback", "type": "button", "value": "p", "action_ts": "1.2"},
        (),
    )
    known_action = st.fixed_dictionaries(
        {
            "action_id": st.sampled_from(ACTION_IDS) | st.text(max_size=20),
            "value": st.sampled_from(prediction_ids) | st.text(max_size=20) | hostile_values,
            "action_ts": st.text(max_size=12),
        }
    )
    user = st.one_of(
        st.fixed_dictionaries({"id": st.sampled_from(["U0MALLORY", "U0NOBODY", ""]) | hostile_values}),
        hostile_values,
    )
    return st.fixed_dictionaries(
        {"type": st.just("block_actions")},
        optional={
            "user": user,
            "actions": st.lists(known_action | action, max_size=3) | hostile_values,
            "container": mutated_record({"type": "message", "message_ts": "1.1", "channel_id": "C0INCIDENT"}, ()),
            "channel": hostile_values,
            "message": hostile_values,
            "trigger_id": hostile_values,
            "team": hostile_values,
            "response_url": hostile_values,
        },
    )


def view_submissions() -> st.SearchStrategy[Any]:
    view = st.fixed_dictionaries(
        {"callback_id": st.just("npo_override_modal") | st.text(max_size=20)},
        optional={
            "id": hostile_values,
            "private_metadata": st.one_of(
                st.builds(json.dumps, json_values), st.text(max_size=40), huge_text(), hostile_values
            ),
            "state": st.fixed_dictionaries({"values": hostile_values}) | hostile_values,
        },
    )
    return st.fixed_dictionaries(
        {"type": st.just("view_submission")}, optional={"view": view | hostile_values, "user": hostile_values}
    )


def interaction_payloads(prediction_ids: list[str]) -> st.SearchStrategy[Any]:
    other = st.fixed_dictionaries(
        {"type": st.sampled_from(["shortcut", "message_action", "view_closed", "block_suggestion"]) | hostile_values},
        optional={"callback_id": hostile_values, "user": hostile_values, "view": hostile_values},
    )
    return st.one_of(block_actions(prediction_ids), view_submissions(), other, json_values)


def interaction_bodies(prediction_ids: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(content type, body) of a form-encoded interaction: a hostile payload, a payload that is not JSON,
    or form fields that are not a payload at all."""
    form = "application/x-www-form-urlencoded"
    as_payload = interaction_payloads(prediction_ids).map(
        lambda p: (form, urlencode({"payload": json.dumps(p)}).encode())
    )
    not_json = st.text(max_size=60).map(lambda t: (form, urlencode({"payload": t}).encode()))
    fields = st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4).map(
        lambda d: (form, urlencode(d).encode())
    )
    raw = raw_bodies.map(lambda b: (form, b))
    return st.one_of(as_payload, as_payload, not_json, fields, raw)


def event_bodies() -> st.SearchStrategy[tuple[str, bytes]]:
    """(content type, body) of Events API deliveries with hostile envelopes and events."""
    event = st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["app_home_opened", "app_mention", "message"]) | hostile_values},
            optional={"user": slack_ids | hostile_values, "tab": st.just("home") | hostile_values},
        ),
        hostile_values,
    )
    envelope = st.fixed_dictionaries(
        {"type": st.sampled_from(["event_callback", "url_verification", "app_rate_limited"]) | hostile_values},
        optional={
            "event": event,
            "event_id": st.text(max_size=16) | hostile_values,
            "challenge": hostile_values,
            "team_id": hostile_values,
            "authorizations": hostile_values,
        },
    )
    return st.one_of(envelope, json_values).map(lambda e: ("application/json", json_body(e)))


def command_bodies() -> st.SearchStrategy[tuple[str, bytes]]:
    """(content type, body) of ``/npo`` (and unknown) slash commands with hostile fields."""
    fields = st.fixed_dictionaries(
        {"command": st.sampled_from(["/npo", "/other", ""]) | st.text(max_size=10)},
        optional={
            "text": st.text(max_size=60) | huge_text(max_size=20_000),
            "user_id": slack_ids,
            "channel_id": slack_ids,
            "response_url": st.text(max_size=30),
            "trigger_id": st.text(max_size=30),
        },
    )
    return fields.map(lambda d: ("application/x-www-form-urlencoded", urlencode(d).encode()))


# -- a real `npo-bot serve` in its own process ----------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
INGEST_TOKEN = "serve-ingest-token-0123456789"
# Started through this wrapper so SIGXFSZ is ignored: a write past RLIMIT_FSIZE then fails with an error (as on a
# full disk) instead of killing the process.
_LAUNCH = (
    "import signal, sys, runpy; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "sys.argv = ['npo-bot', *sys.argv[1:]]; runpy.run_module('bot.cli', run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServeProcess:
    """``npo-bot serve`` as a child process on a loopback port, with its output collected."""

    proc: subprocess.Popen[str]
    url: str
    db_path: Path
    output: list[str]

    def ingest(self, body: Any, path: str = "/api/v1/predictions", timeout: float = 10) -> httpx.Response:
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=auth, timeout=timeout)


def serve_env(db_path: Path, api_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    return env | {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "NPO_INGEST_TOKEN": INGEST_TOKEN,
        "SLACK_API_URL": api_url,
        "NPO_DB_PATH": str(db_path),
        "NPO_PORT": str(port),
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "NPO_RESPONDERS": "U0ALICE,U0BOB",
        "NPO_SLACK_TIMEOUT_S": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


@contextmanager
def serve_process(db_path: Path, api_url: str, **extra: str) -> Iterator[ServeProcess]:
    port = free_port()
    env = serve_env(db_path, api_url, port, **extra)
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, "serve", "--env-file", os.devnull],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    server = ServeProcess(proc, f"http://127.0.0.1:{port}", db_path, output)
    try:
        deadline = time.monotonic() + 20
        while not _up(server.url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("npo-bot serve did not start:\n" + "".join(output))
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
