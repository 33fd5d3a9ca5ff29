"""The Web API methods through real HTTP with slack_sdk.WebClient: storage, auth, Slack's limits and error codes."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from standin_testing import TOKEN, FakeClock

from bot.standin import StandIn, limits

TS = re.compile(r"^\d{10}\.\d{6}$")
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def section(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(action_id: str = "like", text: str = "Like", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": text}, **extra}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def actions(*elements: dict[str, Any], block_id: str = "act") -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        call()
    return str(info.value.response["error"])


def test_post_then_update_edits_in_place(standin: StandIn, client: WebClient) -> None:
    first = client.chat_postMessage(channel="C1", text="fault on rack 7", blocks=[section(), actions(button())])
    second = client.chat_postMessage(channel="C1", text="another")
    assert TS.match(first["ts"]) and TS.match(second["ts"])
    assert float(second["ts"]) > float(first["ts"])

    client.chat_update(channel="C1", ts=first["ts"], text="liked by U1", blocks=[section("liked by U1")])

    history = standin.messages("C1")
    assert [m.ts for m in history] == [first["ts"], second["ts"]]
    assert history[0].text == "liked by U1"
    assert history[0].blocks == [section("liked by U1")]
    assert history[0].edited_ts is not None
    assert standin.messages("C2") == []


def test_update_without_blocks_keeps_them_and_empty_list_removes_them(standin: StandIn, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C1", text="t", blocks=[section()])["ts"]
    client.chat_update(channel="C1", ts=ts, text="t2")
    assert standin.message("C1", ts).blocks == [section()]
    client.chat_update(channel="C1", ts=ts, text="t3", blocks=[])
    assert standin.message("C1", ts).blocks == []


def test_bodies_are_parsed_in_both_encodings_and_calls_are_recorded(standin: StandIn, client: WebClient) -> None:
    client.auth_test()
    client.chat_postMessage(channel="C1", text="x")
    auth, post = standin.calls()
    assert auth.method == "auth.test" and auth.header("content-type") == "application/x-www-form-urlencoded"
    assert str(post.header("Content-Type")).startswith("application/json")
    assert post.body == {"channel": "C1", "text": "x"}
    assert post.header("authorization") == f"Bearer {TOKEN}"
    assert post.path == "/api/chat.postMessage" and post.status == 200
    assert auth.monotonic <= post.monotonic
    assert standin.calls("chat.postMessage") == [post]
    info = client.conversations_info(channel="C1")  # form-encoded
    assert info["channel"]["name"] == "oncall"


@pytest.mark.parametrize(
    ("token", "error"), [("xoxb-wrong", "invalid_auth"), ("xoxb-standin-test-suffix", "invalid_auth")]
)
def test_wrong_token_is_refused(standin: StandIn, token: str, error: str) -> None:
    bad = WebClient(base_url=standin.api_url, token=token, retry_handlers=[])
    assert error_of(lambda: bad.chat_postMessage(channel="C1", text="x")) == error
    assert error_of(bad.auth_test) == error
    assert standin.messages("C1") == []


def test_missing_token_is_not_authed(standin: StandIn) -> None:
    anonymous = WebClient(base_url=standin.api_url, retry_handlers=[])
    assert error_of(anonymous.auth_test) == "not_authed"


def test_a_token_in_a_json_body_is_not_read(standin: StandIn) -> None:
    """Slack reads the token of a JSON call from the Authorization header only (changelog 2017-10, "Keeping up with
    the JSONs"); a form body's token is read. The stand-in used to read it from a JSON body too."""
    url = standin.api_url + "chat.postMessage"
    in_json = httpx.post(url, json={"token": TOKEN, "channel": "C1", "text": "json"})
    assert in_json.json() == {"ok": False, "error": "not_authed"}
    wrong_in_json = httpx.post(url, json={"token": "xoxb-wrong", "channel": "C1", "text": "json"}, headers=BEARER)
    assert wrong_in_json.json()["ok"] is True  # the header's token counts, the body's is not read
    in_form = httpx.post(url, data={"token": TOKEN, "channel": "C1", "text": "form"})
    assert in_form.json()["ok"] is True
    assert [m.text for m in standin.messages("C1")] == ["json", "form"]


LONG = "x" * 3001

MESSAGE_VIOLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "51 blocks": ({"text": "t", "blocks": [section()] * 51}, "invalid_blocks"),
    "section text 3001": ({"text": "t", "blocks": [section(LONG)]}, "invalid_blocks"),
    "empty section text": ({"text": "t", "blocks": [section("")]}, "invalid_blocks"),
    "button text 76": ({"text": "t", "blocks": [actions(button(text="b" * 76))]}, "invalid_blocks"),
    "button text mrkdwn": (
        {"text": "t", "blocks": [actions(button() | {"text": {"type": "mrkdwn", "text": "*L*"}})]},
        "invalid_blocks",
    ),
    "button value 2001": ({"text": "t", "blocks": [actions(button(value="v" * 2001))]}, "invalid_blocks"),
    "action_id 256": ({"text": "t", "blocks": [actions(button(action_id="a" * 256))]}, "invalid_blocks"),
    "block_id 256": ({"text": "t", "blocks": [section(block_id="b" * 256)]}, "invalid_blocks"),
    "26 elements": (
        {"text": "t", "blocks": [actions(*(button(action_id=f"a{i}") for i in range(26)))]},
        "invalid_blocks",
    ),
    "duplicate action_id": (
        {"text": "t", "blocks": [actions(button("x"), block_id="1"), actions(button("x"), block_id="2")]},
        "invalid_blocks",
    ),
    "style purple": ({"text": "t", "blocks": [actions(button(style="purple"))]}, "invalid_blocks"),
    # Slack refuses a block or element type it does not know (a typo); the stand-in used to accept any type.
    "unknown block type": ({"text": "t", "blocks": [{"type": "sectoin", "text": section()["text"]}]}, "invalid_blocks"),
    "unknown element type": ({"text": "t", "blocks": [actions(button() | {"type": "buton"})]}, "invalid_blocks"),
    "unknown accessory type": (
        {"text": "t", "blocks": [section(accessory=button() | {"type": "btn"})]},
        "invalid_blocks",
    ),
    # Slack's text objects hold 1–3000 characters wherever they are, and a context block holds only text and images;
    # the stand-in used to check neither for a context's elements.
    "context text 3001": ({"text": "t", "blocks": [context(LONG)]}, "invalid_blocks"),
    "empty context text": ({"text": "t", "blocks": [context("")]}, "invalid_blocks"),
    "button in a context": ({"text": "t", "blocks": [{"type": "context", "elements": [button()]}]}, "invalid_blocks"),
    # Where an element may go: a text input only in an input block (Slack refuses one in an actions block,
    # python-slack-sdk#1257) and only a fill-in or pick element in an input block; emoji only on plain_text. The
    # stand-in used to accept each of them.
    "text input in actions": (
        {"text": "t", "blocks": [actions({"type": "plain_text_input", "action_id": "in"})]},
        "invalid_blocks",
    ),
    "text input as accessory": (
        {"text": "t", "blocks": [section(accessory={"type": "plain_text_input", "action_id": "in"})]},
        "invalid_blocks",
    ),
    "button in an input block": (
        {"text": "t", "blocks": [{"type": "input", "label": {"type": "plain_text", "text": "l"}, "element": button()}]},
        "invalid_blocks",
    ),
    "emoji on mrkdwn": (
        {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x", "emoji": True}}]},
        "invalid_blocks",
    ),
    # The aggregate limit (bolt-js#2509: about 13,000 characters across the blocks; the stand-in: 12,000).
    "blocks text 12001": (
        {"text": "t", "blocks": [section("s" * 3000) for _ in range(4)] + [section("s")]},
        "msg_blocks_too_long",
    ),
    "text 40001": ({"text": "y" * 40_001}, "msg_too_long"),
    "no text, no blocks": ({"text": ""}, "no_text"),
    "unknown channel": ({"channel": "C404", "text": "t"}, "channel_not_found"),
}


@pytest.mark.parametrize("case", list(MESSAGE_VIOLATIONS))
def test_post_message_limits_answer_slacks_error_codes(standin: StandIn, client: WebClient, case: str) -> None:
    kwargs, error = MESSAGE_VIOLATIONS[case]
    if error == "no_text":  # slack_sdk warns before sending a message without text
        with pytest.warns(UserWarning, match="top-level `text`"):
            assert error_of(lambda: client.chat_postMessage(**({"channel": "C1"} | kwargs))) == error
    else:
        assert error_of(lambda: client.chat_postMessage(**({"channel": "C1"} | kwargs))) == error
    assert standin.messages("C1") == []


@pytest.mark.parametrize("case", [c for c in MESSAGE_VIOLATIONS if c != "no text, no blocks"])
def test_update_limits_answer_slacks_error_codes(standin: StandIn, client: WebClient, case: str) -> None:
    ts = client.chat_postMessage(channel="C1", text="original", blocks=[section()])["ts"]
    kwargs, error = MESSAGE_VIOLATIONS[case]
    assert error_of(lambda: client.chat_update(**({"channel": "C1", "ts": ts} | kwargs))) == error
    assert standin.message("C1", ts).text == "original"


def test_invalid_blocks_explain_where(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="t", blocks=[section(), actions(button(text="b" * 76))])
    assert info.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 76 characters [json-pointer:/blocks/1/elements/0/text/text]"
    ]


