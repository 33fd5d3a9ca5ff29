"""What the bot posts with adversarial but valid input stays within Slack's Block Kit limits, shows what matters and
counts what it leaves off: names full of ``&``, ``<`` and ``>`` (each escaped to 4–5 characters), 50 labels, a
digest of 300 recommendations, 120 mutes on the App Home, ``/npo why`` and ``/npo mute`` replies, bidi controls.
Everything goes through the real path: ingest over HTTP, the delivery worker, the stand-in (which refuses what Slack
refuses), signed clicks, slash commands and events."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from slack_testing import ALICE, INCIDENT, SECRET, BotUnderTest, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.slack.blocks import ACTION_LIKE, ACTION_OVERRIDE
from bot.slack.command import MAX_REPLY
from bot.standin import StandIn, limits
from bot.standin.store import Message

AMP = "&<>" * 165  # 495 characters that escape to 2,145


def npo(bot: BotUnderTest, text: str, user: str = ALICE) -> str:
    response = bot.standin.slash_command(bot.events_url, SECRET, "/npo", text, user, INCIDENT)
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


def _message(bot: BotUnderTest, ts: str) -> Message:
    (message,) = [m for m in bot.standin.messages(INCIDENT) if m.ts == ts]
    return message


def _block(message: Message, block_id: str) -> dict[str, Any]:
    return next(b for b in message.blocks if b.get("block_id") == block_id)


def _slack_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_long_escaped_names_keep_the_action_in_the_summary_and_the_notification(bot: BotUnderTest) -> None:
    """Three 500-character names full of ``&<>`` used to fill the 3,000-character summary with the fault type and
    the target: the time to fault and the recommended action were cut off, and the notification text (cut at 300
    characters before escaping) held only the fault type."""
    _, ts = bot.surface("p-amp", fault_type="disk" + AMP, target="t" + AMP, action="drain" + AMP)
    message = _message(bot, ts)
    summary = _block(message, "npo_summary")["text"]["text"]
    assert "`t&amp;&lt;&gt;" in summary and "Predicted fault in *6.0 h*" in summary
    assert "recommended action: *drain&amp;&lt;&gt;" in summary and summary.endswith("…*")
    assert len(summary) <= 3000
    assert " on t&amp;&lt;&gt;" in message.text and ": drain&amp;" in message.text  # the notification names all
    assert limits.blocks_text_chars(message.blocks) <= limits.MAX_BLOCKS_TEXT_CHARS


def test_the_override_modal_names_action_fault_type_and_target_whatever_their_length(bot: BotUnderTest) -> None:
    """The modal's summary (action, fault type, target) was cut at 3,000 characters inside the fault type."""
    message = bot.surface("p-amp", fault_type="disk" + AMP, target="t" + AMP, action="drain" + AMP)
    assert bot.click(ALICE, ACTION_OVERRIDE, message).status_code == 200
    (view,) = wait_for(bot.standin.views)  # stored only when views.open passed Slack's limits
    summary = view["blocks"][0]["text"]["text"]
    assert summary.startswith("Override *drain&amp;") and "* for *disk&amp;" in summary
    assert "* on `t&amp;&lt;&gt;" in summary and summary.endswith("…`") and len(summary) <= 3000


def test_labels_that_do_not_fit_the_context_line_are_counted(bot: BotUnderTest) -> None:
    """50 labels used to be cut mid-label at 3,000 characters with nothing saying how many were left off."""
    labels = {f"label{i:02d}": "value-" + "v" * 50 for i in range(50)}
    _, ts = bot.surface("p-labels", labels=labels)
    context = _block(_message(bot, ts), "npo_context")["elements"][0]["text"]
    more = re.search(r", … \+(\d+) more labels$", context)
    assert more is not None, context[-80:]
    shown = re.findall(r"label(\d\d)=value-v{50}(?:,|$)", context)
    assert shown == [f"{i:02d}" for i in range(len(shown))]  # whole labels, in order
    assert len(shown) + int(more.group(1)) == 50 and len(context) <= 3000


