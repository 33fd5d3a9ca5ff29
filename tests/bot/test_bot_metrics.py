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


def test_thresholds_that_differ_past_six_digits_stay_two_series() -> None:
    """τ labels are written exactly: two arms 3e-7 apart (a valid, strictly increasing configuration) were both
    labelled ``0.123456``, one series written twice with two values."""
    dashboard = Dashboard(
        alignment_loss=None, samples=0, rates={}, tau_means={0.1234561: 0.25, 0.1234564: 0.75}, counts={}
    )
    lines = [
        line for line in Metrics().render(dashboard).splitlines() if line.startswith("npo_threshold_posterior_mean{")
    ]
    assert lines == [
        'npo_threshold_posterior_mean{tau="0.1234561"} 0.250000',
        'npo_threshold_posterior_mean{tau="0.1234564"} 0.750000',
    ]
    defaults = Dashboard(alignment_loss=None, samples=0, rates={}, tau_means={0.5: 0.5, 1.0: 0.5}, counts={})
    assert '{tau="0.5"}' in Metrics().render(defaults) and '{tau="1"}' in Metrics().render(defaults)  # as before


def test_without_the_database_only_the_process_figures_are_written() -> None:
    metrics = Metrics()
    metrics.observe_request("/healthz", 503, 0.002)
    text = metrics.render(None)
    assert text.startswith("# HELP npo_database_up ") and "\nnpo_database_up 0\n" in text
    assert 'npo_http_request_duration_seconds_count{route="/healthz",status="5xx"} 1' in text
    assert "npo_rows" not in text and "npo_alignment_loss" not in text
    assert "\nnpo_database_up 1\n" in metrics.render(EMPTY)