def test_limits_are_inclusive(standin: StandIn, client: WebClient) -> None:
    at_limit = [section("s" * 3000, block_id="b" * 255)]
    at_limit.append(
        actions(
            button(action_id="a" * 255, text="t" * 75, value="v" * 2000, style="danger"),
            *(button(action_id=f"x{i}", style="primary") for i in range(24)),
        )
    )
    at_limit += [section(f"filler {i}") for i in range(48)]
    response = client.chat_postMessage(channel="C1", text="z" * 40_000, blocks=at_limit)
    assert len(standin.message("C1", response["ts"]).blocks) == 50


def test_blocks_text_limit_is_inclusive_and_counts_every_text_object(standin: StandIn, client: WebClient) -> None:
    """12,000 characters of text across the blocks (sections, fields, contexts, buttons) pass; one more does not."""
    blocks = [section("s" * 3000), section("s" * 2990), context("c" * 3000)]
    blocks.append(
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}, {"type": "mrkdwn", "text": "f" * 1000}]}
    )
    blocks.append(actions(button(text="b" * 10)))
    assert sum(len(t) for t in ("s" * 3000, "s" * 2990, "c" * 3000, "f" * 3000, "b" * 10)) == 12_000
    client.chat_postMessage(channel="C1", text="t", blocks=blocks)
    blocks[-1] = actions(button(text="b" * 11))
    assert error_of(lambda: client.chat_postMessage(channel="C1", text="t", blocks=blocks)) == "msg_blocks_too_long"
    assert len(standin.messages("C1")) == 1


