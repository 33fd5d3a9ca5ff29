"""The demo as a program: ``--auto`` runs unattended and stores real answers, Ctrl-C stops everything and
leaves a usable database, bad options and files are refused clearly, and the page's JSON routes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_testing import SURE_PREDICTION, demo_cli, rows

from bot.cli import build_parser
from bot.demo.cli import how_it_stops, run_demo
from bot.demo.panel import panel_data
from bot.demo.runner import Demo, DemoError, DemoOptions, prepare_database
from bot.demo.scenarios import Noise
from npo.loop import record_feedback
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.store import LoopConfig

ROOT = Path(__file__).resolve().parents[2]


def test_auto_demo_answers_through_the_real_path(tmp_path: Path) -> None:
    options = DemoOptions(
        port=0, db=tmp_path / "auto.db", auto=True, count=12, rate_per_min=600, outcome_delay_s=2, seed=3
    )
    demo = Demo(options, say=lambda _: None)
    url = demo.start()
    try:
        assert httpx.get(url, timeout=10).status_code == 200
        demo.run_until_done()
    finally:
        demo.stop()
    assert demo.ledger.sent == 12
    assert demo.engineers is not None and demo.engineers.clicks > 0
    feedback = rows(options.db, "SELECT operator, kind, reason FROM feedback WHERE operator != 'system'")
    assert len(feedback) == demo.engineers.clicks
    assert all(reason for _, kind, reason in feedback if kind == "override")  # every override went via the modal
    surfaced = [pid for pid, verdict in demo.ledger.verdicts.items() if verdict == "surface"]
    assert rows(options.db, "SELECT COUNT(*) FROM recommendations WHERE message_ts IS NOT NULL")[0][0] == len(surfaced)
    summary = "\n".join(demo.summary())
    assert "12 predictions sent" in summary and "L_align by quarter of the run" in summary


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_stop_signal_stops_everything_and_the_database_stays_usable(
    tmp_path: Path, sig: signal.Signals, name: str
) -> None:
    """Ctrl-C, and SIGTERM as a service manager sends it (which killed the demo with exit 143, its -wal left)."""
    db = tmp_path / "stopped.db"
    log = (tmp_path / "stderr.log").open("w+", encoding="utf-8")  # a file, not a pipe nobody drains
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "demo", "--port", "0", "--db", str(db), "--auto", "--rate", "300", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("NPO demo running: open http://127.0.0.1:"), first
        url = first.removeprefix("NPO demo running: open ")
        assert "NPO demo" in httpx.get(url, timeout=10).text
        state = httpx.get(url + "state", timeout=10).json()
        assert [c["name"] for c in state["channels"]] == ["incident", "ops"]
        deadline = time.monotonic() + 60
        while _answers(db) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "no answers were stored"
            time.sleep(0.2)
        process.send_signal(sig)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        log.seek(0)
        err = log.read()
        log.close()
    assert process.returncode == 0, err
    assert f"stopped ({name})" in out and "L_align by quarter of the run" in out
    assert not Path(f"{db}-wal").exists()  # the bot closed its store (the WAL checkpointed and removed)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] >= 2
    finally:
        conn.close()
    with SQLiteStore(db, LoopConfig()) as store:  # reopens (migrations, WAL) and reads
        assert store.counts()["predictions"] > 0
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(url, timeout=2)  # nothing is left listening


def _answers(db: Path) -> int:
    """Answers stored so far (0 while the database is still being created)."""
    try:
        return int(rows(db, "SELECT COUNT(*) FROM feedback")[0][0]) if db.exists() else 0
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_bad_options_are_refused_by_name(tmp_path: Path) -> None:
    noisy = demo_cli("--noise", "1.5")
    assert noisy.returncode == 2 and "--noise" in noisy.stderr
    both = demo_cli("--auto", "--skip", "0.8", "--neutral", "0.5", "--db", str(tmp_path / "x.db"))
    assert both.returncode == 2 and "--skip: skip + neutral must be <= 1" in both.stderr
    # Without --auto nobody simulated answers: the engineers' shares would change nothing, so they are refused.
    alone = demo_cli("--noise", "0.3", "--neutral", "0.1", "--db", str(tmp_path / "x.db"))
    assert alone.returncode == 2 and "--noise, --neutral shape the simulated engineers of --auto" in alone.stderr
    missing = demo_cli("--replay", str(tmp_path / "absent.jsonl"), "--db", str(tmp_path / "x.db"), "--port", "0")
    assert missing.returncode == 2 and "--replay: no such file" in missing.stderr
    # An outcome sooner than the simulated engineers answer (1–4 s) closes recommendations unanswered: said first.
    early = demo_cli("--auto", "--outcome-delay", "2", "--skip", "0.8", "--neutral", "0.5")
    assert early.returncode == 2 and "with --outcome-delay 2 the outcome closes many of them" in early.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_file_that_is_not_an_npo_database_is_never_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "notes.db"
    precious.write_text("my notes", encoding="utf-8")
    answer = demo_cli("--db", str(precious), "--port", "0")
    assert answer.returncode == 2 and "not a SQLite database" in answer.stderr
    assert precious.read_text(encoding="utf-8") == "my notes"
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DemoError, match="not an NPO database"):
        prepare_database(other, resume=False)
    assert other.exists()
    with pytest.raises(DemoError, match="is a folder; --db names the SQLite file"):  # not "disk I/O error"
        prepare_database(tmp_path, resume=False)


def test_an_earlier_demo_database_is_replaced_unless_resumed(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    with SQLiteStore(db, LoopConfig()):
        pass
    prepare_database(db, resume=True)
    assert db.exists()
    prepare_database(db, resume=False)
    assert not db.exists()


def test_replay_reports_bad_lines_and_keeps_the_truth_out_of_the_prediction(tmp_path: Path) -> None:
    from bot.demo.scenarios import ReplayStream  # noqa: PLC0415

    good = {"id": "a", "fault_type": "disk", "target": "r1-n1", "action": "drain", "confidence": 0.9}
    path = tmp_path / "p.jsonl"
    lines = [
        json.dumps(good | {"real_fault": False}),
        "{not json",
        json.dumps(good | {"id": "b", "confidence": 7}),
        json.dumps(good | {"id": "c"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stream = ReplayStream(path, noise=Noise(epsilon=0, skip=0, neutral=0))
    assert [item.id for item in stream] == ["a", "c"]
    assert "real_fault" not in stream.items[0].prediction
    assert stream.items[0].answer == "override" and stream.items[1].answer is None
    assert [e.split(":")[0] for e in stream.errors] == ["line 2", "line 3"]
    assert "confidence" in stream.errors[1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # as Windows tools save "UTF-8"
    again = ReplayStream(path, noise=Noise(epsilon=0, skip=0, neutral=0))
    assert [item.id for item in again] == ["a", "c"] and again.errors == stream.errors


def test_replay_reports_a_csv_line_the_csv_module_refuses_and_reads_on(tmp_path: Path) -> None:
    from bot.demo.scenarios import ReplayStream  # noqa: PLC0415

    path = tmp_path / "p.csv"
    header = "id,fault_type,target,action,confidence\n"
    path.write_text(header + f'a,disk,"{"x" * 200_000}",drain,0.9\nb,disk,r1-n1,drain,0.9\n', encoding="utf-8")
    stream = ReplayStream(path)
    assert [item.id for item in stream] == ["b"]
    assert len(stream.errors) == 1 and "(line): invalid CSV: field larger than field limit" in stream.errors[0]


def test_the_page_json_routes_refuse_bad_input_by_field(manual_demo: tuple[Demo, str]) -> None:
    _, url = manual_demo
    json_type = {"Content-Type": "application/json"}  # the page's own; any other is refused 415 first
    bad_json = httpx.post(url + "act", content=b"{", headers=json_type, timeout=10)
    assert bad_json.status_code == 400 and bad_json.json()["field"] == "body"
    missing = httpx.post(url + "act", json={"user": "U0YOU", "channel": "C0INCIDENT", "ts": "1.0"}, timeout=10)
    assert missing.status_code == 400 and missing.json()["field"] == "action_id"
    unknown = httpx.post(
        url + "act", json={"user": "U0YOU", "channel": "C0INCIDENT", "ts": "1.0", "action_id": "npo_like"}, timeout=10
    )
    assert unknown.status_code == 404
    values = httpx.post(url + "submit", json={"user": "U0YOU", "view_id": "V1", "values": [1]}, timeout=10)
    assert values.status_code == 400 and values.json()["field"] == "values"


def test_the_demos_bot_answers_only_a_loopback_host(manual_demo: tuple[Demo, str]) -> None:
    """The demo's bot answered any ``Host``: a web site whose name resolves to 127.0.0.1 (DNS rebinding) could read
    its ``/metrics`` and ``/healthz`` (the learning figures). A request naming another host is refused 403 with a
    one-line JSON error naming the field, before the bot sees it; loopback names, on any port, are answered, and
    the stand-in's signed clicks (addressed to http://127.0.0.1:PORT) still reach the bot."""
    demo, url = manual_demo
    assert demo.server is not None and demo.standin is not None
    bot, port = demo.server.url, demo.server.port
    forged = [f"attacker.example:{port}", "attacker.example", f"127.0.0.1.attacker.example:{port}", "127.0.0.1:x"]
    for host in forged:
        for path in ("/metrics", "/healthz", "/livez"):
            answer = httpx.get(bot + path, headers={"Host": host}, timeout=10)
            assert answer.status_code == 403, (host, path, answer.status_code, answer.text)
            assert "\n" not in answer.text and answer.json()["field"] == "Host", answer.text
            assert "npo_" not in answer.text
        ingest = httpx.post(bot + "/api/v1/predictions", json=SURE_PREDICTION, headers={"Host": host}, timeout=10)
        assert ingest.status_code == 403 and ingest.json()["field"] == "Host"
    # a loopback Host beside a forged one (httpx will not send two; a raw request may): every one must be loopback
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n\r\n".encode())
        assert raw.recv(65536).startswith(b"HTTP/1.1 403 ")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost:8081", "LOCALHOST"):
        metrics = httpx.get(bot + "/metrics", headers={"Host": host}, timeout=10)
        assert metrics.status_code == 200 and "npo_" in metrics.text, (host, metrics.text)
        assert httpx.get(bot + "/healthz", headers={"Host": host}, timeout=10).status_code == 200, host
    deadline = time.monotonic() + 20
    while not demo.standin.messages("C0INCIDENT"):
        assert time.monotonic() < deadline, "the recommendation was never posted"
        time.sleep(0.1)
    ts = demo.standin.messages("C0INCIDENT")[0].ts
    click = {"user": "U0YOU", "channel": "C0INCIDENT", "ts": ts, "action_id": "npo_like"}
    assert httpx.post(url + "act", json=click, timeout=10).json()["status"] == 200
    deadline = time.monotonic() + 20
    while not rows(demo.options.db, "SELECT operator, kind FROM feedback"):
        assert time.monotonic() < deadline, "the click was never stored"
        time.sleep(0.1)
    assert rows(demo.options.db, "SELECT operator, kind FROM feedback") == [("U0YOU", "like")]


