"""Run the stand-in on its own: ``python -m bot.standin --port 0 --token xoxb-test --bot-url URL --secret S``.

Prints the page URL and the Web API base URL, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence

from bot.standin.server import StandIn


def _pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value or key.lower()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.standin", description="Local Slack Web API stand-in.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--token", default="xoxb-standin", help="the only bot token accepted")
    parser.add_argument("--bot-url", help="the bot's request URL, for clicks from the web page")
    parser.add_argument("--secret", help="the bot's signing secret, for clicks from the web page")
    parser.add_argument("--channel", action="append", default=[], metavar="ID[=NAME]", help="a known channel")
    parser.add_argument("--user", action="append", default=[], metavar="ID[=NAME]", help="a known user")
    parser.add_argument("--enforce-channel-rate", action="store_true", help="429 on > 1 msg/s per channel")
    args = parser.parse_args(argv)

    channels = dict(_pair(c) for c in args.channel) or None
    standin = StandIn(
        token=args.token,
        port=args.port,
        channels=channels,
        enforce_channel_rate=args.enforce_channel_rate,
        bot_url=args.bot_url,
        signing_secret=args.secret,
    )
    for user_id, name in (_pair(u) for u in args.user):
        standin.add_user(user_id, name=name)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        standin.start()
    except OSError as exc:  # the port is taken, or not ours to bind
        print(f"python -m bot.standin: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        print(f"stand-in: {standin.url}", flush=True)
        print(f"api_url: {standin.api_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