def test_update_errors(standin: StandIn, client: WebClient) -> None:
    assert error_of(lambda: client.chat_update(channel="C1", ts="1700000000.000001", text="x")) == "message_not_found"
    human = standin.post_user_message("C1", "I wrote this", user_id="U1")
    assert error_of(lambda: client.chat_update(channel="C1", ts=human, text="x")) == "cant_update_message"
    ts = client.chat_postMessage(channel="C1", text="t")["ts"]
    assert error_of(lambda: client.chat_update(channel="C2", ts=ts, text="x")) == "message_not_found"
    assert error_of(lambda: client.chat_update(channel="C404", ts=ts, text="x")) == "channel_not_found"
    eph = client.chat_postEphemeral(channel="C1", user="U1", text="only you")["message_ts"]
    assert error_of(lambda: client.chat_update(channel="C1", ts=eph, text="x")) == "message_not_found"


def test_any_channel_is_accepted_when_none_is_configured() -> None:
    with StandIn(token=TOKEN) as open_standin:
        client = WebClient(base_url=open_standin.api_url, token=TOKEN, retry_handlers=[])
        client.chat_postMessage(channel="CANY", text="x")
        assert [m.text for m in open_standin.messages("CANY")] == ["x"]


def test_ephemeral_messages(standin: StandIn, client: WebClient) -> None:
    standin.set_channel_members("C1", ["U1"])
    client.chat_postEphemeral(channel="C1", user="U1", text="you may not")
    assert error_of(lambda: client.chat_postEphemeral(channel="C1", user="U2", text="x")) == "user_not_in_channel"
    assert standin.messages("C1") == []
    (eph,) = standin.messages("C1", include_ephemeral=True)
    assert eph.ephemeral_to == "U1" and eph.text == "you may not"


def test_users_groups_and_members(standin: StandIn, client: WebClient) -> None:
    standin.add_user("U1", name="alice", real_name="Alice A.")
    standin.add_usergroup("S1", ["U1", "U2"])
    standin.set_channel_members("C1", ["U1", "U2", "U3"])
    assert client.users_info(user="U1")["user"]["real_name"] == "Alice A."
    assert error_of(lambda: client.users_info(user="U9")) == "user_not_found"
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
    assert error_of(lambda: client.usergroups_users_list(usergroup="S9")) == "no_such_subteam"
    assert client.conversations_members(channel="C1")["members"] == ["U1", "U2", "U3"]
    assert client.conversations_info(channel="C2")["channel"]["id"] == "C2"
    assert error_of(lambda: client.conversations_members(channel="C404")) == "channel_not_found"
    assert error_of(lambda: client.conversations_info(channel="C404")) == "channel_not_found"