def _run_then_resume(options: DemoOptions) -> list[str]:
    """Run the demo with ``options``, then again with ``--resume``; the first line of each run's summary."""
    summaries = []
    for resume in (False, True):
        demo = Demo(replace(options, resume=resume), say=lambda _: None)
        demo.start()
        try:
            demo.run_until_done()
        finally:
            demo.stop()
        summaries.append(demo.summary()[0])
    return summaries


def test_a_resumed_run_summarises_itself_and_its_panel_counts_current_answers(tmp_path: Path) -> None:
    db = tmp_path / "resumed.db"
    summaries = _run_then_resume(DemoOptions(port=0, db=db, count=3, rate_per_min=600))
    second = summaries[-1]
    assert "3 predictions sent" in second
    verdicts = second.split("(", 1)[1].split(")", 1)[0]  # "3 surface, 0 suppress, 0 block, 0 digest"
    assert sum(int(part.split()[0]) for part in verdicts.split(", ")) == 3  # this run's 3, not the file's 6
    assert rows(db, "SELECT COUNT(*) FROM decisions")[0][0] == 6
    with SQLiteStore(db, LoopConfig()) as store:  # one changed answer: the panel counts the person's current one
        (pid,) = rows(db, "SELECT prediction_id FROM recommendations LIMIT 1")[0]
        for kind, request in ((FeedbackKind.LIKE, "r1"), (FeedbackKind.OVERRIDE, "r2")):
            with store.transaction() as tx:
                record_feedback(tx, FeedbackEvent(pid, "U0SOMEONE", kind, time.time(), request), config=store.config)
        counts = panel_data(store)["counts"]
    assert counts["overrides"] == 1 and counts["likes"] == 0


