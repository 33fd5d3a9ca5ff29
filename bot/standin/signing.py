"""Slack request signing, exactly as Slack signs requests to an app's request URL.

Slack's algorithm ("Verifying requests from Slack"): the base string is ``v0:{timestamp}:{raw_body}``, the
signature is ``v0=`` followed by the hex HMAC-SHA256 of that string keyed with the app's signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["sign", "signed_headers"]


def sign(secret: str, timestamp: str | int, body: str | bytes) -> str:
    """Return Slack's ``X-Slack-Signature`` value (``v0=<64 hex chars>``) for one request.

    ``timestamp`` is Unix seconds as sent in ``X-Slack-Request-Timestamp``; ``body`` is the raw request body
    (bytes are decoded as UTF-8, as slack_sdk's verifier does). Does not check the replay window.
    """
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    base = f"v0:{timestamp}:{raw}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str | bytes, content_type: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with a signed request: content type, request timestamp and signature.

    ``timestamp`` defaults to now (Unix seconds); pass an old or future one to test the 300 s replay window.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sign(secret, ts, body),
    }
