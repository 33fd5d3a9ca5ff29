"""The web page (escaped, clickable when configured), loopback-only serving, and ``python -m bot.standin``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from slack_sdk import WebClient
from standin_testing import SECRET, TOKEN, CapturingBot

from bot.standin import StandIn
from bot.standin.__main__ import main as standin_main

HOSTILE = "<script>alert('x')</script> & \"quotes\""


def test_page_lists_channels_and_escapes_everything(standin: StandIn, client: WebClient) -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": HOSTILE}},
        {
            "type": "actions",
            "elements": [{"type": "button", "action_id": "like", "text": {"type": "plain_text", "text": HOSTILE}}],
        },
    ]
    client.chat_postMessage(channel="C1", text=HOSTILE, blocks=blocks)
    page = httpx.get(standin.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;"
    assert page.text.count(escaped) == 3  # message text, section text, button label
    assert "#oncall" in page.text and "#ops" in page.text


def test_page_shows_mrkdwn_as_slack_does_after_its_escapes(standin: StandIn, client: WebClient) -> None:
    """Slack's client shows mrkdwn's ``&gt;`` as ``>``; the page showed the escape itself ("R(s)=0.83 &gt; τ")
    while ``/ui/`` did not. ``plain_text`` is not escaped by Slack, so it is shown as sent."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "R(s)=0.83 &gt; τ &amp; &amp;lt;kept&amp;gt;"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "a &lt;b&gt;"}]},
        {"type": "section", "text": {"type": "plain_text", "text": "plain &gt;"}},
    ]
    client.chat_postMessage(channel="C1", text="fallback &lt;x&gt;", blocks=blocks)
    page = httpx.get(standin.url + "/").text
    assert "<pre>R(s)=0.83 &gt; τ &amp; &amp;lt;kept&amp;gt;</pre>" in page  # shows: > & &lt;kept&gt;
    assert '<div class="meta">a &lt;b&gt;</div>' in page
    assert "<pre>plain &amp;gt;</pre>" in page  # shows: &gt;, as sent
    assert "<pre>fallback &lt;x&gt;</pre>" in page


def _post_with_a_like_button(standin: StandIn) -> str:
    """Alice exists; a message "rec" with one Like button is posted in C1: its ts."""
    standin.add_user("U1", name="alice")
    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    blocks = [
        {
            "type": "actions",
            "block_id": "fb",
            "elements": [{"type": "button", "action_id": "like", "text": {"type": "plain_text", "text": "Like"}}],
        }
    ]
    return str(client.chat_postMessage(channel="C1", text="rec", blocks=blocks)["ts"])


def test_page_buttons_send_signed_clicks_when_configured(bot: CapturingBot) -> None:
    with StandIn(token=TOKEN, bot_url=bot.url, signing_secret=SECRET) as standin:
        ts = _post_with_a_like_button(standin)
        page = httpx.get(standin.url + "/").text
        assert 'action="/ui/click"' in page and f'value="{ts}"' in page
        answer = httpx.post(
            standin.url + "/ui/click", data={"channel": "C1", "ts": ts, "action_id": "like", "user": "U1"}
        )
        assert answer.status_code == 303
        assert "bot answered 200" in parse_qs(urlsplit(answer.headers["location"]).query)["notice"][0]
        payload = json.loads(parse_qs(bot.last()[1].decode())["payload"][0])
        assert payload["actions"][0]["action_id"] == "like" and payload["user"]["id"] == "U1"