def test_a_resumed_replay_of_the_same_file_says_its_predictions_were_duplicates(tmp_path: Path) -> None:
    """``--replay FILE --resume`` run again: every prediction is already decided, so none is sent. The summary said
    "0 predictions sent" and nothing more; it now says they were duplicates."""
    db, feed = tmp_path / "replayed.db", tmp_path / "feed.jsonl"
    feed.write_text(
        "".join(
            f'{{"id": "f{i}", "fault_type": "disk_failure", "target": "r1-n{i}", "action": "investigate", '
            f'"confidence": 0.9}}\n'
            for i in range(3)
        ),
        encoding="utf-8",
    )
    summaries = _run_then_resume(DemoOptions(port=0, db=db, replay=feed, count=3, rate_per_min=600))
    assert "3 predictions sent" in summaries[0] and "duplicates" not in summaries[0]
    assert "0 predictions sent (3 more were duplicates of ones already decided)" in summaries[1], summaries[1]


def test_the_summary_counts_one_prediction_one_answer_and_one_duplicate_in_the_singular(tmp_path: Path) -> None:
    """The summary said "1 predictions sent", "1 answers stored" and "1 more were duplicates"."""
    db, feed = tmp_path / "one.db", tmp_path / "feed.jsonl"
    feed.write_text(
        '{"id": "f0", "fault_type": "disk_failure", "target": "r1-n0", "action": "investigate", "confidence": 0.9}\n',
        encoding="utf-8",
    )
    options = DemoOptions(port=0, db=db, replay=feed, count=1, rate_per_min=600)
    demo = Demo(options, say=lambda _: None)
    demo.start()
    try:
        demo.run_until_done()
    finally:
        demo.stop()
    with SQLiteStore(db, LoopConfig()) as store, store.transaction() as tx:  # one answer, as a click stores it
        record_feedback(tx, FeedbackEvent("f0", "U0SOMEONE", FeedbackKind.LIKE, time.time(), "r1"), config=store.config)
    first = demo.summary()[0]
    assert "; 1 prediction sent (" in first and "; 1 answer stored" in first, first
    resumed = _run_then_resume(options)[1]  # the same file again: its one prediction is a duplicate
    assert "0 predictions sent (1 more was a duplicate of one already decided)" in resumed, resumed
    assert how_it_stops(None, 1) == "stops after 1 prediction, or on Ctrl-C"