def test_channel_members_come_in_pages(standin: StandIn, client: WebClient) -> None:
    """conversations.members pages as Slack does: ``limit`` per page (default 100, at most 1,000), a
    ``next_cursor`` to follow, ``""`` after the last page, ``invalid_cursor`` / ``invalid_limit`` for bad values.
    The stand-in used to answer every member at once, so a caller that did not follow the cursor passed."""
    everyone = [f"U{i:05d}" for i in range(2345)]
    standin.set_channel_members("C1", everyone)
    first = client.conversations_members(channel="C1")
    assert first["members"] == everyone[:100] and first["response_metadata"]["next_cursor"]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = client.conversations_members(channel="C1", limit=5000, cursor=cursor)
        seen += page["members"]
        pages += 1
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert seen == everyone and pages == 3
    assert error_of(lambda: client.conversations_members(channel="C1", cursor="not-a-cursor")) == "invalid_cursor"
    assert error_of(lambda: client.conversations_members(channel="C1", limit=0)) == "invalid_limit"
    standin.set_channel_members("C2", ["U1"])
    assert client.conversations_members(channel="C2", limit=1)["response_metadata"]["next_cursor"] == ""


def modal(**extra: Any) -> dict[str, Any]:
    view = {
        "type": "modal",
        "callback_id": "override",
        "private_metadata": '{"rec": 7}',
        "title": {"type": "plain_text", "text": "Override"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
    }
    return view | extra


def test_views_open_checks_trigger_ids(clocked_standin: StandIn, clock: FakeClock) -> None:
    client = WebClient(base_url=clocked_standin.api_url, token=TOKEN, retry_handlers=[])
    trigger = clocked_standin.issue_trigger_id()
    clock.advance(2.9)
    opened = client.views_open(trigger_id=trigger, view=modal())["view"]
    assert opened["callback_id"] == "override" and opened["private_metadata"] == '{"rec": 7}'
    assert clocked_standin.views()[0]["id"] == opened["id"]
    stale = clocked_standin.issue_trigger_id()
    clock.advance(3.1)
    assert error_of(lambda: client.views_open(trigger_id=stale, view=modal())) == "expired_trigger_id"
    assert error_of(lambda: client.views_open(trigger_id="1.2.abc", view=modal())) == "invalid_trigger_id"


def test_a_trigger_id_opens_one_view(standin: StandIn, client: WebClient) -> None:
    """Slack's trigger ids are single-use: a second views.open with one answers ``exchanged_trigger_id``
    (docs.slack.dev, views.open / views.push). The stand-in used to open a second modal with it."""
    trigger = standin.issue_trigger_id()
    refused = modal(title={"type": "plain_text", "text": "t" * 25})
    assert error_of(lambda: client.views_open(trigger_id=trigger, view=refused)) == "invalid_arguments"
    client.views_open(trigger_id=trigger, view=modal())  # a refused view did not use the trigger up
    assert error_of(lambda: client.views_open(trigger_id=trigger, view=modal())) == "exchanged_trigger_id"
    assert len(standin.views()) == 1


def option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def select_input(options: list[dict[str, Any]], placeholder: str = "Pick one") -> dict[str, Any]:
    element = {
        "type": "static_select",
        "action_id": "pick",
        "placeholder": {"type": "plain_text", "text": placeholder},
        "options": options,
    }
    return {"type": "input", "block_id": "pick", "label": {"type": "plain_text", "text": "Pick"}, "element": element}


VIEW_VIOLATIONS: dict[str, dict[str, Any]] = {
    "101 blocks": {"blocks": [section(f"s{i}") for i in range(101)]},
    "title 25": {"title": {"type": "plain_text", "text": "t" * 25}},
    "submit 25": {"submit": {"type": "plain_text", "text": "s" * 25}},
    "close 25": {"close": {"type": "plain_text", "text": "c" * 25}},
    "private_metadata 3001": {"private_metadata": "m" * 3001},
    "callback_id 256": {"callback_id": "c" * 256},
    "button text 76 in modal": {"blocks": [actions(button(text="b" * 76))]},
    # Option text ≤ 75 and value ≤ 150, ≤ 100 options, placeholder ≤ 150 (Block Kit reference and slack_sdk's
    # validators); a modal with an input block needs a submit button. The stand-in used to check none of them.
    "option text 76": {"blocks": [select_input([option("o" * 76, "v")])]},
    "option value 151": {"blocks": [select_input([option("o", "v" * 151)])]},
    "101 options": {"blocks": [select_input([option(f"o{i}", f"v{i}") for i in range(101)])]},
    "placeholder 151": {"blocks": [select_input([option("o", "v")], placeholder="p" * 151)]},
    "input without submit": {"submit": None},
}


@pytest.mark.parametrize("case", list(VIEW_VIOLATIONS))
def test_view_limits(standin: StandIn, client: WebClient, case: str) -> None:
    view = {k: v for k, v in modal(**VIEW_VIOLATIONS[case]).items() if v is not None}
    assert error_of(lambda: client.views_open(trigger_id=standin.issue_trigger_id(), view=view)) == "invalid_arguments"
    if case != "input without submit":  # a Home tab has no submit button
        home = view | {"type": "home"}
        assert error_of(lambda: client.views_publish(user_id="U1", view=home)) == "invalid_arguments"
    assert standin.views() == []


def test_views_update_and_publish(standin: StandIn, client: WebClient) -> None:
    opened = client.views_open(trigger_id=standin.issue_trigger_id(), view=modal())["view"]
    updated = client.views_update(view_id=opened["id"], view=modal(title={"type": "plain_text", "text": "Done"}))
    assert updated["view"]["id"] == opened["id"]
    assert standin.views()[0]["title"]["text"] == "Done"
    assert error_of(lambda: client.views_update(view_id="V404", view=modal())) == "not_found"
    client.views_publish(user_id="U1", view={"type": "home", "blocks": [section(f"s{i}") for i in range(100)]})
    home = standin.home_view("U1")
    assert home is not None and len(home["blocks"]) == 100


def test_a_home_view_over_250_kb_is_refused(standin: StandIn, client: WebClient) -> None:
    """Slack refuses a view larger than 250 kB (``view_too_large``); sent as slack_sdk sends it, an emoji is 12
    bytes of JSON (``\\ud83d\\udd25``), so 40 sections of 600 emoji are too large though each is within limits."""
    big = {"type": "home", "blocks": [section("🔥" * 600) for _ in range(40)]}
    assert limits.view_bytes(big) > limits.MAX_VIEW_BYTES
    assert error_of(lambda: client.views_publish(user_id="U1", view=big)) == "view_too_large"
    assert standin.home_view("U1") is None
    small = {"type": "home", "blocks": [section("🔥" * 600) for _ in range(30)]}
    assert limits.view_bytes(small) <= limits.MAX_VIEW_BYTES
    client.views_publish(user_id="U1", view=small)
    assert standin.home_view("U1") is not None


def test_concurrent_posts_are_all_stored_with_unique_increasing_ts(standin: StandIn) -> None:
    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: str(client.chat_postMessage(channel="C1", text=f"m{i}")["ts"]), range(32)))
    stored = [m.ts for m in standin.messages("C1")]
    assert sorted(stored) == sorted(results) and len(set(stored)) == 32
    assert stored == sorted(stored, key=float)
    assert len(standin.calls("chat.postMessage")) == 32


