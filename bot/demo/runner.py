"""Start, run and stop the demo: stand-in, bot, database, fault stream and (``--auto``) simulated engineers.

The bot is built by :func:`bot.app.build_bot` from :class:`~bot.config.Settings` exactly as ``npo-bot serve``
builds it (so it runs whatever the service runs), with its Web API pointed at the stand-in and a fresh signing
secret that the stand-in uses to sign every click. Nothing leaves 127.0.0.1, and the bot, like the stand-in, answers
only requests whose ``Host`` is a loopback name (:class:`bot.loopback.LoopbackHostOnly`).
"""

from __future__ import annotations

import errno
import logging
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bot.app import Bot, build_bot
from bot.config import DEFAULT_MISS_WEIGHT, Settings
from bot.demo.actors import Engineers, Feeder, Ledger
from bot.demo.panel import alignment_by_quarter, panel_data
from bot.demo.policy import DEMO_POLICY_TOML
from bot.demo.scenarios import ENGINEERS, BuiltinStream, Noise, ReplayStream, StreamItem
from bot.demo.surfacing import Decided, surfacing
from bot.ingest.replay import UnreadableFile
from bot.loopback import LoopbackHostOnly
from bot.output import counted
from bot.serve import ServerThread
from bot.slack.blocks import fallback_text, recommendation_blocks
from bot.standin import StandIn
from bot.standin.live import MAX_MESSAGES_SHOWN
from bot.standin.store import Message
from npo.policy import PolicyError
from storage import StorageError
from storage.maintenance import in_use, table_names
from storage.outbox import own_messages

log = logging.getLogger(__name__)

__all__ = ["Demo", "DemoError", "DemoOptions"]

TOKEN = "xoxb-npo-demo"
INCIDENT = "C0INCIDENT"
OPS = "C0OPS"
YOU = ("U0YOU", "you")
DEFAULT_PORT = 8765
AUTO_RATE, MANUAL_RATE = 60.0, 6.0  # predictions per minute
AUTO_OUTCOME_S, MANUAL_OUTCOME_S = 30.0, 180.0
DRAIN_TIMEOUT_S = 30.0  # with --count: how long to wait for the last answers


class DemoError(RuntimeError):
    """The demo cannot start (a clear message for the user)."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``npo-bot demo`` was asked for (see its ``--help``). ``rate_per_min`` and ``outcome_delay_s``
    default to a brisk pace with ``auto`` and a human one without."""

    port: int = DEFAULT_PORT
    db: Path = Path("npo-demo.db")
    resume: bool = False
    auto: bool = False
    minutes: float | None = None
    count: int | None = None
    rate_per_min: float | None = None
    outcome_delay_s: float | None = None
    noise: Noise = field(default_factory=Noise)
    seed: int = 0
    miss_weight: float | None = None  # the bandit's miss weight; None: the bot's default (NPO_MISS_WEIGHT)
    replay: Path | None = None
    policy_file: Path | None = None

    @property
    def rate(self) -> float:
        return self.rate_per_min or (AUTO_RATE if self.auto else MANUAL_RATE)

    @property
    def outcome_delay(self) -> float:
        return (
            self.outcome_delay_s
            if self.outcome_delay_s is not None
            else (AUTO_OUTCOME_S if self.auto else MANUAL_OUTCOME_S)
        )