def test_a_counted_run_without_engineers_ends_when_the_last_prediction_is_sent(tmp_path: Path) -> None:
    """``--count 1`` at one prediction a minute: the one is sent at once, and the run ends then, not a minute
    later (the feed's next tick)."""
    demo = Demo(DemoOptions(port=0, db=tmp_path / "one.db", count=1, rate_per_min=1), say=lambda _: None)
    demo.start()
    try:
        started = time.monotonic()
        demo.run_until_done()
        took = time.monotonic() - started
    finally:
        demo.stop()
    assert demo.ledger.sent == 1
    assert took < 20, f"the run went on {took:.0f} s after its only prediction"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--minutes", "inf"),
        ("--minutes", "nan"),
        ("--rate", "nan"),
        ("--outcome-delay", "nan"),
        ("--seed", "-1"),
    ],
)
def test_values_the_demo_cannot_run_with_are_refused_by_name(tmp_path: Path, option: str, value: str) -> None:
    run = demo_cli("--db", str(tmp_path / "x.db"), "--port", "0", "--count", "1", "--rate", "600", option, value)
    assert run.returncode == 2 and option in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_database_folder_or_policy_file_that_cannot_be_used_is_refused_without_a_traceback(tmp_path: Path) -> None:
    nowhere = demo_cli("--db", str(tmp_path / "absent" / "x.db"), "--port", "0")
    assert nowhere.returncode == 2 and "--db" in nowhere.stderr and "does not exist" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr
    policy = tmp_path / "bad.toml"
    policy.write_text("this is = not toml [\n", encoding="utf-8")
    refused = demo_cli("--policy", str(policy), "--db", str(tmp_path / "x.db"), "--port", "0")
    assert refused.returncode == 2 and "--policy" in refused.stderr and "invalid TOML" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_replay_file_that_is_not_utf8_text_is_refused_by_name(tmp_path: Path) -> None:
    binary = tmp_path / "preds.jsonl"
    binary.write_bytes(b"\xff\xfe\x00not text")
    run = demo_cli("--replay", str(binary), "--db", str(tmp_path / "x.db"), "--port", "0")
    assert run.returncode == 2 and "--replay" in run.stderr and "UTF-8" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_second_demo_never_replaces_the_database_of_a_running_one(
    manual_demo: tuple[Demo, str], resume: bool
) -> None:
    """Nor shares it with ``--resume``: two bots on one file mixed their runs' summaries."""
    first, _ = manual_demo
    db = first.options.db
    deadline = time.monotonic() + 30
    while first.ledger.sent < 1:
        assert time.monotonic() < deadline, "the first demo sent nothing"
        time.sleep(0.05)
    second = Demo(DemoOptions(port=0, db=db, resume=resume), say=lambda _: None)
    try:
        with pytest.raises(DemoError, match="in use"):
            second.start()
    finally:
        second.stop()
    assert rows(db, "SELECT COUNT(*) FROM predictions")[0][0] == 1  # the first run's file, still there
    assert first.bot is not None and first.bot.store.counts()["predictions"] == 1