def test_malformed_arguments_get_slack_errors_not_crashes(standin: StandIn) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = standin.api_url
    bad_json = httpx.post(api + "chat.postMessage", headers=headers, data={"channel": "C1", "blocks": "[{"})
    assert bad_json.json() == {"ok": False, "error": "invalid_blocks_format"}
    not_a_list = httpx.post(api + "chat.postMessage", headers=headers, json={"channel": "C1", "blocks": {"a": 1}})
    assert not_a_list.json()["error"] == "invalid_blocks"
    broken_body = httpx.post(
        api + "chat.postMessage", headers=headers | {"Content-Type": "application/json"}, content=b"{nope"
    )
    assert broken_body.status_code == 400
    odd_files = httpx.post(api + "files.completeUploadExternal", headers=headers, data={"files": '["x"]'})
    assert odd_files.json()["error"] == "file_not_found"
    assert standin.messages("C1") == []
    assert len(standin.calls()) == 4


def test_post_metadata_is_kept_and_listed_by_history_with_include_all_metadata(
    standin: StandIn, client: WebClient
) -> None:
    metadata = {"event_type": "npo_outbox", "event_payload": {"outbox_id": 7}}
    answer = client.chat_postMessage(channel="C1", text="tagged", metadata=metadata)
    assert answer["message"]["metadata"] == metadata
    assert standin.message("C1", answer["ts"]).metadata == metadata
    (listed,) = client.conversations_history(channel="C1", include_all_metadata=True)["messages"]
    assert listed["ts"] == answer["ts"] and listed["metadata"] == metadata
    (plain,) = client.conversations_history(channel="C1")["messages"]
    assert "metadata" not in plain
    for wrong in ({"event_type": "x"}, {"event_payload": {}}, {"event_type": "", "event_payload": {}}):
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="x", metadata=wrong)
        assert info.value.response["error"] == "invalid_metadata_format"
    assert len(standin.messages("C1")) == 1