def prepare_database(path: Path, *, resume: bool) -> None:
    """Start a fresh demo database at ``path`` (removing an earlier *NPO* database there) unless ``resume``.

    Refuses (DemoError) to remove a file that is not an NPO SQLite database, to remove or resume one that another
    program (a demo still running) has open, or to resume from a file that is not an NPO database.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise DemoError(f"{path} is a folder; --db names the SQLite file (e.g. {path / 'npo-demo.db'})")
    try:
        tables = table_names(path)
    except sqlite3.DatabaseError as exc:
        raise DemoError(f"{path} exists and is not a SQLite database ({exc}); choose another --db") from None
    if tables and not {"decisions", "feedback", "outbox"} <= tables:
        raise DemoError(f"{path} exists and is not an NPO database; choose another --db")
    if in_use(path):  # neither replaced nor shared: two bots on one file mix their runs
        raise DemoError(f"{path} is in use by another program (a demo still running?); stop it or choose another --db")
    if resume:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class Demo:
    """The running demo. :meth:`start` returns the page URL; :meth:`run_until_done` waits for ``--minutes`` /
    ``--count`` (or forever); :meth:`stop` stops everything (idempotent) and leaves the database closed and
    consistent. ``say`` receives the lines meant for the user."""

    def __init__(self, options: DemoOptions, *, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self.ledger = Ledger()
        self.standin: StandIn | None = None
        self.bot: Bot | None = None
        self.server: ServerThread | None = None
        self.feeder: Feeder | None = None
        self.engineers: Engineers | None = None
        self.started_at = 0.0
        self.ended_at: float | None = None
        self._answers_before = 0  # answers already in the file (``--resume``): the summary counts this run's
        self.stopping = threading.Event()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stopped = False

    # ---- start ---------------------------------------------------------------------------------------------
    def _stream(self) -> Iterable[StreamItem]:
        o = self.options
        if o.replay is None:
            return BuiltinStream(seed=o.seed, noise=o.noise, run_tag=f"demo-{secrets.token_hex(2)}")
        if not o.replay.is_file():
            raise DemoError(f"--replay: no such file: {o.replay}")
        try:
            stream = ReplayStream(o.replay, seed=o.seed, noise=o.noise)
        except UnreadableFile as exc:  # not UTF-8 (the line named), or unreadable
            raise DemoError(f"--replay: {exc}") from None
        for error in stream.errors:
            self.say(f"{o.replay}: {error} (skipped)")
        if not stream.items:
            raise DemoError(f"--replay: no valid prediction in {o.replay}")
        return stream

    def _start_standin(self) -> StandIn:
        channels = {INCIDENT: "incident", OPS: "ops"}
        standin = StandIn(token=TOKEN, port=self.options.port, channels=channels)
        try:
            standin.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.options.port == 0:
                raise DemoError(f"cannot listen on 127.0.0.1:{self.options.port}: {exc.strerror}") from None
            self.say(f"port {self.options.port} is busy; using a free port instead")
            standin = StandIn(token=TOKEN, port=0, channels=channels).start()
        for user_id, name in (*ENGINEERS, YOU):
            standin.add_user(user_id, name=name, real_name=name.capitalize())
        return standin

    def _settings(self, standin: StandIn, secret: str, policy: Path) -> Settings:
        responders = tuple(u for u, _ in (*ENGINEERS, YOU))
        miss_weight = DEFAULT_MISS_WEIGHT if self.options.miss_weight is None else self.options.miss_weight
        return Settings(
            slack_bot_token=TOKEN,
            slack_signing_secret=secret,
            ingest_token=secrets.token_urlsafe(24),
            incident_channel=INCIDENT,
            ops_channel=OPS,
            slack_api_url=standin.api_url,
            db_path=self.options.db,
            port=0,
            responders=responders,
            policy_file=policy,
            skip_timeout_min=2.0,
            miss_weight=miss_weight,
            digest_delay_s=60.0,
            slack_timeout_s=5.0,
        )

    def start(self) -> str:
        """Start every part; returns the page URL. Raises DemoError (nothing left running) when it cannot."""
        o = self.options
        try:
            prepare_database(o.db, resume=o.resume)
            stream = self._stream()
            policy = o.policy_file
            if policy is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="npo-demo-")
                policy = Path(self._tmp.name) / "demo_policy.toml"
                policy.write_text(DEMO_POLICY_TOML, encoding="utf-8")
            elif not policy.is_file():
                raise DemoError(f"--policy: no such file: {policy}")
            self.standin = standin = self._start_standin()
            secret = secrets.token_hex(16)
            settings = self._settings(standin, secret, policy)
            self.bot = build_bot(settings, seed=o.seed)
            # Only this machine's names in Host: a site whose name resolves to 127.0.0.1 (DNS rebinding) must not
            # read the bot's /metrics or /healthz. ``npo-bot serve`` has no such check (behind a proxy its Host is
            # the public name).
            self.server = ServerThread(LoopbackHostOnly(self.bot.asgi)).start()
            standin.bot_url = f"{self.server.url}/slack/events"
            standin.signing_secret = secret
            standin.live.title = "NPO demo — #incident and #ops"
            standin.live.default_user = YOU[0]
            bot = self.bot
            if o.resume:
                _restore_messages(standin, bot)
            standin.live.panel = lambda: panel_data(bot.store, self.status)
            self._answers_before = _answers(bot.store.counts())
            self.started_at = time.time()
            self.feeder = Feeder(
                stream,
                self.ledger,
                base_url=self.server.url,
                ingest_token=settings.ingest_token,
                rate_per_min=o.rate,
                outcome_delay_s=o.outcome_delay,
                limit=o.count,
            )
            self.feeder.start()
            if o.auto:
                self.engineers = Engineers(standin, self.ledger, INCIDENT, seed=o.seed)
                self.engineers.start()
        except StorageError as exc:  # the database cannot be used (a missing folder, …)
            self.stop()
            raise DemoError(f"--db: {exc}") from None
        except PolicyError as exc:
            self.stop()
            raise DemoError(f"--policy: the policy file is refused: {exc}") from None
        except BaseException:
            self.stop()
            raise
        return f"{standin.url}/ui/"

    # ---- run -----------------------------------------------------------------------------------------------
    def status(self) -> str:
        o = self.options
        who = (
            f"{len(ENGINEERS)} simulated engineers answer (ε = {o.noise.epsilon:g}, skip {o.noise.skip:g})"
            if o.auto
            else "you answer: click Like, Override or Neutral"
        )
        elapsed = (self.ended_at or time.time()) - self.started_at
        left = ""
        if o.minutes is not None and self.ended_at is None:
            remaining = max(0.0, o.minutes * 60 - elapsed)
            left = f" · {int(remaining // 60)}:{int(remaining % 60):02d} left"
        source = f"replaying {o.replay.name}" if o.replay else f"{o.rate:g} predictions/min"
        return f"{source} · {who} · {self.ledger.sent} sent{left}"

    def run_until_done(self) -> None:
        """Block until ``--minutes`` have passed, ``--count`` predictions were sent and answered, or
        :meth:`request_stop` (which ``npo-bot demo`` calls at Ctrl-C and SIGTERM)."""
        o = self.options
        deadline = self.started_at + o.minutes * 60 if o.minutes is not None else None
        drained_by: float | None = None
        while not self.stopping.wait(0.2):
            now = time.time()
            if deadline is not None and now >= deadline:
                break
            feeder = self.feeder
            if o.count is not None and feeder is not None and feeder.done.is_set():
                drained_by = drained_by or now + DRAIN_TIMEOUT_S
                if not o.auto or self.ledger.unanswered() == 0 or now >= drained_by:
                    break
        self.ended_at = time.time()

    def request_stop(self) -> None:
        self.stopping.set()

    # ---- stop ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the feed and the engineers, then the bot (its worker finishes the message in flight), then the
        stand-in. Idempotent; the database is closed cleanly."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        self.ended_at = self.ended_at or time.time()
        for actor in (self.feeder, self.engineers):
            if actor is not None:
                actor.stop()
                actor.join(15)
        if self.server is not None:
            self.server.stop()
        if self.bot is not None:
            self.bot.close()
        if self.standin is not None:
            self.standin.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def summary(self) -> list[str]:
        """What happened, for the terminal (after :meth:`stop`: reads the closed database afresh)."""
        from storage import SQLiteStore  # noqa: PLC0415 - a fresh read-only look after the bot closed its store

        if self.bot is None:
            return []
        end = self.ended_at or time.time()
        elapsed = end - self.started_at
        lines = [f"ran {int(elapsed // 60)}:{int(elapsed % 60):02d}; {counted(self.ledger.sent, 'prediction')} sent"]
        if self.ledger.duplicates == 1:  # with --resume, a replayed file's predictions already decided in a run before
            lines[0] += " (1 more was a duplicate of one already decided)"
        elif self.ledger.duplicates:
            lines[0] += f" ({self.ledger.duplicates} more were duplicates of ones already decided)"
        with self.ledger.lock:
            sent = [(pid, str(item.prediction.get("fault_type", ""))) for pid, item in self.ledger.items.items()]
        with SQLiteStore(self.options.db, self.bot.store.config) as store:
            counts = store.counts()
            quarters = alignment_by_quarter(store, self.started_at, end)
            decided = [
                Decided(fault_type, d.verdict.value, d.threshold, d.decided_at)
                for pid, fault_type in sent
                if (d := store.decision(pid)) is not None
            ]
        verdicts = ", ".join(  # of this run's predictions (with --resume the file holds earlier runs' too)
            f"{sum(1 for d in decided if d.verdict == v)} {v}" for v in ("surface", "suppress", "block", "digest")
        )
        answers = _answers(counts) - self._answers_before
        lines[0] += f" ({verdicts}); {counted(answers, 'answer')} stored"
        if self.engineers is not None:
            lines[0] += f" ({self.engineers.clicks} by simulated engineers)"
        shown = " → ".join("–" if q.loss is None else f"{q.loss:.3f}" for q in quarters)
        lines.append(f"L_align by quarter of the run: {shown} (answers: {', '.join(str(q.n) for q in quarters)})")
        first, last = quarters[0].loss, quarters[-1].loss
        if first is not None and last is not None:
            trend = "lower" if last < first else "not lower"
            lines.append(f"L_align in the last quarter is {trend} than in the first ({last:.3f} vs {first:.3f})")
        lines.extend(surfacing(decided, self.started_at, end).lines())
        lines.append(
            f"database: {self.options.db} (inspect with: npo-bot db export --what feedback --db {self.options.db})"
        )
        return lines


def _restore_messages(standin: StandIn, bot: Bot) -> None:
    """Put the newest recommendations the earlier run posted back into the (new, empty) stand-in, at their ts and as
    the bot would render them now, so that with ``--resume`` they are on the page, can still be answered, and their
    updates find their message (Slack keeps a channel's messages; the stand-in keeps them only while it runs)."""
    with bot.store.read() as conn:
        posted = own_messages(conn, MAX_MESSAGES_SHOWN)
    for prediction_id, channel, ts in posted:
        view = bot.service.recommendation(prediction_id)
        if view is not None:
            standin.store.add_message(Message(channel, ts, fallback_text(view), recommendation_blocks(view)))


def _answers(counts: dict[str, int]) -> int:
    """Every answer row stored (changed answers and skips included), from :meth:`storage.SQLiteStore.counts`."""
    return sum(counts.get(f"feedback_{k}", 0) for k in ("like", "override", "neutral", "skipped"))