def test_a_digest_of_300_recommendations_is_accepted_and_shows_every_one(tmp_path: Path, standin: StandIn) -> None:
    """300 surfaced recommendations of 7 kinds with long names in one burst. The digest used to pack ~72,000
    characters into 48 sections (Slack refuses a message with more than about 13,000: ``msg_blocks_too_long``, so
    every one of them was marked failed) and, past 48 sections, said "…and 153 more section(s)" — not how many
    recommendations. Then it listed what fit, counted the rest as "not shown" and marked them sent all the same.
    Now a storm too large to list one by one is one line per kind, counted: every recommendation is in a digest
    that counts it, and each digest's header counts what its lines do."""
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3, digest_delay_s=0.2), seed=1)
    with serving(built, standin) as bot:
        batch = [
            prediction(f"s{i}", fault_type=f"ft{i % 7}-" + "y" * 480, target=f"n{i}-" + "x" * 480, action="a" * 500)
            for i in range(300)
        ]
        assert bot.ingest(batch).status_code == 200
        wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=40)
        assert not bot.bot.store.outbox("failed")
        assert sorted(str(item.prediction_id) for item in bot.bot.store.outbox("sent")) == sorted(
            f"s{i}" for i in range(300)
        )
        counted = 0
        for message in standin.messages(INCIDENT):
            assert limits.blocks_text_chars(message.blocks) <= limits.MAX_BLOCKS_TEXT_CHARS
            header = message.blocks[0]["text"]["text"]
            grouped = re.match(r":package: \*(\d+) recommendation\(s\) of (\d+) kind\(s\) in one digest\*", header)
            single = re.match(r":package: \*(\d+) recommendation\(s\) in one digest\*", header)
            lines = [
                line for b in message.blocks if b["type"] == "section" for line in str(b["text"]["text"]).split("\n")
            ]
            notes = [e["text"] for b in message.blocks if b["type"] == "context" for e in b["elements"]]
            assert not [note for note in notes if "not shown" in note]
            if grouped is not None:
                kinds = [int(n) for n in re.findall(r"\*(\d+) × ", "\n".join(lines[1:]))]
                assert len(kinds) == int(grouped.group(2)) and sum(kinds) == int(grouped.group(1))
                assert all(len(line) < 1200 for line in lines[1:])
                counted += sum(kinds)
            elif single is not None:
                counted += len(re.findall(r"id `(s\d+)`", "\n".join(lines[1:])))
            else:  # posted on its own
                counted += 1
        assert counted == 300
        assert len(standin.messages(INCIDENT)) <= 3  # seven lines, not 300 of them in parts a second apart


def test_app_home_counts_the_muted_keys_it_leaves_off(bot: BotUnderTest) -> None:
    """120 mutes of long keys: the Home tab used to list 12 and say "…and 18 more section(s)"."""
    bot.surface("p1")
    for i in range(120):
        reply = npo(bot, f"mute key{i:03d}|{'k' * 300} 1h maintenance window")
        assert "is muted until" in reply
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    view: dict[str, Any] = wait_for(lambda: bot.standin.home_view(ALICE))
    sections = "\n".join(str(b["text"]["text"]) for b in view["blocks"] if b["type"] == "section")
    listed = re.findall(r"^:mute: `key(\d{3})\|", sections, flags=re.MULTILINE)
    notes = [e["text"] for b in view["blocks"] if b["type"] == "context" for e in b["elements"]]
    more = [m for note in notes if (m := re.match(r"…and (\d+) more muted keys not shown", note))]
    assert len(more) == 1 and len(listed) + int(more[0].group(1)) == 120
    assert len(set(listed)) == len(listed) >= 50  # ten sections of mutes, not two
    assert "*Latest recommendations*" in sections and len(view["blocks"]) <= 100