def test_history_lists_newest_first_between_oldest_and_latest_a_page_at_a_time(
    standin: StandIn, client: WebClient
) -> None:
    ts = [client.chat_postMessage(channel="C1", text=f"m{n}")["ts"] for n in range(5)]
    client.chat_postMessage(channel="C1", text="reply", thread_ts=ts[0])  # thread replies are not listed
    client.chat_postEphemeral(channel="C1", user="U1", text="only for U1")
    client.chat_postMessage(channel="C2", text="another channel")
    history = client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["m4", "m3", "m2", "m1", "m0"] and not history["has_more"]
    between = client.conversations_history(channel="C1", oldest=ts[1], latest=ts[4])["messages"]
    assert [m["text"] for m in between] == ["m3", "m2"]  # bounds excluded
    between = client.conversations_history(channel="C1", oldest=ts[1], latest=ts[4], inclusive=True)["messages"]
    assert [m["text"] for m in between] == ["m4", "m3", "m2", "m1"]
    first = client.conversations_history(channel="C1", limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"] and first["has_more"]
    cursor = first["response_metadata"]["next_cursor"]
    rest = client.conversations_history(channel="C1", limit=3, cursor=cursor)
    assert [m["text"] for m in rest["messages"]] == ["m2", "m1", "m0"] and not rest["has_more"]
    assert rest["response_metadata"]["next_cursor"] == ""
    assert error_of(lambda: client.conversations_history(channel="C9")) == "channel_not_found"
    assert error_of(lambda: client.conversations_history(channel="C1", limit=0)) == "invalid_limit"


def test_replies_list_a_thread_oldest_first_with_metadata_a_page_at_a_time(standin: StandIn, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    metadata = {"event_type": "npo_outbox", "event_payload": {"outbox_id": 7}}
    replies = [
        client.chat_postMessage(channel="C1", text=f"r{n}", thread_ts=parent, metadata=metadata)["ts"] for n in range(4)
    ]
    elsewhere = client.chat_postMessage(channel="C1", text="elsewhere")["ts"]
    thread = client.conversations_replies(channel="C1", ts=parent, include_all_metadata=True)
    assert [m["text"] for m in thread["messages"]] == ["parent", "r0", "r1", "r2", "r3"] and not thread["has_more"]
    assert [m.get("metadata") for m in thread["messages"]] == [None] + [metadata] * 4
    assert all("metadata" not in m for m in client.conversations_replies(channel="C1", ts=parent)["messages"])
    by_reply = client.conversations_replies(channel="C1", ts=replies[2])["messages"]  # a reply names its thread
    assert [m["text"] for m in by_reply] == ["parent", "r0", "r1", "r2", "r3"]
    between = client.conversations_replies(channel="C1", ts=parent, oldest=replies[0], latest=replies[3])["messages"]
    assert [m["text"] for m in between] == ["parent", "r1", "r2"]  # the parent first, whatever its time
    first = client.conversations_replies(channel="C1", ts=parent, limit=2)
    assert [m["text"] for m in first["messages"]] == ["parent", "r0"] and first["has_more"]
    rest = client.conversations_replies(channel="C1", ts=parent, cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["r1", "r2", "r3"] and not rest["has_more"]
    (alone,) = client.conversations_replies(channel="C1", ts=elsewhere)["messages"]
    assert alone["text"] == "elsewhere"  # a message with no replies is listed alone
    assert error_of(lambda: client.conversations_replies(channel="C1", ts="1.000001")) == "thread_not_found"
    assert error_of(lambda: client.conversations_replies(channel="C9", ts=parent)) == "channel_not_found"
    assert error_of(lambda: client.conversations_replies(channel="C1", ts=parent, limit=0)) == "invalid_limit"
