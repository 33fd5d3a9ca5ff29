"""``GET /metrics`` is valid Prometheus text exposition (format 0.0.4) whatever the data: read back by a strict parser
after deliveries that failed with awkward error texts (quotes, backslashes, line feeds, non-ASCII) and predictions
with awkward ids, over real HTTP with the stand-in as Slack."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import httpx
from slack_testing import BotUnderTest, prediction, wait_for

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf)|NaN")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
Series = tuple[str, tuple[tuple[str, str], ...]]


def _label_set(line: str, at: int) -> tuple[dict[str, str], int]:
    """The labels of ``line`` from the ``{`` at ``at``, decoded; the index after the closing ``}``."""
    labels: dict[str, str] = {}
    at += 1
    while line[at : at + 1] != "}":
        match = LABEL_NAME.match(line, at)
        assert match and line[match.end() : match.end() + 2] == '="', f"bad label in {line!r}"
        name, at, value = match.group(), match.end() + 2, []
        while True:
            assert at < len(line), f"unterminated label value (a raw line feed?) in {line!r}"
            if line[at] == '"':
                break
            if line[at] == "\\":
                escapes = {"\\": "\\", '"': '"', "n": "\n"}
                assert line[at + 1 : at + 2] in escapes, f"bad escape in {line!r}"
                value.append(escapes[line[at + 1]])
                at += 2
            else:
                value.append(line[at])
                at += 1
        assert name not in labels, f"label {name} twice in {line!r}"
        labels[name] = "".join(value)
        at += 1
        assert line[at : at + 1] in (",", "}"), f"bad separator in {line!r}"
        at += line[at] == ","
    return labels, at + 1


def parse_exposition(text: str) -> dict[Series, float]:
    """Every sample of ``text`` by (name, sorted labels); fails on anything the text format does not allow: a bad
    metric or label name, an unknown escape, a raw line feed in a label value (it splits the line), a duplicate
    series, a family without HELP and TYPE (or with them after its samples, or split in two), a counter not named
    ``*_total``, a value that is not a number."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[Series, float] = {}
    families: list[str] = []
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, *rest = line.split(" ", 3)
            assert NAME.fullmatch(name) and name not in families, f"bad or late {kind}: {line!r}"
            if kind == "TYPE":
                assert name not in types and rest and rest[0] in TYPES, line
                types[name] = rest[0]
            else:
                assert name not in helps and rest and rest[0].strip(), line
                helps.add(name)
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected line {line!r}"
        match = NAME.match(line)
        assert match, f"bad metric name in {line!r}"
        name, at = match.group(), match.end()
        labels: dict[str, str] = {}
        if line[at : at + 1] == "{":
            labels, at = _label_set(line, at)
        value = line[at:].removeprefix(" ")
        assert line[at : at + 1] == " " and VALUE.fullmatch(value), f"bad value in {line!r}"
        key = (name, tuple(sorted(labels.items())))
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(value)
        family = next(
            (name[: -len(s)] for s in ("_bucket", "_sum", "_count") if types.get(name[: -len(s)]) == "histogram"),
            name,
        )
        if not families or families[-1] != family:
            assert family not in families, f"the samples of {family} are not together"
            families.append(family)
    for family in families:
        assert family in types and family in helps, f"{family} has no TYPE or no HELP line"
    for name, kind in types.items():
        assert kind != "counter" or name.endswith("_total"), f"counter {name} is not named *_total"
        if kind == "histogram":
            _check_histogram(name, samples)
    return samples


def _check_histogram(name: str, samples: dict[Series, float]) -> None:
    """Each series of histogram ``name``: buckets cumulative up to ``le="+Inf"``, which equals ``_count``, and a
    ``_sum``."""
    buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (sample, labels), value in samples.items():
        if sample == f"{name}_bucket":
            le = dict(labels)["le"]
            rest = tuple(pair for pair in labels if pair[0] != "le")
            buckets.setdefault(rest, []).append((float(le), value))
    for labels, series in buckets.items():
        series.sort()
        assert series[-1][0] == math.inf, f"{name}{labels} has no +Inf bucket"
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(series)), f"{name}{labels} not cumulative"
        assert samples.get((f"{name}_count", labels)) == series[-1][1], f"{name}{labels}: _count is not +Inf"
        assert (f"{name}_sum", labels) in samples, f"{name}{labels} has no _sum"