def test_everything_is_served_on_loopback(standin: StandIn, client: WebClient, bot: CapturingBot) -> None:
    assert urlsplit(standin.url).hostname == "127.0.0.1"
    assert urlsplit(standin.api_url).hostname == "127.0.0.1"
    assert standin.bound_address == ("127.0.0.1", standin.port)

    ts = client.chat_postMessage(
        channel="C1",
        text="t",
        blocks=[
            {
                "type": "actions",
                "elements": [{"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "A"}}],
            }
        ],
    )["ts"]
    uploaded = client.files_upload_v2(channel="C1", content=b"png", filename="weekly.png")
    standin.click(bot.url, SECRET, user_id="U1", action_id="a", message=("C1", ts))
    standin.slash_command(bot.url, SECRET, "/npo", "help", "U1", "C1")
    click = json.loads(parse_qs(bot.requests[0][2].decode())["payload"][0])
    command = parse_qs(bot.requests[1][2].decode())
    upload_url = standin.calls("files.getUploadURLExternal")[0].response["upload_url"]
    for url in (
        client.auth_test()["url"],
        upload_url,
        uploaded["file"]["url_private"],
        click["response_url"],
        command["response_url"][0],
    ):
        assert urlsplit(url).hostname == "127.0.0.1", url
        assert urlsplit(url).port == standin.port, url


def test_get_on_api_is_refused_and_unknown_paths_are_404(standin: StandIn) -> None:
    assert httpx.get(standin.api_url + "auth.test").status_code == 405
    # The look-ups slack-sdk's async client sends as GET are answered, their arguments in the query string.
    standin.set_channel_members("C1", ["U1"])
    members = httpx.get(
        standin.api_url + "conversations.members?channel=C1", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert members.status_code == 200 and members.json()["members"] == ["U1"]
    assert httpx.post(standin.url + "/elsewhere").status_code == 404
    unknown = httpx.post(standin.api_url + "chat.delete", headers={"Authorization": f"Bearer {TOKEN}"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_method"


def test_runs_standalone_and_prints_its_url() -> None:
    root = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.standin", "--port", "0", "--token", "xoxb-test", "--channel", "C1=oncall"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("stand-in: http://127.0.0.1:")
        url = first.removeprefix("stand-in: ")
        client = WebClient(base_url=url + "/api/", token="xoxb-test", retry_handlers=[])
        assert client.auth_test()["ok"]
        assert "#oncall" in httpx.get(url + "/").text
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0


def test_a_taken_port_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert standin_main(["--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"python -m bot.standin: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in captured.err and captured.out == ""


def test_another_site_can_neither_click_through_the_page_nor_read_it(bot: CapturingBot) -> None:
    """The page signs clicks for whoever posts to it. Any web site open in the browser could post there too (a
    ``no-cors`` fetch or a form sends a cross-site POST without asking), and a name of the site's own resolved to
    127.0.0.1 (DNS rebinding) could also read the page: the stand-in signed such clicks and the bot recorded them.
    A request naming another host, or posted from another origin, is refused 403 and nothing is sent to the bot."""
    with StandIn(token=TOKEN, bot_url=bot.url, signing_secret=SECRET) as standin:
        ts = _post_with_a_like_button(standin)
        click = {"channel": "C1", "ts": ts, "action_id": "like", "user": "U1"}
        act = json.dumps(click).encode()
        text_plain = {"Content-Type": "text/plain;charset=UTF-8"}  # what a no-cors fetch may send unasked
        cross_site = [
            ("/ui/act", act, text_plain | {"Origin": "https://attacker.example"}),
            ("/ui/act", act, text_plain | {"Origin": "null"}),  # a sandboxed frame, a data: URL
            ("/ui/act", act, text_plain | {"Host": f"attacker.example:{standin.port}"}),
            ("/ui/click", None, {"Origin": "https://attacker.example"}),
            ("/ui/click", None, {"Host": f"attacker.example:{standin.port}"}),
            (
                "/ui/submit",
                json.dumps({"user": "U1", "view_id": "V1", "values": {}}).encode(),
                text_plain | {"Origin": "http://localhost:1"},
            ),
            ("/api/chat.postMessage", None, {"Origin": "https://attacker.example"}),
        ]
        for path, content, headers in cross_site:
            if content is None:
                data = {"token": TOKEN, "channel": "C1", "text": "spoofed"} if path.startswith("/api/") else click
                answer = httpx.post(standin.url + path, data=data, headers=headers)
            else:
                answer = httpx.post(standin.url + path, content=content, headers=headers)
            assert answer.status_code == 403, (path, headers, answer.status_code, answer.text)
        for path in ("/", "/ui/", "/ui/state?as=U1", "/ui/panel"):
            answer = httpx.get(standin.url + path, headers={"Host": f"attacker.example:{standin.port}"})
            assert answer.status_code == 403 and "rec" not in answer.text, path
        assert bot.requests == []
        assert [m.text for m in standin.messages("C1")] == ["rec"]
        # The page itself (its own origin, by either name of loopback) and clients sending no Origin still click.
        for host in (f"127.0.0.1:{standin.port}", f"localhost:{standin.port}"):
            headers = {"Content-Type": "application/json", "Host": host, "Origin": f"http://{host}"}
            answer = httpx.post(standin.url + "/ui/act", content=act, headers=headers)
            assert answer.status_code == 200 and answer.json()["status"] == 200, answer.text
            assert httpx.get(standin.url + "/ui/state?as=U1", headers={"Host": host}).status_code == 200
        assert httpx.post(standin.url + "/ui/act", json=click).json()["status"] == 200
        # the page opened through a port forwarded to another local port: its Host and Origin name that port
        forwarded = {"Content-Type": "application/json", "Host": "localhost:8081", "Origin": "http://localhost:8081"}
        answer = httpx.post(standin.url + "/ui/act", content=act, headers=forwarded)
        assert answer.status_code == 200 and answer.json()["status"] == 200, answer.text
        assert len(bot.requests) == 4


def test_no_page_may_be_framed(standin: StandIn) -> None:
    """Clickjacking: another site could show the page in a frame under a button of its own, and the person's
    click there was a click on the page — sent by the page itself, with its own Origin, so the Origin check does
    not see it. Every answer forbids framing (the headless-browser check: tests/demo/test_demo_browser.py)."""
    for path in ("/", "/ui/", "/ui/state", "/ui/panel", "/nowhere"):
        answer = httpx.get(standin.url + path)
        assert answer.headers.get("content-security-policy") == "frame-ancestors 'none'", path
        assert answer.headers.get("x-frame-options") == "DENY", path


def test_a_post_the_page_did_not_make_is_refused_even_without_origin(bot: CapturingBot) -> None:
    """The Origin check lets through a POST that carries none (the bot, curl, a test). A browser that leaves it
    out still says where the request came from in ``Sec-Fetch-Site``, and what another site's page can send
    without a CORS preflight is a form or text/plain, never JSON: such a POST to the live page's routes was signed
    and sent to the bot. Now 403 (Sec-Fetch-Site of another site) or 415 (not JSON), and the bot hears nothing."""
    with StandIn(token=TOKEN, bot_url=bot.url, signing_secret=SECRET) as standin:
        standin.add_user("U1", name="alice")
        client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
        button = {"type": "button", "action_id": "like", "text": {"type": "plain_text", "text": "Like"}}
        blocks = [{"type": "actions", "block_id": "fb", "elements": [button]}]
        ts = client.chat_postMessage(channel="C1", text="rec", blocks=blocks)["ts"]
        click = {"channel": "C1", "ts": ts, "action_id": "like", "user": "U1"}
        act = json.dumps(click).encode()
        json_type = {"Content-Type": "application/json"}
        refused = [
            ("/ui/act", act, {"Content-Type": "text/plain;charset=UTF-8"}, 415),
            ("/ui/act", act, {}, 415),
            ("/ui/act", urlencode(click).encode(), {"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ("/ui/submit", b'{"user": "U1", "view_id": "V1", "values": {}}', {"Content-Type": "text/plain"}, 415),
            ("/ui/close", b'{"user": "U1", "view_id": "V1"}', {"Content-Type": "multipart/form-data"}, 415),
            ("/ui/act", act, json_type | {"Sec-Fetch-Site": "cross-site"}, 403),
            ("/ui/act", act, json_type | {"Sec-Fetch-Site": "same-site"}, 403),  # another port of localhost
            ("/ui/click", urlencode(click).encode(), {"Sec-Fetch-Site": "cross-site"}, 403),
        ]
        for path, content, headers, status in refused:
            answer = httpx.post(standin.url + path, content=content, headers=headers)
            assert answer.status_code == status, (path, headers, answer.status_code, answer.text)
            assert answer.json()["field"] in ("Content-Type", "Sec-Fetch-Site")
        assert bot.requests == []
        # The page's own requests: JSON from its origin (Sec-Fetch-Site same-origin), and clients sending none.
        own = json_type | {"Sec-Fetch-Site": "same-origin", "Origin": standin.url}
        assert httpx.post(standin.url + "/ui/act", content=act, headers=own).json()["status"] == 200
        assert httpx.post(standin.url + "/ui/act", json=click).json()["status"] == 200
        answer = httpx.post(standin.url + "/ui/click", data=click, headers={"Sec-Fetch-Site": "same-origin"})
        assert answer.status_code == 303
        assert len(bot.requests) == 3
