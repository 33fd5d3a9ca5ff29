"""``Metrics.render``: counters keep every increment, every family has HELP and TYPE, label values are escaped as
Prometheus' text format says (the whole exposition over HTTP: ``tests/slack/test_slack_metrics.py``)."""

from __future__ import annotations

from bot.metrics import Metrics
from bot.slack.blocks import Dashboard

EMPTY = Dashboard(alignment_loss=None, samples=0, rates={}, tau_means={}, counts={})


def _lines(metrics: Metrics, name: str) -> list[str]:
    return [line for line in metrics.render(EMPTY).splitlines() if line.startswith(name)]


def test_a_counter_past_a_million_shows_every_increment() -> None:
    metrics = Metrics()
    metrics.inc("npo_deliveries_total", 1_234_567, kind="recommendation", result="sent")
    sent = 'npo_deliveries_total{kind="recommendation",result="sent"}'
    assert _lines(metrics, "npo_deliveries_total") == [f"{sent} 1234567"]
    metrics.inc("npo_deliveries_total", kind="recommendation", result="sent")
    assert _lines(metrics, "npo_deliveries_total") == [f"{sent} 1234568"]
    metrics.inc("npo_deliveries_total", 0.25, kind="digest", result="sent")
    assert 'npo_deliveries_total{kind="digest",result="sent"} 0.25' in _lines(metrics, "npo_deliveries_total")


def test_counters_have_help_and_type_and_escaped_labels() -> None:
    metrics = Metrics()
    metrics.inc("npo_delivery_failures_total", error='a "b" \\ c\nd')
    metrics.inc("npo_delivery_failures_total", error='a "b" \\ c d')
    assert _lines(metrics, "# HELP npo_delivery_failures_total ")
    assert _lines(metrics, "# TYPE npo_delivery_failures_total ") == ["# TYPE npo_delivery_failures_total counter"]
    assert _lines(metrics, "npo_delivery_failures_total{") == [
        'npo_delivery_failures_total{error="a \\"b\\" \\\\ c\\nd"} 1',
        'npo_delivery_failures_total{error="a \\"b\\" \\\\ c d"} 1',
    ]
