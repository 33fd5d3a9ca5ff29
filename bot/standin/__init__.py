"""A local Slack stand-in: a loopback HTTP server speaking the Web API methods the bot uses, storing messages,
injecting faults, and sending signed clicks, modal submissions, events and slash commands to the bot.

Used by the tests and the demo; never by the bot in production.
"""

from bot.standin.faults import Fault, FaultInjector, FaultKind
from bot.standin.server import StandIn, running_standin
from bot.standin.signing import sign, signed_headers
from bot.standin.store import Call, Message, ResponseUrl, StoredFile

__all__ = [
    "Call",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Message",
    "ResponseUrl",
    "StandIn",
    "StoredFile",
    "running_standin",
    "sign",
    "signed_headers",
]
