"""``npo-bot demo``: its options and the foreground run (one URL printed; Ctrl-C or SIGTERM stops everything
cleanly).

Only argparse is imported at module level so that ``npo-bot --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.demo.runner import Demo

__all__ = ["add_demo_parser", "run_demo"]

EPILOG = """\
examples:
  npo-bot demo                         open the printed URL and answer the recommendations yourself
  npo-bot demo --auto --minutes 2      simulated engineers answer; stops after 2 minutes with a summary
  npo-bot demo --auto --noise 0.3      noisier engineers (30 % of answers flipped)
  npo-bot demo --replay preds.jsonl    your own predictions (npo-bot replay's format; optional real_fault)
"""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value:g}")
    return value


def _positive(kind: type[Any]) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not 0 < value < math.inf:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return convert


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _miss_weight(text: str) -> float:
    from bot.config import MISS_WEIGHT_MAX  # noqa: PLC0415 - keep `npo-bot --help` fast

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, {MISS_WEIGHT_MAX:g}], got {text!r}") from None
    if not 0.0 <= value <= MISS_WEIGHT_MAX:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, {MISS_WEIGHT_MAX:g}], got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {value}")
    return value


def add_demo_parser(sub: Any) -> None:
    """Register ``demo`` on the ``npo-bot`` sub-command parser."""
    demo = sub.add_parser(
        "demo",
        help="the whole loop locally: Slack stand-in, bot, SQLite, fault stream, one URL (no Slack account)",
        description="Run NPO end to end on this machine with a local Slack stand-in and print the page URL. "
        "Nothing leaves 127.0.0.1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--port", type=_port, default=8765, help="page port on 127.0.0.1 (default 8765; 0: any free)")
    demo.add_argument(
        "--db", type=Path, default=Path("npo-demo.db"), help="SQLite file (default ./npo-demo.db, replaced at start)"
    )
    demo.add_argument("--resume", action="store_true", help="continue with the existing --db instead of replacing it")
    demo.add_argument("--auto", action="store_true", help="simulated engineers answer the recommendations")
    demo.add_argument("--minutes", type=_positive(float), help="stop after this many minutes (default: at Ctrl-C)")
    demo.add_argument(
        "--count",
        type=_positive(int),
        help="stop after this many predictions are sent (with --auto: and answered, waiting at most 30 s)",
    )
    demo.add_argument("--rate", type=_positive(float), help="predictions per minute (default 60 with --auto, else 6)")
    demo.add_argument(
        "--outcome-delay",
        type=float,
        help="seconds until a prediction's true outcome is reported (default 30 with --auto, else 180)",
    )
    demo.add_argument("--noise", type=_fraction, help="with --auto: share of answers flipped (default 0.1)")
    demo.add_argument("--skip", type=_fraction, help="with --auto: share of recommendations nobody answers (0.1)")
    demo.add_argument("--neutral", type=_fraction, help="with --auto: share of neutral answers (default 0.03)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed of the fault stream (default 0)")
    demo.add_argument(
        "--miss-weight",
        type=_miss_weight,
        metavar="W",
        help="what a suppressed real fault costs the threshold bandit, in answers (0-10; default 3, the bot's)",
    )
    demo.add_argument("--replay", type=Path, metavar="FILE", help="send the predictions of FILE instead (JSONL/CSV)")
    demo.add_argument("--policy", type=Path, metavar="FILE", help="safety policy TOML (default: the demo policy)")
    demo.add_argument("--quiet", action="store_true", help="print only the URL, the summary and errors")


POSTS_PER_MIN = 60.0  # the bot posts at most one message a second per channel (bot/delivery.py)

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class _Stops:
    """The handler of Ctrl-C and SIGTERM: they ask the demo to stop instead of interrupting whatever runs (imports,
    start-up, the run, the clean stop), so a start-up completes and then everything stops as at the end of
    ``--minutes``. ``received`` names the signals in order; ``demo`` is the demo to stop once it exists."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.demo: Demo | None = None

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(STOP_SIGNALS[signal.Signals(sig)])
        if self.demo is not None:
            self.demo.request_stop()


def how_it_stops(minutes: float | None, count: int | None) -> str:
    """The progress line's ending: what ends the run (``--minutes``, ``--count``, else only Ctrl-C)."""
    limits = ([f"{minutes:g} min"] if minutes else []) + (
        [f"{count} prediction{'' if count == 1 else 's'}"] if count else []
    )
    return f"stops after {' or '.join(limits)}, or on Ctrl-C" if limits else "Ctrl-C stops it"


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo in the foreground; 0 on a normal end, Ctrl-C or SIGTERM, 2 when it cannot start."""
    stops = _Stops()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals are handled on the main thread only
        previous = {sig: signal.signal(sig, stops) for sig in STOP_SIGNALS}
    try:
        return _run(args, stops)
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(sig, handler)


def _run(args: argparse.Namespace, stops: _Stops) -> int:
    import logging  # noqa: PLC0415 - keep `npo-bot --help` fast

    from bot.demo.runner import Demo, DemoError, DemoOptions  # noqa: PLC0415
    from bot.demo.scenarios import Noise  # noqa: PLC0415
    from npo.types import InvalidRecord  # noqa: PLC0415

    if args.outcome_delay is not None and not args.outcome_delay >= 0:  # also refuses nan
        print("npo-bot demo: --outcome-delay must be >= 0", file=sys.stderr)
        return 2
    from bot.demo.actors import ANSWER_DELAY_S  # noqa: PLC0415

    if args.auto and args.outcome_delay is not None and args.outcome_delay < ANSWER_DELAY_S[1]:
        # An outcome closes the recommendation (its buttons go) before a late engineer answers.
        print(
            f"npo-bot demo: note: the simulated engineers answer {ANSWER_DELAY_S[0]:g}–{ANSWER_DELAY_S[1]:g} s after "
            f"a recommendation appears; with --outcome-delay {args.outcome_delay:g} the outcome closes many of them "
            "before anyone answers",
            file=sys.stderr,
        )
    if args.rate is not None and args.rate > POSTS_PER_MIN:
        # The bot spaces its posts >= 1 s per channel (Slack's limit): the rest wait in the outbox.
        print(
            f"npo-bot demo: note: --rate {args.rate:g}: the bot posts at most {POSTS_PER_MIN:g} messages a minute "
            "to a channel (Slack's limit), so the page falls further and further behind the predictions sent and "
            "few recommendations are answered",
            file=sys.stderr,
        )
    shaping = {"epsilon": args.noise, "neutral": args.neutral, "skip": args.skip}
    if not args.auto and any(value is not None for value in shaping.values()):
        given = [f"--{name}" for name in ("noise", "skip", "neutral") if getattr(args, name) is not None]
        print(
            f"npo-bot demo: {', '.join(given)} shape the simulated engineers of --auto; without --auto only you "
            "answer: add --auto or leave them out",
            file=sys.stderr,
        )
        return 2
    try:
        noise = Noise(**{name: value for name, value in shaping.items() if value is not None})
    except InvalidRecord as exc:
        print(f"npo-bot demo: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "uvicorn", "apscheduler", "bot.jobs", "bot.slack.bolt", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    options = DemoOptions(
        port=args.port,
        db=args.db,
        resume=args.resume,
        auto=args.auto,
        minutes=args.minutes,
        count=args.count,
        rate_per_min=args.rate,
        outcome_delay_s=args.outcome_delay,
        noise=noise,
        seed=args.seed,
        miss_weight=args.miss_weight,
        replay=args.replay,
        policy_file=args.policy,
    )
    demo = stops.demo = Demo(options, say=lambda line: print(f"npo-bot demo: {line}", file=sys.stderr))
    if stops.received:  # while Python imported the demo: nothing was started
        print(f"npo-bot demo: stopped ({stops.received[0]}) before it started", file=sys.stderr)
        return 0
    try:
        url = demo.start()
    except DemoError as exc:
        print(f"npo-bot demo: {exc}", file=sys.stderr)
        return 2
    if not stops.received:
        print(f"NPO demo running: open {url}", flush=True)
        if not args.quiet:
            print(f"  ({demo.status()}; {how_it_stops(args.minutes, args.count)})", flush=True)
    try:
        demo.run_until_done()  # returns at once after a signal (Demo.request_stop)
    finally:
        demo.stop()  # a further signal cannot cut it short: the handler only asks to stop again
    if stops.received:
        print(f"\nstopped ({stops.received[0]})")
    for line in demo.summary():
        print(line)
    return 0
