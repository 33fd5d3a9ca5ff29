"""files_upload_v2 end to end: getUploadURLExternal → raw upload to the loopback URL → completeUploadExternal."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.standin import StandIn

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.mark.parametrize("argument", ["content", "file"])
def test_upload_v2_stores_the_exact_bytes(standin: StandIn, client: WebClient, argument: str) -> None:
    common: dict[str, Any] = {
        "channel": "C1",
        "filename": "weekly.png",
        "title": "Weekly alignment",
        "initial_comment": "summary",
    }
    if argument == "content":
        response = client.files_upload_v2(content=PNG, **common)
    else:
        response = client.files_upload_v2(file=PNG, **common)
    file_id = response["file"]["id"]
    stored = standin.file(file_id)
    assert stored.data == PNG and stored.completed and stored.channels == ["C1"]

    get_url, upload, complete = (c.method for c in standin.calls())
    assert (get_url, upload, complete) == ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")
    assert standin.calls("files.getUploadURLExternal")[0].body["length"] == str(len(PNG))
    raw_upload = standin.calls("upload")[0]
    assert raw_upload.raw == PNG and raw_upload.header("Authorization") is None
    completion = standin.calls("files.completeUploadExternal")[0].body
    assert completion["channel_id"] == "C1"
    assert json.loads(completion["files"])[0]["id"] == file_id

    (shared,) = standin.messages("C1")
    assert shared.text == "summary" and shared.files[0]["id"] == file_id
    served = httpx.get(f"{standin.url}/files/{file_id}")
    assert served.content == PNG and served.headers["content-type"] == "image/png"


def test_complete_without_upload_is_refused(standin: StandIn, client: WebClient) -> None:
    announced = client.files_getUploadURLExternal(filename="weekly.png", length=10)
    with pytest.raises(SlackApiError) as info:
        client.files_completeUploadExternal(files=[{"id": announced["file_id"]}], channel_id="C1")
    assert info.value.response["error"] == "file_not_found"
    assert standin.messages("C1") == []


def test_upload_to_unknown_channel(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        client.files_upload_v2(channel="C404", content=PNG, filename="weekly.png")
    assert info.value.response["error"] == "channel_not_found"


def test_alt_text_over_1000_characters_is_refused(standin: StandIn, client: WebClient) -> None:
    """files.getUploadURLExternal refuses an ``alt_txt`` over 1,000 characters (``alt_txt_too_large``, Slack's
    method reference); the stand-in used to accept any length, so a chart's alt text could outgrow it unseen."""
    with pytest.raises(SlackApiError) as info:
        client.files_upload_v2(channel="C1", content=PNG, filename="weekly.png", alt_txt="a" * 1001)
    assert info.value.response["error"] == "alt_txt_too_large"
    assert standin.files() == [] and standin.messages("C1") == []
    client.files_upload_v2(channel="C1", content=PNG, filename="weekly.png", alt_txt="a" * 1000)
    assert standin.files()[0].alt_txt == "a" * 1000


def test_an_initial_comment_over_40000_characters_is_refused(standin: StandIn, client: WebClient) -> None:
    """The file's ``initial_comment`` is the text of the message that shares it: over the 40,000 characters Slack
    keeps of a message's text it is refused (``msg_too_long``, as chat.postMessage's ``text``) and nothing is shared;
    the stand-in used to accept any length, so a summary that outgrew Slack's limit went unseen."""
    with pytest.raises(SlackApiError) as info:
        client.files_upload_v2(channel="C1", content=PNG, filename="weekly.png", initial_comment="y" * 40_001)
    assert info.value.response["error"] == "msg_too_long"
    assert standin.messages("C1") == [] and not standin.files()[0].completed
    client.files_upload_v2(channel="C1", content=PNG, filename="weekly.png", initial_comment="y" * 40_000)
    (shared,) = standin.messages("C1")
    assert shared.text == "y" * 40_000
