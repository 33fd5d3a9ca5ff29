"""Loopback-only ``Host``: the rule the stand-in's page and the demo's bot share against DNS rebinding.

A web site whose own name resolves to 127.0.0.1 can make a browser send requests to a local port and read the
answers; its requests carry that site's name in ``Host``. A server meant only for this machine refuses every
``Host`` that is not a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``), whatever the port (a port forwarded
to another local one keeps working). :class:`LoopbackHostOnly` applies the rule to an ASGI app.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LOOPBACK_NAMES", "LoopbackHostOnly", "loopback_name"]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def loopback_name(address: str, *, scheme: str = "") -> bool:
    """Whether ``address`` (``//host[:port]``, or an origin ``scheme://host[:port]``) names this machine's loopback,
    whatever the port (a port forwarded to another local port keeps the page usable). Another name, even one that
    resolves to 127.0.0.1, is another site's (DNS rebinding)."""
    try:
        parts = urlsplit(address)
        name = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return False
    return name in LOOPBACK_NAMES and parts.scheme == scheme


class LoopbackHostOnly:
    """``app`` answering only requests whose every ``Host`` header is a loopback name (:func:`loopback_name`);
    any other is refused with 403 and a one-line JSON error naming the field (``{"error": …, "field": "Host"}``)
    before ``app`` sees it. A request without ``Host`` (HTTP/1.0: no browser) passes, as do lifespan events.

    For a server that only this machine may reach (the demo's bot); never for one behind a proxy, whose ``Host`` is
    its public name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or all(
            loopback_name(f"//{value.decode('latin-1').strip()}")
            for key, value in scope.get("headers", ())
            if key.lower() == b"host"
        ):
            await self.app(scope, receive, send)
            return
        message = (
            "Host is not a loopback name: a request from another site is refused (address this server as"
            " http://127.0.0.1:PORT or http://localhost:PORT)"
        )
        body = json.dumps({"error": message, "field": "Host"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