def _demo_args(tmp_path: Path) -> argparse.Namespace:
    replay = tmp_path / "one.jsonl"
    replay.write_text(json.dumps(SURE_PREDICTION) + "\n", encoding="utf-8")
    return build_parser().parse_args(
        ["demo", "--port", "0", "--db", str(tmp_path / "demo.db"), "--replay", str(replay), "--quiet"]
    )


@pytest.mark.parametrize("when", ["before the start", "during the start"])
def test_ctrl_c_while_starting_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """A Ctrl-C while the demo imports or starts its parts (a second or so) ends it like one while it runs: no
    traceback, nothing left half-made."""
    import bot.demo.runner  # noqa: PLC0415
    import bot.demo.scenarios  # noqa: PLC0415

    def interrupting(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kwargs)

        return call

    if when == "before the start":
        monkeypatch.setattr(bot.demo.scenarios, "Noise", interrupting(bot.demo.scenarios.Noise))
    else:
        monkeypatch.setattr(bot.demo.runner, "build_bot", interrupting(bot.demo.runner.build_bot))
    args = _demo_args(tmp_path)
    found = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    try:
        code = run_demo(args)
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C {when} escaped as KeyboardInterrupt (a traceback for the user)")
    assert code == 0
    assert signal.getsignal(signal.SIGINT) is found  # put back for whoever runs next
    out = capsys.readouterr()
    assert "stopped (Ctrl-C)" in out.out + out.err
    if args.db.exists():  # started: stopped cleanly, the file complete
        with SQLiteStore(args.db, LoopConfig()) as store:
            assert store.counts()["predictions"] <= 1
        assert not Path(f"{args.db}-wal").exists()