def test_app_home_of_long_non_ascii_mutes_stays_within_slacks_view_size(bot: BotUnderTest) -> None:
    """120 mutes of 440-emoji keys with 200-emoji reasons: the Home tab was sent as some 280 kB of JSON (an emoji is
    12 bytes escaped), Slack refused it (``view_too_large``) and the person saw no dashboard at all. It is published
    now, within 250 kB, listing fewer muted keys and counting the rest."""
    bot.surface("p1")
    for i in range(120):
        reply = npo(bot, f"mute key{i:03d}|{'🔥' * 440} 1h {'💾' * 200}")
        assert "is muted until" in reply, reply
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    (call,) = wait_for(lambda: bot.standin.calls("views.publish"))
    assert call.response.get("ok") is True, call.response
    view: dict[str, Any] = wait_for(lambda: bot.standin.home_view(ALICE))
    assert limits.view_bytes(view) <= limits.MAX_VIEW_BYTES
    sections = "\n".join(str(b["text"]["text"]) for b in view["blocks"] if b["type"] == "section")
    listed = re.findall(r"^:mute: `key(\d{3})\|", sections, flags=re.MULTILINE)
    notes = [e["text"] for b in view["blocks"] if b["type"] == "context" for e in b["elements"]]
    more = [m for note in notes if (m := re.match(r"…and (\d+) more muted keys not shown", note))]
    assert len(more) == 1 and len(listed) + int(more[0].group(1)) == 120 and listed
    assert "*Latest recommendations*" in sections


def test_why_of_a_recommendation_with_long_escaped_names_still_answers(bot: BotUnderTest) -> None:
    """The first line of ``/npo why`` alone went over 3,000 characters, so the reply was only
    "… (4 more lines: see …)"."""
    bot.surface("p-amp", fault_type="disk" + AMP, target="t" + AMP, action="drain" + AMP)
    reply = npo(bot, "why p-amp")
    assert len(reply) <= MAX_REPLY
    assert reply.startswith("*Recommendation `p-amp`*: disk&amp;&lt;&gt;")
    for part in ("→ *drain&amp;", "*Verdict*: surface", "*Score* R(s)", "*Key* `disk&amp;"):
        assert part in reply, part


def test_mute_reply_with_a_long_escaped_key_confirms_the_mute_and_how_to_lift_it(bot: BotUnderTest) -> None:
    """The key was named twice in full: with 500 characters of ``&<>`` the reply was cut before it said until when
    the key is muted and how to lift it."""
    key = "k " + "&<>" * 166  # 500 characters, with a space: quoted in the unmute hint
    reply = npo(bot, f'mute "{_slack_escaped(key)}" 1h')  # Slack escapes &, < and > in a command's text
    assert len(reply) <= MAX_REPLY
    assert "is muted until" in reply and "blocked by the Safety Policy rule `mute`" in reply
    assert reply.endswith(f'`/npo unmute "{_slack_escaped(key)}"` lifts it.')
    assert len(bot.bot.store.audit_entries(kind="policy_mute")) == 1


def test_a_refused_click_names_the_prediction_escaped(bot: BotUnderTest) -> None:
    """The refusal after a click the loop cannot apply quoted the error, which names the button's value, as mrkdwn
    without escaping it (the outcome buttons' refusal escaped it)."""
    message = bot.surface("p1")
    response = bot.standin.click(
        bot.events_url, SECRET, user_id=ALICE, action_id=ACTION_LIKE, value="<!channel> & co", message=message
    )
    assert response.status_code == 200

    def refusal() -> str | None:
        for m in bot.standin.messages(INCIDENT, include_ephemeral=True):
            if m.ephemeral_to == ALICE and "could not be recorded" in m.text:
                return m.text
        return None

    text = wait_for(refusal)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; co" in text


def test_bidi_controls_in_a_name_cannot_reorder_the_message(bot: BotUnderTest) -> None:
    """A right-to-left override in a target reversed the rest of its line as Slack shows it. Right-to-left letters
    and emoji are kept as they are."""
    target = "\u202eevird-שלום 🔥👩\u200d👩\u200d👧\u2066x"
    _, ts = bot.surface("p-rtl", target=target)
    message = _message(bot, ts)
    summary = _block(message, "npo_summary")["text"]["text"]
    assert "`evird-שלום 🔥👩\u200d👩\u200d👧x`" in summary
    for text in (str(message.blocks), message.text):
        assert not set(text) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
