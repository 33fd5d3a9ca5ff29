"""``npo-bot policy check [FILE]``: read a Safety Policy file as the bot would, before it is deployed or reloaded.

The file is read exactly as ``serve`` reads ``NPO_POLICY_FILE`` at start-up and ``POST /api/v1/policy/reload``
reads it (:func:`bot.http.policy_route.read_policy_file`: UTF-8 with or without a byte-order mark, an empty file
refused, time zones resolved). Without ``FILE`` the built-in default is checked. It prints the policy in effect,
every omitted rule at its default (``--json``: the same as one JSON object), so a typo that parses — a freeze window
on the wrong day — shows. ``--try PREDICTION`` (a prediction as ``POST /api/v1/predictions`` takes it) also prints
the verdict the file's rules give it at ``--at`` (default: now) in a quiet world: no open recommendations, no
override, no mute, nothing surfaced this hour — the rules that count (blast radius, cool-down, hourly cap) can only
hold back more in the running bot. ``--at`` without ``--try`` is refused (exit 2): the policy shown is the same at
any time.

Exit status: 0 the file is accepted (and the prediction, if any, is read); 1 the file or the prediction is refused,
with one line on stderr naming the file, line and field; 2 an option is refused; 141 the reader went away.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.output import print_result

_DESCRIPTION = (
    "Check a Safety Policy file as `npo-bot serve` and the reload endpoint read it, and print the policy in effect "
    "(every omitted rule at its default). Exit 0 accepted, 1 the file (its line and field named) or the --try "
    "prediction refused, 2 bad option."
)


def add_policy_parser(subparsers: Any) -> None:
    """Register ``policy check`` on the ``npo-bot`` subparsers object."""
    policy = subparsers.add_parser("policy", help="check a Safety Policy file before deploying or reloading it")
    sub = policy.add_subparsers(dest="policy_command", metavar="POLICY_COMMAND", required=True)
    check = sub.add_parser("check", help="read a policy file as the bot would; print the policy in effect",
                           description=_DESCRIPTION)  # fmt: skip
    check.add_argument("file", type=Path, nargs="?", default=None, help="the policy file (default: the built-in one)")
    check.add_argument("--json", action="store_true", help="print the policy in effect as one JSON object")
    check.add_argument(
        "--try",
        dest="try_prediction",
        metavar="PREDICTION",
        default=None,
        help='a prediction as the ingest API takes it, e.g. \'{"id":"x","fault_type":"disk_failure",'
        '"target":"db-01","action":"drain","confidence":0.9}\': print the verdict the rules give it',
    )
    check.add_argument(
        "--at",
        default=None,
        help="the time of the --try verdict (only with --try), ISO 8601, UTC without an offset; default: now",
    )


def _time(text: str | None) -> float:
    if text is None:
        return time.time()
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _verdict(policy: Any, raw: str, now: float) -> dict[str, object]:
    """The verdict the policy's rules give the prediction in ``raw`` at ``now``, in a quiet world (``at``,
    ``outcome``, ``rule``, ``reason``). Raises ValueError naming what is wrong with ``raw``."""
    from bot.ingest import keys_twice  # noqa: PLC0415 - keep `npo-bot --help` fast
    from bot.ingest.records import prediction_from_json  # noqa: PLC0415
    from npo.policy import PolicyContext, evaluate  # noqa: PLC0415
    from npo.scoring import scenario_key  # noqa: PLC0415
    from npo.types import InvalidRecord  # noqa: PLC0415

    try:
        obj, twice = keys_twice.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--try is not JSON: {exc.msg} at character {exc.pos}") from None
    if twice:  # the ingest API refuses it: json.loads would keep one of the two values without a word
        raise ValueError(f"--try: {keys_twice.key_twice(obj) or '(record)'}: {keys_twice.KEY_TWICE}")
    try:
        prediction = prediction_from_json(obj, received_at=now)
    except InvalidRecord as exc:
        raise ValueError(f"--try: {exc.field}: {exc.message}") from None
    channel = prediction.channel or "(the incident channel)"
    verdict = evaluate(policy, prediction, scenario_key(prediction), channel, PolicyContext(now=now))
    at = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    return {"at": at, "outcome": verdict.outcome, "rule": verdict.rule, "reason": verdict.reason}


def run_policy(args: argparse.Namespace) -> int:
    """Run ``npo-bot policy check``; see the module docstring for the exit status."""
    from bot.http.policy_route import read_policy_file  # noqa: PLC0415 - keep `npo-bot --help` fast
    from npo.policy import DEFAULT_POLICY, PolicyError, policy_to_dict  # noqa: PLC0415

    try:
        now = _time(args.at)
    except ValueError:
        print(f"npo-bot policy check: --at {args.at!r} is not an ISO 8601 time (2026-11-27T18:30)", file=sys.stderr)
        return 2
    if args.at is not None and args.try_prediction is None:  # the policy shown does not depend on a time
        print("npo-bot policy check: --at is the time of a --try verdict: give --try PREDICTION too", file=sys.stderr)
        return 2
    source = "the built-in default policy" if args.file is None else str(args.file)
    try:
        policy = DEFAULT_POLICY if args.file is None else read_policy_file(args.file)
    except PolicyError as exc:
        # A file that cannot be read at all is refused as the file, not as the NPO_POLICY_FILE setting (not used here).
        why = exc.message if exc.field == "NPO_POLICY_FILE" else str(exc)
        print(f"npo-bot policy check: {args.file}: refused: {why}", file=sys.stderr)
        return 1
    verdict = None
    if args.try_prediction is not None:
        try:
            verdict = _verdict(policy, args.try_prediction, now)
        except ValueError as exc:
            print(f"npo-bot policy check: {exc}", file=sys.stderr)
            return 1
    shown: dict[str, object] = policy_to_dict(policy)
    if args.json:
        return print_result(json.dumps(shown if verdict is None else {"policy": shown, "try": verdict}), "policy check")
    lines = [f"{source}: accepted; the policy in effect (omitted rules at their defaults):"]
    lines.append(json.dumps(shown, ensure_ascii=False, indent=2))
    if verdict is not None:
        lines.append(
            f"--try at {verdict['at']}: {verdict['outcome']} (rule {verdict['rule']}): {verdict['reason']}"
            " — in a quiet world: blast radius, cool-down, hourly cap and mutes can hold back more in the bot"
        )
    return print_result("\n".join(lines), "policy check")
