"""Block Kit and mrkdwn as the live page renders them: Slack's formatting understood, everything escaped."""

from __future__ import annotations

from bot.standin.blockkit import mrkdwn_html, render_blocks, render_modal

HOSTILE = "<script>alert('x')</script> & \"q\""


def test_mrkdwn_formatting_mentions_dates_and_slack_escapes() -> None:
    html = mrkdwn_html(
        "*CRITICAL* · _soon_ on `r#-n#|p&gt;=0.9` by <@U0ALICE> at <!date^1700000000^{date_short_pretty}|x> :thumbsup:",
        user_name=lambda u: {"U0ALICE": "alice"}.get(u, u),
    )
    assert "<b>CRITICAL</b>" in html and "<i>soon</i>" in html
    assert "<code>r#-n#|p&gt;=0.9</code>" in html  # Slack's &gt; shown as ">" (escaped once for HTML)
    assert '<span class="mention">@alice</span>' in html
    assert "Nov 14 22:13:20 UTC" in html and "👍" in html


def test_everything_from_a_message_is_escaped() -> None:
    blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": HOSTILE},
            "fields": [{"type": "plain_text", "text": HOSTILE}],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{HOSTILE}>"}]},
        {
            "type": "actions",
            "block_id": HOSTILE,
            "elements": [
                {
                    "type": "button",
                    "action_id": HOSTILE,
                    "value": HOSTILE,
                    "text": {"type": "plain_text", "text": HOSTILE},
                }
            ],
        },
        {"type": "image", "image_url": 'javascript:alert(1)"', "alt_text": HOSTILE},
    ]
    html = render_blocks(blocks)
    assert "<script" not in html and "alert('x')" not in html
    assert 'src="javascript:alert(1)&quot;"' in html  # quoted, cannot break out of the attribute
    assert html.count("&lt;script&gt;") >= 5


def test_links_only_for_web_urls() -> None:
    assert '<a href="https://example.org/x"' in mrkdwn_html("<https://example.org/x|docs>")
    assert "<a " not in mrkdwn_html("<javascript:alert(1)|click>")


def test_buttons_carry_their_action_and_can_be_disabled() -> None:
    blocks = [
        {
            "type": "actions",
            "block_id": "npo_feedback",
            "elements": [
                {
                    "type": "button",
                    "action_id": "npo_like",
                    "value": "p1",
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Like"},
                }
            ],
        }
    ]
    live = render_blocks(blocks)
    assert 'data-action-id="npo_like"' in live and 'data-value="p1"' in live and "btn-primary" in live
    assert " disabled" not in live and " disabled" in render_blocks(blocks, interactive=False)


def test_modal_inputs_keep_state_and_show_errors() -> None:
    view = {
        "id": "V1",
        "title": {"type": "plain_text", "text": "Override"},
        "submit": {"type": "plain_text", "text": "Record override"},
        "state": {"values": {"details": {"details": {"type": "plain_text_input", "value": "typed <b>"}}}},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "static_select",
                    "action_id": "reason",
                    "options": [{"text": {"type": "plain_text", "text": "False positive"}, "value": "false_positive"}],
                },
            },
            {
                "type": "input",
                "block_id": "details",
                "optional": True,
                "label": {"type": "plain_text", "text": "Details"},
                "element": {"type": "plain_text_input", "action_id": "details", "multiline": True},
            },
        ],
    }
    html = render_modal(view, errors={"reason": "Please pick a reason for the override."})
    assert '<select data-block-id="reason" data-action-id="reason"' in html
    assert '<option value="false_positive">False positive</option>' in html
    assert ">typed &lt;b&gt;</textarea>" in html
    assert '<div class="error">Please pick a reason for the override.</div>' in html
    assert "Record override" in html and 'data-view-id="V1"' in html


def test_text_holding_the_formatters_own_marks_renders_as_written() -> None:
    """The formatter marks code spans with NUL-delimited numbers while it works: text that already holds such a
    mark (a prediction field can) must neither break the page nor swap in another span's text."""
    html = mrkdwn_html("`first` then \x000\x00 and `second` and \x007\x00")
    assert html.count("<code>") == 2 and "<code>first</code>" in html and "<code>second</code>" in html
    assert html.count("first") == 1 and "\x00" not in html


def test_a_digest_reads_on_the_page_as_the_bot_wrote_it() -> None:
    """The digest's closing line named ``/npo why <id>`` with bare angle brackets, which Slack (and the page)
    takes for a link: the code span broke apart and the id placeholder was lost."""
    from bot.slack.blocks import RecommendationView, digest_blocks  # noqa: PLC0415
    from npo.types import Decision, Prediction, Verdict  # noqa: PLC0415

    p = Prediction(id="p1", fault_type="disk_failure", target="r1-n1", action="drain", confidence=0.97)
    d = Decision(p.id, "k", Verdict.DIGEST, "channel_hourly_cap", "cap", 0.97, 0.0, 0.97, 0.7, 2, 0.0)
    html = render_blocks(digest_blocks([RecommendationView(p, d, (), None)], why="channel hourly cap reached"))
    assert "<code>/npo why &lt;id&gt;</code> explains one" in html
    assert "<code>/api/v1/outcomes</code>" in html


def test_the_emoji_the_bot_writes_are_shown_as_slack_shows_them() -> None:
    """A digest starts with ``:package:`` (and ``/npo mute`` answers with ``:mute:``); the page showed the codes."""
    assert mrkdwn_html(":package: *3 recommendation(s) in one digest*") == "📦 <b>3 recommendation(s) in one digest</b>"
    assert mrkdwn_html(":mute: muted") == "🔇 muted"


def test_a_date_beyond_the_platform_clock_shows_its_fallback() -> None:
    """``<!date^100000000000000000^…|fallback>`` (a date no ``time_t`` holds) raised OverflowError/OSError, so the
    live page's state request failed for every channel while such a message was in one."""
    html = mrkdwn_html("at <!date^100000000000000000^{date_short_pretty} {time}|100000000000000000>")
    assert html == 'at <span class="date">100000000000000000</span>'