HISTOGRAM = (
    '# HELP h A.\n# TYPE h histogram\nh_bucket{le="0.1"} 1\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 3\nh_sum 0.5\n'
    "h_count 3\n"
)


def test_the_parser_refuses_what_the_format_does_not_allow() -> None:
    assert parse_exposition(HISTOGRAM)[("h_count", ())] == 3
    good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"b\\\\n\\n"} 1\n'
    assert parse_exposition(good) == {("a_total", (("x", 'q"b\\n\n'),)): 1.0}
    for bad in (
        good + 'a_total{x="q\\"b\\\\n\\n"} 2\n',  # duplicate series
        good.replace("a_total{", "a_total {"),
        good.replace('\\n"', '\n"'),  # raw line feed
        good.replace("\\\\n", "\\t"),  # unknown escape
        good.replace("# HELP a_total A.\n", ""),
        good.replace("a_total", "a"),  # a counter not named *_total
        good.replace("} 1", "} one"),
        HISTOGRAM.replace('le="+Inf"} 3', 'le="+Inf"} 1'),  # buckets not cumulative, _count not the +Inf bucket
        HISTOGRAM.replace('h_bucket{le="+Inf"} 3\n', ""),
        HISTOGRAM.replace("h_sum 0.5\n", ""),
    ):
        try:
            parse_exposition(bad)
        except AssertionError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_metrics_stay_valid_with_awkward_errors_and_ids(bot: BotUnderTest) -> None:
    # Slack's own error codes label the failure counter; any other error text (here, awkward ones that differ
    # only in a line feed versus a space) is counted as ``other``, never as free text.
    errors = [
        'bad "error" \\ C:\\tmp\nsecond line',
        'bad "error" \\ C:\\tmp second line',
        "ünï©ødé ✓ 🚀",
        "channel_not_found",
    ]
    for error in errors:
        bot.standin.faults.error("chat.postMessage", error)
    # one more than the errors: one is sent (a name may hold no control character, so no line feed here)
    awkward = ['q"uote', "back\\slash", 'brace{le="x"}', "ünï©ødé 🚀", "plain"]
    for i, text in enumerate(awkward):
        response = bot.ingest(prediction(f"p{i}-{text}", fault_type=f"f{i}{text}", target=f"t{text}"))
        assert response.status_code == 200, response.text
    wait_for(lambda: len(bot.bot.store.outbox("failed")) == len(errors) and not bot.bot.store.outbox("pending"))

    response = httpx.get(f"{bot.server.url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_exposition(response.text)
    failures = {
        dict(labels)["error"]: n for (name, labels), n in samples.items() if name == "npo_delivery_failures_total"
    }
    assert failures == {"other": 3, "channel_not_found": 1}
    assert samples[("npo_deliveries_total", (("kind", "recommendation"), ("result", "failed")))] == len(errors)
    assert samples[("npo_deliveries_total", (("kind", "recommendation"), ("result", "sent")))] == 1
    assert samples[("npo_outbox_messages", (("state", "failed"),))] == len(errors)
    assert math.isnan(samples[("npo_alignment_loss", ())])
    assert samples[("npo_database_up", ())] == 1


def test_failure_labels_stay_few_whatever_error_codes_an_endpoint_answers(bot: BotUnderTest) -> None:
    """An endpoint that is not quite Slack (a proxy, a gateway, a fake) answering a new made-up code on every call must
    not add a series per code, or the failure counter grows without bound: Slack's documented codes label it, any
    other code is counted as ``other`` — and the outbox and the log still name the code received."""
    bot.bot.worker.config = dataclasses.replace(bot.bot.worker.config, post_interval_s=0.0)
    made_up = [f"made_up_error_{i}" for i in range(8)]
    for error in [*made_up, "not_in_channel"]:
        bot.standin.faults.error("chat.postMessage", error)
    for i in range(len(made_up) + 1):
        assert bot.ingest(prediction(f"p{i}")).status_code == 200
    wait_for(lambda: len(bot.bot.store.outbox("failed")) == len(made_up) + 1 and not bot.bot.store.outbox("pending"))

    samples = parse_exposition(httpx.get(f"{bot.server.url}/metrics", timeout=10).text)
    failures = {
        dict(labels)["error"]: n for (name, labels), n in samples.items() if name == "npo_delivery_failures_total"
    }
    assert failures == {"other": len(made_up), "not_in_channel": 1}
    assert sorted(item.last_error for item in bot.bot.store.outbox("failed")) == sorted([*made_up, "not_in_channel"])