def test_the_progress_line_says_what_ends_the_run() -> None:
    """``--count`` ends a run by itself too: the line said "Ctrl-C stops it" as if nothing else would."""
    assert how_it_stops(None, None) == "Ctrl-C stops it"
    assert how_it_stops(2.0, None) == "stops after 2 min, or on Ctrl-C"
    assert how_it_stops(None, 40) == "stops after 40 predictions, or on Ctrl-C"
    assert how_it_stops(0.5, 40) == "stops after 0.5 min or 40 predictions, or on Ctrl-C"


def test_a_rate_above_one_post_per_second_says_the_page_falls_behind(tmp_path: Path) -> None:
    # The bot posts at most one message a second per channel (Slack's limit): at --rate 600 most recommendations
    # wait in the outbox, the page lags further and further and few are answered, so it is said first.
    fast = demo_cli("--auto", "--rate", "600", "--skip", "0.8", "--neutral", "0.5")
    assert fast.returncode == 2
    assert "--rate 600: the bot posts at most 60 messages a minute to a channel" in fast.stderr
    at_limit = demo_cli("--auto", "--rate", "60", "--skip", "0.8", "--neutral", "0.5")
    assert at_limit.returncode == 2 and "--rate" not in at_limit.stderr


def test_a_resumed_demo_shows_the_earlier_runs_recommendations_and_they_can_still_be_answered(tmp_path: Path) -> None:
    """The stand-in starts empty: after ``--resume`` the earlier run's recommendations were missing from the page,
    could not be clicked, and each update of them (an outcome, an answer) failed for good with message_not_found."""
    feed = tmp_path / "one.jsonl"
    feed.write_text(json.dumps(SURE_PREDICTION) + "\n", encoding="utf-8")
    db = tmp_path / "resumed.db"
    options = DemoOptions(port=0, db=db, replay=feed, count=1, rate_per_min=600, outcome_delay_s=3600)
    first = Demo(options, say=lambda _: None)
    first.start()
    try:
        first.run_until_done()
        deadline = time.monotonic() + 20
        while not rows(db, "SELECT message_ts FROM recommendations WHERE message_ts IS NOT NULL"):
            assert time.monotonic() < deadline, "the recommendation was never posted"
            time.sleep(0.1)
    finally:
        first.stop()
    ((ts,),) = rows(db, "SELECT message_ts FROM recommendations")
    said: list[str] = []
    second = Demo(replace(options, resume=True), say=said.append)
    url = second.start()
    try:
        assert second.standin is not None and second.server is not None
        state = httpx.get(url + "state", params={"as": "U0YOU"}, timeout=10).json()
        incident = next(ch for ch in state["channels"] if ch["id"] == "C0INCIDENT")
        assert f'data-ts="{ts}"' in incident["html"] and "r12-n04" in incident["html"]
        click = {"user": "U0YOU", "channel": "C0INCIDENT", "ts": ts, "action_id": "npo_like"}
        assert httpx.post(url + "act", json=click, timeout=10).json()["status"] == 200
        deadline = time.monotonic() + 20
        while "Like (1)" not in str(second.standin.messages("C0INCIDENT")[0].blocks):
            assert time.monotonic() < deadline, "the resumed message was never updated"
            time.sleep(0.1)
    finally:
        second.stop()
    assert rows(db, "SELECT operator, kind FROM feedback") == [("U0YOU", "like")]
    assert rows(db, "SELECT COUNT(*) FROM outbox WHERE state = 'failed'") == [(0,)]
