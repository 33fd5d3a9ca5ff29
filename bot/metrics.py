"""Prometheus text exposition (format 0.0.4) without a client library: request latency histograms, delivery
counters, and gauges computed from the database on each scrape (alignment loss, answer rates, τ posterior means,
outbox depth). Thread-safe; the hot path only does a bisect and two additions under a lock.

Label values are escaped as the format requires (a backslash before a backslash or a double quote, and a line feed
written as backslash-n), so two values that differ only there stay two series. Every metric family has its HELP and
TYPE lines. Sample values are written exactly: a counter past 999,999 still shows every increment.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping

from bot.slack.blocks import Dashboard

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COUNTER_HELP = {
    "npo_deliveries_total": "Outbox messages handled by the delivery worker, by kind and result.",
    "npo_delivery_failures_total": "Outbox messages that failed for good, by error.",
}


def _escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items())) + "}"


def _value(number: float) -> str:
    """A sample value without rounding: whole numbers as integers, others in Python's shortest exact form."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return str(int(number)) if number.is_integer() else repr(number)


class Histogram:
    """Cumulative-bucket histogram of seconds."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str, labels: Mapping[str, str]) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f"{name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {running}")
        running += self.counts[-1]
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {self.total:.6f}")
        out.append(f"{name}_count{_labels(labels)} {running}")
        return out


class Metrics:
    """The process's counters and histograms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: dict[tuple[str, str], Histogram] = {}
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, f"{status // 100}xx")
        with self._lock:
            hist = self._latency.get(key)
            if hist is None:
                hist = self._latency[key] = Histogram()
            hist.observe(seconds)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def counter(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self, dashboard: Dashboard | None) -> str:
        """The whole exposition: process metrics plus the gauges from ``dashboard``; ``None`` when the database
        could not be read: ``npo_database_up 0`` and none of the figures that come from it."""
        lines = [
            "# HELP npo_database_up Whether this scrape could read the database (1) or not (0; /healthz says why).",
            "# TYPE npo_database_up gauge",
            f"npo_database_up {0 if dashboard is None else 1}",
        ]
        if dashboard is not None:
            lines += _database_lines(dashboard)
        with self._lock:
            lines += [
                "# HELP npo_http_request_duration_seconds HTTP request latency by route and status class.",
                "# TYPE npo_http_request_duration_seconds histogram",
            ]
            for (route, status), hist in sorted(self._latency.items()):
                lines += hist.lines("npo_http_request_duration_seconds", {"route": route, "status": status})
            for name, series in sorted(self._counters.items()):
                lines.append(f"# HELP {name} {COUNTER_HELP.get(name, 'Counter ' + name + '.')}")
                lines.append(f"# TYPE {name} counter")
                lines += [f"{name}{_labels(dict(key))} {_value(value)}" for key, value in sorted(series.items())]
        return "\n".join(lines) + "\n"


def _database_lines(dashboard: Dashboard) -> list[str]:
    """The gauges computed from the database (alignment, answers, τ posteriors, outbox, rows)."""
    lines = [
        "# HELP npo_alignment_loss Mean feedback code y over the last answers (0 best, 1 worst).",
        "# TYPE npo_alignment_loss gauge",
        f"npo_alignment_loss {dashboard.alignment_loss if dashboard.alignment_loss is not None else 'NaN'}",
        "# HELP npo_alignment_samples Answers in the alignment-loss window.",
        "# TYPE npo_alignment_samples gauge",
        f"npo_alignment_samples {dashboard.samples}",
        "# HELP npo_answer_rate Share of each kind (override, like, neutral, skipped) among the current answers.",
        "# TYPE npo_answer_rate gauge",
    ]
    lines += [f"npo_answer_rate{_labels({'kind': k})} {v:.6f}" for k, v in sorted(dashboard.rates.items())]
    lines += [
        "# HELP npo_threshold_posterior_mean Posterior mean reward of each threshold arm.",
        "# TYPE npo_threshold_posterior_mean gauge",
    ]
    lines += [
        f"npo_threshold_posterior_mean{_labels({'tau': _value(t)})} {m:.6f}" for t, m in dashboard.tau_means.items()
    ]
    lines += ["# HELP npo_outbox_messages Outbox messages by state.", "# TYPE npo_outbox_messages gauge"]
    for state in ("pending", "sent", "failed"):
        lines.append(f"npo_outbox_messages{_labels({'state': state})} {dashboard.counts.get(f'outbox_{state}', 0)}")
    lines += ["# HELP npo_rows Rows in the database by kind.", "# TYPE npo_rows gauge"]
    lines += [
        f"npo_rows{_labels({'kind': k})} {v}"
        for k, v in sorted(dashboard.counts.items())
        if not k.startswith("outbox_")
    ]
    return lines
